//go:build tools

// Package tools pins the prometheus command.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
