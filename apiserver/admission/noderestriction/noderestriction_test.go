package noderestriction

import (
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/user"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"tether/apiserver/authz/node"
)

func nodeUser(name string) user.Info {
	return &user.DefaultInfo{Name: node.UserPrefix + name, Groups: []string{node.NodesGroup, user.AllAuthenticated}}
}

var (
	nodesGVR  = corev1.SchemeGroupVersion.WithResource("nodes")
	podsGVR   = corev1.SchemeGroupVersion.WithResource("pods")
	saGVR     = corev1.SchemeGroupVersion.WithResource("serviceaccounts")
	leasesGVR = coordinationv1.SchemeGroupVersion.WithResource("leases")
	secretGVR = corev1.SchemeGroupVersion.WithResource("secrets")
)

// attrs builds the attributes the generic apiserver hands to validating
// admission.
func attrs(u user.Info, op admission.Operation, gvr schema.GroupVersionResource, sub, ns, name string, obj, old runtime.Object) admission.Attributes {
	return admission.NewAttributesRecord(obj, old, schema.GroupVersionKind{}, ns, name, gvr, sub, op, nil, false, u)
}

func mkNode(name string, labels map[string]string, mutate ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	for _, m := range mutate {
		m(n)
	}
	return n
}

func mkPod(name, nodeName string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: nodeName, ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "c", Image: "i"}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func mirror(nodeName string) *corev1.Pod {
	return mkPod("static-"+nodeName, nodeName, func(p *corev1.Pod) {
		p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "hash"}
		p.Spec.ServiceAccountName = ""
	})
}

func tokenRequest(ref *authenticationv1.BoundObjectReference) *authenticationv1.TokenRequest {
	return &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref}}
}

func podRef(name, uid string) *authenticationv1.BoundObjectReference {
	return &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: name, UID: types.UID(uid)}
}

func TestValidate(t *testing.T) {
	a, b := nodeUser("a"), nodeUser("b")
	onA, onB := mkPod("on-a", "a"), mkPod("on-b", "b")
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range []*corev1.Pod{onA, onB} {
		if err := store.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	plugin := New(corev1listers.NewPodLister(store), nil)
	if err := plugin.ValidateInitialization(); err != nil {
		t.Fatalf("ValidateInitialization() = %v", err)
	}

	hostname := map[string]string{corev1.LabelHostname: "a", corev1.LabelOSStable: "linux"}
	plus := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range hostname {
			m[k] = v
		}
		return m
	}
	lease := func(ns, name string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	taint := func(n *corev1.Node) { n.Spec.Taints = []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}} }
	withStatus := func(n *corev1.Node) { n.Status.Phase = corev1.NodeRunning }

	tests := []struct {
		name string
		attr admission.Attributes
		// wantErr is "" for admitted, else a substring of the error.
		wantErr string
	}{
		// Nodes.
		{"create own node with kubelet labels", attrs(a, admission.Create, nodesGVR, "", "", "a", mkNode("a", plus(corev1.LabelTopologyZone, "z1"), taint), nil), ""},
		{"create own node with node.kubernetes.io label", attrs(a, admission.Create, nodesGVR, "", "", "a", mkNode("a", plus("node.kubernetes.io/pool", "x")), nil), ""},
		{"create own node with custom label", attrs(a, admission.Create, nodesGVR, "", "", "a", mkNode("a", plus("example.com/rack", "r1")), nil), ""},
		{"create other node", attrs(a, admission.Create, nodesGVR, "", "", "b", mkNode("b", nil), nil), `may only create its own Node object, not "b"`},
		{"create own node with node-restriction label", attrs(a, admission.Create, nodesGVR, "", "", "a", mkNode("a", plus("node-restriction.kubernetes.io/secure", "true")), nil), "node-restriction.kubernetes.io/secure"},
		{"create own node with role label", attrs(a, admission.Create, nodesGVR, "", "", "a", mkNode("a", plus("node-role.kubernetes.io/control-plane", "")), nil), "node-role.kubernetes.io/control-plane"},
		{"update own node", attrs(a, admission.Update, nodesGVR, "", "", "a", mkNode("a", plus("example.com/x", "1")), mkNode("a", hostname)), ""},
		{"update other node", attrs(a, admission.Update, nodesGVR, "", "", "b", mkNode("b", nil), mkNode("b", nil)), `may only update its own Node object`},
		{"add restricted label on update", attrs(a, admission.Update, nodesGVR, "", "", "a", mkNode("a", plus("node-restriction.kubernetes.io/x", "1")), mkNode("a", hostname)), "may not modify labels node-restriction.kubernetes.io/x"},
		{"change restricted label on update", attrs(a, admission.Update, nodesGVR, "", "", "a", mkNode("a", plus("k8s.io/x", "2")), mkNode("a", plus("k8s.io/x", "1"))), "k8s.io/x"},
		{"remove restricted label on update", attrs(a, admission.Update, nodesGVR, "", "", "a", mkNode("a", hostname), mkNode("a", plus("node-restriction.kubernetes.io/x", "1"))), "node-restriction.kubernetes.io/x"},
		{"keep restricted label on update", attrs(a, admission.Update, nodesGVR, "", "", "a", mkNode("a", plus("node-restriction.kubernetes.io/x", "1")), mkNode("a", plus("node-restriction.kubernetes.io/x", "1"))), ""},
		{"change taints on update", attrs(a, admission.Update, nodesGVR, "", "", "a", mkNode("a", hostname), mkNode("a", hostname, taint)), "may not modify its taints"},
		{"delete other node", attrs(a, admission.Delete, nodesGVR, "", "", "b", nil, mkNode("b", nil)), "may only delete its own Node object"},
		{"update own node status", attrs(a, admission.Update, nodesGVR, "status", "", "a", mkNode("a", hostname, withStatus), mkNode("a", hostname)), ""},
		{"update own node labels through status", attrs(a, admission.Update, nodesGVR, "status", "", "a", mkNode("a", plus("example.com/x", "1")), mkNode("a", hostname)), "may change only status through nodes/status, not metadata.labels"},
		{"update other node status", attrs(a, admission.Update, nodesGVR, "status", "", "b", mkNode("b", nil, withStatus), mkNode("b", nil)), "may only update its own Node object"},

		// Pods.
		{"create own mirror pod", attrs(a, admission.Create, podsGVR, "", "ns", "static-a", mirror("a"), nil), ""},
		{"create mirror pod for other node", attrs(a, admission.Create, podsGVR, "", "ns", "static-b", mirror("b"), nil), `set spec.nodeName to "a"`},
		{"create ordinary pod", attrs(a, admission.Create, podsGVR, "", "ns", "p", mkPod("p", "a"), nil), "may only create mirror pods"},
		{"create mirror pod with a secret", attrs(a, admission.Create, podsGVR, "", "ns", "static-a", func() *corev1.Pod {
			p := mirror("a")
			p.Spec.Volumes = []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "x"}}}}
			return p
		}(), nil), "secret/ns/x"},
		{"create mirror pod owned by other node", attrs(a, admission.Create, podsGVR, "", "ns", "static-a", func() *corev1.Pod {
			p := mirror("a")
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "b"}}
			return p
		}(), nil), "owned by its own Node"},
		{"delete own pod", attrs(a, admission.Delete, podsGVR, "", "ns", "on-a", nil, onA), ""},
		{"delete other node's pod", attrs(a, admission.Delete, podsGVR, "", "ns", "on-b", nil, onB), "may only delete pods bound to itself"},
		{"delete other node's pod, looked up", attrs(a, admission.Delete, podsGVR, "", "ns", "on-b", nil, nil), "may only delete pods bound to itself"},
		{"update pod", attrs(a, admission.Update, podsGVR, "", "ns", "on-a", onA, onA), "may not update pods"},
		{"update own pod status", attrs(a, admission.Update, podsGVR, "status", "ns", "on-a", onA, onA), ""},
		{"update other pod status", attrs(a, admission.Update, podsGVR, "status", "ns", "on-b", onB, onB), "may only update the status of pods bound to itself"},
		{"evict own pod", attrs(a, admission.Create, podsGVR, "eviction", "ns", "on-a", &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "on-a"}}, nil), ""},
		{"evict other pod", attrs(a, admission.Create, podsGVR, "eviction", "ns", "on-b", &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "on-b"}}, nil), "may only evict pods bound to itself"},
		{"evict missing pod", attrs(a, admission.Create, podsGVR, "eviction", "ns", "gone", &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "gone"}}, nil), "not found"},
		{"exec", attrs(a, admission.Connect, podsGVR, "exec", "ns", "on-a", nil, nil), "may not exec"},
		{"pod binding", attrs(a, admission.Create, podsGVR, "binding", "ns", "on-a", nil, nil), "pods/binding"},

		// Service-account tokens.
		{"token for own pod", attrs(a, admission.Create, saGVR, "token", "ns", "sa", tokenRequest(podRef("on-a", "uid-on-a")), nil), ""},
		{"token for other node's pod", attrs(a, admission.Create, saGVR, "token", "ns", "sa", tokenRequest(podRef("on-b", "uid-on-b")), nil), `bound to "b"`},
		{"token for other node's pod by that node", attrs(b, admission.Create, saGVR, "token", "ns", "sa", tokenRequest(podRef("on-b", "uid-on-b")), nil), ""},
		{"unbound token", attrs(a, admission.Create, saGVR, "token", "ns", "sa", tokenRequest(nil), nil), "set spec.boundObjectRef"},
		{"token bound to a secret", attrs(a, admission.Create, saGVR, "token", "ns", "sa", tokenRequest(&authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: "s", UID: "u"}), nil), "kind to Pod"},
		{"token with stale pod uid", attrs(a, admission.Create, saGVR, "token", "ns", "sa", tokenRequest(podRef("on-a", "old")), nil), "re-created"},
		{"token without pod uid", attrs(a, admission.Create, saGVR, "token", "ns", "sa", tokenRequest(podRef("on-a", "")), nil), "spec.boundObjectRef.uid"},
		{"token for another service account", attrs(a, admission.Create, saGVR, "token", "ns", "admin", tokenRequest(podRef("on-a", "uid-on-a")), nil), `runs as "sa"`},

		// Leases.
		{"create own lease", attrs(a, admission.Create, leasesGVR, "", "kube-node-lease", "a", lease("kube-node-lease", "a"), nil), ""},
		{"create other lease", attrs(a, admission.Create, leasesGVR, "", "kube-node-lease", "b", lease("kube-node-lease", "b"), nil), `not "b"`},
		{"update own lease", attrs(a, admission.Update, leasesGVR, "", "kube-node-lease", "a", lease("kube-node-lease", "a"), lease("kube-node-lease", "a")), ""},
		{"delete other lease", attrs(a, admission.Delete, leasesGVR, "", "kube-node-lease", "b", nil, nil), `not "b"`},
		{"own lease in other namespace", attrs(a, admission.Update, leasesGVR, "", "kube-system", "a", lease("kube-system", "a"), lease("kube-system", "a")), "kube-node-lease"},

		// Who is checked.
		{"non-node user updates any node", attrs(&user.DefaultInfo{Name: "admin", Groups: []string{"system:masters"}}, admission.Update, nodesGVR, "", "", "b", mkNode("b", plus("node-restriction.kubernetes.io/x", "1")), mkNode("b", nil)), ""},
		{"non-node user creates ordinary pod", attrs(&user.DefaultInfo{Name: "alice"}, admission.Create, podsGVR, "", "ns", "p", mkPod("p", "b"), nil), ""},
		{"node writes other resource", attrs(a, admission.Create, secretGVR, "", "ns", "s", &corev1.Secret{}, nil), ""},
		{"empty node name", attrs(&user.DefaultInfo{Name: "system:node:", Groups: []string{node.NodesGroup}}, admission.Update, nodesGVR, "", "", "a", mkNode("a", nil), mkNode("a", nil)), "names no node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plugin.Validate(t.Context(), tt.attr, nil)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want admitted", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("Validate() admitted, want error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			case err != nil && !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err):
				t.Errorf("Validate() = %v (%T), want a Forbidden or NotFound API error", err, err)
			}

		})
	}
}

func TestRestrictedLabel(t *testing.T) {
	tests := map[string]bool{
		"kubernetes.io/hostname":                   false,
		"beta.kubernetes.io/arch":                  false,
		"topology.kubernetes.io/zone":              false,
		"failure-domain.beta.kubernetes.io/region": false,
		"node.kubernetes.io/instance-type":         false,
		"kubelet.kubernetes.io/anything":           false,
		"example.com/anything":                     false,
		"plain":                                    false,
		"node-restriction.kubernetes.io/x":         true,
		"sub.node-restriction.kubernetes.io/x":     true,
		"node-role.kubernetes.io/worker":           true,
		"kubernetes.io/role":                       true,
		"k8s.io/x":                                 true,
		"foo.k8s.io/x":                             true,
	}
	for key, want := range tests {
		if got := restrictedLabel(key); got != want {
			t.Errorf("restrictedLabel(%q) = %v, want %v", key, got, want)
		}
	}
}
