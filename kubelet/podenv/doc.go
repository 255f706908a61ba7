// Package podenv computes a container's environment the way the upstream
// kubelet does: Kubernetes service link variables, envFrom sources, env
// entries with $(VAR) expansion, and the downward API (fieldRef and
// resourceFieldRef), ConfigMap and Secret key references.
//
// The kubelet's pod sync loop calls [Environment] before it creates a
// container and passes the result to the runtime. ConfigMaps and Secrets are
// read through [Sources], which the kubelet implements with its node
// credentials (path P2), so the Node authorizer limits what can be read to the
// objects the node's own pods reference.
package podenv
