"""The servers the end-to-end benchmarks drive, and what they need to measure them.

Each server starts on loopback ports in a temporary directory of its own, pinned to one core with
taskset, and says how much it accepted: telemetryd from its self-metrics, the bare receive loop from
its final report, the reference StatsD daemon (npm statsd) from its admin interface, collectd's
statsd plugin from the counter values its csv plugin writes. Every process started here is
remembered and killed by pid when the program exits, however it exits.

Python 3 standard library only.
"""

import atexit
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(os.environ.get("BUILD_DIR", os.path.join(REPO, "build")))
LOADGEN = os.path.join(BUILD, "bench", "telemetryd-loadgen")
LOADGEN_SEND_BATCH = 64  # telemetryd-loadgen --send-batch: datagrams per system call
BARE_RECV = os.path.join(BUILD, "bench", "telemetryd-bare-recv")
TELEMETRYD = os.path.join(BUILD, "daemon", "telemetryd")
STATSD_JS = os.path.join(BUILD, "npm", "node_modules", "statsd", "stats.js")
COLLECTD = shutil.which("collectd") or "/usr/sbin/collectd"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RMEM_DEFAULT = "/proc/sys/net/core/rmem_default"

# ---------------------------------------------------------------------------------------------
# Processes: started here, killed by pid at exit.

_children = []


def _kill_children():
    for proc in list(_children):
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            except ProcessLookupError:
                pass
    _children.clear()


def _on_signal(signo, _frame):
    _kill_children()
    sys.exit(128 + signo)


atexit.register(_kill_children)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def spawn(args, cpu=None, **kwargs):
    """Starts args (under taskset when cpu is given) and remembers it for the exit handler."""
    if cpu is not None:
        args = ["taskset", "-c", str(cpu)] + list(args)
    proc = subprocess.Popen(args, **kwargs)
    _children.append(proc)
    return proc


def stop(proc, timeout=10):
    """SIGTERM, then SIGKILL after timeout; returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def pin_self(cpu):
    """Pins this process (the harness: scrapes, admin queries) to the generator's core."""
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})


def free_port(kind):
    """A port the kernel hands out on 127.0.0.1, released for the child to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_port_bound(port):
    """True when some socket is bound to 127.0.0.1:port (UDP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# /proc: CPU time and memory of a process (all its threads).


def cpu_seconds(pid):
    """utime + stime of the whole process, in seconds (resolution: one clock tick)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5); the split above starts at field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_bytes(pid):
    """(VmRSS, VmHWM) in bytes."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def wait_idle(pid, busy_fraction=0.05, window=0.5, timeout=30.0):
    """Waits until the process uses less than busy_fraction of a core over a window: the backlog
    in its socket buffers is processed. Returns the seconds waited."""
    start = time.monotonic()
    last = cpu_seconds(pid)
    while time.monotonic() - start < timeout:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - last <= busy_fraction * window:
            return time.monotonic() - start
        last = now
    return time.monotonic() - start


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# Prometheus text and HTTP.


def http_get(url, gzip=False, timeout=60):
    """(body bytes, seconds) of one GET."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip else {})
    start = time.monotonic()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return body, time.monotonic() - start


def timed_scrape(url, gzip=False, timeout=60):
    """(seconds, response bytes) of one GET by curl, which reads the body as fast as Prometheus
    does; Python's own client takes about 0.4 s more to read a 137 MB body (bench/README.md)."""
    args = ["curl", "--silent", "--show-error", "--fail", "--max-time", str(timeout),
            "--output", "/dev/null", "--write-out", "%{time_total} %{size_download}"]
    if gzip:
        args += ["--header", "Accept-Encoding: gzip"]
    done = subprocess.run(args + [url], capture_output=True, text=True, timeout=timeout + 5)
    if done.returncode != 0:
        raise RuntimeError(f"curl {url}: {done.stderr.strip()} (exit {done.returncode})")
    seconds, size = done.stdout.split()
    return float(seconds), int(size)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`; None when there is none."""
    total = None
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        if any(w not in (m.group(2) or "") for w in wanted):
            continue
        total = (total or 0.0) + float(m.group(3))
    return total


# ---------------------------------------------------------------------------------------------
# Workloads.

# name -> loadgen options. Series: StatsD counter names; native: VSR node ids (the catalog keeps a
# counter and a sum per node id).
WORKLOADS = {
    "native-udp-25": {"protocol": "native", "transport": "udp", "per_write": 25, "tags": False},
    "native-tcp-25": {"protocol": "native", "transport": "tcp", "per_write": 25, "tags": False},
    # Each frame one node's (telemetryd-loadgen --node-per-frame), as a node's own reporter sends.
    "native-udp-25-node": {"protocol": "native", "transport": "udp", "per_write": 25, "tags": False,
                           "node_per_frame": True},
    "native-tcp-25-node": {"protocol": "native", "transport": "tcp", "per_write": 25, "tags": False,
                           "node_per_frame": True},
    "statsd-udp-1": {"protocol": "statsd", "transport": "udp", "per_write": 1, "tags": False},
    "statsd-udp-25": {"protocol": "statsd", "transport": "udp", "per_write": 25, "tags": False},
    "statsd-udp-1-tags": {"protocol": "statsd", "transport": "udp", "per_write": 1, "tags": True},
    "statsd-udp-25-tags": {"protocol": "statsd", "transport": "udp", "per_write": 25, "tags": True},
    "statsd-tcp-25": {"protocol": "statsd", "transport": "tcp", "per_write": 25, "tags": False},
}
DEFAULT_WORKLOADS = [w for w in WORKLOADS if w != "statsd-tcp-25"]


def start_loadgen(workload, port, rate, duration, series=1000, cpu=None, series_in_tag=False):
    """Starts telemetryd-loadgen; finish_loadgen() waits for its report. rate None or 0: max."""
    w = WORKLOADS[workload]
    args = [LOADGEN, "--port", str(port), "--protocol", w["protocol"], "--transport", w["transport"],
            "--rate", "max" if not rate else str(int(rate)), "--duration", str(duration),
            "--per-write", str(w["per_write"]), "--series", str(series),
            "--send-batch", str(LOADGEN_SEND_BATCH)]
    if not w["tags"]:
        args.append("--no-tags")
    if series_in_tag:
        args.append("--series-in-tag")
    if w.get("node_per_frame"):
        args.append("--node-per-frame")
    if cpu is not None:
        args += ["--cpu", str(cpu)]
    proc = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.bench_duration = duration
    return proc


def finish_loadgen(proc):
    """The report of a loadgen started by start_loadgen (a dict, see bench/loadgen.cc)."""
    try:
        out, err = proc.communicate(timeout=proc.bench_duration + 30)
    finally:
        stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"telemetryd-loadgen failed ({proc.returncode}): {err.strip()}")
    return json.loads(out.strip().splitlines()[-1])


def run_loadgen(*args, **kwargs):
    """Runs telemetryd-loadgen to the end and returns its report."""
    return finish_loadgen(start_loadgen(*args, **kwargs))


# ---------------------------------------------------------------------------------------------
# Servers. Each: start(workload) -> port; pid; counts() -> dict with "accepted" (events or lines
# since start) and what else it knows; series() -> series held or None; close().


class Server:
    name = "?"

    def __init__(self, cpu=1):
        self.cpu = cpu
        self.dir = tempfile.mkdtemp(prefix=f"telemetryd-bench-{self.name}-")
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, lines=20):
        try:
            with open(os.path.join(self.dir, "log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def close(self):
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def telemetryd_config(receive_buffer=64 << 20, workers=1, max_series=2_000_000):
    """config/telemetryd.yaml with every port 0 (the log says which was chosen) and the limits
    raised for a million series."""
    return f"""# Generated by bench/servers.py from config/telemetryd.yaml: loopback, ports chosen by the
# kernel, limits raised for benchmarks.
listeners:
  workers: {workers}
  native:
    udp: {{address: 127.0.0.1, port: 0, receive_buffer_bytes: {receive_buffer}}}
    tcp: {{address: 127.0.0.1, port: 0}}
  statsd:
    udp: {{address: 127.0.0.1, port: 0, receive_buffer_bytes: {receive_buffer}}}
    tcp: {{address: 127.0.0.1, port: 0}}
aggregation:
  max_series_per_metric: {max_series}
  max_series_total: {2 * max_series}
statsd:
  max_metrics: {max_series}
prometheus:
  address: 127.0.0.1
  port: 0
logging:
  level: info
  print_events: false
"""


# False: telemetryd runs without its unit's environment (e2e.py --without-unit-env).
USE_UNIT_ENVIRONMENT = True


def unit_environment():
    """The Environment= assignments of packaging/telemetryd.service: telemetryd runs here as the
    packaged service runs it (unless USE_UNIT_ENVIRONMENT is False)."""
    env = {}
    if not USE_UNIT_ENVIRONMENT:
        return env
    with open(os.path.join(REPO, "packaging", "telemetryd.service")) as f:
        for line in f:
            m = re.match(r"Environment=([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.strip())
            if m:
                env[m.group(1)] = m.group(2)
    return env


class Telemetryd(Server):
    name = "telemetryd"

    def __init__(self, cpu=1, receive_buffer=64 << 20, workers=1, max_series=2_000_000,
                 binary=None, environment=None):
        """binary: another build's telemetryd (default: this build's); environment: instead of
        the unit's (unit_environment())."""
        super().__init__(cpu)
        self.binary = binary or TELEMETRYD
        self.environment = environment
        self.config_path = os.path.join(self.dir, "telemetryd.yaml")
        with open(self.config_path, "w") as f:
            f.write(telemetryd_config(receive_buffer, workers, max_series))
        self.ports = {}
        self.metrics_url = None
        self.listener = None

    def start(self, workload=None):
        log = open(os.path.join(self.dir, "log"), "w")
        environment = unit_environment() if self.environment is None else self.environment
        self.proc = spawn([self.binary, "--config", self.config_path], cpu=self.cpu,
                          stdout=subprocess.DEVNULL, stderr=log,
                          env=dict(os.environ, **environment))
        log.close()

        def ready():
            self.check_alive()
            text = self.log_tail(200)
            return " ready" in text and text

        text = wait_for(ready, 15, "telemetryd to be ready")
        for name, port in re.findall(r"listening: (\w+) on [\d.]+:(\d+)", text):
            self.ports[name] = int(port)
        self.metrics_url = "http://127.0.0.1:%s/metrics" % re.search(
            r"prometheus endpoint on [\d.]+:(\d+)/metrics", text).group(1)
        if workload is None:
            return None
        w = WORKLOADS[workload]
        self.listener = f"{w['protocol']}_{w['transport']}"
        return self.ports[self.listener]

    def scrape(self):
        body, _ = http_get(self.metrics_url)
        return body.decode()

    def counts(self):
        text = self.scrape()
        dropped = metric(text, "telemetryd_aggregate_dropped_total") or 0
        return {
            "accepted": metric(text, "telemetryd_ingest_events_total", listener=self.listener) or 0,
            "kernel_drops": metric(text, "telemetryd_ingest_kernel_drops_total",
                                   listener=self.listener) or 0,
            "rejected": metric(text, "telemetryd_ingest_rejected_total", listener=self.listener) or 0,
            "aggregate_updates": metric(text, "telemetryd_aggregate_updates_total") or 0,
            "aggregate_dropped": dropped,
        }

    def series(self):
        return metric(self.scrape(), "telemetryd_series")


class BareLoop(Server):
    """telemetryd-bare-recv: the physical limit. UDP only."""

    name = "bare"

    def __init__(self, cpu=1, receive_buffer=64 << 20, parse=False):
        super().__init__(cpu)
        self.receive_buffer = receive_buffer
        self.parse = parse
        if parse:
            self.name = "bare+parse"

    def start(self, workload):
        w = WORKLOADS[workload]
        args = [BARE_RECV, "--port", "0", "--receive-buffer", str(self.receive_buffer),
                "--protocol", w["protocol"]]
        if self.parse:
            args.append("--parse")
        with open(os.path.join(self.dir, "log"), "w") as log:
            self.proc = spawn(args, cpu=self.cpu, stdout=subprocess.PIPE, stderr=log, text=True)
        first = json.loads(self.proc.stdout.readline())
        return first["port"]

    def counts(self):
        """Stops the loop (it reads what is still queued first) and returns its report."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        report = json.loads(out.strip().splitlines()[-1])
        report["accepted"] = report["events"]
        return report

    def series(self):
        return None


class NpmStatsd(Server):
    """The reference StatsD daemon, no backend, no flush during a run. Its UDP socket is opened by
    a server module of our own (statsd's `server` option) that asks for a large receive buffer:
    node can set SO_RCVBUF up to net.core.rmem_max."""

    name = "npm-statsd"

    def __init__(self, cpu=1, receive_buffer=64 << 20):
        super().__init__(cpu)
        self.receive_buffer = receive_buffer

    def start(self, workload=None):
        if not os.path.exists(STATSD_JS):
            raise RuntimeError(f"{STATSD_JS} is missing: npm install --prefix {BUILD}/npm "
                               "--no-audit --no-fund statsd@0.9.0")
        self.port = free_port("udp")
        self.mgmt_port = free_port("tcp")
        with open("/proc/sys/net/core/rmem_max") as f:
            buffer = min(self.receive_buffer, int(f.read()))
        server_js = os.path.join(self.dir, "udp_server.js")
        with open(server_js, "w") as f:
            f.write(f"""// statsd's servers/udp.js with a receive buffer of {buffer} bytes.
const dgram = require('dgram');
exports.start = function(config, callback) {{
  const server = dgram.createSocket({{type: 'udp4', recvBufferSize: {buffer}}}, callback);
  server.bind(config.port, config.address);
  this.server = server;
  return true;
}};
""")
        config = os.path.join(self.dir, "config.js")
        with open(config, "w") as f:
            f.write(f"""{{ port: {self.port}, address: "127.0.0.1", mgmt_port: {self.mgmt_port},
  mgmt_address: "127.0.0.1", server: "{server_js}", flushInterval: 3600000, backends: [] }}
""")
        with open(os.path.join(self.dir, "log"), "w") as log:
            self.proc = spawn(["node", STATSD_JS, config], cpu=self.cpu, stdout=log, stderr=log)
        wait_for(lambda: self.check_alive() is None and self._admin("health").startswith("health"),
                 15, "npm statsd to answer on its admin port")
        return self.port

    def _admin(self, command):
        try:
            with socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=30) as s:
                s.sendall(command.encode() + b"\n")
                end = b"\n" if command == "health" else b"END\n\n"
                data = b""
                while not data.endswith(end):
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
                return data.decode(errors="replace")
        except OSError:
            return ""

    def _counters(self):
        # util.inspect of the counters object: "{ 'statsd.metrics_received': 12, ... }".
        return {k: float(v) for k, v in
                re.findall(r"'?([^\s{,':]+)'?: (-?[\d.e+]+)", self._admin("counters"))}

    def counts(self):
        c = self._counters()
        received = c.get("statsd.metrics_received", 0)
        bad = c.get("statsd.bad_lines_seen", 0)
        return {"accepted": received - bad, "metrics_received": received, "bad_lines": bad,
                "packets_received": c.get("statsd.packets_received", 0)}

    def series(self):
        return sum(1 for k in self._counters() if not k.startswith("statsd."))


class Collectd(Server):
    """collectd's statsd plugin. Throughput runs also load the csv plugin (raw counter values,
    one file per series) so that the lines accepted can be summed, at collectd's default interval
    of 10 s (a 1 s interval costs it about 20 ms of CPU per second at 1,000 series); memory runs
    load only the unixsock plugin, to count the series without writing them. The statsd plugin
    has no receive-buffer option: its socket gets net.core.rmem_default."""

    name = "collectd"

    def __init__(self, cpu=1, interval=10, write_csv=True, rmem_default=None):
        super().__init__(cpu)
        self.interval = interval
        self.write_csv = write_csv
        self.rmem_default = rmem_default

    def start(self, workload=None):
        self.port = free_port("udp")
        self.csv_dir = os.path.join(self.dir, "csv")
        self.socket_path = os.path.join(self.dir, "collectd.sock")
        csv = f"""LoadPlugin csv
<Plugin csv>
  DataDir "{self.csv_dir}"
  StoreRates false
</Plugin>
""" if self.write_csv else ""
        config = os.path.join(self.dir, "collectd.conf")
        with open(config, "w") as f:
            f.write(f"""# Generated by bench/servers.py: the statsd plugin on loopback, nothing sent anywhere.
Hostname "bench"
FQDNLookup false
BaseDir "{self.dir}"
PIDFile "{self.dir}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
Interval {self.interval}
ReadThreads 1
WriteThreads 1
LoadPlugin logfile
<Plugin logfile>
  LogLevel warning
  File "{self.dir}/log"
  Timestamp false
</Plugin>
LoadPlugin statsd
<Plugin statsd>
  Host "127.0.0.1"
  Port "{self.port}"
  DeleteCounters false
</Plugin>
LoadPlugin unixsock
<Plugin unixsock>
  SocketFile "{self.socket_path}"
</Plugin>
{csv}""")
        # Opt-in (--peer-rmem-default): the kernel default for new sockets, raised only while
        # collectd opens its socket, then put back.
        saved = None
        if self.rmem_default:
            with open(RMEM_DEFAULT) as f:
                saved = f.read().strip()
            with open(RMEM_DEFAULT, "w") as f:
                f.write(str(self.rmem_default))
        try:
            with open(os.path.join(self.dir, "stderr"), "w") as stderr:
                self.proc = spawn([COLLECTD, "-f", "-C", config], cpu=self.cpu,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
            wait_for(lambda: self.check_alive() is None and os.path.exists(self.socket_path)
                     and udp_port_bound(self.port), 15, "collectd's statsd socket")
        finally:
            if saved is not None:
                with open(RMEM_DEFAULT, "w") as f:
                    f.write(saved)
        return self.port

    def _unixsock(self, command):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(self.socket_path)
            s.sendall(command.encode() + b"\n")
            data = b""
            # The first line is "N Values found" (or an error); N lines follow.
            while b"\n" not in data:
                data += s.recv(65536)
            head, _, rest = data.partition(b"\n")
            expected = int(head.split()[0]) if head.split()[0].lstrip(b"-").isdigit() else 0
            while rest.count(b"\n") < max(expected, 0):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                rest += chunk
            return head.decode(), rest.decode().splitlines()

    def _csv_files(self):
        return glob.glob(os.path.join(self.csv_dir, "*", "statsd", "derive-*"))

    def _csv_total(self):
        """Sum over the counter series of the last raw value written: every line accepted."""
        total = 0
        for path in self._csv_files():
            last = None
            with open(path, "rb") as f:
                for line in f:
                    last = line
            if last and b"," in last and not last.startswith(b"epoch"):
                total += float(last.split(b",")[1])
        return total

    def counts(self):
        """Called once the load is over and collectd idle: counter values are dispatched (and
        written) once per interval, so wait until every series has been written after now."""
        now = time.time()
        start = time.monotonic()
        seen = -1
        while time.monotonic() - start < 3 * self.interval + 10:
            files = self._csv_files()
            # The pass that writes them all is over when their number holds still.
            if files and len(files) == seen and all(os.path.getmtime(p) > now for p in files):
                break
            seen = len(files) if files and all(os.path.getmtime(p) > now for p in files) else -1
            if not files and time.monotonic() - start > 1.5 * self.interval + 1:
                break  # nothing was accepted at all
            time.sleep(0.5)
        return {"accepted": self._csv_total()}

    def series(self):
        # Series appear in the value cache at the first dispatch after they were seen.
        time.sleep(self.interval * 2.5)
        head, lines = self._unixsock("LISTVAL")
        return sum(1 for line in lines if "/statsd/" in line)


def make_server(name, cpu=1, receive_buffer=64 << 20, workers=1, for_memory=False,
                rmem_default=None, collectd_interval=10):
    if name == "telemetryd":
        return Telemetryd(cpu, receive_buffer, workers)
    if name == "bare":
        return BareLoop(cpu, receive_buffer)
    if name == "bare+parse":
        return BareLoop(cpu, receive_buffer, parse=True)
    if name == "npm-statsd":
        return NpmStatsd(cpu, receive_buffer)
    if name == "collectd":
        return Collectd(cpu, interval=2 if for_memory else collectd_interval,
                        write_csv=not for_memory,
                        rmem_default=rmem_default)
    raise ValueError(f"unknown server {name}")


SERVERS = ["telemetryd", "bare", "bare+parse", "npm-statsd", "collectd"]
PEERS = ["npm-statsd", "collectd"]


def supports(server_name, workload):
    """The bare loop reads UDP only; the peers are StatsD servers (UDP here)."""
    w = WORKLOADS[workload]
    if server_name.startswith("bare"):
        return w["transport"] == "udp"
    if server_name in PEERS:
        return w["protocol"] == "statsd" and w["transport"] == "udp"
    return True
