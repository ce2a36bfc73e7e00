#!/usr/bin/env bash
# bench/flux/run.sh [N=1000]: the same N apps x 4 objects through Flux (source-controller +
# kustomize-controller, GitRepository + N Kustomizations) and through ferry's agent (GitSource +
# N Releases), one after the other, side by side (see bench.py and RESULTS.md).
# Needs testenv/up. Builds Flux if missing (testenv/flux-build, Go module proxy, cached in
# ~/.cache/ferry); the agent is FERRY_AGENT_BIN or target/release/ferry-agent, built with
# `cargo build --release -p ferry-agent` when neither exists. Not part of scripts/test.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ENV_FILE="${FERRY_TESTENV_DIR:-/tmp/ferry-testenv}/env"
[[ -f "$ENV_FILE" ]] || { echo "testenv is not up: run testenv/up" >&2; exit 1; }
"$ROOT/testenv/flux-build" >/dev/null
if [[ -z "${FERRY_AGENT_BIN:-}" ]]; then
	FERRY_AGENT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry-agent"
	[[ -x "$FERRY_AGENT_BIN" ]] || (cd "$ROOT" && cargo build --release -p ferry-agent --bin ferry-agent >&2)
fi
export FERRY_AGENT_BIN
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); agent: $FERRY_AGENT_BIN" >&2
exec python3 "$HERE/bench.py" "$@"
