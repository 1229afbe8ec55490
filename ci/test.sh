#!/usr/bin/env bash
# The README's test command: every test, Rust and Python.
#
#   bash ci/test.sh
#
# 1. `cargo test --workspace`: the crate's unit, integration, process and doc tests.
# 2. The Python package (python/) built with maturin into a virtualenv under target/py-venv,
#    with numpy, pytest, hypothesis and SPDL 0.8.0 from PyPI, then its tests (python/tests) with
#    pytest (the cross-language tests start examples/values_peer, built by step 1).
# A fresh machine needs only the Rust toolchain and CPython with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

cargo test --workspace

venv=target/py-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check maturin numpy pytest hypothesis "spdl_core==0.8.0"
# Builds the extension (release) and installs the package, as `pip install ./python` does.
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python
(cd python && "../$venv/bin/python" -m pytest -q)

echo "ci/test.sh: all tests passed in $(($(date +%s) - started)) s"
