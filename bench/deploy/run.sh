#!/bin/bash
# Latency of a deploy request from `ferry deploy`'s POST to the streamed `succeeded` result:
# token verification (keys cached), policy, history fetch from the testenv git server, queue,
# pin, the Release controller's render + server-side apply (one ConfigMap), status write.
# Runs the e2e test N times (default 5) and prints the measured latency of each run.
# Needs the test environment (source /tmp/ferry-testenv/env).
set -euo pipefail
N=${1:-5}
cd "$(dirname "$0")/../.."
cargo test -p ferry-agent --test deploy --no-run >/dev/null 2>&1
for i in $(seq "$N"); do
  cargo test -q -p ferry-agent --test deploy a_github_shaped_token -- --nocapture 2>&1 |
    grep -o 'deploy latency (request to applied, warm): [0-9]* ms' || echo "run $i: no measurement"
done
