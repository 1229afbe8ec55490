#!/usr/bin/env bash
# The one place that names the nightly toolchain of ci/miri.sh and ci/fuzz.sh (sourced by both),
# and installs it, with the components they need, when it is missing. A dated nightly, so a
# fresh machine gets the same Miri and the same libFuzzer build as the last run that passed.
# Bump it here (and check both scripts) to move on.
NIGHTLY="nightly-2026-05-20"

# Installs $NIGHTLY with the given components unless it has them already.
ensure_nightly() {
    local missing=()
    local installed
    installed=$(rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null || true)
    for component in "$@"; do
        grep -q "^$component" <<<"$installed" || missing+=("$component")
    done
    if ! rustup toolchain list | grep -q "^$NIGHTLY"; then
        rustup toolchain install "$NIGHTLY" --profile minimal ${1:+--component "$(IFS=,; echo "$*")"}
    elif [ ${#missing[@]} -gt 0 ]; then
        rustup component add --toolchain "$NIGHTLY" "${missing[@]}"
    fi
}
