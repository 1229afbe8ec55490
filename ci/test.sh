#!/usr/bin/env bash
# The README's test command: every unit, integration and doc test of the workspace.
# (loom models compile to nothing without --cfg shm_arena_loom; ci/loom.sh runs them.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace "$@"
