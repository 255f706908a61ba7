// Package node is the Node authorizer: it decides what a kubelet may do
// through the API (path P2). A kubelet is known by its client certificate
// as user system:node:<name> in group system:nodes.
//
// The authorizer is authoritative for nodes. For a node it returns
// DecisionAllow for what a kubelet needs and DecisionDeny for everything
// else, so an authorizer consulted after it (RBAC) cannot widen a node's
// rights by accident. For every other user it has no opinion.
//
// Reads of secrets, config maps and persistent volume claims, and service
// account tokens, are allowed only for objects a pod bound to the node
// references. Those relationships come from indexes on the shared pod
// informer, which the informer keeps current as pods are added, changed and
// deleted; a check costs O(pods referencing the object).
//
// Writes the authorizer cannot judge from the request line alone (the name
// of a created Node, Lease or mirror pod; the pod a status update or
// eviction is for; the pod a token is bound to) are allowed here and checked
// by the NodeRestriction admission plugin (tether/apiserver/admission/noderestriction).
// The two must be installed together.
package node

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"tether/tunnel"
)

const (
	// NodesGroup is the group every kubelet's user belongs to.
	NodesGroup = "system:nodes"
	// UserPrefix starts the user name of a kubelet; the node's name follows.
	UserPrefix = "system:node:"
)

// Identify reports whether u is a kubelet and, if so, the name of its node.
// A kubelet's user name is system:node:<name> and its groups include
// system:nodes; a user with only one of the two is not a node. The name may
// be empty when the user name is exactly "system:node:".
func Identify(u user.Info) (name string, isNode bool) {
	if u == nil || !slices.Contains(u.GetGroups(), NodesGroup) {
		return "", false
	}
	name, ok := strings.CutPrefix(u.GetName(), UserPrefix)
	if !ok {
		return "", false
	}
	return name, true
}

// Authorizer is the Node authorizer. Create it with New.
type Authorizer struct {
	pods cache.SharedIndexInformer
	// err is set when the indexes could not be registered; every
	// relationship check then fails closed.
	err error
}

var _ authorizer.Authorizer = (*Authorizer)(nil)

// New returns a Node authorizer reading pods from f. It registers
// IndexNodeName and IndexReferences on f's pod informer, so it must be
// called before f is started; f must then be started (and the pod informer
// synced, see HasSynced) for relationship checks to succeed. Calling New
// twice on one factory is allowed: the indexes are registered once.
func New(f informers.SharedInformerFactory) *Authorizer {
	inf := f.Core().V1().Pods().Informer()
	a := &Authorizer{pods: inf}
	want := cache.Indexers{IndexNodeName: indexByNodeName, IndexReferences: indexByReference}
	for name := range inf.GetIndexer().GetIndexers() {
		delete(want, name)
	}
	if len(want) > 0 {
		if err := inf.AddIndexers(want); err != nil {
			a.err = fmt.Errorf("node authorizer: add pod indexes: %w", err)
		}
	}
	return a
}

// HasSynced reports whether the pod informer has synced, so that the
// relationships reflect the pods in storage. Before that, relationship
// checks deny.
func (a *Authorizer) HasSynced() bool {
	return a.err == nil && a.pods.HasSynced()
}

type resource struct{ group, resource, subresource string }

var (
	secrets     = resource{"", "secrets", ""}
	configMaps  = resource{"", "configmaps", ""}
	pvcs        = resource{"", "persistentvolumeclaims", ""}
	saTokens    = resource{"", "serviceaccounts", "token"}
	nodes       = resource{"", "nodes", ""}
	nodeStatus  = resource{"", "nodes", "status"}
	leases      = resource{"coordination.k8s.io", "leases", ""}
	readVerbs   = []string{"get", "list", "watch"}
	eventVerbs  = []string{"create", "update", "patch"}
	createVerb  = []string{"create"}
	updateVerbs = []string{"update", "patch"}
	leaseVerbs  = []string{"get", "update", "patch", "delete"}
)

// static lists what a node may do to any object of a resource; the
// NodeRestriction admission plugin narrows the writes to the node's own
// objects.
var static = map[resource][]string{
	{"", "pods", ""}:                                          {"get", "list", "watch", "create", "delete"},
	{"", "pods", "status"}:                                    updateVerbs,
	{"", "pods", "eviction"}:                                  createVerb,
	{"", "services", ""}:                                      readVerbs,
	{"", "endpoints", ""}:                                     readVerbs,
	{"discovery.k8s.io", "endpointslices", ""}:                readVerbs,
	{"", "events", ""}:                                        eventVerbs,
	{"events.k8s.io", "events", ""}:                           eventVerbs,
	{"certificates.k8s.io", "certificatesigningrequests", ""}: {"create", "get", "list", "watch"},
	{"certificates.k8s.io", "certificatesigningrequests", "selfnodeclient"}: createVerb,
	{"authentication.k8s.io", "tokenreviews", ""}:                           createVerb,
	{"authorization.k8s.io", "subjectaccessreviews", ""}:                    createVerb,
	// All nodes may be read: the kubelet and the service proxy need them.
	nodes: readVerbs,
}

// discoveryPaths are the non-resource paths a node gets no decision on,
// so that RBAC's discovery and public-info roles decide them. A path
// matches itself and everything below it.
var discoveryPaths = []string{
	"/api", "/apis", "/version", "/healthz", "/livez", "/readyz",
	"/openapi", "/.well-known/openid-configuration", "/openid/v1/jwks",
}

// Authorize decides a request. It never returns an error: a failed lookup
// is a denial with the cause in the reason.
func (a *Authorizer) Authorize(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	node, ok := Identify(attrs.GetUser())
	if !ok {
		return authorizer.DecisionNoOpinion, "", nil
	}
	if node == "" {
		return authorizer.DecisionDeny, fmt.Sprintf("user %q is in group %s but names no node", attrs.GetUser().GetName(), NodesGroup), nil
	}
	if !attrs.IsResourceRequest() {
		return nonResource(node, attrs)
	}

	r := resource{attrs.GetAPIGroup(), attrs.GetResource(), attrs.GetSubresource()}
	verb := attrs.GetVerb()
	switch r {
	case secrets, configMaps:
		if slices.Contains(readVerbs, verb) {
			return a.related(node, attrs)
		}
	case pvcs:
		if verb == "get" {
			return a.related(node, attrs)
		}
	case saTokens:
		if verb == "create" {
			return a.related(node, attrs)
		}
	case nodes:
		if verb == "create" {
			return allow() // NodeRestriction checks the name in the body.
		}
		if slices.Contains(updateVerbs, verb) {
			return own(node, attrs, "a node may only modify its own Node object")
		}
	case nodeStatus:
		if slices.Contains(updateVerbs, verb) {
			return own(node, attrs, "a node may only update the status of its own Node object")
		}
	case leases:
		if attrs.GetNamespace() != corev1.NamespaceNodeLease {
			break
		}
		if verb == "create" {
			return allow() // NodeRestriction checks the name in the body.
		}
		if slices.Contains(leaseVerbs, verb) {
			return own(node, attrs, "a node may only use its own Lease in "+corev1.NamespaceNodeLease)
		}
	}
	if slices.Contains(static[r], verb) {
		return allow()
	}
	return deny(node, attrs, "not a request a node may make")
}

// ConditionsAwareAuthorize returns the decision of Authorize; the Node
// authorizer makes no conditional decisions.
func (a *Authorizer) ConditionsAwareAuthorize(ctx context.Context, attrs authorizer.Attributes) authorizer.ConditionsAwareDecision {
	return authorizer.ConditionsAwareDecisionFromParts(a.Authorize(ctx, attrs))
}

// EvaluateConditions fails closed: the Node authorizer has no conditions.
func (a *Authorizer) EvaluateConditions(context.Context, authorizer.ConditionsAwareDecision, authorizer.ConditionsData) (authorizer.Decision, string, error) {
	return authorizer.DecisionDeny, "", authorizer.ErrorConditionEvaluationNotSupported
}

func allow() (authorizer.Decision, string, error) {
	return authorizer.DecisionAllow, "", nil
}

// deny returns a denial whose reason names the node, the request and why.
func deny(node string, attrs authorizer.Attributes, why string) (authorizer.Decision, string, error) {
	return authorizer.DecisionDeny, fmt.Sprintf("node '%s' cannot %s %s: %s", node, attrs.GetVerb(), describe(attrs), why), nil
}

// own allows a request for the object named like the node.
func own(node string, attrs authorizer.Attributes, why string) (authorizer.Decision, string, error) {
	if attrs.GetName() == node {
		return allow()
	}
	return deny(node, attrs, why)
}

// related allows a request for an object that a pod bound to node
// references.
func (a *Authorizer) related(node string, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	kind := kindOf(attrs.GetResource())
	if attrs.GetName() == "" {
		return deny(node, attrs, fmt.Sprintf("a node may only %s single objects referenced by its pods (name the object, or list with fieldSelector metadata.name=<name>)", attrs.GetVerb()))
	}
	if a.err != nil {
		return deny(node, attrs, a.err.Error())
	}
	pods, err := a.pods.GetIndexer().ByIndex(IndexReferences, Key(kind, attrs.GetNamespace(), attrs.GetName()))
	if err != nil {
		return deny(node, attrs, fmt.Sprintf("relationship lookup failed: %v", err))
	}
	for _, obj := range pods {
		if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName == node {
			return allow()
		}
	}
	why := fmt.Sprintf("no relationship found between node '%s' and this object", node)
	if !a.pods.HasSynced() {
		why += " (the pod cache has not synced yet; retry)"
	}
	return deny(node, attrs, why)
}

// kindOf maps a resource to its kind in reference keys.
func kindOf(resource string) string {
	switch resource {
	case "secrets":
		return KindSecret
	case "configmaps":
		return KindConfigMap
	case "persistentvolumeclaims":
		return KindPVC
	case "serviceaccounts":
		return KindServiceAccount
	}
	return resource
}

// singular names the object of a request by its resource, in the
// singular where it is well known.
var singular = map[string]string{
	"secrets":                "secret",
	"configmaps":             "configmap",
	"persistentvolumeclaims": "persistentvolumeclaim",
	"serviceaccounts":        "serviceaccount",
	"nodes":                  "node",
	"leases":                 "lease",
	"pods":                   "pod",
}

// describe names the object of a request: "secret ns/x",
// "serviceaccount/token ns/x", "clusterroles.rbac.authorization.k8s.io admin",
// "secrets in namespace ns".
func describe(attrs authorizer.Attributes) string {
	ns, name := attrs.GetNamespace(), attrs.GetName()
	what := attrs.GetResource()
	if s, ok := singular[what]; ok && name != "" {
		what = s
	}
	if sub := attrs.GetSubresource(); sub != "" {
		what += "/" + sub
	}
	if g := attrs.GetAPIGroup(); g != "" {
		what += "." + g
	}
	switch {
	case name == "" && ns == "":
		return what
	case name == "":
		return what + " in namespace " + ns
	case ns == "":
		return what + " " + name
	}
	return what + " " + ns + "/" + name
}

func nonResource(node string, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	p := attrs.GetPath()
	if p == tunnel.Path && attrs.GetVerb() == "get" {
		// A node opens its own tunnel (path P10); the tunnel server
		// takes the node's name from the same user.
		return authorizer.DecisionAllow, "", nil
	}
	for _, d := range discoveryPaths {
		if p == d || strings.HasPrefix(p, d+"/") {
			return authorizer.DecisionNoOpinion, "", nil
		}
	}
	return authorizer.DecisionDeny, fmt.Sprintf("node '%s' cannot %s path %s: not a request a node may make", node, attrs.GetVerb(), p), nil
}
