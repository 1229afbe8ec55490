#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 30) on the pinned nightly
# (ci/nightly.sh), from the committed corpus, adding what it finds to fuzz/corpus/<target>.
# Installs that nightly and cargo-fuzz if missing.
# A crash leaves its input in fuzz/artifacts/<target>/; commit it: tests/fuzz_corpus.rs replays
# every corpus entry and artifact on stable.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# shellcheck source=ci/nightly.sh
source ci/nightly.sh
ensure_nightly
targets=$(cd fuzz && cargo "+$NIGHTLY" fuzz list)
for target in $targets; do
  mkdir -p "fuzz/corpus/$target"
  echo "--- fuzzing $target for ${seconds}s"
  # -s none: no sanitizer by default (Rust checks bounds; the library's asserts are the oracle);
  # FUZZ_SANITIZER=address for ASan runs.
  log="target/fuzz-$target.log"
  mkdir -p target
  if ! cargo "+$NIGHTLY" fuzz run -s "${FUZZ_SANITIZER:-none}" "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed; inputs in fuzz/artifacts/$target" >&2
    exit 1
  fi
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log" || true
done
