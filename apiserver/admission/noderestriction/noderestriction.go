// Package noderestriction is the NodeRestriction admission plugin: it
// limits the writes of a kubelet (user system:node:<name> in group
// system:nodes, see tether/apiserver/authz/node) to objects of its own node
// (path P2). The Node authorizer lets a node make a write whose target it
// cannot see on the request line (a created Node or Lease, a pod's status,
// a mirror pod, an eviction, a service-account token); this plugin looks
// at the objects and refuses what does not belong to the node:
//
//   - nodes: create, update and delete only its own Node; never add, change
//     or remove a label under node-restriction.kubernetes.io/, nor a
//     kubernetes.io or k8s.io label other than those a kubelet sets itself
//     (kubernetes.io/hostname, kubernetes.io/os and arch, instance type,
//     topology region and zone and their beta forms, and the
//     kubelet.kubernetes.io/ and node.kubernetes.io/ namespaces); never
//     change taints after registration.
//   - nodes/status: only its own Node, and only its status.
//   - pods: create only mirror pods bound to itself that use no API
//     objects; delete only pods bound to itself; never update a pod.
//   - pods/status: only pods bound to itself. pods/eviction: only pods
//     bound to itself.
//   - serviceaccounts/token: only tokens bound to a pod on itself that runs
//     as that service account.
//   - leases: only its own Lease in kube-node-lease.
//   - no exec, attach, port-forward or proxy (connect) requests.
//
// Requests from any other user pass through untouched.
package noderestriction

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	corev1listers "k8s.io/client-go/listers/core/v1"

	"tether/apiserver/authz/node"
)

// PluginName is the name of the plugin in an admission chain.
const PluginName = "NodeRestriction"

// Plugin is the NodeRestriction admission plugin. Create it with New.
type Plugin struct {
	*admission.Handler
	pods corev1listers.PodLister
}

var (
	_ admission.ValidationInterface     = (*Plugin)(nil)
	_ admission.InitializationValidator = (*Plugin)(nil)
)

// New returns the plugin. pods looks up the pod of an eviction or of a
// service-account token request; the lister of the shared informer
// factory's pod informer is the usual choice
// (f.Core().V1().Pods().Lister()). If synced is not nil, those lookups
// first wait for it to report true (for at most the 10 s admission.Handler
// allows; typically f.Core().V1().Pods().Informer().HasSynced). Every other
// check uses only the request's own objects.
func New(pods corev1listers.PodLister, synced func() bool) *Plugin {
	p := &Plugin{
		Handler: admission.NewHandler(admission.Create, admission.Update, admission.Delete, admission.Connect),
		pods:    pods,
	}
	if synced != nil {
		p.SetReadyFunc(synced)
	}
	return p
}

// ValidateInitialization reports a plugin built without a pod lister.
func (p *Plugin) ValidateInitialization() error {
	if p.pods == nil {
		return errors.New("noderestriction: no pod lister")
	}
	return nil
}

var (
	nodesResource    = schema.GroupResource{Resource: "nodes"}
	podsResource     = schema.GroupResource{Resource: "pods"}
	saResource       = schema.GroupResource{Resource: "serviceaccounts"}
	leasesResource   = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}
	errUnexpectedObj = errors.New("unexpected object type")
)

// Validate admits or refuses a request.
func (p *Plugin) Validate(_ context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	nodeName, ok := node.Identify(a.GetUserInfo())
	if !ok {
		return nil
	}
	if nodeName == "" {
		return admission.NewForbidden(a, fmt.Errorf("user %q names no node; a kubelet's user must be %s<node name>", a.GetUserInfo().GetName(), node.UserPrefix))
	}
	if a.GetOperation() == admission.Connect {
		return forbid(a, nodeName, "may not exec, attach, port-forward or proxy; these requests are for users")
	}
	switch a.GetResource().GroupResource() {
	case nodesResource:
		return p.admitNode(nodeName, a)
	case podsResource:
		switch a.GetSubresource() {
		case "":
			return p.admitPod(nodeName, a)
		case "status":
			return p.admitPodStatus(nodeName, a)
		case "eviction":
			return p.admitEviction(nodeName, a)
		}
		return forbid(a, nodeName, fmt.Sprintf("may not use the pods/%s subresource; only pods/status and pods/eviction", a.GetSubresource()))
	case saResource:
		if a.GetSubresource() == "token" {
			return p.admitToken(nodeName, a)
		}
	case leasesResource:
		return admitLease(nodeName, a)
	}
	return nil
}

// forbid returns a Forbidden error that starts with the node's name.
func forbid(a admission.Attributes, nodeName, msg string) error {
	return admission.NewForbidden(a, fmt.Errorf("node %q %s", nodeName, msg))
}

// objectName is the name of the request's object: from the request line,
// or on create from the object in the body.
func objectName(a admission.Attributes) string {
	if name := a.GetName(); name != "" {
		return name
	}
	if obj := a.GetObject(); obj != nil {
		if m, err := meta.Accessor(obj); err == nil {
			return m.GetName()
		}
	}
	return ""
}

func (p *Plugin) admitNode(nodeName string, a admission.Attributes) error {
	if name := objectName(a); name != nodeName {
		return forbid(a, nodeName, fmt.Sprintf("may only %s its own Node object, not %q", strings.ToLower(string(a.GetOperation())), name))
	}
	switch a.GetSubresource() {
	case "":
	case "status":
		if a.GetOperation() != admission.Update {
			return nil
		}
		n, old, err := nodes(a)
		if err != nil {
			return err
		}
		var changed []string
		if !equality.Semantic.DeepEqual(n.Labels, old.Labels) {
			changed = append(changed, "metadata.labels")
		}
		if !equality.Semantic.DeepEqual(n.Annotations, old.Annotations) {
			changed = append(changed, "metadata.annotations")
		}
		if !equality.Semantic.DeepEqual(n.Spec, old.Spec) {
			changed = append(changed, "spec")
		}
		if len(changed) > 0 {
			return forbid(a, nodeName, fmt.Sprintf("may change only status through nodes/status, not %s; update the Node object itself for those", strings.Join(changed, ", ")))
		}
		return nil
	default:
		return forbid(a, nodeName, fmt.Sprintf("may not use the nodes/%s subresource", a.GetSubresource()))
	}

	switch a.GetOperation() {
	case admission.Create:
		n, ok := a.GetObject().(*corev1.Node)
		if !ok {
			return admission.NewForbidden(a, fmt.Errorf("%w %T", errUnexpectedObj, a.GetObject()))
		}
		if bad := forbiddenLabels(n.Labels, nil); len(bad) > 0 {
			return forbid(a, nodeName, labelMessage("set", bad))
		}
	case admission.Update:
		n, old, err := nodes(a)
		if err != nil {
			return err
		}
		if bad := forbiddenLabels(n.Labels, old.Labels); len(bad) > 0 {
			return forbid(a, nodeName, labelMessage("modify", bad))
		}
		if !equality.Semantic.DeepEqual(n.Spec.Taints, old.Spec.Taints) {
			return forbid(a, nodeName, "may not modify its taints; taints are set at registration (create) and changed by administrators")
		}
	}
	return nil
}

func nodes(a admission.Attributes) (n, old *corev1.Node, err error) {
	n, ok1 := a.GetObject().(*corev1.Node)
	old, ok2 := a.GetOldObject().(*corev1.Node)
	if !ok1 || !ok2 {
		return nil, nil, admission.NewForbidden(a, fmt.Errorf("%w %T, %T", errUnexpectedObj, a.GetObject(), a.GetOldObject()))
	}
	return n, old, nil
}

func labelMessage(verb string, keys []string) string {
	return fmt.Sprintf("may not %s labels %s; labels under %s/ and kubernetes.io or k8s.io labels other than the ones a kubelet sets (hostname, os, arch, instance type, region, zone, %s/, %s/) are set by administrators",
		verb, strings.Join(keys, ", "), corev1.LabelNamespaceNodeRestriction, corev1.LabelNamespaceSuffixKubelet, corev1.LabelNamespaceSuffixNode)
}

func (p *Plugin) admitPod(nodeName string, a admission.Attributes) error {
	switch a.GetOperation() {
	case admission.Create:
		pod, ok := a.GetObject().(*corev1.Pod)
		if !ok {
			return admission.NewForbidden(a, fmt.Errorf("%w %T", errUnexpectedObj, a.GetObject()))
		}
		return admitMirrorPod(nodeName, a, pod)
	case admission.Delete:
		pod, err := p.existingPod(a, a.GetName())
		if err != nil {
			return err
		}
		if pod.Spec.NodeName != nodeName {
			return forbid(a, nodeName, fmt.Sprintf("may only delete pods bound to itself (spec.nodeName %q), not to %q", nodeName, pod.Spec.NodeName))
		}
		return nil
	}
	return forbid(a, nodeName, "may not update pods; report pod status through pods/status")
}

// admitMirrorPod allows a node to create the mirror pod of one of its
// static pods: marked as a mirror, bound to the node, owned by nothing but
// the node, and using no API object (a static pod cannot).
func admitMirrorPod(nodeName string, a admission.Attributes, pod *corev1.Pod) error {
	if _, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; !ok {
		return forbid(a, nodeName, fmt.Sprintf("may only create mirror pods; set the %s annotation", corev1.MirrorPodAnnotationKey))
	}
	if pod.Spec.NodeName != nodeName {
		return forbid(a, nodeName, fmt.Sprintf("may only create mirror pods bound to itself; set spec.nodeName to %q", nodeName))
	}
	for _, ref := range pod.OwnerReferences {
		if ref.APIVersion != "v1" || ref.Kind != "Node" || ref.Name != nodeName {
			return forbid(a, nodeName, fmt.Sprintf("may only create mirror pods owned by its own Node (apiVersion v1, kind Node, name %q), not by %s %s %q", nodeName, ref.APIVersion, ref.Kind, ref.Name))
		}
	}
	if refs := node.References(pod); len(refs) > 0 {
		return forbid(a, nodeName, fmt.Sprintf("may not create mirror pods that use API objects (%s); a static pod cannot use secrets, config maps, claims or service accounts", strings.Join(refs, ", ")))
	}
	if len(pod.Spec.ResourceClaims) > 0 {
		return forbid(a, nodeName, "may not create mirror pods that use resource claims")
	}
	return nil
}

func (p *Plugin) admitPodStatus(nodeName string, a admission.Attributes) error {
	if a.GetOperation() != admission.Update {
		return forbid(a, nodeName, "may only update pods/status")
	}
	pod, err := p.existingPod(a, a.GetName())
	if err != nil {
		return err
	}
	if pod.Spec.NodeName != nodeName {
		return forbid(a, nodeName, fmt.Sprintf("may only update the status of pods bound to itself (spec.nodeName %q), not to %q", nodeName, pod.Spec.NodeName))
	}
	return nil
}

func (p *Plugin) admitEviction(nodeName string, a admission.Attributes) error {
	if a.GetOperation() != admission.Create {
		return forbid(a, nodeName, "may only create pods/eviction")
	}
	pod, err := p.lookupPod(a, a.GetNamespace(), objectName(a))
	if err != nil {
		return err
	}
	if pod.Spec.NodeName != nodeName {
		return forbid(a, nodeName, fmt.Sprintf("may only evict pods bound to itself (spec.nodeName %q), not to %q", nodeName, pod.Spec.NodeName))
	}
	return nil
}

func (p *Plugin) admitToken(nodeName string, a admission.Attributes) error {
	if a.GetOperation() != admission.Create {
		return forbid(a, nodeName, "may only create serviceaccounts/token")
	}
	tr, ok := a.GetObject().(*authenticationv1.TokenRequest)
	if !ok {
		return admission.NewForbidden(a, fmt.Errorf("%w %T", errUnexpectedObj, a.GetObject()))
	}
	ref := tr.Spec.BoundObjectRef
	if ref == nil {
		return forbid(a, nodeName, "may only request tokens bound to a pod; set spec.boundObjectRef to the pod (kind Pod, name, uid)")
	}
	if ref.Kind != "Pod" || (ref.APIVersion != "" && ref.APIVersion != "v1") {
		return forbid(a, nodeName, fmt.Sprintf("may only request tokens bound to a pod, not to %s %s; set spec.boundObjectRef.kind to Pod", ref.APIVersion, ref.Kind))
	}
	if ref.UID == "" {
		return forbid(a, nodeName, fmt.Sprintf("must name the uid of pod %q in spec.boundObjectRef.uid", ref.Name))
	}
	pod, err := p.lookupPod(a, a.GetNamespace(), ref.Name)
	if err != nil {
		return err
	}
	if pod.UID != ref.UID {
		return forbid(a, nodeName, fmt.Sprintf("named uid %s in spec.boundObjectRef, but pod %s/%s has uid %s; the pod may have been deleted and re-created", ref.UID, pod.Namespace, pod.Name, pod.UID))
	}
	if pod.Spec.NodeName != nodeName {
		return forbid(a, nodeName, fmt.Sprintf("may only request tokens for pods bound to itself; pod %s/%s is bound to %q", pod.Namespace, pod.Name, pod.Spec.NodeName))
	}
	if sa := a.GetName(); pod.Spec.ServiceAccountName != sa {
		return forbid(a, nodeName, fmt.Sprintf("requested a token for service account %q, but pod %s/%s runs as %q; request the pod's own service account", sa, pod.Namespace, pod.Name, pod.Spec.ServiceAccountName))
	}
	return nil
}

func admitLease(nodeName string, a admission.Attributes) error {
	if ns := a.GetNamespace(); ns != corev1.NamespaceNodeLease {
		return forbid(a, nodeName, fmt.Sprintf("may only use leases in namespace %s, not %q", corev1.NamespaceNodeLease, ns))
	}
	if name := objectName(a); name != nodeName {
		return forbid(a, nodeName, fmt.Sprintf("may only use the lease named like itself (%q), not %q", nodeName, name))
	}
	return nil
}

// existingPod returns the stored pod an update or delete is for: the old
// object the apiserver passes to validating admission, or else a lookup.
func (p *Plugin) existingPod(a admission.Attributes, name string) (*corev1.Pod, error) {
	if old, ok := a.GetOldObject().(*corev1.Pod); ok && old != nil {
		return old, nil
	}
	return p.lookupPod(a, a.GetNamespace(), name)
}

// lookupPod reads a pod from the lister. A missing pod is reported as
// NotFound, so the caller learns the pod is gone.
func (p *Plugin) lookupPod(a admission.Attributes, namespace, name string) (*corev1.Pod, error) {
	if name == "" {
		return nil, admission.NewForbidden(a, errors.New("no pod named in the request"))
	}
	if !p.WaitForReady() {
		return nil, admission.NewForbidden(a, errors.New("pod cache not yet synced; retry"))
	}
	pod, err := p.pods.Pods(namespace).Get(name)
	if err != nil {
		// The lister's errors are already API errors (NotFound).
		return nil, err
	}
	return pod, nil
}

// kubeletLabels are the kubernetes.io labels a kubelet may set on its own
// Node.
var kubeletLabels = []string{
	corev1.LabelHostname,
	corev1.LabelTopologyZone,
	corev1.LabelTopologyRegion,
	corev1.LabelFailureDomainBetaZone,
	corev1.LabelFailureDomainBetaRegion,
	corev1.LabelInstanceType,
	corev1.LabelInstanceTypeStable,
	corev1.LabelOSStable,
	corev1.LabelArchStable,
	"beta.kubernetes.io/os",
	"beta.kubernetes.io/arch",
}

// kubeletLabelNamespaces are label prefixes (with their subdomains) that
// belong to kubelets.
var kubeletLabelNamespaces = []string{
	corev1.LabelNamespaceSuffixKubelet,
	corev1.LabelNamespaceSuffixNode,
}

// inNamespace reports whether prefix is ns or a subdomain of it.
func inNamespace(prefix, ns string) bool {
	return prefix == ns || strings.HasSuffix(prefix, "."+ns)
}

// restrictedLabel reports whether a node may not set, change or remove a
// label key.
func restrictedLabel(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok {
		return false // an unprefixed label is the node's own business
	}
	if inNamespace(prefix, corev1.LabelNamespaceNodeRestriction) {
		return true
	}
	if !inNamespace(prefix, "kubernetes.io") && !inNamespace(prefix, "k8s.io") {
		return false
	}
	if slices.Contains(kubeletLabels, key) {
		return false
	}
	for _, ns := range kubeletLabelNamespaces {
		if inNamespace(prefix, ns) {
			return false
		}
	}
	return true
}

// forbiddenLabels returns, sorted, the restricted keys that differ between
// labels and old: added, changed or removed.
func forbiddenLabels(labels, old map[string]string) []string {
	var bad []string
	for k, v := range labels {
		if ov, ok := old[k]; (!ok || ov != v) && restrictedLabel(k) {
			bad = append(bad, k)
		}
	}
	for k := range old {
		if _, ok := labels[k]; !ok && restrictedLabel(k) {
			bad = append(bad, k)
		}
	}
	slices.Sort(bad)
	return bad
}
