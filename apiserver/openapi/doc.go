// Package openapi holds the OpenAPI definitions of the types tether serves,
// generated from k8s.io/api by openapi-gen (make generate). The API server
// serves them at /openapi/v2 and /openapi/v3, and server-side apply uses
// them to know each type's structure.
package openapi

//go:generate ../../hack/generate-openapi.sh
