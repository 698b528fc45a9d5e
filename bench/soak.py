#!/usr/bin/env python3
"""Soak: telemetryd under a steady native UDP load for a long time, scraped every second, with a
configuration reload (SIGHUP) every 30 s. Run it as bench/soak.sh (same options).

  bench/soak.sh [--duration 600] [--rate R | --max-rate M] [--reload-every 30] [--out DIR]

The rate is R, or 80% of M, or 80% of the highest rate with under 1% loss found by a short search
first. Every second: RSS, CPU, events accepted, kernel drops, the scrape's time and size, and the
reload metrics when telemetryd has them, one CSV row (soak.csv). At the end, checks:
  - loss: every event offered and not accepted is in the kernel's drop count (datagrams x events
    per datagram);
  - logs: no error-level line (journald prefix <3>);
  - reloads: telemetryd_config_reloads_total{outcome="success"} went up once per SIGHUP, no
    failure, telemetryd_config_last_reload_successful is 1 (reported as absent when the daemon
    does not expose them);
  - RSS flat after warm-up: the growth between the first and the last tenth of the samples after
    warm-up stays under max(2 MiB, 2%).
and draws soak-rss.png (gnuplot: scripts/install-deps --bench). Exits 1 when a check fails.
"""

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as sv  # noqa: E402

WORKLOAD = "native-udp-25"
PER_DATAGRAM = sv.WORKLOADS[WORKLOAD]["per_write"]
FIELDS = ["seconds", "rss_mib", "cpu_seconds", "events_total", "events_per_second",
          "kernel_drops_total", "scrape_seconds", "scrape_bytes", "sighups_sent",
          "reloads_success", "reloads_failure", "last_reload_successful"]


def log(message):
    print(message, file=sys.stderr, flush=True)


def find_max_rate(args):
    """A short search (3 s runs) for the highest native UDP rate with under 1% loss."""
    import e2e
    search_args = argparse.Namespace(
        duration=3, repeats=1, search_steps=4, server_cpu=args.server_cpu,
        loadgen_cpu=args.loadgen_cpu, receive_buffer=args.receive_buffer, workers=args.workers,
        peer_rmem_default=None, collectd_interval=10, settle=0.5, series=args.series)
    full = [e2e.one_run("telemetryd", WORKLOAD, None, search_args)]
    runs, note = e2e.search("telemetryd", WORKLOAD, search_args, full, [])
    if not runs:
        raise SystemExit(f"soak: could not find a rate with under 1% loss: {note}")
    return runs[0]["offered_rate"]


def plot(csv_path, png_path, title, rss_max, rate_max):
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        log("soak: gnuplot is missing (scripts/install-deps --bench): no PNG")
        return False
    script = f"""set terminal pngcairo size 1000,500
set output '{png_path}'
set datafile separator ','
set key right bottom box opaque
set title '{title}'
set xlabel 'seconds'
set ylabel 'RSS (MiB)'
set y2label 'events accepted per second (millions)'
set yrange [0:{1.25 * rss_max:.1f}]
set y2range [0:{1.25 * rate_max / 1e6:.3f}]
set ytics nomirror
set y2tics
set grid
plot '{csv_path}' using 1:2 with lines lw 2 title 'RSS (MiB)', \\
     '' using 1:($5/1e6) axes x1y2 with lines lw 1 title 'events/s accepted (M)'
"""
    subprocess.run([gnuplot], input=script, text=True, check=True)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600)
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float, help="native events per second to offer")
    rate.add_argument("--max-rate", type=float, help="offer 80%% of this")
    parser.add_argument("--reload-every", type=float, default=30, help="seconds between SIGHUPs")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds left out of the RSS check (default: a fifth, at most 60, "
                             "and past the first reload)")
    parser.add_argument("--series", type=int, default=1000, help="node ids (two series each)")
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--loadgen-cpu", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--receive-buffer", type=int, default=64 << 20)
    parser.add_argument("--out", default=os.path.join(sv.BUILD, "soak"))
    args = parser.parse_args()
    if args.duration <= 0 or args.duration > 3600:
        parser.error("--duration must be between 0 and 3600 seconds")
    # The first reload grows RSS once (two engines live during the switch, and the allocator keeps
    # what the old one freed): warm-up lasts past it.
    warmup = args.warmup if args.warmup is not None else max(
        min(60.0, args.duration / 5), min(args.reload_every + 5, 0.6 * args.duration))
    os.makedirs(args.out, exist_ok=True)
    sv.pin_self(args.loadgen_cpu)

    if args.rate:
        rate = args.rate
    elif args.max_rate:
        rate = 0.8 * args.max_rate
    else:
        log("soak: searching the highest native UDP rate with under 1% loss")
        rate = 0.8 * find_max_rate(args)
    log(f"soak: {args.duration:.0f} s at {rate:,.0f} native events/s, {args.series} node ids, "
        f"SIGHUP every {args.reload_every:.0f} s, output in {args.out}")

    server = sv.Telemetryd(args.server_cpu, args.receive_buffer, args.workers)
    csv_path = os.path.join(args.out, "soak.csv")
    samples = []
    sighups = 0
    try:
        port = server.start(WORKLOAD)
        before = server.counts()
        loadgen = sv.start_loadgen(WORKLOAD, port, rate, args.duration, args.series,
                                   cpu=args.loadgen_cpu)
        start = time.monotonic()
        next_reload = args.reload_every
        previous_events = before["accepted"]
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FIELDS)
            tick = 1
            while loadgen.poll() is None and time.monotonic() - start < args.duration + 30:
                time.sleep(max(0.0, start + tick - time.monotonic()))
                tick += 1
                now = time.monotonic() - start
                if now >= next_reload:
                    os.kill(server.pid, signal.SIGHUP)
                    sighups += 1
                    next_reload += args.reload_every
                server.check_alive()
                body, seconds = sv.http_get(server.metrics_url)
                text = body.decode()
                rss, _ = sv.memory_bytes(server.pid)
                events = sv.metric(text, "telemetryd_ingest_events_total", listener="native_udp")
                row = {
                    "seconds": round(now, 3), "rss_mib": round(rss / 2**20, 2),
                    "cpu_seconds": sv.cpu_seconds(server.pid), "events_total": events,
                    "events_per_second": events - previous_events,
                    "kernel_drops_total": sv.metric(text, "telemetryd_ingest_kernel_drops_total",
                                                    listener="native_udp"),
                    "scrape_seconds": round(seconds, 4), "scrape_bytes": len(body),
                    "sighups_sent": sighups,
                    "reloads_success": sv.metric(text, "telemetryd_config_reloads_total",
                                                 outcome="success"),
                    "reloads_failure": sv.metric(text, "telemetryd_config_reloads_total",
                                                 outcome="failure"),
                    "last_reload_successful": sv.metric(
                        text, "telemetryd_config_last_reload_successful"),
                }
                previous_events = events
                samples.append(row)
                writer.writerow([row[k] if row[k] is not None else "" for k in FIELDS])
                f.flush()
        offered = sv.finish_loadgen(loadgen)
        sv.wait_idle(server.pid)
        text = server.scrape()
        after = server.counts()
        with open(os.path.join(server.dir, "log"), errors="replace") as f:
            log_lines = f.read().splitlines()
        server_log = os.path.join(args.out, "telemetryd.log")
        with open(server_log, "w") as f:
            f.write("\n".join(log_lines) + "\n")
    finally:
        server.close()

    checks = []
    accepted = after["accepted"] - before["accepted"]
    drops = after["kernel_drops"] - before["kernel_drops"]
    lost = offered["events"] - accepted
    checks.append(("loss explained by the kernel drop count", lost <= drops * PER_DATAGRAM,
                   f"offered {offered['events']:,}, accepted {accepted:,.0f}, lost {lost:,.0f}, "
                   f"kernel drops {drops:,.0f} datagrams = {drops * PER_DATAGRAM:,.0f} events"))
    errors = [line for line in log_lines if line.startswith("<3>")]
    checks.append(("no error in the log", not errors,
                   f"{len(errors)} error lines" + (f", first: {errors[0]}" if errors else "")))
    success = sv.metric(text, "telemetryd_config_reloads_total", outcome="success")
    failure = sv.metric(text, "telemetryd_config_reloads_total", outcome="failure")
    last = sv.metric(text, "telemetryd_config_last_reload_successful")
    if success is None:
        unsupported = sum(1 for line in log_lines if "SIGHUP" in line)
        checks.append(("reloads", None, f"{sighups} SIGHUPs sent; the daemon exposes no reload "
                                        f"metrics ({unsupported} log lines mention SIGHUP)"))
    else:
        checks.append(("reloads", success == sighups and not failure and (sighups == 0 or last == 1),
                       f"{sighups} SIGHUPs sent: success {success:.0f}, failure {failure or 0:.0f}, "
                       f"last successful {last}"))
    steady = [s for s in samples if s["seconds"] >= warmup]
    if len(steady) >= 10:
        tenth = max(1, len(steady) // 10)
        first = sum(s["rss_mib"] for s in steady[:tenth]) / tenth
        final = sum(s["rss_mib"] for s in steady[-tenth:]) / tenth
        limit = max(2.0, 0.02 * first)
        checks.append(("RSS flat after warm-up", final - first <= limit,
                       f"after {warmup:.0f} s warm-up: {first:.1f} MiB -> {final:.1f} MiB "
                       f"(limit +{limit:.1f} MiB); peak {max(s['rss_mib'] for s in samples):.1f}"))
    else:
        checks.append(("RSS flat after warm-up", None, "too few samples after warm-up"))

    png_path = os.path.join(args.out, "soak-rss.png")
    plotted = bool(samples) and plot(
        csv_path, png_path,
        f"telemetryd soak: {rate / 1e6:.2f} M native events/s, scrape every 1 s, SIGHUP every "
        f"{args.reload_every:.0f} s", max(s["rss_mib"] for s in samples),
        max(s["events_per_second"] or 0 for s in samples) or rate)
    scrape_times = sorted(s["scrape_seconds"] for s in samples)
    summary = {
        "rate": rate, "duration": args.duration, "offered": offered, "accepted": accepted,
        "kernel_drop_datagrams": drops, "sighups": sighups, "samples": len(samples),
        "scrape_median": scrape_times[len(scrape_times) // 2] if scrape_times else None,
        "scrape_max": scrape_times[-1] if scrape_times else None,
        "checks": [{"check": c, "passed": p, "detail": d} for c, p, d in checks],
        "csv": csv_path, "png": png_path if plotted else None, "log": server_log,
    }
    with open(os.path.join(args.out, "soak-summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for name, passed, detail in checks:
        status = "n/a " if passed is None else ("PASS" if passed else "FAIL")
        print(f"{status} {name}: {detail}")
    print(f"scrapes: {len(samples)}, median {summary['scrape_median']} s, max "
          f"{summary['scrape_max']} s; CSV {csv_path}" + (f", plot {png_path}" if plotted else ""))
    sys.exit(1 if any(p is False for _, p, _ in checks) else 0)


if __name__ == "__main__":
    main()
