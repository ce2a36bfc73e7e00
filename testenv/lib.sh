# Shared helpers for testenv scripts (sourced, not executed).

testenv_cache_root() { echo "${XDG_CACHE_HOME:-$HOME/.cache}/ferry/testenv"; }

# testenv_key: the version key of the bin dir, e.g. k8s1.35.4-go1.26-r1
testenv_key() {
	local gv
	gv="$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo unknown)"
	gv="$(echo "$gv" | sed -E 's/^(go[0-9]+\.[0-9]+).*/\1/')"
	echo "k8s${KUBERNETES_VERSION#v}-${gv}-r${TESTENV_REV}"
}

testenv_bin_dir() { echo "$(testenv_cache_root)/$(testenv_key)/bin"; }
