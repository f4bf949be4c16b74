#!/usr/bin/env bash
# Installs the real servers the tests talk to, from Debian's packages.
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing test dependencies: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
