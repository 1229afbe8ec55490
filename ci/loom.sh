#!/usr/bin/env bash
# Runs the loom models of the ring protocol (loom-tests/tests/) in release mode.
#
# LOOM_MAX_PREEMPTIONS bounds the search (default 2: the whole suite takes under a minute; 3
# takes a few minutes for the SPSC models on 2 cores). The three larger MPMC models are capped
# at bound 1 unless LOOM_UNCAPPED=1 (at bound 2 they take 2 to 15+ minutes each; see
# loom-tests/tests/mpmc.rs). The cfg flag changes how shm-arena itself is compiled, so the build
# goes to its own target directory and leaves the normal build's artifacts alone.
# Extra arguments go to the test harness, e.g. `ci/loom.sh out_of_order_ends`. To see loom's
# log of a failing execution: `LOOM_LOG=trace ci/loom.sh <test name>`.
set -euo pipefail
cd "$(dirname "$0")/.."

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export RUSTFLAGS="${RUSTFLAGS:-} --cfg shm_arena_loom"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"

started=$(date +%s)
# Printed on failure too, so a slow failing run still says how long it took.
trap 'echo "loom: $(($(date +%s) - started)) s (build included), LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS"' EXIT
# --nocapture: each model prints its execution count and time.
cargo test -p loom-tests --release -- --nocapture "$@"
