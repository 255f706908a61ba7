package node

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// newAuthorizer returns an Authorizer over an informer that is never
// started, and the informer's store, which the tests fill directly.
func newAuthorizer(t *testing.T, pods ...*corev1.Pod) (*Authorizer, cache.Indexer) {
	t.Helper()
	f := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	a := New(f)
	store := f.Core().V1().Pods().Informer().GetIndexer()
	for _, p := range pods {
		if err := store.Add(p); err != nil {
			t.Fatalf("add pod: %v", err)
		}
	}
	return a, store
}

func nodeUser(name string) user.Info {
	return &user.DefaultInfo{Name: UserPrefix + name, Groups: []string{NodesGroup, user.AllAuthenticated}}
}

func pod(ns, name, nodeName string, mutate ...func(*corev1.PodSpec)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Image: "i"}}},
	}
	for _, m := range mutate {
		m(&p.Spec)
	}
	return p
}

func withSecretVolume(name string) func(*corev1.PodSpec) {
	return func(s *corev1.PodSpec) {
		s.Volumes = append(s.Volumes, corev1.Volume{Name: "v-" + name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name}}})
	}
}

// req is a resource request; ns and name may be empty.
func req(u user.Info, verb, group, resource, sub, ns, name string) authorizer.AttributesRecord {
	return authorizer.AttributesRecord{
		User: u, Verb: verb, APIGroup: group, APIVersion: "v1", Resource: resource, Subresource: sub,
		Namespace: ns, Name: name, ResourceRequest: true,
	}
}

func TestAuthorize(t *testing.T) {
	a, b := nodeUser("a"), nodeUser("b")
	pods := []*corev1.Pod{
		pod("ns", "on-b", "b", withSecretVolume("only-b")),
		pod("ns", "on-a", "a", withSecretVolume("mine"), func(s *corev1.PodSpec) {
			s.ServiceAccountName = "sa-a"
			s.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "pull"}}
			s.Volumes = append(s.Volumes,
				corev1.Volume{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}}},
					{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "proj-secret"}}},
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
				}}}},
				corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim"}}},
				corev1.Volume{Name: "csi", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "d", NodePublishSecretRef: &corev1.LocalObjectReference{Name: "csi-secret"}}}},
			)
			s.InitContainers = []corev1.Container{{Name: "init", EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "init-env"}}}}}}
			s.Containers[0].Env = []corev1.EnvVar{
				{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "env-secret"}, Key: "k"}}},
				{Name: "B", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "env-cm"}, Key: "k"}}},
			}
			s.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug",
				EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "debug-secret"}}}}}}}
		}),
		pod("ns", "unbound", "", withSecretVolume("pending")),
	}
	authz, _ := newAuthorizer(t, pods...)

	const (
		allow = authorizer.DecisionAllow
		deny  = authorizer.DecisionDeny
		none  = authorizer.DecisionNoOpinion
	)
	tests := []struct {
		name string
		attr authorizer.AttributesRecord
		want authorizer.Decision
	}{
		// Relationships.
		{"secret of a pod on another node", req(a, "get", "", "secrets", "", "ns", "only-b"), deny},
		{"same secret for its node", req(b, "get", "", "secrets", "", "ns", "only-b"), allow},
		{"secret volume of own pod", req(a, "get", "", "secrets", "", "ns", "mine"), allow},
		{"watch of one secret by field selector", req(a, "watch", "", "secrets", "", "ns", "mine"), allow},
		{"list of all secrets", req(a, "list", "", "secrets", "", "ns", ""), deny},
		{"secret in another namespace", req(a, "get", "", "secrets", "", "other", "mine"), deny},
		{"secret of an unbound pod", req(a, "get", "", "secrets", "", "ns", "pending"), deny},
		{"update of a related secret", req(a, "update", "", "secrets", "", "ns", "mine"), deny},
		{"image pull secret", req(a, "get", "", "secrets", "", "ns", "pull"), allow},
		{"configmap in projected volume", req(a, "get", "", "configmaps", "", "ns", "kube-root-ca.crt"), allow},
		{"secret in projected volume", req(a, "get", "", "secrets", "", "ns", "proj-secret"), allow},
		{"secret from env secretKeyRef", req(a, "get", "", "secrets", "", "ns", "env-secret"), allow},
		{"configmap from env configMapKeyRef", req(a, "get", "", "configmaps", "", "ns", "env-cm"), allow},
		{"configmap from init container envFrom", req(a, "get", "", "configmaps", "", "ns", "init-env"), allow},
		{"secret from ephemeral container envFrom", req(a, "get", "", "secrets", "", "ns", "debug-secret"), allow},
		{"CSI node publish secret", req(a, "get", "", "secrets", "", "ns", "csi-secret"), allow},
		{"unrelated configmap", req(a, "get", "", "configmaps", "", "ns", "other"), deny},
		{"pvc of own pod", req(a, "get", "", "persistentvolumeclaims", "", "ns", "claim"), allow},
		{"pvc of own pod by other node", req(b, "get", "", "persistentvolumeclaims", "", "ns", "claim"), deny},
		{"persistent volume", req(a, "get", "", "persistentvolumes", "", "", "pv1"), deny},
		{"token for own pod's service account", req(a, "create", "", "serviceaccounts", "token", "ns", "sa-a"), allow},
		{"token for another service account", req(b, "create", "", "serviceaccounts", "token", "ns", "sa-a"), deny},
		{"get of a service account", req(a, "get", "", "serviceaccounts", "", "ns", "sa-a"), deny},

		// Nodes.
		{"get any node", req(a, "get", "", "nodes", "", "", "b"), allow},
		{"list nodes", req(a, "list", "", "nodes", "", "", ""), allow},
		{"create node", req(a, "create", "", "nodes", "", "", ""), allow},
		{"update own node", req(a, "update", "", "nodes", "", "", "a"), allow},
		{"patch other node", req(a, "patch", "", "nodes", "", "", "b"), deny},
		{"delete own node", req(a, "delete", "", "nodes", "", "", "a"), deny},
		{"patch own node status", req(a, "patch", "", "nodes", "status", "", "a"), allow},
		{"update other node status", req(a, "update", "", "nodes", "status", "", "b"), deny},
		{"node proxy", req(a, "get", "", "nodes", "proxy", "", "b"), deny},

		// Leases.
		{"get own lease", req(a, "get", "coordination.k8s.io", "leases", "", "kube-node-lease", "a"), allow},
		{"update own lease", req(a, "update", "coordination.k8s.io", "leases", "", "kube-node-lease", "a"), allow},
		{"create lease", req(a, "create", "coordination.k8s.io", "leases", "", "kube-node-lease", ""), allow},
		{"update other lease", req(a, "update", "coordination.k8s.io", "leases", "", "kube-node-lease", "b"), deny},
		{"own-named lease elsewhere", req(a, "get", "coordination.k8s.io", "leases", "", "kube-system", "a"), deny},
		{"list leases", req(a, "list", "coordination.k8s.io", "leases", "", "kube-node-lease", ""), deny},

		// Static rules.
		{"watch pods", req(a, "watch", "", "pods", "", "", ""), allow},
		{"create mirror pod", req(a, "create", "", "pods", "", "ns", ""), allow},
		{"update pod", req(a, "update", "", "pods", "", "ns", "on-a"), deny},
		{"patch pod status", req(a, "patch", "", "pods", "status", "ns", "on-a"), allow},
		{"create eviction", req(a, "create", "", "pods", "eviction", "ns", "on-a"), allow},
		{"exec into pod", req(a, "create", "", "pods", "exec", "ns", "on-a"), deny},
		{"list services", req(a, "list", "", "services", "", "", ""), allow},
		{"watch endpointslices", req(a, "watch", "discovery.k8s.io", "endpointslices", "", "", ""), allow},
		{"create service", req(a, "create", "", "services", "", "ns", ""), deny},
		{"create core event", req(a, "create", "", "events", "", "ns", ""), allow},
		{"patch events.k8s.io event", req(a, "patch", "events.k8s.io", "events", "", "ns", "e"), allow},
		{"delete event", req(a, "delete", "", "events", "", "ns", "e"), deny},
		{"create csr", req(a, "create", "certificates.k8s.io", "certificatesigningrequests", "", "", ""), allow},
		{"self node client csr", req(a, "create", "certificates.k8s.io", "certificatesigningrequests", "selfnodeclient", "", ""), allow},
		{"approve csr", req(a, "update", "certificates.k8s.io", "certificatesigningrequests", "approval", "", "c"), deny},
		{"token review", req(a, "create", "authentication.k8s.io", "tokenreviews", "", "", ""), allow},
		{"subject access review", req(a, "create", "authorization.k8s.io", "subjectaccessreviews", "", "", ""), allow},
		{"clusterroles", req(a, "get", "rbac.authorization.k8s.io", "clusterroles", "", "", "admin"), deny},
		{"namespaces", req(a, "list", "", "namespaces", "", "", ""), deny},

		// Non-resource requests.
		{"discovery", authorizer.AttributesRecord{User: a, Verb: "get", Path: "/apis/apps/v1"}, none},
		{"version", authorizer.AttributesRecord{User: a, Verb: "get", Path: "/version"}, none},
		{"openapi", authorizer.AttributesRecord{User: a, Verb: "get", Path: "/openapi/v3"}, none},
		{"metrics", authorizer.AttributesRecord{User: a, Verb: "get", Path: "/metrics"}, deny},
		{"path that only starts like api", authorizer.AttributesRecord{User: a, Verb: "get", Path: "/apifoo"}, deny},
		{"its tunnel", authorizer.AttributesRecord{User: a, Verb: "get", Path: "/tunnel/v1"}, allow},
		{"tunnel with another verb", authorizer.AttributesRecord{User: a, Verb: "post", Path: "/tunnel/v1"}, deny},
		{"below the tunnel", authorizer.AttributesRecord{User: a, Verb: "get", Path: "/tunnel/v1/x"}, deny},

		// Who is a node.
		{"non-node user", req(&user.DefaultInfo{Name: "alice", Groups: []string{"devs"}}, "get", "", "secrets", "", "ns", "mine"), none},
		{"node name without the group", req(&user.DefaultInfo{Name: "system:node:a"}, "get", "", "secrets", "", "ns", "mine"), none},
		{"group without a node name", req(&user.DefaultInfo{Name: "mallory", Groups: []string{NodesGroup}}, "get", "", "secrets", "", "ns", "mine"), none},
		{"empty node name", req(&user.DefaultInfo{Name: "system:node:", Groups: []string{NodesGroup}}, "get", "", "nodes", "", "", "a"), deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason, err := authz.Authorize(t.Context(), tt.attr)
			if err != nil {
				t.Fatalf("Authorize() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("Authorize(%s %s/%s %s/%s) = %v (%q), want %v", tt.attr.Verb, tt.attr.Resource, tt.attr.Subresource, tt.attr.Namespace, tt.attr.Name, got, reason, tt.want)
			}
			if got == deny && reason == "" {
				t.Errorf("denial without a reason")
			}
			// The conditions-aware entry point agrees.
			if d := authz.ConditionsAwareAuthorize(t.Context(), tt.attr); d.IsAllow() != (got == allow) || d.IsDeny() != (got == deny) {
				t.Errorf("ConditionsAwareAuthorize() = %v, want %v", d, got)
			}
		})
	}
}

func TestAuthorizeFollowsPodChanges(t *testing.T) {
	a := nodeUser("a")
	p := pod("ns", "p", "a", withSecretVolume("s"))
	authz, store := newAuthorizer(t, p)
	get := req(a, "get", "", "secrets", "", "ns", "s")
	check := func(step string, want authorizer.Decision) {
		t.Helper()
		if got, reason, _ := authz.Authorize(t.Context(), get); got != want {
			t.Errorf("%s: Authorize(get secret ns/s) = %v (%q), want %v", step, got, reason, want)
		}
	}

	check("pod bound to a", authorizer.DecisionAllow)

	moved := p.DeepCopy()
	moved.Spec.Volumes = nil
	if err := store.Update(moved); err != nil {
		t.Fatal(err)
	}
	check("volume removed", authorizer.DecisionDeny)

	if err := store.Update(p); err != nil {
		t.Fatal(err)
	}
	check("volume back", authorizer.DecisionAllow)

	if err := store.Delete(p); err != nil {
		t.Fatal(err)
	}
	check("pod deleted", authorizer.DecisionDeny)
}

func TestDenyReason(t *testing.T) {
	authz, _ := newAuthorizer(t)
	_, reason, _ := authz.Authorize(t.Context(), req(nodeUser("a"), "get", "", "secrets", "", "ns", "x"))
	const want = "node 'a' cannot get secret ns/x: no relationship found between node 'a' and this object"
	if !strings.HasPrefix(reason, want) {
		t.Errorf("reason = %q, want prefix %q", reason, want)
	}
	// The informer never ran, so the reason says the cache is not synced.
	if !strings.Contains(reason, "not synced") {
		t.Errorf("reason = %q, want a note that the pod cache has not synced", reason)
	}
	if authz.HasSynced() {
		t.Errorf("HasSynced() = true for an informer that never ran")
	}
}

func TestNewTwiceOnOneFactory(t *testing.T) {
	f := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	New(f)
	a := New(f)
	if a.err != nil {
		t.Fatalf("second New: %v", a.err)
	}
}

func TestReferences(t *testing.T) {
	p := pod("ns", "web", "a", withSecretVolume("s"), withSecretVolume("s"), func(s *corev1.PodSpec) {
		s.ServiceAccountName = "sa"
		s.Volumes = append(s.Volumes,
			corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}},
			corev1.Volume{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}},
			corev1.Volume{Name: "rbd", VolumeSource: corev1.VolumeSource{RBD: &corev1.RBDVolumeSource{SecretRef: &corev1.LocalObjectReference{Name: "ceph"}}}},
		)
	})
	got := References(p)
	want := []string{"configmap/ns/conf", "pvc/ns/web-scratch", "secret/ns/ceph", "secret/ns/s", "serviceaccount/ns/sa"}
	if !slices.Equal(got, want) {
		t.Errorf("References() = %q, want %q", got, want)
	}
}
