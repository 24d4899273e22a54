"""Soak test: mixed postbacks at a steady rate for a long time, with kill -9 restarts.

Usage: python3 bench/soak.py [--duration 3600] [--rate 400] [--kill-every 300]
                             [--data DIR] [--bin PATH] [--json FILE]

Runs `netrev serve` on 127.0.0.1 and sends clicks, conversions (with transaction IDs), refunds
and chargebacks of earlier conversions, and retried copies of acknowledged postbacks, from a
few keep-alive connections paced to --rate postbacks/s. Every --kill-every seconds (±30%) the
server gets SIGKILL in the middle of that load and is started again on the same data; a
postback whose answer was lost is sent again until it is acknowledged, as a network would.
RSS is sampled every 5 s. The live stats hold every click of the last days in memory, so RSS
grows with the history; a leak shows as a lifetime ending well above where the next one,
rebuilt from disk with the same history, starts.

At the end the server is stopped gracefully, the raw tables are read with `netrev sql` and
`netrev recompute` is run; the script checks that every acknowledged click, conversion and
refund is there exactly once (nothing lost, nothing counted twice) and that stats_hourly's
totals equal the sums of what was acknowledged, and prints RSS per server lifetime. Exits
non-zero on any mismatch.
"""

import argparse
import collections
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from recompute_bench import netrev_binary  # noqa: E402


class Server:
    def __init__(self, binary, data):
        self.binary, self.data = binary, data
        self.proc = None
        self.port = None
        self.lock = threading.Lock()
        self.lifetimes = []  # [{"started": s, "rss_mib": [..], "ready_s": s}]

    def start(self):
        t0 = time.time()
        proc = subprocess.Popen(
            [self.binary, "serve", "--data", self.data, "--listen", "127.0.0.1:0",
             "--rate-limit-per-ip", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=dict(os.environ, NETREV_LOG="warn"))
        line = proc.stdout.readline().strip()
        prefix = "netrev listening on http://"
        if not line.startswith(prefix):
            raise SystemExit(f"netrev did not start: {line!r}")
        with self.lock:
            self.proc = proc
            self.port = int(line[len(prefix):].rsplit(":", 1)[1])
            self.lifetimes.append({"started": t0, "ready_s": time.time() - t0, "rss_mib": [],
                                   "acked_at_start": None})

    def kill9(self):
        with self.lock:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(timeout=120) != 0:
            raise SystemExit("netrev did not stop cleanly")

    def sample_rss(self):
        with self.lock:
            try:
                with open(f"/proc/{self.proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.lifetimes[-1]["rss_mib"].append(int(line.split()[1]) / 1024)
            except FileNotFoundError:
                pass


class Ledger:
    """What the server acknowledged, and what was sent without an answer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.clicks = []          # acknowledged click IDs
        self.unanswered_clicks = 0
        self.conversions = {}     # txid -> (cid, amount)
        self.recent = collections.deque(maxlen=2000)  # the newest (txid, (cid, amount))
        self.refunds = {}         # txid -> (cid, amount, ref, chargeback)
        self.refunded = set()     # txids of refunded conversions
        self.retried = 0
        self.posted = 0
        self.refused = 0          # 503s and connection errors, each retried


def worker(server, ledger, rate, stop, seed):
    rnd = random.Random(seed)
    conn, port = None, None
    interval = 1.0 / rate
    next_at = time.time()
    n = 0

    def send(path):
        """GET path until a 200; returns the JSON body and how many tries it took. Retries
        through restarts."""
        nonlocal conn, port
        tries = 0
        while True:
            tries += 1
            try:
                if conn is None or port != server.port:
                    port = server.port
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                if r.status == 200:
                    return json.loads(body), tries
                if r.status != 503:
                    raise SystemExit(f"{path} -> {r.status} {body[:200]!r}")
            except (OSError, http.client.HTTPException):
                conn = None
            with ledger.lock:
                ledger.refused += 1
            time.sleep(0.05)

    while not stop.is_set():
        next_at += interval
        delay = next_at - time.time()
        if delay > 0:
            time.sleep(delay)
        n += 1
        with ledger.lock:
            ledger.posted += 1
            # Refunds and retries pick among recent sales (copying them all would make the
            # load generator slower as the ledger grows).
            convs = list(ledger.recent) if rnd.random() < 0.3 else None
        kind = rnd.random()
        if kind < 0.55 or not ledger.clicks:
            body, tries = send(f"/api/click?source=s{rnd.randrange(20)}&campaign=c{rnd.randrange(50)}"
                               f"&country={rnd.choice(['DE', 'US', 'FR'])}&cost=0.0{rnd.randrange(10)}")
            with ledger.lock:
                # A click whose answer was lost may have been recorded: a click has no ID of
                # its own before it is answered, so the resent one is another click.
                ledger.unanswered_clicks += tries - 1
                ledger.clicks.append(body["cid"])
        elif kind < 0.85 or not convs:
            with ledger.lock:
                cid = ledger.clicks[-1 - rnd.randrange(min(5000, len(ledger.clicks)))]
            txid = f"T{seed}-{n}"
            amount = Decimal(rnd.randrange(1, 20000)) / 100
            send(f"/api/conversion?cid={cid}&amount={amount}&txid={txid}")
            with ledger.lock:
                ledger.conversions[txid] = (cid, amount)
                ledger.recent.append((txid, (cid, amount)))
        elif kind < 0.95:
            ref, (cid, amount) = rnd.choice(convs)
            with ledger.lock:
                # One refund per sale: an over-refund is counted differently (docs/design.md §4).
                if ref in ledger.refunded:
                    continue
                ledger.refunded.add(ref)
            part = (amount * rnd.choice([1, 1, Decimal("0.5")])).quantize(Decimal("0.01"))
            if part == 0:
                continue
            chargeback = rnd.random() < 0.15
            txid = f"R{seed}-{n}"
            kind_ = "cb" if chargeback else "refund"
            send(f"/api/conversion/refund?cid={cid}&amount={part}&txid={txid}&ref={ref}"
                 f"&type={kind_}")
            with ledger.lock:
                ledger.refunds[txid] = (cid, part, ref, chargeback)
        else:
            # A network retrying a postback we already acknowledged: counted once.
            txid, (cid, amount) = rnd.choice(convs)
            send(f"/api/conversion?cid={cid}&amount={amount}&txid={txid}")
            with ledger.lock:
                ledger.retried += 1


def sql(binary, data, query):
    out = subprocess.run([binary, "sql", "--format", "csv", "--data", data, query],
                         check=True, capture_output=True, text=True,
                         env=dict(os.environ, NETREV_LOG="warn")).stdout
    lines = out.strip().splitlines()
    return [line.split(",") for line in lines[1:]]


def verify(binary, data, ledger):
    problems = []
    clicks = sql(binary, data, "SELECT cid, count(*) FROM clicks GROUP BY cid")
    counts = {cid: int(n) for cid, n in clicks}
    twice = [c for c, n in counts.items() if n > 1]
    lost = [c for c in ledger.clicks if c not in counts]
    extra = len(counts) - len(ledger.clicks)
    if twice:
        problems.append(f"{len(twice)} clicks stored more than once")
    if lost:
        problems.append(f"{len(lost)} acknowledged clicks lost")
    if not 0 <= extra <= ledger.unanswered_clicks:
        problems.append(f"{extra} clicks beyond the acknowledged ones "
                        f"({ledger.unanswered_clicks} unanswered)")
    for table, acked in (("conversions", ledger.conversions), ("refunds", ledger.refunds)):
        rows = sql(binary, data, f"SELECT txid, count(*), sum(amount) FROM {table} GROUP BY txid")
        stored = {t: (int(n), Decimal(a)) for t, n, a in rows}
        for txid, entry in acked.items():
            got = stored.get(txid)
            if got is None:
                problems.append(f"{table} {txid} acknowledged and lost")
            elif got[0] != 1 or got[1] != entry[1]:
                problems.append(f"{table} {txid}: stored {got}, acknowledged {entry[1]}")
        strays = set(stored) - set(acked)
        if strays:
            problems.append(f"{len(strays)} {table} never acknowledged: {sorted(strays)[:5]}")
    subprocess.run([binary, "recompute", "--data", data], check=True,
                   env=dict(os.environ, NETREV_LOG="warn"), stderr=subprocess.DEVNULL)
    # `refunds` and `refund_amount` include chargebacks, which are also counted on their own.
    [row] = sql(binary, data, "SELECT sum(conversions), sum(gross_revenue), sum(refunds), "
                "sum(refund_amount), sum(chargebacks), sum(chargeback_amount) FROM stats_hourly")
    cbs = [r[1] for r in ledger.refunds.values() if r[3]]
    want = (len(ledger.conversions), sum(a for _, a in ledger.conversions.values()),
            len(ledger.refunds), sum(r[1] for r in ledger.refunds.values()), len(cbs), sum(cbs))
    got = (int(row[0]), Decimal(row[1]), int(row[2]), Decimal(row[3]), int(row[4]),
           Decimal(row[5] or 0))
    if got != want:
        problems.append(f"stats_hourly totals {got} != acknowledged {want}")
    return problems, {"clicks_stored": len(counts), "stats_hourly": [str(x) for x in got]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=3600)
    ap.add_argument("--rate", type=float, default=400, help="postbacks per second")
    ap.add_argument("--kill-every", type=float, default=300)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--data")
    ap.add_argument("--bin")
    ap.add_argument("--json")
    args = ap.parse_args()

    binary = netrev_binary(args.bin)
    # A copy: a rebuild during the run must not change what is restarted.
    scratch = tempfile.mkdtemp(prefix="netrev-soak-")
    shutil.copy(binary, os.path.join(scratch, "netrev"))
    binary = os.path.join(scratch, "netrev")
    data = args.data or os.path.join(scratch, "data")

    server, ledger, stop = Server(binary, data), Ledger(), threading.Event()
    server.start()
    workers = [threading.Thread(target=worker, args=(server, ledger, args.rate / args.workers,
                                                     stop, i)) for i in range(args.workers)]
    for w in workers:
        w.start()
    t0 = time.time()
    rnd = random.Random(7)
    next_kill = t0 + args.kill_every * rnd.uniform(0.7, 1.3)
    kills = 0
    last_report = t0
    def acked():
        with ledger.lock:
            return len(ledger.clicks) + len(ledger.conversions) + len(ledger.refunds)

    while time.time() - t0 < args.duration:
        time.sleep(5)
        server.sample_rss()
        if server.lifetimes[-1]["acked_at_start"] is None:
            server.lifetimes[-1]["acked_at_start"] = acked()
        now = time.time()
        if now >= next_kill and now - t0 < args.duration - 5:
            server.kill9()
            server.start()
            kills += 1
            next_kill = now + args.kill_every * rnd.uniform(0.7, 1.3)
        if now - last_report >= 60 or args.duration < 120:
            last_report = now
            rss = server.lifetimes[-1]["rss_mib"]
            print(f"{now - t0:7.0f} s  posted {ledger.posted}  acked clicks {len(ledger.clicks)} "
                  f"conversions {len(ledger.conversions)} refunds {len(ledger.refunds)}  "
                  f"kills {kills}  rss {rss[-1] if rss else 0:.0f} MiB", flush=True)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.time() - t0
    server.sample_rss()
    server.stop()

    problems, stored = verify(binary, data, ledger)
    lifetimes = [{"ready_s": round(lt["ready_s"], 2),
                  "length_s": round((server.lifetimes[i + 1]["started"] if i + 1 < len(server.lifetimes)
                                     else t0 + elapsed) - lt["started"]),
                  "acked_events_at_start": lt["acked_at_start"],
                  "rss_start_mib": round(lt["rss_mib"][0]) if lt["rss_mib"] else None,
                  "rss_end_mib": round(lt["rss_mib"][-1]) if lt["rss_mib"] else None,
                  "rss_max_mib": round(max(lt["rss_mib"])) if lt["rss_mib"] else None}
                 for i, lt in enumerate(server.lifetimes)]
    result = {
        "duration_s": round(elapsed), "rate_target": args.rate,
        "postbacks": ledger.posted, "rate_achieved": round(ledger.posted / elapsed, 1),
        "acked_clicks": len(ledger.clicks), "acked_conversions": len(ledger.conversions),
        "acked_refunds": len(ledger.refunds), "retried_copies": ledger.retried,
        "refused_or_unanswered_then_resent": ledger.refused, "kills": kills,
        "lifetimes": lifetimes, **stored, "problems": problems,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if not args.data:
        shutil.rmtree(scratch, ignore_errors=True)
    if problems:
        raise SystemExit("SOAK FAILED: " + "; ".join(problems[:10]))
    print(f"soak passed: {ledger.posted} postbacks over {elapsed:.0f} s, {kills} kill -9 restarts, "
          "every acknowledged event stored exactly once")


if __name__ == "__main__":
    main()
