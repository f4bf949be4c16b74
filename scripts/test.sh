#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, property, golden and
# end-to-end tests (which start real servers). Installs what they need first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

./scripts/install-test-deps.sh

start=$(date +%s)
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
echo "== all checks passed in $(( $(date +%s) - start ))s"
