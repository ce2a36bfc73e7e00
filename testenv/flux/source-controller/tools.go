//go:build tools

// Package tools pins source-controller's main package so `go mod tidy` keeps
// its whole dependency graph in this consumer module.
package tools

import _ "github.com/fluxcd/source-controller"
