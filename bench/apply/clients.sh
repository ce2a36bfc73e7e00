# bench/apply/clients.sh: sourced by run.sh and fresh.sh. Sets FERRY (FERRY_BIN, e.g. from
# bench/compare, or a release build of this checkout) and FLOOR (bench/floor, built once and
# cached). Needs ROOT.
if [[ -n "${FERRY_BIN:-}" ]]; then
	FERRY="$FERRY_BIN"
else
	(cd "$ROOT" && cargo build --release -p ferry-cli --bin ferry >&2)
	FERRY="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry"
fi
FLOOR="$("$ROOT/bench/floor/build")"
export FERRY FLOOR
