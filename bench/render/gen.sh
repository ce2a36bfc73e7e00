#!/usr/bin/env bash
# gen.sh DIR: write the render benchmark fixtures under DIR:
#   DIR/kustomize  a 100-app kustomize tree: one root kustomization over 100 overlays, each an
#                  overlay (namespace, patch, image, configMapGenerator) of its own base
#                  (Deployment, Service, ServiceAccount, HPA) plus a shared component.
#   DIR/chart      a mid-sized synthetic chart: 30 templates (a _helpers.tpl with named templates,
#                  10 components x Deployment/Service/ConfigMap) and a values.yaml.
#   DIR/crdchart   the same chart with ~630 KB of CRDs in crds/ (an operator-style chart).
#   DIR/real/*     two published charts, unchanged, taken from their projects' Go modules through
#                  the module proxy (so they need `go`; skipped with a note without it):
#                  ingress-nginx 4.11.0 (40 templates, ~21 KB out) and kyverno 3.3.6 (a CRD
#                  subchart: ~3.4 MB out).
set -euo pipefail
DIR="$1"
APPS="${APPS:-100}"
K="$DIR/kustomize"
rm -rf "$K" "$DIR/chart"
mkdir -p "$K/components/common"
cat >"$K/components/common/kustomization.yaml" <<'YAML'
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
labels:
  - pairs: {platform.example.com/managed: "true"}
commonAnnotations:
  platform.example.com/owner: platform-team
YAML
{
	echo "resources:"
	for ((i = 1; i <= APPS; i++)); do printf '  - apps/app-%03d/overlay\n' "$i"; done
} >"$K/kustomization.yaml"
for ((i = 1; i <= APPS; i++)); do
	n="$(printf 'app-%03d' "$i")"
	b="$K/apps/$n/base" o="$K/apps/$n/overlay"
	mkdir -p "$b" "$o"
	cat >"$b/kustomization.yaml" <<'YAML'
resources: [deployment.yaml, service.yaml, serviceaccount.yaml, hpa.yaml]
YAML
	cat >"$b/deployment.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $n
  labels: {app: $n}
spec:
  replicas: 1
  selector: {matchLabels: {app: $n}}
  template:
    metadata: {labels: {app: $n}}
    spec:
      serviceAccountName: $n
      containers:
        - name: app
          image: ghcr.io/example/$n:1.0.0
          ports: [{containerPort: 8080}]
          envFrom: [{configMapRef: {name: $n-config}}]
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {memory: 128Mi}
          readinessProbe: {httpGet: {path: /healthz, port: 8080}}
YAML
	cat >"$b/service.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: $n}
spec:
  selector: {app: $n}
  ports: [{port: 80, targetPort: 8080}]
YAML
	cat >"$b/serviceaccount.yaml" <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: $n}
YAML
	cat >"$b/hpa.yaml" <<YAML
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: $n}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: $n}
  minReplicas: 2
  maxReplicas: 10
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 75}}
YAML
	cat >"$o/kustomization.yaml" <<YAML
namespace: team-$((i % 10))
resources: [../base]
components: [../../../components/common]
patches:
  - path: replicas.yaml
configMapGenerator:
  - name: $n-config
    literals: [LOG_LEVEL=info, APP_NAME=$n]
images:
  - name: ghcr.io/example/$n
    newTag: 1.$((i % 7)).0
YAML
	cat >"$o/replicas.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $n}
spec: {replicas: 3}
YAML
done

C="$DIR/chart"
mkdir -p "$C/templates"
cat >"$C/Chart.yaml" <<'YAML'
apiVersion: v2
name: platform
version: 3.4.5
appVersion: "3.4.5"
YAML
{
	echo "global: {registry: ghcr.io/example, pullPolicy: IfNotPresent}"
	echo "components:"
	for ((c = 1; c <= 10; c++)); do
		printf '  comp%02d: {enabled: true, replicas: %d, tag: "1.%d.0", port: %d, env: {LOG_LEVEL: info, FEATURE_X: "on"}}\n' "$c" $((c % 3 + 1)) "$c" $((8000 + c))
	done
} >"$C/values.yaml"
cat >"$C/templates/_helpers.tpl" <<'TPL'
{{- define "platform.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}
{{- define "platform.fullname" -}}
{{ printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" }}
{{- end -}}
TPL
for ((c = 1; c <= 10; c++)); do
	comp="$(printf 'comp%02d' "$c")"
	cat >"$C/templates/$comp-deployment.yaml" <<TPL
{{- \$c := .Values.components.$comp }}
{{- if \$c.enabled }}
{{- \$ctx := dict "root" . "name" "$comp" }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "platform.fullname" \$ctx }}
  labels: {{- include "platform.labels" \$ctx | nindent 4 }}
spec:
  replicas: {{ \$c.replicas }}
  selector:
    matchLabels: {app.kubernetes.io/name: $comp, app.kubernetes.io/instance: {{ .Release.Name }}}
  template:
    metadata:
      labels: {{- include "platform.labels" \$ctx | nindent 8 }}
      annotations:
        checksum/config: {{ toYaml \$c.env | sha256sum }}
    spec:
      containers:
        - name: $comp
          image: "{{ .Values.global.registry }}/$comp:{{ \$c.tag }}"
          imagePullPolicy: {{ .Values.global.pullPolicy }}
          ports: [{containerPort: {{ \$c.port }}}]
          envFrom: [{configMapRef: {name: {{ include "platform.fullname" \$ctx }}}}]
{{- end }}
TPL
	cat >"$C/templates/$comp-service.yaml" <<TPL
{{- \$c := .Values.components.$comp }}
{{- if \$c.enabled }}
{{- \$ctx := dict "root" . "name" "$comp" }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "platform.fullname" \$ctx }}
  labels: {{- include "platform.labels" \$ctx | nindent 4 }}
spec:
  selector: {app.kubernetes.io/name: $comp, app.kubernetes.io/instance: {{ .Release.Name }}}
  ports: [{port: 80, targetPort: {{ \$c.port }}}]
{{- end }}
TPL
	cat >"$C/templates/$comp-configmap.yaml" <<TPL
{{- \$c := .Values.components.$comp }}
{{- if \$c.enabled }}
{{- \$ctx := dict "root" . "name" "$comp" }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "platform.fullname" \$ctx }}
  labels: {{- include "platform.labels" \$ctx | nindent 4 }}
data:
{{- range \$k, \$v := \$c.env }}
  {{ \$k }}: {{ \$v | quote }}
{{- end }}
{{- end }}
TPL
done
# DIR/crdchart: the same chart plus 12 CRD files in crds/ (ferry's own CRDs, renamed into 12
# groups: ~630 KB of OpenAPI schema), like an operator chart (cert-manager, prometheus-operator).
# helm copies CRDs through untouched, so this measures ferry's cost per byte of output.
CC="$DIR/crdchart"
rm -rf "$CC"
cp -r "$C" "$CC"
mkdir -p "$CC/crds"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
for ((g = 1; g <= 12; g++)); do
	sed "s/\.ferry\.dev/.t$g.example.com/g; s/group: ferry.dev/group: t$g.example.com/" \
		"$ROOT/deploy/crds.yaml" >"$CC/crds/crds-$g.yaml"
done
# DIR/real: charts as their projects publish them, from the module zips (pinned versions).
rm -rf "$DIR/real"
mkdir -p "$DIR/real"
real_chart() { # MODULE@VERSION PATH-IN-MODULE NAME
	local dir
	if dir="$(cd "$DIR/real" && go mod download -json "$1" 2>/dev/null | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" &&
		[[ -n "$dir" && -f "$dir/$2/Chart.yaml" ]]; then
		cp -r "$dir/$2" "$DIR/real/$3"
		chmod -R u+w "$DIR/real/$3" # the module cache is read-only
	else
		echo "note: could not fetch $1 through the Go module proxy; skipping the $3 chart" >&2
	fi
}
if command -v go >/dev/null; then
	real_chart k8s.io/ingress-nginx@v0.0.0-20240708192948-52c50467d67d charts/ingress-nginx ingress-nginx
	real_chart github.com/kyverno/kyverno@v1.13.4 charts/kyverno kyverno
else
	echo "note: go not found; skipping the published charts (DIR/real)" >&2
fi
echo "generated $APPS kustomize apps in $K, a $(find "$C/templates" -type f | wc -l)-template chart in $C and the same chart with CRDs in $CC" >&2
