#!/bin/bash
# Latency from a Release becoming Ready at a commit to that commit's status showing in the
# forge's API: the Release controller's Event, the Alert's delivery in the background (Provider
# Secret read as the tenant, POST to Gitea's statuses API) and Gitea storing it.
# Builds the real-Gitea test once and runs it N times (default 5), printing each run's figure.
# The two instants are taken in the test process: a watch of the Release (Ready=True with the
# commit applied) and Gitea's statuses API polled every 20 ms, both started before the Release
# exists. Needs the test environment with its forge (source /tmp/ferry-testenv/env).
set -euo pipefail
N=${1:-5}
cd "$(dirname "$0")/../.."
bin=$(cargo test -p ferry-agent --test forge_gitea --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.reason == "compiler-artifact" and .target.name == "forge_gitea" and .executable != null) | .executable' |
  tail -n 1)
[[ -x "$bin" ]] || { echo "could not build the forge_gitea test" >&2; exit 1; }
for i in $(seq "$N"); do
  "$bin" gitea_commit_status_follows --nocapture 2>&1 |
    grep -o 'notify latency (Release Ready -> Gitea commit status visible): -\?[0-9]* ms' ||
    echo "run $i: no measurement"
done
