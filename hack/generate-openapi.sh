#!/usr/bin/env bash
# Regenerates apiserver/openapi/zz_generated.openapi.go from the k8s.io/api
# types tether serves, with the openapi-gen pinned in hack/tools.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/openapi-gen
(cd hack/tools && go build -o "$bin" k8s.io/kube-openapi/cmd/openapi-gen)
hdr=$(mktemp)
"$bin" --go-header-file "$hdr" \
  --output-dir apiserver/openapi --output-pkg tether/apiserver/openapi \
  --output-file zz_generated.openapi.go --report-filename /dev/null \
  k8s.io/api/core/v1 k8s.io/api/coordination/v1 k8s.io/api/certificates/v1 \
  k8s.io/api/events/v1 k8s.io/api/authentication/v1 k8s.io/api/authorization/v1 \
  k8s.io/api/rbac/v1 k8s.io/api/discovery/v1 k8s.io/api/policy/v1 k8s.io/api/autoscaling/v1 \
  k8s.io/apimachinery/pkg/apis/meta/v1 k8s.io/apimachinery/pkg/runtime \
  k8s.io/apimachinery/pkg/version k8s.io/apimachinery/pkg/util/intstr \
  k8s.io/apimachinery/pkg/api/resource
rm -f "$hdr" "$bin"
echo "generated apiserver/openapi/zz_generated.openapi.go"
