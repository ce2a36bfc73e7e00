{{/*
Names are fixed, as in `ferry install`: the agent's Lease, its --system-service-account
(ferry-admin) and the Service a webhook URL points at do not depend on the release name.
Cluster-scoped objects carry the namespace, so one agent per namespace installs side by side.
*/}}

{{- define "ferry-agent.selectorLabels" -}}
app.kubernetes.io/name: ferry-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferry-agent.labels" -}}
{{ include "ferry-agent.selectorLabels" . }}
app.kubernetes.io/part-of: ferry
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "ferry-agent.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "ferry-agent.metricsServiceEnabled" -}}
{{- if or .Values.metrics.service.enabled .Values.metrics.serviceMonitor.enabled }}true{{ end -}}
{{- end }}
