#!/usr/bin/env bash
# bench/render/run.sh: ferry's render overhead on top of the real renderers.
#   1. a 100-app kustomize tree:   `ferry render` vs `kustomize build --load-restrictor ...`
#   2. a 30-template chart:        `ferry render` vs `helm template`
#   3. an operator-style chart with 630 KB of CRDs in crds/: the same two
#   4. two published charts (ingress-nginx, kyverno with its CRDs), from the Go module proxy
# Both sides write their YAML to /dev/null. Wall time three ways: hyperfine, an interleaved A/B
# (ab.py), and perf stat, which also gives CPU time. Uses hyperfine (apt-get install hyperfine) and
# the testenv's helm/kustomize (testenv/build), builds ferry with --release.
#
#   bench/render/run.sh [WORKDIR]      # prints a markdown table; RESULTS.md has a recorded run
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="${1:-$(mktemp -d)}"
# The testenv's tool dir: from a running testenv's env file, else computed like testenv/build.
if [[ -r /tmp/ferry-testenv/env ]] && grep -q FERRY_TESTENV_BIN /tmp/ferry-testenv/env; then
	BIN="$(sed -n "s/^export FERRY_TESTENV_BIN='\(.*\)'$/\1/p" /tmp/ferry-testenv/env)"
else
	# shellcheck source=/dev/null
	source "$ROOT/testenv/versions.env"
	# shellcheck source=/dev/null
	source "$ROOT/testenv/lib.sh"
	BIN="$(testenv_bin_dir)"
fi
for tool in helm kustomize; do
	[[ -x "$BIN/$tool" ]] || { echo "missing $BIN/$tool: run testenv/build" >&2; exit 2; }
done
command -v hyperfine >/dev/null || { echo "hyperfine not found: apt-get install hyperfine" >&2; exit 2; }
# FERRY_BIN=path skips the build (e.g. a copy of target/release/ferry).
if [[ -z "${FERRY_BIN:-}" ]]; then
	(cd "$ROOT" && cargo build --release -q -p ferry-cli)
fi
FERRY="${FERRY_BIN:-$ROOT/target/release/ferry}"
"$HERE/gen.sh" "$WORK"
export FERRY_HELM="$BIN/helm" FERRY_KUSTOMIZE="$BIN/kustomize"
# Same helm homes for both sides would share caches; ferry uses private ones, so does this.
HELM_HOMES="$(mktemp -d)"
export HELM_CACHE_HOME="$HELM_HOMES/cache" HELM_CONFIG_HOME="$HELM_HOMES/config" HELM_DATA_HOME="$HELM_HOMES/data"

RUNS="${RUNS:-20}"
hyperfine --warmup 2 --runs "$RUNS" -N --export-markdown "$WORK/kustomize.md" \
	-n "kustomize build" "$BIN/kustomize build $WORK/kustomize --load-restrictor LoadRestrictionsRootOnly" \
	-n "ferry render (kustomize)" "$FERRY render $WORK/kustomize --root $WORK" \
	--output=null
hyperfine --warmup 3 --runs "$((RUNS * 3))" -N --export-markdown "$WORK/helm.md" \
	-n "helm template" "$BIN/helm template platform $WORK/chart --namespace default --include-crds --skip-tests" \
	-n "ferry render (helm)" "$FERRY render $WORK/chart --root $WORK" \
	--output=null
hyperfine --warmup 3 --runs "$((RUNS * 2))" -N --export-markdown "$WORK/crdchart.md" \
	-n "helm template (chart with CRDs)" "$BIN/helm template platform $WORK/crdchart --namespace default --include-crds --skip-tests" \
	-n "ferry render (chart with CRDs)" "$FERRY render $WORK/crdchart --root $WORK" \
	--output=null
echo
cat "$WORK/kustomize.md" "$WORK/helm.md" "$WORK/crdchart.md"

# Interleaved wall-time A/B (alternating order each round, so drift hits both sides).
echo
echo "| Interleaved A/B | median | mean |"
echo "|:---|---:|---:|"
"$HERE/ab.py" "$((RUNS * 2))" \
	"$BIN/kustomize build $WORK/kustomize --load-restrictor LoadRestrictionsRootOnly" \
	"$FERRY render $WORK/kustomize --root $WORK"
"$HERE/ab.py" "$((RUNS * 6))" \
	"$BIN/helm template platform $WORK/chart --namespace default --include-crds --skip-tests" \
	"$FERRY render $WORK/chart --root $WORK"
"$HERE/ab.py" "$((RUNS * 4))" \
	"$BIN/helm template platform $WORK/crdchart --namespace default --include-crds --skip-tests" \
	"$FERRY render $WORK/crdchart --root $WORK"
# Published charts, if gen.sh could fetch them (helm takes ~50 ms and ~380 ms on them).
[[ -d "$WORK/real/ingress-nginx" ]] && "$HERE/ab.py" "$((RUNS * 6))" \
	"$BIN/helm template platform $WORK/real/ingress-nginx --namespace default --include-crds --skip-tests" \
	"$FERRY render $WORK/real/ingress-nginx --root $WORK"
[[ -d "$WORK/real/kyverno" ]] && "$HERE/ab.py" "$RUNS" \
	"$BIN/helm template platform $WORK/real/kyverno --namespace default --include-crds --skip-tests" \
	"$FERRY render $WORK/real/kyverno --root $WORK"

# Wall time on a shared machine is noisy; CPU time (task-clock, children included) is the
# stable measure of the work ferry adds on top of the renderer.
if command -v perf >/dev/null; then
	echo
	echo "| Command | task-clock (CPU ms, incl. renderer) | elapsed (s) |"
	echo "|:---|---:|---:|"
	cpu() { # NAME RUNS CMD...
		local name="$1" runs="$2"; shift 2
		local out
		out="$(perf stat -r "$runs" -e task-clock "$@" 2>&1 >/dev/null)"
		printf '| %s | %s | %s |\n' "$name" \
			"$(awk '/task-clock/ {print $1" ("$(NF-1)" "$NF}' <<<"$out" | tr -d ')' | sed 's/$/)/')" \
			"$(awk '/elapsed/ {print $1" ± "$3}' <<<"$out")"
	}
	cpu "kustomize build" "$RUNS" "$BIN/kustomize" build "$WORK/kustomize" --load-restrictor LoadRestrictionsRootOnly
	cpu "ferry render (kustomize)" "$RUNS" "$FERRY" render "$WORK/kustomize" --root "$WORK"
	cpu "helm template" "$((RUNS * 3))" "$BIN/helm" template platform "$WORK/chart" --namespace default --include-crds --skip-tests
	cpu "ferry render (helm)" "$((RUNS * 3))" "$FERRY" render "$WORK/chart" --root "$WORK"
	cpu "helm template (chart with CRDs)" "$((RUNS * 2))" "$BIN/helm" template platform "$WORK/crdchart" --namespace default --include-crds --skip-tests
	cpu "ferry render (chart with CRDs)" "$((RUNS * 2))" "$FERRY" render "$WORK/crdchart" --root "$WORK"
	cpu "ferry --version (process start)" "$((RUNS * 3))" "$FERRY" --version
fi
