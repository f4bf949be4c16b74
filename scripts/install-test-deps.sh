#!/usr/bin/env bash
# Installs the real servers the tests talk to, from Debian's packages.
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
# Prometheus 2.42 and promtool: the reference for PromQL, relabeling and remote write.
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Alertmanager 0.25: where the ruler's alerts go (tests/rules.rs).
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
# openssl: certificates for the https Alertmanager test.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# NATS with JetStream: the distributed ingest log.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)

# DuckDB (Python) reads our Parquet blocks in the storage-format test.
if ! python3 -c 'import duckdb' >/dev/null 2>&1; then
  echo "installing test dependency: duckdb (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check duckdb
fi

# s3s-fs: the S3-compatible server the object storage tests start on loopback
# (keeps objects in a directory, so a stopped server restarts with its data).
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  echo "installing test dependency: s3s-fs (crates.io, a few minutes)"
  cargo install --quiet s3s-fs@0.14.1 --features binary --locked
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing test dependencies: ${need[*]}"
# shellcheck disable=SC2207
need=($(printf '%s\n' "${need[@]}" | sort -u))
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
