#!/usr/bin/env bash
# gen.sh DIR [APPS]: write APPS (default 250) apps x (Deployment + Service + ServiceAccount +
# ConfigMap) as one multi-document file per app under DIR. Namespace-less: both tools get -n.
set -euo pipefail
DIR="$1" APPS="${2:-250}"
mkdir -p "$DIR"
for ((i = 1; i <= APPS; i++)); do
	n="$(printf 'app-%03d' "$i")"
	cat >"$DIR/$n.yaml" <<YAML
apiVersion: v1
kind: ServiceAccount
metadata:
  name: $n
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: $n-config
data:
  LOG_LEVEL: info
  GREETING: "hello from $n"
---
apiVersion: v1
kind: Service
metadata:
  name: $n
spec:
  selector: {app: $n}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $n
spec:
  # 0 replicas: measure the apply itself, not scheduling (the same for both tools).
  replicas: 0
  selector:
    matchLabels: {app: $n}
  template:
    metadata:
      labels: {app: $n}
    spec:
      serviceAccountName: $n
      containers:
      - name: main
        image: registry.k8s.io/pause:3.10
        envFrom:
        - configMapRef: {name: $n-config}
YAML
done
