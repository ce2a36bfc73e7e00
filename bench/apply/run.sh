#!/usr/bin/env bash
# bench/apply/run.sh: apply 1,000 objects (250 apps x Deployment + Service + ServiceAccount +
# ConfigMap) to the real testenv, cold and as a no-change re-apply, with ferry and with
# `kubectl apply --server-side`, side by side. Prints a markdown table (wall time, peak RSS,
# API requests). Needs `testenv/up`; builds ferry with --release.
#
#   bench/apply/run.sh [APPS] [CONCURRENCY]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
APPS="${1:-250}" CONC="${2:-16}"
ENV_FILE="${FERRY_TESTENV_DIR:-/tmp/ferry-testenv}/env"
[[ -f "$ENV_FILE" ]] || { echo "testenv is not up: run testenv/up" >&2; exit 1; }
# shellcheck disable=SC1090
source "$ENV_FILE"
KUBECTL="$FERRY_TESTENV_BIN/kubectl"

(cd "$ROOT" && cargo build --release -p ferry-cli --bin ferry >&2)
FERRY="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$HERE/gen.sh" "$WORK/manifests" "$APPS"
OBJECTS=$((APPS * 4))
SUFFIX="$(date +%s)"
NS_F="bench-ferry-$SUFFIX" NS_K="bench-kubectl-$SUFFIX"
"$KUBECTL" create namespace "$NS_F" >/dev/null
"$KUBECTL" create namespace "$NS_K" >/dev/null

# measure NAME CMD...: runs CMD under /usr/bin/time -v; sets WALL (s) and RSS (MiB).
measure() {
	local name="$1"; shift
	/usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || {
		echo "$name failed:" >&2; tail -20 "$WORK/$name.err" >&2; exit 1; }
	WALL="$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; printf "%.2f", s}' "$WORK/$name.time")"
	RSS="$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$WORK/$name.time")"
}
# kubectl -v=6 logs one line per HTTP response: `"Response" verb="GET" url="https://..."`.
kubectl_requests() { grep -cE '"Response" verb="(GET|POST|PATCH|PUT|DELETE)"' "$WORK/$1.err" || true; }
kubectl_writes() { grep -cE '"Response" verb="(POST|PATCH|PUT|DELETE)"' "$WORK/$1.err" || true; }

rows=()
for run in cold reapply; do
	measure "ferry-$run" "$FERRY" apply "$WORK/manifests" --app bench -n "$NS_F" --no-wait \
		--concurrency "$CONC" --revision bench -o json
	reads="$(jq '.requests.reads' "$WORK/ferry-$run.out")"
	writes="$(jq '.requests.writes' "$WORK/ferry-$run.out")"
	rows+=("| ferry ($run) | $WALL | $RSS | $((reads + writes)) | $writes |")
	f_wall[$([[ $run == cold ]] && echo 0 || echo 1)]="$WALL"

	measure "kubectl-$run" "$KUBECTL" apply --server-side -R -f "$WORK/manifests" -n "$NS_K" -v=6
	rows+=("| kubectl --server-side ($run) | $WALL | $RSS | $(kubectl_requests "kubectl-$run") | $(kubectl_writes "kubectl-$run") |")
	k_wall[$([[ $run == cold ]] && echo 0 || echo 1)]="$WALL"
done

echo "### $OBJECTS objects ($APPS apps), concurrency $CONC, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| run | wall (s) | peak RSS (MiB) | API requests | of which writes |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
awk -v f="${f_wall[0]}" -v k="${k_wall[0]}" 'BEGIN { printf "cold apply: ferry is %.1fx faster than kubectl --server-side\n", k/f }'
awk -v f="${f_wall[1]}" -v k="${k_wall[1]}" 'BEGIN { printf "no-change re-apply: ferry is %.1fx faster than kubectl --server-side\n", k/f }'

"$KUBECTL" delete namespace "$NS_F" "$NS_K" --wait=false >/dev/null
