#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust:
# installs what the tests need when missing, then runs fmt, clippy, cargo deny and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# Debian packages the tests use (real peers: brokers, log receivers, browsers). Installed only
# when missing; the list grows as the tests that need them arrive.
packages=(openssl chromium chromium-driver mosquitto mosquitto-clients rsyslog rsyslog-gnutls systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo-deny >/dev/null 2>&1; then
  say "installing cargo-deny"
  cargo install --locked cargo-deny
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo deny (advisories from the offline RustSec snapshot, licences, bans, sources)"
bash scripts/advisory-db.sh
# cargo deny reads the metadata of every target platform: fetch all of them first (the
# advisory database stays offline; crates.io is where the crates come from anyway).
cargo fetch --locked
cargo deny --offline check

say "tests"
cargo test --workspace --locked
