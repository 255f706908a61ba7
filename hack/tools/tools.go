//go:build tools

// Package tools pins the code generators that tether's build runs.
package tools

import _ "k8s.io/kube-openapi/cmd/openapi-gen"
