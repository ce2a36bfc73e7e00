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

# testenv_gen_cert PKI NAME SUBJECT [SAN]: a client cert (server+client with a
# SAN) signed by PKI/ca.{crt,key}; kept when PKI/NAME.crt exists.
testenv_gen_cert() {
	local pki="$1" name="$2" subj="$3" san="${4:-}"
	[[ -s "$pki/$name.crt" ]] && return 0
	openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
	openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		if [[ -n "$san" ]]; then
			echo "extendedKeyUsage=serverAuth,clientAuth"
			echo "subjectAltName=$san"
		else
			echo "extendedKeyUsage=clientAuth"
		fi
	} >"$pki/$name.ext"
	openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
		-days 3650 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
	rm -f "$pki/$name.csr" "$pki/$name.ext"
}

# testenv_write_kubeconfig FILE PKI CERTNAME USER SERVER: certs embedded, mode 600
testenv_write_kubeconfig() {
	local f="$1" pki="$2" cert="$3" user="$4" server="$5"
	cat >"$f.tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: ferry-testenv
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$cert.crt")
    client-key-data: $(base64 -w0 <"$pki/$cert.key")
contexts:
- name: ferry-testenv
  context:
    cluster: ferry-testenv
    user: $user
    namespace: default
current-context: ferry-testenv
KC
	chmod 600 "$f.tmp"
	mv "$f.tmp" "$f"
}

# testenv_pid_is_ours STATEDIR PID: a live process (not a recycled pid) of the
# real node: its binary is in the testenv cache, or its command line names the
# state dir (containerd is Debian's, started with a config inside the state dir).
testenv_pid_is_ours() {
	local d="$1" p="$2"
	[[ -n "$p" ]] && kill -0 "$p" 2>/dev/null || return 1
	# (or still in the setsid/nohup wrappers that exec it)
	case "$(readlink "/proc/$p/exe" 2>/dev/null)" in */ferry/testenv/* | */setsid | */nohup) return 0 ;; esac
	tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$d/"
}

# the real node is on unless FERRY_TESTENV_REAL_NODE=0
testenv_real_node_enabled() { [[ "${FERRY_TESTENV_REAL_NODE:-1}" != 0 ]]; }

# the lines testenv/node-up adds to the env file (and node-down removes)
NODE_ENV_LINES='^(# the real node \(testenv/node-up\)|export (FERRY_REAL_NODE|FERRY_REAL_NODE_IP|FERRY_TESTBOX_IMAGE|FERRY_CONTAINERD_ADDRESS|FERRY_GIT_URL_FROM_PODS)=)'
