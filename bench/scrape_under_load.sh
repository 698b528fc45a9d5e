#!/usr/bin/env bash
# Ingest while scraping: starts telemetryd (loopback, free ports), offers native UDP load with
# SERIES distinct series at RATE events/s for SECONDS while scraping /metrics every second, then
# compares what was offered with what telemetryd counted (and the kernel's drop count).
# Usage: bench/scrape_under_load.sh [RATE] [SECONDS] [SERIES]   (from the repository root, after a build)
set -euo pipefail
rate=${1:-500000}
seconds=${2:-10}
series=${3:-100000}
build=${BUILD_DIR:-build}
work=$(mktemp -d)
trap 'kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/telemetryd.yaml" <<YAML
listeners:
  native: {udp: {port: 0, receive_buffer_bytes: ${RCVBUF:-67108864}}, tcp: {enabled: false}}
  statsd: {udp: {enabled: false}, tcp: {enabled: false}}
aggregation: {max_series_per_metric: $((series * 2)), max_series_total: $((series * 4))}
prometheus: {port: 0}
YAML
taskset -c 1 env $(sed -n "s/^Environment=//p" packaging/telemetryd.service) \
  "$build/daemon/telemetryd" --config "$work/telemetryd.yaml" 2>"$work/log" &
daemon=$!
for _ in $(seq 1 50); do grep -q " ready" "$work/log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening: native_udp on .*:\([0-9]*\)$/\1/p' "$work/log")
mport=$(sed -n 's/.*prometheus endpoint on .*:\([0-9]*\)\/metrics$/\1/p' "$work/log")

# Create the series first, then measure.
taskset -c 0 "$build/bench/telemetryd-loadgen" --port "$port" --rate 200000 --duration 1 \
  --series "$series" --per-datagram 25 >/dev/null
sleep 1
before=$(curl -s "127.0.0.1:$mport/metrics" | sed -n 's/^telemetryd_ingest_events_total{listener="native_udp"} //p')

( for i in $(seq 1 "$((seconds + 2))"); do
    curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "127.0.0.1:$mport/metrics" >> "$work/scrapes"
    sleep 1
  done ) &
scraper=$!
taskset -c 0 "$build/bench/telemetryd-loadgen" --port "$port" --rate "$rate" --duration "$seconds" \
  --series "$series" --per-datagram 25 > "$work/offered"
wait "$scraper"
sleep 1
metrics=$(curl -s "127.0.0.1:$mport/metrics")
after=$(sed -n 's/^telemetryd_ingest_events_total{listener="native_udp"} //p' <<<"$metrics")
drops=$(sed -n 's/^telemetryd_ingest_kernel_drops_total{listener="native_udp"} //p' <<<"$metrics")
series_held=$(sed -n 's/^telemetryd_series //p' <<<"$metrics")
offered=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])' < "$work/offered")
offered_rate=$(python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rate"]))' < "$work/offered")
received=$(python3 -c "print(int(float('$after') - float('$before')))")
echo "rate_offered $offered_rate events/s for $seconds s, series held $series_held"
echo "offered $offered received $received lost $((offered - received)) kernel_drops_total $drops"
echo "scrapes (seconds bytes):"
sort -n "$work/scrapes" | awk '{t[NR]=$1; b=$2} END {printf "  median %.3f s, max %.3f s, %d bytes, %d scrapes\n", t[int((NR+1)/2)], t[NR], b, NR}'
