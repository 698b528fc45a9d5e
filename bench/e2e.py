#!/usr/bin/env python3
"""End-to-end benchmarks: telemetryd beside the bare receive loop, the reference StatsD daemon and
collectd's statsd plugin, on the same loads, server and generator pinned to different cores (the
server to core 1 unless --server-cpu says otherwise, e.g. 0-1 to let it use both).

  bench/e2e.py throughput [--modes full,fixed,search] [--workloads ...] [--servers ...]
  bench/e2e.py memory     [--series-counts 100000,1000000] [--peer-series-counts 100000]
  bench/e2e.py scrape     [--series-counts 10000,100000,1000000] [--ingest-rate 1000000]
                          [--gzip] [--scrape-workload native-udp-25|statsd-udp-25]
  bench/e2e.py all        (the three in turn)
  bench/e2e.py paired     --baseline OTHER_BUILD_DIR [--baseline-without-unit-env]
                          [--workloads native-udp-25] [--rate 4000000] [--rounds 8]
                          [--series 1000] [--open-connection]
  add --quick to any of them for a smoke run (short runs, one repeat, small series counts).

Each run starts a fresh server (taskset -c SERVER_CPU), offers a load with telemetryd-loadgen
(pinned to LOADGEN_CPU) for DURATION seconds, waits until the server has worked through its
backlog, and reads what it accepted. Loss is offered minus accepted; CPU is the server's
utime+stime over the run (/proc/PID/stat) divided by what it accepted; RSS is VmRSS at the end.
Tables of medians (markdown, ready for bench/README.md) go to stdout, every run to --out (JSON).

`paired` compares two builds of telemetryd on a machine whose speed drifts: both daemons run at
once on SERVER_CPU, and the load goes to one, then the other, in alternating bursts of DURATION
seconds (the order swapped each round), so that each pair of bursts sees the same machine. It
reports each build's CPU per accepted event and the median of the paired differences.
`--open-connection` keeps a native TCP connection open and quiet to each daemon meanwhile (the idle
timeout closes it after 60 s), as an application that sends over TCP would.

Python 3 standard library only; run from anywhere after a build (BUILD_DIR, default build/).
"""

import argparse
import datetime
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as sv  # noqa: E402

LOSS_LIMIT = 0.01  # "sustained": under 1% loss


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# One run.


def one_run(server_name, workload, rate, args, series=None):
    """A fresh server, one load of args.duration seconds at `rate` (None: the generator's full
    rate). Returns a dict of what was offered, accepted and spent."""
    series = series or args.series
    server = sv.make_server(server_name, args.server_cpu, args.receive_buffer, args.workers,
                            rmem_default=args.peer_rmem_default,
                            collectd_interval=args.collectd_interval)
    try:
        port = server.start(workload)
        time.sleep(args.settle)
        cpu_before = sv.cpu_seconds(server.pid)
        offered = sv.run_loadgen(workload, port, rate, args.duration, series, cpu=args.loadgen_cpu)
        drain_seconds = sv.wait_idle(server.pid)
        cpu_after = sv.cpu_seconds(server.pid)
        rss, hwm = sv.memory_bytes(server.pid)
        counts = server.counts()
    finally:
        server.close()
    accepted = counts["accepted"]
    events = offered["events"]
    cpu = cpu_after - cpu_before
    result = {
        "server": server_name, "workload": workload, "target_rate": rate or 0, "series": series,
        "offered": events, "offered_rate": offered["rate"], "accepted": accepted,
        "accepted_rate": accepted / offered["seconds"] if offered["seconds"] else 0,
        "loss": (events - accepted) / events if events else 0.0,
        "cpu_seconds": cpu, "ns_per_event": cpu * 1e9 / accepted if accepted else None,
        "rss_bytes": rss, "hwm_bytes": hwm, "drain_seconds": drain_seconds,
        "server_counts": counts, "loadgen": offered,
    }
    log(f"  {server_name:<11} {workload:<19} target {fmt_rate(rate)}: offered "
        f"{fmt_rate(offered['rate'])}, accepted {fmt_rate(result['accepted_rate'])}, loss "
        f"{fmt_pct(result['loss'])}, {fmt_ns(result['ns_per_event'])}/event, RSS "
        f"{rss / 2**20:.0f} MiB, send errors {offered['send_errors']}")
    return result


def probe_accepts(server_name, workload, args):
    """Peers on tagged workloads: does the server accept these lines at all? (collectd rejects
    DogStatsD tags and logs every line it rejects: a full run would only fill its log.)"""
    server = sv.make_server(server_name, args.server_cpu, args.receive_buffer, args.workers,
                            collectd_interval=1)
    try:
        port = server.start(workload)
        offered = sv.run_loadgen(workload, port, 10_000, 0.3, args.series, cpu=args.loadgen_cpu)
        sv.wait_idle(server.pid)
        accepted = server.counts()["accepted"]
    finally:
        server.close()
    return accepted >= 0.5 * offered["events"], accepted, offered["events"]


# ---------------------------------------------------------------------------------------------
# Formatting.


def fmt_rate(rate):
    if not rate:
        return "max"
    if rate >= 999_500:
        return f"{rate / 1e6:.2f} M/s"
    return f"{rate / 1e3:.0f} k/s"


def fmt_pct(x):
    return "-" if x is None else f"{100 * x:.2f}%"


def fmt_ns(ns):
    return "-" if ns is None else f"{ns:.0f} ns"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs, mode, note=""):
    """One table row from the repeats of one (server, workload, mode)."""
    return {
        "server": runs[0]["server"], "workload": runs[0]["workload"], "mode": mode,
        "target_rate": runs[0]["target_rate"], "runs": len(runs), "note": note,
        "offered_rate": median([r["offered_rate"] for r in runs]),
        "accepted_rate": median([r["accepted_rate"] for r in runs]),
        "loss": median([r["loss"] for r in runs]),
        "ns_per_event": median([r["ns_per_event"] for r in runs]),
        "ns_range": [min((r["ns_per_event"] or 0) for r in runs),
                     max((r["ns_per_event"] or 0) for r in runs)],
        "rss_bytes": median([r["rss_bytes"] for r in runs]),
    }


def throughput_table(rows):
    out = ["| workload | server | mode | offered | accepted | loss | CPU per line/event | RSS | runs |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r.get("skipped"):
            out.append(f"| {r['workload']} | {r['server']} | {r['mode']} | - | - | - | - | - | "
                       f"{r['skipped']} |")
            continue
        mode = r["mode"] + (f" {fmt_rate(r['target_rate'])}" if r["mode"] == "fixed" else "")
        note = f" ({r['note']})" if r["note"] else ""
        out.append(
            f"| {r['workload']} | {r['server']} | {mode} | {fmt_rate(r['offered_rate'])} | "
            f"{fmt_rate(r['accepted_rate'])} | {fmt_pct(r['loss'])} | "
            f"{fmt_ns(r['ns_per_event'])} ({r['ns_range'][0]:.0f}-{r['ns_range'][1]:.0f}) | "
            f"{(r['rss_bytes'] or 0) / 2**20:.0f} MiB | {r['runs']}{note} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Throughput: full rate, a fixed rate, and the highest rate with under 1% loss.


def repeats(server_name, workload, rate, args):
    return [one_run(server_name, workload, rate, args) for _ in range(args.repeats)]


def search(server_name, workload, args, full_runs, probes):
    """The highest offered rate with under 1% loss. Starts from the full-rate runs: if they pass,
    that is the answer. Otherwise bisects between 0 and the full rate, starting just under what
    the server accepted at full rate, for at most args.search_steps probes of one run each, then
    repeats the best passing rate. The probes are appended to `probes`."""
    full = summarize(full_runs, "full")
    if full["loss"] < LOSS_LIMIT:
        return full_runs, "the generator's full rate"
    low, high = 0.0, full["offered_rate"]
    candidate = min(0.95 * full["accepted_rate"], 0.9 * high)
    for _ in range(args.search_steps):
        run = one_run(server_name, workload, candidate, args)
        probes.append(dict(run, mode="search probe"))
        if run["loss"] < LOSS_LIMIT and run["offered_rate"] >= 0.97 * candidate:
            low = candidate
        else:
            high = candidate
        candidate = (low + high) / 2 if low > 0 else candidate / 2
    if low == 0:
        return [], f"no rate passed (lowest probed {fmt_rate(high)})"
    return repeats(server_name, workload, low, args), f"search in {args.search_steps} steps"


def throughput(args):
    rows, runs = [], []
    for workload in args.workloads:
        for server_name in args.servers:
            if not sv.supports(server_name, workload):
                continue
            log(f"{workload} on {server_name}")
            if server_name in sv.PEERS and sv.WORKLOADS[workload]["tags"]:
                ok, accepted, offered = probe_accepts(server_name, workload, args)
                if not ok:
                    for mode in args.modes:
                        rows.append({"server": server_name, "workload": workload, "mode": mode,
                                     "skipped": f"rejects tagged lines ({accepted:.0f} of "
                                                f"{offered} accepted)"})
                    continue
            full_runs = None
            for mode in args.modes:
                if mode == "full" or (mode == "search" and full_runs is None):
                    full_runs = full_runs or repeats(server_name, workload, None, args)
                if mode == "full":
                    these, note = full_runs, ""
                elif mode == "fixed":
                    these, note = repeats(server_name, workload, args.fixed_rate, args), ""
                else:
                    tcp = sv.WORKLOADS[workload]["transport"] == "tcp"
                    these, note = (full_runs, "TCP: no loss, the rate is the sender's") if tcp \
                        else search(server_name, workload, args, full_runs, runs)
                runs += [dict(r, mode=mode) for r in these]
                if these:
                    rows.append(summarize(these, mode, note))
                else:
                    rows.append({"server": server_name, "workload": workload, "mode": mode,
                                 "skipped": note})
    return {"throughput": rows, "throughput_runs": runs}, throughput_table(rows)


# ---------------------------------------------------------------------------------------------
# Memory per series: RSS growth divided by the series held.


def memory_one(server_name, series, args, series_in_tag=False):
    workload = "statsd-udp-25"
    server = sv.make_server(server_name, args.server_cpu, args.receive_buffer, args.workers,
                            for_memory=True, rmem_default=args.peer_rmem_default)
    peer = server_name in sv.PEERS
    rate = args.peer_memory_rate if peer else args.memory_rate
    # Every series twice; long enough for a slow server to see them all.
    duration = max(2.0, math.ceil(2 * series / rate))
    try:
        port = server.start(workload)
        time.sleep(args.settle)
        rss_before, _ = sv.memory_bytes(server.pid)
        offered = sv.run_loadgen(workload, port, rate, duration, series, cpu=args.loadgen_cpu,
                                 series_in_tag=series_in_tag)
        sv.wait_idle(server.pid)
        time.sleep(2)  # telemetryd moves its shards' series to the store once a second
        sv.wait_idle(server.pid)
        if isinstance(server, sv.Collectd):
            held = server.series()  # after its next dispatch; the cache is part of its memory
            rss_after, hwm = sv.memory_bytes(server.pid)
        else:
            rss_after, hwm = sv.memory_bytes(server.pid)  # before a scrape or dump allocates
            held = server.series()
        accepted = server.counts()["accepted"] if not isinstance(server, sv.Collectd) else None
    finally:
        server.close()
    name = server_name + (" (series in a tag)" if series_in_tag else "")
    row = {"server": name, "series_target": series, "series_held": held,
           "rss_before": rss_before, "rss_after": rss_after, "hwm": hwm,
           "bytes_per_series": (rss_after - rss_before) / held if held else None,
           "offered": offered["events"], "accepted": accepted, "rate": rate}
    log(f"  {name}: {held} series held, RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} "
        f"MiB, {row['bytes_per_series'] or 0:.0f} bytes per series")
    return row


def memory(args, series_counts, peer_series_counts):
    rows = []
    for series in series_counts:
        for server_name in args.servers:
            if server_name.startswith("bare"):
                continue
            if server_name != "telemetryd" and series not in peer_series_counts:
                continue
            log(f"memory: {server_name} at {series} series")
            rows.append(memory_one(server_name, series, args))
            if server_name == "telemetryd":
                rows.append(memory_one(server_name, series, args, series_in_tag=True))
    out = ["| server | series offered | series held | RSS before | RSS after | bytes per series |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['server']} | {r['series_target']:,} | {r['series_held'] or 0:,.0f} | "
                   f"{r['rss_before'] / 2**20:.1f} MiB | {r['rss_after'] / 2**20:.1f} MiB | "
                   f"{r['bytes_per_series'] or 0:.0f} |")
    return {"memory": rows}, "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Scrape time and size while ingesting (telemetryd).


def scrape_one(series, args):
    workload = args.scrape_workload
    # The VSR catalog keeps two series per node id; a StatsD name (no tags) is one series.
    nodes = max(1, series // 2) if workload.startswith("native") else series
    server = sv.Telemetryd(args.server_cpu, args.receive_buffer, args.workers)
    try:
        port = server.start(workload)
        create_rate = 500_000
        sv.run_loadgen(workload, port, create_rate, max(1.0, math.ceil(2 * nodes / create_rate)),
                       nodes, cpu=args.loadgen_cpu)
        sv.wait_idle(server.pid)
        held = server.series()
        before = server.counts()
        loadgen = sv.start_loadgen(workload, port, args.ingest_rate, args.duration, nodes,
                                   cpu=args.loadgen_cpu)
        scrapes = []
        start = time.monotonic()
        while loadgen.poll() is None and time.monotonic() - start < args.duration + 30:
            seconds, size = sv.timed_scrape(server.metrics_url, gzip=args.gzip)
            scrapes.append((seconds, size))
            time.sleep(max(0.0, 1.0 - seconds))
        offered = sv.finish_loadgen(loadgen)
        sv.wait_idle(server.pid)
        after = server.counts()
        rss, hwm = sv.memory_bytes(server.pid)
    finally:
        server.close()
    received = after["accepted"] - before["accepted"]
    drops = after["kernel_drops"] - before["kernel_drops"]
    times = sorted(s for s, _ in scrapes)
    row = {"series_target": series, "series_held": held, "ingest_rate": offered["rate"],
           "offered": offered["events"], "received": received,
           "lost": offered["events"] - received, "kernel_drop_datagrams": drops,
           "scrapes": len(scrapes), "scrape_median": statistics.median(times) if times else None,
           "scrape_max": times[-1] if times else None,
           "scrape_bytes": scrapes[-1][1] if scrapes else None, "gzip": args.gzip,
           "rss": rss, "hwm": hwm}
    log(f"  {held:.0f} series: scrape median {row['scrape_median'] or 0:.3f} s, max "
        f"{row['scrape_max'] or 0:.3f} s, {row['scrape_bytes'] or 0} bytes; lost {row['lost']} "
        f"of {row['offered']} (kernel drops {drops:.0f} datagrams)")
    return row


def scrape(args, series_counts):
    rows = []
    for series in series_counts:
        log(f"scrape: telemetryd at {series} series ({args.scrape_workload}), ingesting "
            f"{fmt_rate(args.ingest_rate)}")
        rows.append(scrape_one(series, args))
    out = ["| series held | ingest offered | lost | scrape median / max | response | RSS |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['series_held'] or 0:,.0f} | {fmt_rate(r['ingest_rate'])} for "
                   f"{r['offered']:,} events | {r['lost']:,.0f} ({r['kernel_drop_datagrams']:.0f} "
                   f"datagrams in the kernel drop count) | {r['scrape_median'] or 0:.3f} / "
                   f"{r['scrape_max'] or 0:.3f} s ({r['scrapes']} scrapes) | "
                   f"{(r['scrape_bytes'] or 0) / 1e6:.1f} MB{' gzip' if r['gzip'] else ''} | "
                   f"{r['rss'] / 2**20:.0f} MiB |")
    return {"scrape": rows}, "\n".join(out)


# ---------------------------------------------------------------------------------------------


def paired(args):
    """Baseline build against this one, same load, alternating bursts (see the module doc)."""
    baseline_binary = os.path.join(os.path.abspath(args.baseline), "daemon", "telemetryd")
    if not os.path.exists(baseline_binary):
        raise SystemExit(f"{baseline_binary} is missing: --baseline is another build directory")
    rate = None if args.rate == 0 else args.rate
    rows, runs = [], []
    for workload in args.workloads:
        builds = {
            "baseline": sv.Telemetryd(args.server_cpu, args.receive_buffer, args.workers,
                                      binary=baseline_binary,
                                      environment={} if args.baseline_without_unit_env else None),
            "this": sv.Telemetryd(args.server_cpu, args.receive_buffer, args.workers),
        }
        ports = {}
        connections = []
        try:
            for name, server in builds.items():
                ports[name] = server.start(workload)
                if args.open_connection:
                    # An application's connection, open and quiet beside the load: its worker
                    # serves a connection as well as the load's socket.
                    connections.append(socket.create_connection(
                        ("127.0.0.1", server.ports["native_tcp"])))
            for name, server in builds.items():  # the series exist before the first burst
                sv.run_loadgen(workload, ports[name], 500_000,
                               max(1.0, 2 * args.series / 500_000), args.series,
                               cpu=args.loadgen_cpu)
                sv.wait_idle(server.pid)
            cpu = {"baseline": [], "this": []}
            for round_ in range(args.rounds):
                order = ("baseline", "this") if round_ % 2 == 0 else ("this", "baseline")
                for name in order:
                    server = builds[name]
                    accepted_before = server.counts()["accepted"]
                    cpu_before = sv.cpu_seconds(server.pid)
                    offered = sv.run_loadgen(workload, ports[name], rate, args.duration,
                                             args.series, cpu=args.loadgen_cpu)
                    sv.wait_idle(server.pid)
                    accepted = server.counts()["accepted"] - accepted_before
                    spent = sv.cpu_seconds(server.pid) - cpu_before
                    n = offered.get("events") or offered.get("lines") or 0
                    cpu[name].append(1e9 * spent / accepted if accepted else float("nan"))
                    runs.append({"workload": workload, "build": name, "round": round_,
                                 "offered": n, "accepted": accepted, "cpu_seconds": spent})
                    log(f"{workload} round {round_} {name}: {cpu[name][-1]:.0f} ns per event, "
                        f"loss {fmt_pct(1 - accepted / n) if n else '-'}")
        finally:
            for connection in connections:
                connection.close()
            for server in builds.values():
                server.close()
        diffs = [b - a for a, b in zip(cpu["baseline"], cpu["this"])]
        rows.append((workload, cpu["baseline"], cpu["this"], diffs))

    def spread(values):
        return f"{median(values):.0f} ns ({min(values):.0f} to {max(values):.0f})"
    lines = ["| workload | rate | loadgen --series | baseline: CPU per event | this build | paired "
             "difference | rounds |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for workload, base, this, diffs in rows:
        lines.append(f"| {workload} | {fmt_rate(rate) if rate else 'full'} | {args.series:,} | "
                     f"{spread(base)} | {spread(this)} | {spread(diffs)} | {len(diffs)} |")
    return {"baseline": baseline_binary, "paired": runs}, "\n".join(lines)


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 2**20
    try:
        commit = subprocess.run(["git", "-C", sv.REPO, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return (f"{datetime.date.today().isoformat()}, {os.cpu_count()} x {model}, {mem} GiB, "
            f"Linux {platform.release()}, commit {commit}")


def csv_list(kind):
    def parse(text):
        items = [t for t in text.split(",") if t]
        return [int(float(t)) for t in items] if kind is int else items
    return parse


def main():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true",
                        help="smoke run: 2 s runs, one repeat, 2 search steps, 10,000 series")
    common.add_argument("--duration", type=float, default=10, help="seconds of load per run")
    common.add_argument("--repeats", type=int, default=3)
    common.add_argument("--server-cpu", default="1",
                        help="core(s) for the server, as taskset -c takes them: 1, 0-1")
    common.add_argument("--loadgen-cpu", type=int, default=0)
    common.add_argument("--workers", type=int, default=1, help="telemetryd ingest workers")
    common.add_argument("--receive-buffer", type=int, default=64 << 20,
                        help="telemetryd and bare loop receive buffer; npm statsd gets up to "
                             "net.core.rmem_max")
    common.add_argument("--peer-rmem-default", type=int, default=None,
                        help="raise net.core.rmem_default to this while collectd opens its socket "
                             "(it has no buffer option); put back at once")
    common.add_argument("--collectd-interval", type=float, default=10,
                        help="collectd's Interval in throughput runs (its default; each run waits "
                             "for the next dispatch to read the counters)")
    common.add_argument("--without-unit-env", action="store_true",
                        help="run telemetryd without its systemd unit's environment (huge pages)")
    common.add_argument("--settle", type=float, default=0.5)
    common.add_argument("--series", type=int, default=1000, help="series in throughput runs")
    common.add_argument("--send-batch", type=int, default=64,
                        help="datagrams (or TCP writes) per system call of the load generator, "
                             "1 to 64; 1 sends as a StatsD client library does")
    common.add_argument("--servers", type=csv_list(str), default=sv.SERVERS)
    common.add_argument("--out", default=os.path.join(sv.BUILD, "e2e-results.json"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("throughput", "memory", "scrape", "all", "paired"):
        p = sub.add_parser(name, parents=[common])
        if name == "paired":
            p.add_argument("--baseline", required=True,
                           help="another build directory (its daemon/telemetryd)")
            p.add_argument("--baseline-without-unit-env", action="store_true",
                           help="run the baseline without the systemd unit's environment (a "
                                "build from before the unit set one)")
            p.add_argument("--workloads", type=csv_list(str), default=["native-udp-25"])
            p.add_argument("--rate", type=float, default=4_000_000, help="0: full rate")
            p.add_argument("--rounds", type=int, default=8)
            p.add_argument("--open-connection", action="store_true",
                           help="keep a native TCP connection open to each daemon meanwhile")
        if name in ("throughput", "all"):
            p.add_argument("--workloads", type=csv_list(str), default=sv.DEFAULT_WORKLOADS)
            p.add_argument("--modes", type=csv_list(str), default=["full", "fixed", "search"])
            p.add_argument("--fixed-rate", type=float, default=4_000_000)
            p.add_argument("--search-steps", type=int, default=6)
        if name in ("memory", "all"):
            p.add_argument("--memory-series-counts", type=csv_list(int), default=None,
                           dest="memory_series")
            p.add_argument("--peer-series-counts", type=csv_list(int), default=None)
            p.add_argument("--memory-rate", type=float, default=500_000)
            p.add_argument("--peer-memory-rate", type=float, default=100_000)
        if name in ("scrape", "all"):
            p.add_argument("--scrape-series-counts", type=csv_list(int), default=None,
                           dest="scrape_series")
            p.add_argument("--ingest-rate", type=float, default=1_000_000)
            p.add_argument("--gzip", action="store_true")
            p.add_argument("--scrape-workload", default="native-udp-25",
                           choices=["native-udp-25", "statsd-udp-25"],
                           help="native: series in a tag; statsd: one StatsD name per series")
        if name in ("memory", "scrape"):
            p.add_argument("--series-counts", type=csv_list(int), default=None)
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 2)
        args.repeats = 1
        if hasattr(args, "search_steps"):
            args.search_steps = min(args.search_steps, 2)
    for name in args.servers:
        if name not in sv.SERVERS:
            parser.error(f"unknown server {name} (known: {', '.join(sv.SERVERS)})")
    for name in getattr(args, "workloads", []):
        if name not in sv.WORKLOADS:
            parser.error(f"unknown workload {name} (known: {', '.join(sv.WORKLOADS)})")

    if not 1 <= args.send_batch <= 64:
        parser.error("--send-batch takes 1 to 64")
    sv.USE_UNIT_ENVIRONMENT = not args.without_unit_env
    sv.LOADGEN_SEND_BATCH = args.send_batch
    sv.pin_self(args.loadgen_cpu)  # scrapes and admin queries share the generator's core
    results = {"machine": machine(), "command": " ".join(sys.argv[1:]), "quick": args.quick}
    tables = []
    quick_series = [10_000]
    if args.command in ("throughput", "all"):
        data, table = throughput(args)
        results.update(data)
        tables.append(("Throughput", table))
    if args.command in ("memory", "all"):
        counts = (getattr(args, "series_counts", None) or args.memory_series or
                  (quick_series if args.quick else [100_000, 1_000_000]))
        peer_counts = args.peer_series_counts or (quick_series if args.quick else [100_000])
        data, table = memory(args, counts, peer_counts)
        results.update(data)
        tables.append(("Memory per series", table))
    if args.command == "paired":
        if args.quick:
            args.rounds = 2
        data, table = paired(args)
        results.update(data)
        tables.append(("Paired CPU per event (this build against the baseline)", table))
    if args.command in ("scrape", "all"):
        counts = (getattr(args, "series_counts", None) or args.scrape_series or
                  (quick_series if args.quick else [10_000, 100_000, 1_000_000]))
        data, table = scrape(args, counts)
        results.update(data)
        tables.append(("Scrapes while ingesting", table))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"Machine: {results['machine']}" + (" (--quick: smoke figures only)" if args.quick else ""))
    for title, table in tables:
        print(f"\n{title}:\n\n{table}")
    print(f"\nEvery run: {args.out}")


if __name__ == "__main__":
    main()
