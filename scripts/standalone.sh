#!/usr/bin/env bash
# Builds Strata (release) and runs `strata standalone`; extra arguments are
# passed on, e.g. --config.file=prometheus.yml --web.listen-address=127.0.0.1:9090
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p strata
exec ./target/release/strata standalone "$@"
