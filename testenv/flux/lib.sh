# Shared helpers for testenv/flux-* (sourced, not executed; needs flux/versions.env).

flux_key() {
	local gv
	gv="$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo unknown)"
	gv="$(echo "$gv" | sed -E 's/^(go[0-9]+\.[0-9]+).*/\1/')"
	echo "flux-sc${SOURCE_CONTROLLER_VERSION#v}-kc${KUSTOMIZE_CONTROLLER_VERSION#v}-${gv}-r${FLUX_REV}"
}
flux_bin_dir() { echo "${XDG_CACHE_HOME:-$HOME/.cache}/ferry/testenv/$(flux_key)/bin"; }

# Ports (loopback only); override with the env vars.
FLUX_SC_STORAGE_PORT="${FERRY_FLUX_SC_STORAGE_PORT:-17090}"   # artifact server
FLUX_SC_METRICS_PORT="${FERRY_FLUX_SC_METRICS_PORT:-17080}"
FLUX_SC_HEALTH_PORT="${FERRY_FLUX_SC_HEALTH_PORT:-17440}"
FLUX_KC_METRICS_PORT="${FERRY_FLUX_KC_METRICS_PORT:-17081}"
FLUX_KC_HEALTH_PORT="${FERRY_FLUX_KC_HEALTH_PORT:-17441}"
