// The back-office's only script, loaded by the conversation page alone:
// keeps it live.
// The server sends the rendered message log (escaped like the page) as an
// `update` event whenever it changes; without JavaScript the page still
// works, it just needs a reload.
(function () {
  "use strict";
  var log = document.getElementById("live-log");
  if (!log || !window.EventSource) {
    return;
  }
  var status = document.getElementById("live-status");
  function say(text) {
    if (status) {
      status.hidden = false;
      status.textContent = text;
    }
  }
  var source = new EventSource(log.getAttribute("data-live"));
  source.addEventListener("open", function () {
    say("Live: new messages appear here.");
  });
  source.addEventListener("update", function (event) {
    var nearBottom =
      window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
    log.innerHTML = event.data;
    log.setAttribute("data-updated", String(Date.now()));
    if (nearBottom) {
      window.scrollTo(0, document.body.scrollHeight);
    }
  });
  source.addEventListener("gone", function () {
    source.close();
    say("This conversation no longer exists.");
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      say("Live updates stopped; reload the page.");
    } else {
      say("Reconnecting…");
    }
  });
})();
