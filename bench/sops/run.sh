#!/usr/bin/env bash
# SOPS decryption throughput: ferry's native decryption vs the real `sops -d`, on the same
# files. Generates N YAML files (nested maps, lists, numbers, multi-line strings), encrypts
# them with the real sops + age, then decrypts each file once with each tool, one process per
# file (how both are used from a shell or CI), and checks the outputs agree.
#
# Usage: bench/sops/run.sh [N]   (default 200; needs testenv tools and a release ferry build:
#        cargo build --release -p ferry-cli)
set -euo pipefail

N="${1:-200}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
ENV_FILE="${FERRY_TESTENV_DIR:-/tmp/ferry-testenv}/env"
if [[ -f "$ENV_FILE" ]]; then
  # shellcheck disable=SC1090
  source "$ENV_FILE"
fi
BIN="${FERRY_TESTENV_BIN:?FERRY_TESTENV_BIN not set: run testenv/up first}"
FERRY="${FERRY_BIN:-$ROOT/target/release/ferry}"
[[ -x "$FERRY" ]] || { echo "build ferry first: cargo build --release -p ferry-cli" >&2; exit 2; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export SOPS_AGE_KEY_FILE="$WORK/keys.txt"
unset SOPS_AGE_KEY
"$BIN/age-keygen" -o "$SOPS_AGE_KEY_FILE" 2>/dev/null
RECIPIENT="$("$BIN/age-keygen" -y "$SOPS_AGE_KEY_FILE")"

mkdir -p "$WORK/plain" "$WORK/enc" "$WORK/out-sops" "$WORK/out-ferry"
for i in $(seq 1 "$N"); do
  cat > "$WORK/plain/s$i.yaml" <<EOF
service: svc-$i
database:
  host: db-$i.internal
  port: $((5000 + i))
  user: app$i
  password: pw-$RANDOM-$RANDOM-$i
  ratio: 0.$i
  tls: true
api:
  tokens:
    - tok-$RANDOM-a
    - tok-$RANDOM-b
    - tok-$RANDOM-c
  limits: {rps: $i, burst: $((i * 2))}
certificate: |
  -----BEGIN CERTIFICATE-----
  MIIB$RANDOM$RANDOM$RANDOM
  -----END CERTIFICATE-----
EOF
  "$BIN/sops" --encrypt --age "$RECIPIENT" "$WORK/plain/s$i.yaml" > "$WORK/enc/s$i.yaml"
done

now() { date +%s.%N; }

start=$(now)
for i in $(seq 1 "$N"); do
  "$BIN/sops" --decrypt "$WORK/enc/s$i.yaml" > "$WORK/out-sops/s$i.yaml"
done
sops_s=$(echo "$(now) - $start" | bc -l)

start=$(now)
for i in $(seq 1 "$N"); do
  "$FERRY" secrets decrypt "$WORK/enc/s$i.yaml" > "$WORK/out-ferry/s$i.yaml"
done
ferry_s=$(echo "$(now) - $start" | bc -l)

# Same content (sops indents by 4, ferry by 2: compare as data).
python3 - "$WORK" "$N" <<'PY'
import sys, json, subprocess
work, n = sys.argv[1], int(sys.argv[2])
try:
    import yaml
except ImportError:
    yaml = None
bad = 0
for i in range(1, n + 1):
    a = open(f"{work}/out-sops/s{i}.yaml").read()
    b = open(f"{work}/out-ferry/s{i}.yaml").read()
    if yaml:
        if yaml.safe_load(a) != yaml.safe_load(b):
            bad += 1
    elif a.replace("    ", "  ").split() != b.split():
        bad += 1
if bad:
    print(f"MISMATCH in {bad} files", file=sys.stderr)
    sys.exit(1)
print(f"outputs agree on {n} files")
PY

printf 'files: %d\n' "$N"
printf 'sops -d:               %.2f s total, %.1f ms/file, %.0f files/s\n' "$sops_s" "$(echo "$sops_s * 1000 / $N" | bc -l)" "$(echo "$N / $sops_s" | bc -l)"
printf 'ferry secrets decrypt: %.2f s total, %.1f ms/file, %.0f files/s\n' "$ferry_s" "$(echo "$ferry_s * 1000 / $N" | bc -l)" "$(echo "$N / $ferry_s" | bc -l)"
printf 'speed-up: %.1fx\n' "$(echo "$sops_s / $ferry_s" | bc -l)"
