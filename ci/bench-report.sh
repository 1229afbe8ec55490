#!/usr/bin/env bash
# Runs shm-arena side by side with its peers and writes target/bench-report/:
#   report.json  one object per case, metric and peer (ratio > 1: shm-arena wins)
#   report.md    the same as a table, ratios first, with the machine and its load
#   throughput.png  throughput against unit size (also copied to benches/peers/throughput.png)
#   readme-section.md  report.md with the image path the README uses
#   raw.json, spdl.json, values.json, *.log  what the tables were made from
#
#   ci/bench-report.sh [--quick]
#
# --quick: shorter runs, well under 3 minutes once the harness is built (a cold build of the
# harness and its peers, iceoryx2 included, takes a few minutes more on 2 cores).
#
# The harness (benches/peers/) is a Cargo workspace of its own, so the crate's
# `cargo test --workspace` never compiles iceoryx2 & co.; it builds into benches/peers/target.
# The SPDL comparison, the Python values (case 10, values_bench.py) and the plot run in a
# virtualenv under target/bench-report/venv, installed from PyPI on first use; without it the
# report is still written (no plot, no SPDL or Python numbers).
# A case that cannot run (a feature not in the crate yet, a peer that fails to install) is
# listed as not available, never filled with made-up numbers.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
case "${1:-}" in
    --quick) quick="--quick" ;;
    "") ;;
    *) echo "usage: ci/bench-report.sh [--quick]" >&2; exit 2 ;;
esac

out=target/bench-report
mkdir -p "$out"
started=$(date +%s)
trap 'echo "bench-report: $(($(date +%s) - started)) s in all"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Case 6 needs the crate's worker API (issue 5): the harness's `worker` feature, tried when
# src/worker has `iterate_in_subprocess`. The iceoryx2 contender is a default feature. If a
# build fails, the next combination is tried (without the worker case, then without
# iceoryx2); the report lists what was left out as not available.
echo "== building the harness (benches/peers, release)"
combos=("" "--no-default-features")
if grep -qs "pub fn iterate_in_subprocess" src/worker/*.rs; then
    combos=("--features worker" "" "--no-default-features --features worker" "--no-default-features")
fi
built=""
for flags in "${combos[@]}"; do
    # shellcheck disable=SC2086 # flags are words
    if (cd benches/peers && cargo build --release --quiet $flags 2>"../../$out/build.log"); then
        built=yes
        [ -n "$flags" ] && echo "   (built with: $flags)"
        break
    fi
    echo "warning: the harness did not build with '${flags:-default features}' (see $out/build.log); trying without" >&2
done
[ -n "$built" ] || { cat "$out/build.log" >&2; exit 1; }
harness=benches/peers/target/release/shm-arena-peers

echo "== running the harness ${quick:-(full)}"
"$harness" $quick --out "$out/raw.json" 2> >(tee "$out/harness.log" | grep -v ' rep ' >&2)

# Python side: the plot (matplotlib), SPDL's iterate_in_subprocess (case 6 peer), and the
# Python package against SPDL (cases 8 and 9, spdl_bench.py's extra modes).
venv="$out/venv"
py=""
spdl_note=""
if [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >"$out/venv.log" 2>&1; then
    if "$venv/bin/python" -c "import spdl.pipeline, numpy, matplotlib, maturin" 2>/dev/null ||
        "$venv/bin/pip" install --quiet "spdl_core==0.8.0" numpy matplotlib maturin >>"$out/venv.log" 2>&1; then
        py="$venv/bin/python"
    else
        spdl_note="could not install spdl_core 0.8.0 / numpy / matplotlib from PyPI (see $out/venv.log)"
        # matplotlib alone may still install: the plot does not need SPDL.
        if "$venv/bin/pip" install --quiet matplotlib >>"$out/venv.log" 2>&1; then
            py="$venv/bin/python"
        fi
    fi
else
    spdl_note="python3 -m venv failed (see $out/venv.log)"
fi

# Cases 8, 9 and 10 (the Python package): shm_arena built into the same virtualenv. Case 10
# needs only NumPy and maturin besides, so it runs even when SPDL did not install.
pkg_ok=""
if [ -n "$py" ]; then
    if "$py" -c "import numpy, maturin" 2>/dev/null ||
        "$venv/bin/pip" install --quiet numpy maturin >>"$out/venv.log" 2>&1; then
        if "$venv/bin/pip" install --quiet --force-reinstall --no-deps ./python >>"$out/venv.log" 2>&1; then
            pkg_ok=yes
        else
            echo "warning: the Python package did not build (see $out/venv.log): cases 8, 9 and 10 left out" >&2
        fi
    fi
fi

spdl_args=()
if [ -n "$py" ] && [ -z "$spdl_note" ]; then
    echo "== SPDL $("$py" -c 'from importlib.metadata import version; print(version("spdl_core"))') iterate_in_subprocess"
    rm -f "$out/spdl.json"
    # Python's resource tracker prints harmless KeyErrors for SPDL's shared memory: keep them
    # in the log only.
    if timeout 600 "$py" benches/peers/spdl_bench.py $quick --out "$out/spdl.json" 2>"$out/spdl.log"; then
        grep -E '^\s+spdl ' "$out/spdl.log" >&2 || true
        spdl_args=(--spdl "$out/spdl.json")
    else
        spdl_note="the SPDL run failed (see $out/spdl.log)"
    fi
fi

# Case 10: Python values (send/recv) against multiprocessing.Queue and shared_memory with
# pickle 5, and the values_peer example (Rust producer) against one core copying.
values_args=()
values_note=""
if [ -z "$py" ]; then
    values_note="no Python virtualenv (see $out/venv.log)"
elif [ -z "$pkg_ok" ]; then
    values_note="the Python package or NumPy did not install (see $out/venv.log)"
else
    echo "== case 10: Python values"
    # An empty path tells values_bench.py there is no Rust producer (never a stale binary).
    peer=""
    if [ -f examples/values_peer.rs ]; then
        if cargo build --release --quiet --example values_peer 2>"$out/values-build.log"; then
            peer=target/release/examples/values_peer
        else
            echo "warning: the values_peer example did not build (see $out/values-build.log)" >&2
        fi
    fi
    rm -f "$out/values.json"
    if timeout 300 "$py" benches/peers/values_bench.py $quick --values-peer "$peer" \
        --out "$out/values.json" 2>"$out/values.log"; then
        grep -E '^\s+values ' "$out/values.log" >&2 || true
        values_args=(--values "$out/values.json")
    else
        values_note="the values run failed (see $out/values.log)"
    fi
fi

echo "== report"
"${py:-python3}" benches/peers/report.py --raw "$out/raw.json" "${spdl_args[@]}" \
    --spdl-note "$spdl_note" "${values_args[@]}" --values-note "$values_note" \
    --outdir "$out" --load-before "$load_before" \
    --png-copy benches/peers/throughput.png
cat "$out/report.md"
