//go:build tools

// Package node pins the node commands built by testenv/build (kubelet,
// kube-proxy). It is a sub-package so that the control plane's build stamp,
// which hashes testenv/k8s/*.go, does not change when the node is added.
package node

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
