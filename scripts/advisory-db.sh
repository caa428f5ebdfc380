#!/usr/bin/env bash
# Lays out the offline RustSec advisory snapshot where deny.toml's db-path points.
# The snapshot lives beside the repository in ../shared/advisory-db (no network copy is used).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
setup="$repo/../shared/tools/advisory-db-setup.sh"
if [ ! -x "$setup" ] && [ ! -f "$setup" ]; then
  echo "advisory-db: $setup not found: the RustSec snapshot must sit beside the repository" >&2
  exit 1
fi
cd "$repo"
bash "$setup" target/advisory-dbs
