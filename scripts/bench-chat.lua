-- wrk script for scripts/bench-chat: sends pre-signed Twilio webhooks.
--
-- Usage: wrk ... -s scripts/bench-chat.lua URL -- REQUESTS_FILE THREADS
--
-- REQUESTS_FILE has one request a line, "<X-Twilio-Signature>\t<form body>"
-- (scripts/bench-chat-requests.py writes it). Thread k of THREADS keeps
-- lines k+1, k+1+THREADS, ... so threads never send the same MessageSid,
-- and sends its lines in order. A thread that runs out of lines starts
-- again from its first (those requests are then duplicates, which the
-- server answers without writing); done() says whether that happened, so
-- the figures are not trusted by mistake.

local threads = {}
local next_id = 0

-- Runs in wrk's main Lua state, once per thread, before init.
function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end

-- Per-thread state (globals in the thread's own Lua state).
signatures = {}
bodies = {}
prepared = 0
sent = 0
wrapped = 0

function init(args)
    local file, count = args[1], tonumber(args[2])
    if not file or not count then
        error("usage: -s bench-chat.lua URL -- REQUESTS_FILE THREADS")
    end
    local line_number = 0
    for line in io.lines(file) do
        if line_number % count == id then
            local tab = line:find("\t", 1, true)
            prepared = prepared + 1
            signatures[prepared] = line:sub(1, tab - 1)
            bodies[prepared] = line:sub(tab + 1)
        end
        line_number = line_number + 1
    end
    if prepared == 0 then
        error("no requests for thread " .. id .. " in " .. file)
    end
    head = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"]
        .. "\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: "
end

function request()
    sent = sent + 1
    local i = sent
    if i > prepared then
        wrapped = 1
        i = (i - 1) % prepared + 1
    end
    local body = bodies[i]
    return head .. signatures[i] .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end

-- Runs in the main state after the run: one machine-readable line.
function done(summary, latency, requests)
    local total_sent, total_prepared, any_wrapped = 0, 0, 0
    for _, thread in ipairs(threads) do
        total_sent = total_sent + thread:get("sent")
        total_prepared = total_prepared + thread:get("prepared")
        any_wrapped = math.max(any_wrapped, thread:get("wrapped"))
    end
    io.write(string.format("bench-chat: prepared %d sent %d wrapped %d\n", total_prepared, total_sent, any_wrapped))
end
