#!/usr/bin/env bash
# The benchmarks behind docs/BENCHMARKS.md, with the machine they ran on.
#
#   scripts/bench.sh            # all of them
#   scripts/bench.sh logins     # one group: store, audit, logins, mqtt, platform, update
#
# Results are printed and kept in target/bench-results/<UTC time>.txt. Absolute times on a
# shared machine are noise: read them next to the machine line and the load average, and
# compare ratios where a benchmark has a baseline in the same run.
#
# The login benchmark (crates/kawal/tests/load.rs, bench_logins) runs the real daemon built in
# release with the default (OWASP) Argon2id cost, m=19456 KiB t=2 p=1. Its knobs:
#   KAWAL_BENCH_LOGINS=200      logins timed one after another (a.)
#   KAWAL_BENCH_FLOOD_S=30      length of the wrong-password flood (b.)
#   KAWAL_BENCH_API_S=10        length of each API throughput run (c.)
#   KAWAL_LOAD_VERIFY_WORKERS=N the daemon's Argon2id workers (default: one per CPU)
#
# The MQTT benchmarks (crates/kawal/tests/mqtt_bench.rs, bench_mqtt_*) run the real daemon built
# in release next to a Mosquitto (/usr/sbin/mosquitto) configured the same way, in the same
# run. Their knobs:
#   KAWAL_BENCH_MQTT_S=10           publishing window of the throughput and flood runs
#   KAWAL_BENCH_MQTT_LAT_S=5        length of each fixed-rate latency run
#   KAWAL_BENCH_MQTT_WINDOW=64      QoS 1 messages in flight per publisher (throughput)
#   KAWAL_BENCH_MQTT_CONNS=2000     idle connections for the memory figure (10000 works)
#   KAWAL_BENCH_MQTT_HS_S=5         length of each handshake run
#   KAWAL_BENCH_MQTT_FLOOD_RATE=500 bad handshakes per second in the flood
#
# The secure-update benchmarks (release builds): crates/kawal-update/tests/install_bench.rs
# verifies and installs a 100 MB bundle from a local repository next to plain SHA-256 over the
# same file, and measures the apply's peak memory growth in a fresh process; knob:
#   KAWAL_BENCH_INSTALL_ROUNDS=5    rounds of (plain SHA-256, apply) alternating
# crates/kawal/tests/update_bench.rs times apply -> committed trial boot of the real daemon
# under `kawal boot --supervise` (3 updates) next to a plain `kawal run` start.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
case "$what" in
  all | store | audit | logins | mqtt | platform | update) ;;
  *) echo "usage: $0 [all|store|audit|logins|mqtt|platform|update]" >&2; exit 2 ;;
esac

mkdir -p target/bench-results
out="target/bench-results/$(date -u +%Y%m%dT%H%M%SZ).txt"

{
  echo "== machine"
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "kernel:  $(uname -srm)"
  echo "cpus:    $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
  echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "rustc:   $(rustc -V)"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, at the start)"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
} | tee "$out"

if [ "$what" = all ] || [ "$what" = store ]; then
  printf '\n== sealed store vs plain (DS-1-3)\n' | tee -a "$out"
  cargo bench -p kawal-store --bench sealed_vs_plain 2>&1 | tee -a "$out"
fi

if [ "$what" = all ] || [ "$what" = audit ]; then
  printf '\n== audit log append and verify (PL-4-1, PL-4-2)\n' | tee -a "$out"
  cargo bench -p kawal-audit --bench append 2>&1 | tee -a "$out"
fi

if [ "$what" = all ] || [ "$what" = logins ]; then
  printf '\n== logins and the API under load (AU-1-3): release daemon, default Argon2id\n' | tee -a "$out"
  cargo test --release -p kawal --test load -- --ignored --exact bench_logins --nocapture 2>&1 \
    | grep -E '^BENCH|test result|panicked' | tee -a "$out"
fi

if [ "$what" = all ] || [ "$what" = mqtt ]; then
  # KAWAL_BENCH_MQTT_CONNS=10000 holds 10,000 connections on each side of the loopback, one
  # broker after the other, while the previous ones close: more descriptors than usual.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  printf '\n== MQTT: kawal vs Mosquitto %s in the same run: release daemon\n' \
    "$(/usr/sbin/mosquitto -h 2>/dev/null | head -1 | sed 's/^mosquitto version //')" | tee -a "$out"
  # -o: the first line of a test shares its line with libtest's "test name ... ".
  cargo test --release -p kawal --test mqtt_bench -- --ignored --nocapture --test-threads 1 2>&1 \
    | grep -oE 'BENCH.*|test result.*|panicked.*' | tee -a "$out"
fi

if [ "$what" = all ] || [ "$what" = platform ]; then
  printf '\n== integrity check of 100 MB vs plain SHA-256 (PL-1-4)\n' | tee -a "$out"
  cargo test --release -p kawal-platform --test integrity_bench -- --ignored --nocapture 2>&1 \
    | grep -E 'integrity|ratio|MB|test result|panicked' | tee -a "$out"
  printf '\n== log forwarding to rsyslog over TLS: throughput and catch-up (PL-4-2)\n' | tee -a "$out"
  cargo test --release -p kawal-audit --test forward_rsyslog -- --ignored --nocapture 2>&1 \
    | grep -iE 'entries|catch|throughput|/s|test result|panicked' | tee -a "$out"
  printf '\n== tamper: input sees it -> keys destroyed, 50 trials each (PH-2-1)\n' | tee -a "$out"
  cargo test --release -p kawal-platform --test tamper -- fifty_trials --nocapture --test-threads 1 2>&1 \
    | grep -oE 'tamper [a-z-]+: [0-9]+ trials.*|test result.*|panicked.*' | tee -a "$out"
fi

if [ "$what" = all ] || [ "$what" = update ]; then
  printf '\n== secure update: verify + install 100 MB vs plain SHA-256, apply -> commit (PL-2-2, PL-2-3)\n' \
    | tee -a "$out"
  # A missed target fails its test after printing the numbers; `|| true` lets the second
  # benchmark run anyway (the failure is in the results as "panicked" and "test result", a
  # build failure as "error").
  # -o: the first line of a test shares its line with libtest's "test name ... ".
  cargo test --release -p kawal-update --test install_bench -- --ignored --nocapture 2>&1 \
    | grep -oE 'BENCH.*|test result.*|panicked.*|apply reaches.*|peak memory growth.*|^error.*' \
    | tee -a "$out" || true
  cargo test --release -p kawal --test update_bench -- --ignored --nocapture 2>&1 \
    | grep -oE 'BENCH.*|test result.*|panicked.*|^error.*' | tee -a "$out" || true
fi

printf '\n== load at the end: %s\nresults kept in %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$out"
