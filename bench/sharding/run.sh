#!/bin/bash
# Failover of a sharded agent (issue 17): three ferry-agent processes with --shards 8 split 12
# Releases; one is killed with SIGKILL; measured from the kill to the moment the last of its
# Releases has been reconciled by a survivor (from the survivors' own reconcile records).
# tests/sharding_e2e.rs does the run (and checks no Release is reconciled by two replicas at
# once); this repeats it N times (default 3) with a lease of LEASE seconds (default 3; the
# agent's default is 15) and prints each run's failover line.
# Needs the test environment (source /tmp/ferry-testenv/env).
set -euo pipefail
N=${1:-3}
LEASE=${2:-3}
cd "$(dirname "$0")/../.."
cargo test -p ferry-agent --test sharding_e2e --no-run >/dev/null 2>&1
for i in $(seq "$N"); do
  FERRY_SHARDS_LEASE_SECS="$LEASE" cargo test -q -p ferry-agent --test sharding_e2e -- --nocapture 2>&1 |
    grep -o 'failover: lease .*' || echo "run $i: no measurement"
done
