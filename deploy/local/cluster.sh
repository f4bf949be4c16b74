#!/usr/bin/env bash
# A whole Strata cluster on this machine, on loopback, for trying the
# distributed setup and for tests:
#
#   deploy/local/cluster.sh up WORKDIR     # start, print the endpoints
#   deploy/local/cluster.sh down WORKDIR   # stop everything started in WORKDIR
#
# It runs nats-server with JetStream, three aggregators with replication
# factor 2, two queriers and one collector scraping the aggregators,
# queriers and itself. Ports come from BASE_PORT (default 19000):
#   BASE_PORT      nats
#   BASE_PORT+10.. aggregators (HTTP remote write + gRPC store API)
#   BASE_PORT+20.. queriers (Prometheus HTTP API)
#   BASE_PORT+30   collector
# The binary is STRATA_BIN, or target/release/strata built on demand.
# Logs and data are under WORKDIR; `down` reads WORKDIR/pids.
set -euo pipefail

cmd="${1:-}"
work="${2:-}"
if [ -z "$cmd" ] || [ -z "$work" ]; then
  echo "usage: $0 up|down WORKDIR" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/../.." && pwd)"
base="${BASE_PORT:-19000}"
aggregators="${AGGREGATORS:-3}"
queriers="${QUERIERS:-2}"
shards="${SHARDS:-16}"

down() {
  if [ -f "$work/pids" ]; then
    # Collector first (it writes staleness markers), NATS last.
    tac "$work/pids" | while read -r name pid; do
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        echo "stopped $name ($pid)"
      fi
    done
    rm -f "$work/pids"
  fi
}

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1 after 10 s (see $work/*.log)" >&2
  return 1
}

start() {
  local name="$1"; shift
  "$@" >"$work/$name.log" 2>&1 &
  echo "$name $!" >>"$work/pids"
}

up() {
  mkdir -p "$work"
  if [ -f "$work/pids" ]; then
    echo "$work/pids exists: run '$0 down $work' first" >&2
    exit 1
  fi
  local bin="${STRATA_BIN:-}"
  if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --locked -p strata >&2)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/strata"
  fi
  local nats_bin
  nats_bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
  local nats="nats://127.0.0.1:$base"
  start nats "$nats_bin" -js -a 127.0.0.1 -p "$base" -sd "$work/nats"
  wait_port "$base"

  local stores=()
  for i in $(seq 0 $((aggregators - 1))); do
    local port=$((base + 10 + i))
    start "aggregator-$i" "$bin" aggregator \
      --web.listen-address="127.0.0.1:$port" \
      --storage.path="$work/aggregator-$i" \
      --nats.url="$nats" --nats.shards="$shards" \
      --aggregator.ordinal="$i" --aggregator.count="$aggregators" --aggregator.replication-factor=2
    stores+=("127.0.0.1:$port")
  done
  local joined
  joined="$(IFS=,; echo "${stores[*]}")"
  for i in $(seq 0 $((queriers - 1))); do
    start "querier-$i" "$bin" querier \
      --web.listen-address="127.0.0.1:$((base + 20 + i))" --querier.aggregator="$joined"
  done

  local targets=""
  for s in "${stores[@]}"; do targets="$targets'$s', "; done
  for i in $(seq 0 $((queriers - 1))); do targets="$targets'127.0.0.1:$((base + 20 + i))', "; done
  cat >"$work/collector.yml" <<YAML
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: strata
    static_configs:
      - targets: [${targets}'127.0.0.1:$((base + 30))']
YAML
  start collector "$bin" collector --config.file="$work/collector.yml" \
    --web.listen-address="127.0.0.1:$((base + 30))" --nats.url="$nats" --nats.shards="$shards" \
    --buffer.path="$work/collector-buffer"

  for i in $(seq 0 $((aggregators - 1))); do wait_port $((base + 10 + i)); done
  for i in $(seq 0 $((queriers - 1))); do wait_port $((base + 20 + i)); done
  wait_port $((base + 30))
  echo "Strata cluster up in $work"
  echo "  NATS:        $nats"
  echo "  aggregators: $joined (remote write: http://<aggregator>/api/v1/write)"
  echo "  queriers:    $(for i in $(seq 0 $((queriers - 1))); do printf 'http://127.0.0.1:%s ' $((base + 20 + i)); done)"
  echo "  collector:   http://127.0.0.1:$((base + 30)) (config $work/collector.yml)"
  echo "stop with: $0 down $work"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down WORKDIR" >&2; exit 2 ;;
esac
