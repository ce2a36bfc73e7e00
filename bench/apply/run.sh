#!/usr/bin/env bash
# bench/apply/run.sh: apply 1,000 objects (250 apps x Deployment + Service + ServiceAccount +
# ConfigMap) to the real testenv, cold and as a no-change re-apply, with ferry and with
# `kubectl apply --server-side`, and with the apply floor (bench/floor: a minimal client-go program
# sending only ferry's server-side apply requests, FLOOR_CONCURRENCY in flight, default 64; a
# list such as "8 16 32 64 128" runs the floor once per value and the ratio uses the fastest),
# side by side. Prints a markdown table (wall time, peak RSS,
# API requests) with the median of ROUNDS rounds, each round in fresh namespaces (and each run
# on an idle control plane, see settle), the tools
# alternating which goes first. Needs `testenv/up`; builds ferry with --release.
#
#   bench/apply/run.sh [APPS=250] [CONCURRENCY=16] [ROUNDS=3]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
APPS="${1:-250}" CONC="${2:-16}" ROUNDS="${3:-3}"
ENV_FILE="${FERRY_TESTENV_DIR:-/tmp/ferry-testenv}/env"
[[ -f "$ENV_FILE" ]] || { echo "testenv is not up: run testenv/up" >&2; exit 1; }
KUBECONFIG="$(sed -n "s/^export KUBECONFIG='\(.*\)'$/\1/p" "$ENV_FILE")"
FERRY_TESTENV_BIN="$(sed -n "s/^export FERRY_TESTENV_BIN='\(.*\)'$/\1/p" "$ENV_FILE")"
export KUBECONFIG
KUBECTL="$FERRY_TESTENV_BIN/kubectl"

# FERRY_BIN: a ferry binary built elsewhere (e.g. by bench/compare); otherwise build this checkout's
# shellcheck source=bench/apply/clients.sh
source "$HERE/clients.sh"
read -r -a FLOOR_CONCS <<<"${FLOOR_CONCURRENCY:-64}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$HERE/gen.sh" "$WORK/manifests" "$APPS"
OBJECTS=$((APPS * 4))

# measure NAME CMD...: run CMD under /usr/bin/time -v; print "wall_s rss_mib".
# Also prints the tool's own CPU seconds (user + sys) and the control plane's (kube-apiserver,
# etcd, kube-controller-manager) during the run: "wall_s rss_mib tool_cpu_s control_plane_cpu_s".
measure() {
	local name="$1" before after; shift
	before="$(control_plane_ticks)"
	/usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || {
		echo "$name failed:" >&2; tail -20 "$WORK/$name.err" >&2; exit 1; }
	after="$(control_plane_ticks)"
	awk -F': ' -v cp="$(((after - before)))" -v hz="$(getconf CLK_TCK)" \
		'/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; w=s}
		/User time/ {u=$2} /System time/ {y=$2}
		/Maximum resident set size/ {r=$2/1024} END {printf "%.2f %.0f %.2f %.2f\n", w, r, u+y, cp/hz}' "$WORK/$name.time"
}
# kubectl -v=6 logs one line per HTTP response: `"Response" verb="GET" url="https://..."`.
kubectl_counts() {
	printf '%s %s\n' "$(grep -cE '"Response" verb="' "$WORK/$1.err" || true)" \
		"$(grep -cE '"Response" verb="(POST|PATCH|PUT|DELETE)"' "$WORK/$1.err" || true)"
}
# ferry and the floor print the same JSON shape
ferry_counts() { jq -r '"\(.requests.reads + .requests.writes) \(.requests.writes)"' "$WORK/$1.out"; }
# settle: wait (up to 90 s) until the control plane is idle again: the controllers' reaction
# to the previous run (ReplicaSets, EndpointSlices, status updates, namespace deletion; the
# controller-manager writes at its client QPS limit, so this takes tens of seconds) would
# otherwise load whichever tool runs next. Idle = kube-apiserver + etcd +
# kube-controller-manager used less than 10% of one core over half a second (about 4% at rest).
PIDS_DIR="${FERRY_TESTENV_DIR:-/tmp/ferry-testenv}/pids"
control_plane_ticks() {
	local total=0 name pid
	for name in kube-apiserver etcd kube-controller-manager; do
		pid="$(cat "$PIDS_DIR/$name.pid" 2>/dev/null)" || continue
		total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
	done
	echo "$total"
}
settle() {
	local hz before after i
	hz="$(getconf CLK_TCK)"
	for ((i = 0; i < 180; i++)); do
		before="$(control_plane_ticks)"
		sleep 0.5
		after="$(control_plane_ticks)"
		# ticks in 0.5 s < 10% of a core
		((after - before < hz / 20)) && return 0
	done
	echo "warning: control plane still busy after 90 s" >&2
}
run_ferry() { # run_ferry ROUND PHASE NS
	local m; m="$(measure "ferry-$1-$2" "$FERRY" apply "$WORK/manifests" --app bench -n "$3" \
		--no-wait --concurrency "$CONC" --revision bench -o json)"
	echo "ferry $2 $m $(ferry_counts "ferry-$1-$2")" >>"$WORK/results"
}
run_kubectl() { # run_kubectl ROUND PHASE NS
	local m; m="$(measure "kubectl-$1-$2" "$KUBECTL" apply --server-side -R -f "$WORK/manifests" -n "$3" -v=6)"
	echo "kubectl $2 $m $(kubectl_counts "kubectl-$1-$2")" >>"$WORK/results"
}

run_floor() { # run_floor ROUND PHASE NS CONCURRENCY
	local m; m="$(measure "floor$4-$1-$2" "$FLOOR" -n "$3" -c "$4" "$WORK/manifests")"
	echo "floor$4 $2 $m $(ferry_counts "floor$4-$1-$2")" >>"$WORK/results"
}

TOOLS=(ferry kubectl)
for c in "${FLOOR_CONCS[@]}"; do TOOLS+=("floor$c"); done
: >"$WORK/results"
for ((r = 1; r <= ROUNDS; r++)); do
	namespaces=()
	for tool in "${TOOLS[@]}"; do
		namespaces+=("bench-$tool-$r-$$")
		"$KUBECTL" create namespace "bench-$tool-$r-$$" >/dev/null
	done
	# rotate which tool goes first
	shift_by=$(((r - 1) % ${#TOOLS[@]}))
	order=("${TOOLS[@]:shift_by}" "${TOOLS[@]:0:shift_by}")
	for phase in cold reapply; do
		for tool in "${order[@]}"; do
			settle
			case $tool in
			ferry) run_ferry "$r" "$phase" "bench-$tool-$r-$$" ;;
			kubectl) run_kubectl "$r" "$phase" "bench-$tool-$r-$$" ;;
			floor*) run_floor "$r" "$phase" "bench-$tool-$r-$$" "${tool#floor}" ;;
			esac
		done
	done
	# Wait for the namespaces to be gone so their deletion does not load the next round.
	"$KUBECTL" delete namespace "${namespaces[@]}" --wait=true --timeout=600s >/dev/null
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "### $OBJECTS objects ($APPS apps), concurrency $CONC (floor ${FLOOR_CONCS[*]}), median of $ROUNDS rounds, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| run | wall (s) | peak RSS (MiB) | tool CPU (s) | control plane CPU (s) | API requests | of which writes | all rounds wall (s) |"
echo "|---|---|---|---|---|---|---|---|"
for phase in cold reapply; do
	eval "w_floor_${phase}="
	for tool in "${TOOLS[@]}"; do
		rows="$(awk -v t="$tool" -v p="$phase" '$1==t && $2==p' "$WORK/results")"
		wall="$(awk '{print $3}' <<<"$rows" | median)"
		rss="$(awk '{print $4}' <<<"$rows" | median)"
		tool_cpu="$(awk '{print $5}' <<<"$rows" | median)"
		cp_cpu="$(awk '{print $6}' <<<"$rows" | median)"
		reqs="$(awk '{print $7}' <<<"$rows" | median)"
		writes="$(awk '{print $8}' <<<"$rows" | median)"
		all="$(awk '{printf "%s%s", sep, $3; sep=", "}' <<<"$rows")"
		label="$tool"; [[ $tool == kubectl ]] && label="kubectl --server-side"
		if [[ $tool == floor* ]]; then
			label="floor (bench/floor, ${tool#floor} in flight)"
			# the floor is the fastest of its concurrencies
			best="w_floor_${phase}"
			if [[ -z "${!best}" ]] || awk -v a="$wall" -v b="${!best}" 'BEGIN { exit !(a < b) }'; then
				eval "w_floor_${phase}=$wall"
			fi
		else
			eval "w_${tool}_${phase}=$wall"
		fi
		echo "| $label ($phase) | $wall | $rss | $tool_cpu | $cp_cpu | $reqs | $writes | $all |"
	done
done
echo
# shellcheck disable=SC2154
awk -v f="$w_ferry_cold" -v k="$w_kubectl_cold" 'BEGIN { printf "cold apply: ferry %.1fx faster than kubectl --server-side\n", k/f }'
# shellcheck disable=SC2154
awk -v f="$w_ferry_reapply" -v k="$w_kubectl_reapply" 'BEGIN { printf "no-change re-apply: ferry %.1fx faster than kubectl --server-side\n", k/f }'
# shellcheck disable=SC2154
awk -v f="$w_ferry_cold" -v l="$w_floor_cold" 'BEGIN { printf "cold apply: ferry / floor (its fastest concurrency) = %.2f (goal <= 1.2)\n", f/l }'
# shellcheck disable=SC2154
awk -v f="$w_ferry_reapply" -v l="$w_floor_reapply" 'BEGIN { printf "no-change re-apply: ferry / floor = %.2f (the floor re-sends every apply; ferry skips unchanged objects)\n", f/l }'
