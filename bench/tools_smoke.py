#!/usr/bin/env python3
"""Smoke test of the end-to-end tools (ctest label Benchmark): telemetryd-loadgen's report must
match what a receiver got, byte for byte over TCP and line for line (or counted as a kernel drop)
over UDP, with exactly the number of distinct series asked for; telemetryd-bare-recv must count
what was sent. A few seconds in all.

  BUILD_DIR=build python3 bench/tools_smoke.py
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as sv  # noqa: E402

failures = []


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message)
    if not condition:
        failures.append(message)


def varint(data, i):
    value, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b & 0x80 == 0:
            return value, i
        shift += 7


def frame_strings_and_events(frame):
    """The string table and the event count of a v1 frame (docs/wire-format.md)."""
    assert frame[:3] == b"\xd7\x1e\x01", frame[:4]
    flags = frame[3]
    _, i = varint(frame, 4)
    if flags & 1:
        _, i = varint(frame, i)
    count, i = varint(frame, i)
    strings = []
    for _ in range(count):
        n, i = varint(frame, i)
        strings.append(frame[i:i + n].decode())
        i += n
    events, _ = varint(frame, i)
    return strings, events


class TcpSink:
    """Accepts one connection and keeps every byte until the peer closes."""

    def __init__(self, slow=False):
        self.slow = slow  # small reads with pauses: the sender sees partial writes
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.data = bytearray()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        conn, _ = self.listener.accept()
        conn.settimeout(30)
        with conn:
            while chunk := conn.recv(4096 if self.slow else 1 << 20):
                self.data += chunk
                if self.slow:
                    time.sleep(0.0005)

    def close(self):
        self.thread.join(timeout=40)
        self.listener.close()
        return bytes(self.data)


def loadgen(workload, port, rate, duration, series, series_in_tag=False):
    report = sv.run_loadgen(workload, port, rate, duration, series, series_in_tag=series_in_tag)
    check(report["send_errors"] == 0 and not report["incomplete_write"],
          f"{workload}: no send error ({report['send_errors']})")
    return report


def tcp_statsd(series_in_tag):
    sink = TcpSink()
    report = loadgen("statsd-tcp-25", sink.port, 100_000, 0.5, 777, series_in_tag)
    data = sink.close()
    lines = data.decode().splitlines()
    check(len(data) == report["bytes"], f"statsd tcp: bytes {len(data)} == {report['bytes']}")
    check(len(lines) == report["events"], f"statsd tcp: lines {len(lines)} == {report['events']}")
    check(report["events"] == 25 * report["writes"] > 0, "statsd tcp: 25 lines per write")
    if series_in_tag:
        keys = {line.split("|#")[1].split(",")[0] for line in lines}
        check(all(line.startswith("app.requests:1|c|#id:") for line in lines),
              "statsd tcp: --series-in-tag keeps one name")
    else:
        keys = {line.split(":")[0] for line in lines}
    check(len(keys) == 777, f"statsd tcp{' (series in a tag)' if series_in_tag else ''}: "
                            f"{len(keys)} distinct series == 777")


def tcp_native(slow, node_per_frame=False):
    sink = TcpSink(slow)
    workload = "native-tcp-25-node" if node_per_frame else "native-tcp-25"
    report = loadgen(workload, sink.port, None if slow else 100_000, 0.5, 333)
    data = sink.close()
    name = workload + (", slow reader, full rate" if slow else "")
    check(len(data) == report["bytes"], f"{name}: bytes {len(data)} == {report['bytes']}")
    i, events, frames, nodes, nodes_per_frame = 0, 0, 0, set(), set()
    while i + 4 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        strings, count = frame_strings_and_events(data[i + 4:i + 4 + n])
        frame_nodes = {s for s in strings if s.startswith("node-")}
        nodes.update(frame_nodes)
        nodes_per_frame.add(len(frame_nodes))
        events += count
        frames += 1
        i += 4 + n
    check(i == len(data), f"{name}: the stream ends on a frame boundary")
    check(frames == report["writes"], f"{name}: frames {frames} == {report['writes']}")
    check(events == report["events"], f"{name}: events {events} == {report['events']}")
    check(len(nodes) == 333, f"{name}: {len(nodes)} distinct node ids == 333")
    want = {1} if node_per_frame else {25}
    check(nodes_per_frame == want, f"{name}: node ids per frame {nodes_per_frame} == {want}")


def udp_bare(workload, parse, send_batch=64):
    server = sv.BareLoop(cpu=None, parse=parse)
    sv.LOADGEN_SEND_BATCH = send_batch
    try:
        port = server.start(workload)
        report = loadgen(workload, port, 200_000, 0.5, 1000)
        counts = server.counts()
    finally:
        sv.LOADGEN_SEND_BATCH = 64
        server.close()
    per = sv.WORKLOADS[workload]["per_write"]
    name = f"bare loop, {workload}{' --parse' if parse else ''}, --send-batch {send_batch}"
    calls, writes = report["send_calls"], report["writes"]
    if send_batch == 1:
        check(calls == writes, f"{name}: one datagram per call ({calls} calls, {writes} datagrams)")
    else:
        check(calls * 2 <= writes, f"{name}: datagrams go out in batches ({calls} calls, "
                                   f"{writes} datagrams)")
    check(counts["datagrams"] + counts["kernel_drops"] == report["writes"],
          f"{name}: datagrams {counts['datagrams']} + kernel drops {counts['kernel_drops']} == "
          f"{report['writes']}")
    check(counts["events"] + per * counts["kernel_drops"] == report["events"],
          f"{name}: {counts['unit']} {counts['events']} == {report['events']} less drops")
    check(counts["parse_errors"] == 0, f"{name}: no parse error ({counts['parse_errors']})")
    if parse:
        check(counts["value_sum"] == counts["events"], f"{name}: every value parsed (all 1)")


def udp_bare_rejects_garbage():
    server = sv.BareLoop(cpu=None, parse=True)
    try:
        port = server.start("statsd-udp-1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"good:1|c\nno-colon\nname:x|c\nname:2\n", ("127.0.0.1", port))
        counts = server.counts()
    finally:
        server.close()
    check(counts["events"] == 4 and counts["parse_errors"] == 3,
          f"bare loop --parse: 4 lines, 3 malformed ({counts['events']}, {counts['parse_errors']})")


def e2e_paired():
    """e2e.py paired with this build as its own baseline: every burst of either daemon is
    accepted whole and costs CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "paired.json")
        run = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "e2e.py"),
                              "paired", "--quick", "--baseline", sv.BUILD, "--duration", "1",
                              "--rate", "200000", "--out", out], capture_output=True, text=True)
        check(run.returncode == 0, f"e2e.py paired ran: {run.stderr[-500:]}")
        if run.returncode != 0:
            return
        runs = json.load(open(out))["paired"]
        check(sorted(r["build"] for r in runs) == ["baseline", "baseline", "this", "this"],
              "e2e.py paired: two bursts for each build")
        check(all(r["offered"] > 0 and r["accepted"] == r["offered"] and r["cpu_seconds"] > 0
                  for r in runs), f"e2e.py paired: every burst accepted whole: {runs}")


def main():
    for binary in (sv.LOADGEN, sv.BARE_RECV):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} is missing: build first (BUILD_DIR={sv.BUILD})")
    bad = subprocess.run([sv.LOADGEN, "--rate", "-5"], capture_output=True)
    check(bad.returncode == 2, "loadgen: a bad option is refused with status 2")
    for batch in ("0", "65"):
        bad = subprocess.run([sv.LOADGEN, "--send-batch", batch], capture_output=True)
        check(bad.returncode == 2, f"loadgen: --send-batch {batch} is refused with status 2")
    tcp_statsd(series_in_tag=False)
    tcp_statsd(series_in_tag=True)
    tcp_native(slow=False)
    tcp_native(slow=True)
    tcp_native(slow=False, node_per_frame=True)
    udp_bare("statsd-udp-25-tags", parse=True)
    udp_bare("statsd-udp-1", parse=False)
    udp_bare("native-udp-25", parse=False)
    udp_bare("statsd-udp-25", parse=True, send_batch=1)
    udp_bare_rejects_garbage()
    e2e_paired()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
