#!/usr/bin/env bash
# Scrape time of the real daemon: creates SERIES series, then times 7 scrapes of /metrics with
# curl, plain and gzip, and prints median, min and max, and the daemon's RSS before the first
# scrape and after the last. KIND native (default): native events, two series per VSR node id;
# statsd: SERIES StatsD names of one counter series each (a family each). On a machine with two
# cores or more the daemon runs on core 1 and the generator and curl on core 0.
# Usage: bench/scrape_daemon.sh [SERIES] [native|statsd]   (from the repository root, after a build)
set -euo pipefail
series=${1:-100000}
kind=${2:-native}
build=${BUILD_DIR:-build}
work=$(mktemp -d)
trap 'kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$work"' EXIT
daemon_cpu=() client_cpu=()
if (($(nproc) >= 2)); then daemon_cpu=(taskset -c 1) client_cpu=(taskset -c 0); fi
case "$kind" in
  native) listeners="native: {udp: {port: 0}, tcp: {enabled: false}}
  statsd: {udp: {enabled: false}, tcp: {enabled: false}}" ;;
  statsd) listeners="native: {udp: {enabled: false}, tcp: {enabled: false}}
  statsd: {udp: {port: 0}, tcp: {enabled: false}}" ;;
  *) echo "usage: bench/scrape_daemon.sh [SERIES] [native|statsd]" >&2; exit 2 ;;
esac
cat > "$work/telemetryd.yaml" <<YAML
listeners:
  $listeners
aggregation: {max_series_per_metric: $((series * 2)), max_series_total: $((series * 4))}
statsd: {max_metrics: $((series * 2))}
prometheus: {port: 0}
YAML
: >"$work/log"
env $(sed -n "s/^Environment=//p" packaging/telemetryd.service) "${daemon_cpu[@]}" \
  "$build/daemon/telemetryd" --config "$work/telemetryd.yaml" 2>"$work/log" &
daemon=$!
for _ in $(seq 1 50); do grep -q " ready" "$work/log" && break; sleep 0.1; done
port=$(sed -n "s/.*listening: ${kind}_udp on .*:\([0-9]*\)$/\1/p" "$work/log")
mport=$(sed -n 's/.*prometheus endpoint on .*:\([0-9]*\)\/metrics$/\1/p' "$work/log")
if [[ $kind == native ]]; then
  load=(--series "$((series / 2))")
else
  load=(--protocol statsd --no-tags --per-write 25 --series "$series")
fi
"${client_cpu[@]}" "$build/bench/telemetryd-loadgen" --port "$port" --rate 500000 \
  --duration "$((2 * series / 500000 + 2))" "${load[@]}" >/dev/null
sleep 1
rss() { awk '/^VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$daemon/status"; }
echo "RSS before the first scrape: $(rss)"
echo "series held: $("${client_cpu[@]}" curl -s "127.0.0.1:$mport/metrics" | sed -n 's/^telemetryd_series //p')"
for mode in plain gzip; do
  flag=""
  [[ $mode == gzip ]] && flag="--compressed"
  for _ in $(seq 1 7); do
    "${client_cpu[@]}" curl -s $flag -o /dev/null -w '%{time_total} %{size_download}\n' \
      "127.0.0.1:$mport/metrics"
  done | sort -n | awk -v m="$mode" '{t[NR]=$1; b=$2} END {printf "%s: median %.3f s, min %.3f s, max %.3f s, %d bytes\n", m, t[4], t[1], t[7], b}'
done
echo "RSS after the last scrape: $(rss)"
