#!/usr/bin/env bash
# Builds Strata (release) and runs `strata standalone`; extra arguments are
# passed on, e.g. --config.file=prometheus.yml --web.listen-address=127.0.0.1:9090
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -p strata -- standalone "$@"
