#!/usr/bin/env python3
"""Helpers of scripts/bench-chat that are easier in Python than in bash.

post URL FILE [--clients N]
    Sends every request of FILE (written by bench-chat-requests.py: one
    "<signature>\t<form body>" a line) once, as POST URL, from N concurrent
    keep-alive clients (default 16). Prints two lines:
    "posted <n> in <seconds> s; status <code>=<count> ..." and
    "started_at <Unix time of the first request>". Exits 1 when a request
    could not be sent.

stages METRICS_FILE METRIC
    Reads a Prometheus text exposition (a saved /metrics) and prints, for
    each `stage` label of the histogram METRIC, one line:
    "<stage> <count> <p50 ms> <p99 ms> <mean ms> <how>", where <how> is
    "buckets:<low>-<high>" (the bucket p99 lies in, ms) or "summary". The
    quantiles are interpolated linearly inside the bucket they fall in, as
    PromQL's histogram_quantile() does; a quantile in the +Inf bucket is
    reported as the highest finite bound. Works for summaries (quantile="0.5"/"0.99")
    too, reading the quantiles as rendered.

sumcount METRICS_FILE METRIC
    Prints "<count> <sum>" of a histogram or summary, over all its labels.
"""

import http.client
import re
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict


def post(url: str, path_file: str, clients: int) -> int:
    target = urllib.parse.urlsplit(url)
    with open(path_file, encoding="ascii") as f:
        requests = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    lock = threading.Lock()
    statuses = Counter()
    failures = []
    position = [0]

    def client() -> None:
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        while True:
            with lock:
                if position[0] >= len(requests) or failures:
                    break
                signature, body = requests[position[0]]
                position[0] += 1
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            }
            try:
                connection.request("POST", target.path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as error:
                with lock:
                    failures.append(str(error))
                break
            with lock:
                statuses[status] += 1
        connection.close()

    started_at = time.time()
    started = time.monotonic()
    workers = [threading.Thread(target=client) for _ in range(max(1, clients))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    codes = " ".join(f"{code}={count}" for code, count in sorted(statuses.items()))
    print(f"posted {sum(statuses.values())} in {elapsed:.3f} s; status {codes or 'none'}")
    print(f"started_at {started_at:.6f}")
    if failures:
        print(f"error: {len(failures)} requests failed, first: {failures[0]}", file=sys.stderr)
        return 1
    return 0


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(metrics_file: str):
    with open(metrics_file, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            match = SAMPLE.match(line.strip())
            if not match:
                continue
            name, labels, value = match.groups()
            yield name, dict(LABEL.findall(labels or "")), float(value)


def quantile(q: float, buckets):
    """buckets: [(upper bound, cumulative count)] sorted by bound. Returns
    the interpolated quantile and the bounds of the bucket it lies in."""
    nan = float("nan")
    total = buckets[-1][1]
    if total == 0:
        return nan, nan, nan
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return previous_bound, previous_bound, bound
            if count == previous_count:
                return bound, previous_bound, bound
            value = previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
            return value, previous_bound, bound
        previous_bound, previous_count = bound, count
    return previous_bound, previous_bound, float("inf")


def stages(metrics_file: str, metric: str) -> int:
    buckets = defaultdict(list)
    quantiles = defaultdict(dict)
    sums, counts = {}, {}
    for name, labels, value in samples(metrics_file):
        stage = labels.get("stage", "")
        if name == metric + "_bucket":
            bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            buckets[stage].append((bound, value))
        elif name == metric and "quantile" in labels:
            quantiles[stage][labels["quantile"]] = value
        elif name == metric + "_sum":
            sums[stage] = value
        elif name == metric + "_count":
            counts[stage] = value
    for stage in sorted(counts):
        count = counts[stage]
        mean = 1000 * sums.get(stage, 0) / count if count else float("nan")
        if stage in buckets:
            b = sorted(buckets[stage])
            p50, _, _ = quantile(0.5, b)
            p99, low, high = quantile(0.99, b)
            p50, p99 = 1000 * p50, 1000 * p99
            kind = f"buckets:{1000 * low:g}-{1000 * high:g}"
        else:
            p50 = 1000 * quantiles[stage].get("0.5", float("nan"))
            p99 = 1000 * quantiles[stage].get("0.99", float("nan"))
            kind = "summary"
        print(f"{stage} {count:.0f} {p50:.2f} {p99:.2f} {mean:.2f} {kind}")
    return 0


def sumcount(metrics_file: str, metric: str) -> int:
    total, count = 0.0, 0.0
    for name, _, value in samples(metrics_file):
        if name == metric + "_sum":
            total += value
        elif name == metric + "_count":
            count += value
    print(f"{count:.0f} {total:.6f}")
    return 0


def main(argv) -> int:
    if len(argv) >= 3 and argv[0] == "post":
        clients = 16
        if len(argv) == 5 and argv[3] == "--clients":
            clients = int(argv[4])
        return post(argv[1], argv[2], clients)
    if len(argv) == 3 and argv[0] == "stages":
        return stages(argv[1], argv[2])
    if len(argv) == 3 and argv[0] == "sumcount":
        return sumcount(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
