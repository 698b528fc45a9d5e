#!/usr/bin/env bash
# Soak of telemetryd under native UDP load, scraped every second, SIGHUP every 30 s (bench/soak.py
# says what is checked). The short version: bench/soak.sh --duration 60
# Usage: bench/soak.sh [--duration 600] [--rate R | --max-rate M] [--reload-every 30] [--out DIR]
set -euo pipefail
exec python3 "$(dirname "$0")/soak.py" "$@"
