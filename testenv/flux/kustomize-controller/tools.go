//go:build tools

// Package tools pins kustomize-controller's main package so `go mod tidy`
// keeps its whole dependency graph in this consumer module.
package tools

import _ "github.com/fluxcd/kustomize-controller"
