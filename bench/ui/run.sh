#!/usr/bin/env bash
# bench/ui: first paint of `ferry ui`'s apps page with N Releases (default 1000) in headless
# Chromium (Debian's), against the running test environment. See RESULTS.md.
#   bench/ui/run.sh [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
source "${FERRY_TESTENV_DIR:-/tmp/ferry-testenv}/env"
# --release: what users run (`ferry ui` ships as a release binary); a debug build paints slower.
cargo run -q --release -p ferry-ui --example first_paint -- "${1:-1000}" "${2:-5}"
