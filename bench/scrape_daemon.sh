#!/usr/bin/env bash
# Scrape time of the real daemon: creates SERIES series (native events, two series per node id),
# then times 7 scrapes of /metrics with curl, plain and gzip, and prints median, min and max.
# Usage: bench/scrape_daemon.sh [SERIES]   (from the repository root, after a build)
set -euo pipefail
series=${1:-100000}
build=${BUILD_DIR:-build}
work=$(mktemp -d)
trap 'kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/telemetryd.yaml" <<YAML
listeners:
  native: {udp: {port: 0}, tcp: {enabled: false}}
  statsd: {udp: {enabled: false}, tcp: {enabled: false}}
aggregation: {max_series_per_metric: $((series * 2)), max_series_total: $((series * 4))}
prometheus: {port: 0}
YAML
env $(sed -n "s/^Environment=//p" packaging/telemetryd.service) "$build/daemon/telemetryd" --config "$work/telemetryd.yaml" 2>"$work/log" &
daemon=$!
for _ in $(seq 1 50); do grep -q " ready" "$work/log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening: native_udp on .*:\([0-9]*\)$/\1/p' "$work/log")
mport=$(sed -n 's/.*prometheus endpoint on .*:\([0-9]*\)\/metrics$/\1/p' "$work/log")
"$build/bench/telemetryd-loadgen" --port "$port" --rate 500000 --duration "$((series / 1000000 + 2))" \
  --series "$((series / 2))" >/dev/null
sleep 1
echo "series held: $(curl -s "127.0.0.1:$mport/metrics" | sed -n 's/^telemetryd_series //p')"
for mode in plain gzip; do
  flag=""
  [[ $mode == gzip ]] && flag="--compressed"
  for _ in $(seq 1 7); do
    curl -s $flag -o /dev/null -w '%{time_total} %{size_download}\n' "127.0.0.1:$mport/metrics"
  done | sort -n | awk -v m="$mode" '{t[NR]=$1; b=$2} END {printf "%s: median %.3f s, min %.3f s, max %.3f s, %d bytes\n", m, t[4], t[1], t[7], b}'
done
