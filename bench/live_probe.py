"""Refund-to-visible latency for bench/live: posts a click, a conversion and a refund, then
reads /api/stats for the probe's source, and records the time from the refund's
acknowledgement to the stats answer that shows it. Repeats until the duration ends.

    python3 bench/live_probe.py URL SECONDS  -> prints "count p50_ms p99_ms max_ms misses"
"""
import http.client
import json
import sys
import time
import urllib.parse

url = urllib.parse.urlparse(sys.argv[1])
duration = float(sys.argv[2])
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)


def get(path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: {r.status} {body[:200]!r}")
    return json.loads(body)


day = time.strftime("%Y-%m-%d", time.gmtime())
stats = f"/api/stats?from={day}&to={day}&source=probe&columns=refunds"
latencies, misses = [], 0
end = time.monotonic() + duration
i = 0
while time.monotonic() < end:
    i += 1
    cid = get("/api/click?source=probe&cost=0.10")["cid"]
    get(f"/api/conversion?cid={cid}&amount=20&txid=P{i}")
    before = get(stats)["totals"]["refunds"]
    get(f"/api/conversion/refund?cid={cid}&amount=5&txid=PR{i}")
    acked = time.monotonic()
    # The first read after the acknowledgement; more only if it does not show the refund.
    while get(stats)["totals"]["refunds"] != before + 1:
        misses += 1
    latencies.append((time.monotonic() - acked) * 1000)

latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
print(f"{len(latencies)} {pick(0.5):.2f} {pick(0.99):.2f} {latencies[-1]:.2f} {misses}")
