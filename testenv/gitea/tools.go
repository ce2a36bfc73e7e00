//go:build tools

// Package tools pins Gitea's main package so `go mod tidy` keeps its whole
// dependency graph in this consumer module.
package tools

import _ "code.gitea.io/gitea"
