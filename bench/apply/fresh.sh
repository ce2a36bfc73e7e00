#!/usr/bin/env bash
# bench/apply/fresh.sh: a cold apply of APPS x 4 objects by each tool ALONE on a freshly purged
# control plane (`testenv/down --purge && testenv/up` before every tool).
#
# Why beside run.sh: at 10,000 objects the controller-manager needs minutes to react to one
# tool's 2,500 Deployments (ReplicaSets and pods at its 20 QPS client limit), longer than
# run.sh's 90 s settle, so whichever tool runs second in the same control plane is measured
# under that load (see RESULTS.md, 2026-12-03). Here every tool starts from an empty etcd.
#
#   bench/apply/fresh.sh [APPS=2500] [TOOLS="floor16 ferry kubectl floor64"]
#
# Prints one line per tool: wall seconds, peak RSS, the control plane's CPU seconds during the
# run (kube-apiserver + etcd + kube-controller-manager), and the objects found afterwards.
# FERRY_BIN: a ferry binary (default: a release build of this checkout). Leaves the testenv up,
# purged. Destroys whatever the testenv held.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
APPS="${1:-2500}"
read -r -a TOOLS <<<"${2:-floor16 ferry kubectl floor64}"
TESTENV_DIR="${FERRY_TESTENV_DIR:-/tmp/ferry-testenv}"

# shellcheck source=bench/apply/clients.sh
source "$HERE/clients.sh"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$HERE/gen.sh" "$WORK/manifests" "$APPS"

control_plane_ticks() {
	local total=0 name
	for name in kube-apiserver etcd kube-controller-manager; do
		total=$((total + $(awk '{print $14 + $15}' "/proc/$(cat "$TESTENV_DIR/pids/$name.pid")/stat")))
	done
	echo "$total"
}

echo "### $((APPS * 4)) objects ($APPS apps), cold, each tool alone on a fresh control plane, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| tool | wall (s) | peak RSS (MiB) | control plane CPU (s) | objects in the namespace after |"
echo "|---|---|---|---|---|"
for tool in "${TOOLS[@]}"; do
	"$ROOT/testenv/down" --purge >/dev/null 2>&1 || true
	"$ROOT/testenv/up" >/dev/null 2>&1 || { echo "testenv/up failed: run it by hand to see why" >&2; exit 1; }
	# shellcheck disable=SC1091
	source "$TESTENV_DIR/env"
	kubectl create namespace bench >/dev/null
	# The fresh control plane's own start-up work (default service accounts, leader election).
	sleep 20
	case $tool in
	ferry) cmd=("$FERRY" apply "$WORK/manifests" --app bench -n bench --no-wait --concurrency 16 --revision bench -o json) ;;
	kubectl) cmd=(kubectl apply --server-side -R -f "$WORK/manifests" -n bench) ;;
	floor*) cmd=("$FLOOR" -n bench -c "${tool#floor}" "$WORK/manifests") ;;
	*) echo "unknown tool $tool (ferry, kubectl, floorN)" >&2; exit 2 ;;
	esac
	before="$(control_plane_ticks)"
	/usr/bin/time -f "%e %M" -o "$WORK/time" "${cmd[@]}" >"$WORK/$tool.out" 2>"$WORK/$tool.err" ||
		{ echo "$tool failed:" >&2; tail -5 "$WORK/$tool.err" >&2; exit 1; }
	after="$(control_plane_ticks)"
	read -r wall rss_kib <"$WORK/time"
	objects="$(kubectl get deploy,svc,sa,cm -n bench --no-headers | wc -l)"
	label="$tool"; [[ $tool == floor* ]] && label="floor (bench/floor, ${tool#floor} in flight)"
	[[ $tool == kubectl ]] && label="kubectl --server-side"
	awk -v l="$label" -v w="$wall" -v r="$rss_kib" -v c="$((after - before))" -v hz="$(getconf CLK_TCK)" -v o="$objects" \
		'BEGIN { printf "| %s | %.2f | %.0f | %.0f | %d |\n", l, w, r / 1024, c / hz, o }'
done
"$ROOT/testenv/down" --purge >/dev/null 2>&1 || true
"$ROOT/testenv/up" >/dev/null 2>&1 || { echo "testenv/up failed: run it by hand to see why" >&2; exit 1; }
echo
echo "(objects after: the $((APPS * 4)) applied plus the namespace's default ServiceAccount and kube-root-ca.crt ConfigMap; ferry's inventory ConfigMap is one more)"
