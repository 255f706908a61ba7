package rbac

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

func TestDefaultPolicyConsistent(t *testing.T) {
	crs, crbs, rs, rbs := DefaultPolicy()
	clusterRoles := map[string]rbacv1.ClusterRole{}
	check := func(kind string, m metav1.ObjectMeta) {
		if m.Labels[BootstrappingLabel] != "rbac-defaults" {
			t.Errorf("%s %s: labels = %v, want %s=rbac-defaults", kind, m.Name, m.Labels, BootstrappingLabel)
		}
		if m.Annotations[rbacv1.AutoUpdateAnnotationKey] != "true" {
			t.Errorf("%s %s: annotations = %v, want autoupdate=true", kind, m.Name, m.Annotations)
		}
	}
	checkRules := func(kind, name string, rules []rbacv1.PolicyRule, namespaced bool) {
		for i, r := range rules {
			switch {
			case len(r.Verbs) == 0:
				t.Errorf("%s %s rule %d has no verbs", kind, name, i)
			case len(r.NonResourceURLs) > 0 && (namespaced || len(r.APIGroups)+len(r.Resources)+len(r.ResourceNames) > 0):
				t.Errorf("%s %s rule %d mixes non-resource URLs with resources, or is namespaced", kind, name, i)
			case len(r.NonResourceURLs) == 0 && (len(r.APIGroups) == 0 || len(r.Resources) == 0):
				t.Errorf("%s %s rule %d lacks apiGroups or resources", kind, name, i)
			}
		}
	}
	for _, r := range crs {
		if _, dup := clusterRoles[r.Name]; dup {
			t.Errorf("ClusterRole %s twice", r.Name)
		}
		clusterRoles[r.Name] = r
		check("ClusterRole", r.ObjectMeta)
		checkRules("ClusterRole", r.Name, r.Rules, false)
		if r.AggregationRule != nil && len(r.Rules) > 0 {
			t.Errorf("aggregated ClusterRole %s carries rules of its own", r.Name)
		}
	}
	bound := map[string]bool{}
	for _, b := range crbs {
		check("ClusterRoleBinding", b.ObjectMeta)
		if _, ok := clusterRoles[b.RoleRef.Name]; !ok || b.RoleRef.Kind != "ClusterRole" || b.RoleRef.APIGroup != rbacv1.GroupName {
			t.Errorf("ClusterRoleBinding %s refers to %v, which is not a default ClusterRole", b.Name, b.RoleRef)
		}
		if len(b.Subjects) == 0 {
			t.Errorf("ClusterRoleBinding %s has no subjects", b.Name)
		}
		bound[b.RoleRef.Name] = true
	}
	for _, r := range rs {
		check("Role", r.ObjectMeta)
		checkRules("Role", r.Name, r.Rules, true)
	}
	for _, b := range rbs {
		check("RoleBinding", b.ObjectMeta)
		found := slices.ContainsFunc(rs, func(r rbacv1.Role) bool {
			return b.RoleRef.Kind == "Role" && r.Namespace == b.Namespace && r.Name == b.RoleRef.Name
		})
		if _, ok := clusterRoles[b.RoleRef.Name]; b.RoleRef.Kind == "ClusterRole" && ok {
			found = true
		}
		if !found {
			t.Errorf("RoleBinding %s/%s refers to %v, which is not in the default policy", b.Namespace, b.Name, b.RoleRef)
		}
	}

	admin := slices.IndexFunc(crbs, func(b rbacv1.ClusterRoleBinding) bool { return b.Name == "cluster-admin" })
	if admin < 0 || crbs[admin].RoleRef.Name != "cluster-admin" ||
		!slices.Contains(crbs[admin].Subjects, groupSubject(user.SystemPrivilegedGroup)) {
		t.Errorf("cluster-admin is not bound to group %s", user.SystemPrivilegedGroup)
	}
	if bound["system:node"] {
		t.Error("system:node is bound; nodes are authorized by the Node authorizer")
	}

	// Fresh objects every call.
	crs2, _, _, _ := DefaultPolicy()
	crs2[0].Rules[0].Verbs[0] = "changed"
	crs2[len(crs2)-1].Rules[0].Verbs[0] = "changed"
	if again, _, _, _ := DefaultPolicy(); !equality.Semantic.DeepEqual(again, crs) {
		t.Error("changing what DefaultPolicy returned changed the next result")
	}
}

// aggregate fills the rules of aggregated cluster roles the way the
// aggregation controller does, until nothing changes.
func aggregate(t *testing.T, crs []rbacv1.ClusterRole) {
	t.Helper()
	for changed, rounds := true, 0; changed; rounds++ {
		if rounds > 10 {
			t.Fatal("aggregation does not settle")
		}
		changed = false
		for i := range crs {
			agg := crs[i].AggregationRule
			if agg == nil {
				continue
			}
			var union []rbacv1.PolicyRule
			for _, sel := range agg.ClusterRoleSelectors {
				s, err := metav1.LabelSelectorAsSelector(&sel)
				if err != nil {
					t.Fatal(err)
				}
				for _, other := range crs {
					if other.Name == crs[i].Name || !s.Matches(labels.Set(other.Labels)) {
						continue
					}
					for _, r := range other.Rules {
						if !slices.ContainsFunc(union, func(u rbacv1.PolicyRule) bool { return equality.Semantic.DeepEqual(u, r) }) {
							union = append(union, r)
						}
					}
				}
			}
			if !equality.Semantic.DeepEqual(union, crs[i].Rules) {
				crs[i].Rules, changed = union, true
			}
		}
	}
}

// TestDefaultPolicyGrants checks what the default policy allows, with the
// aggregated roles filled in.
func TestDefaultPolicyGrants(t *testing.T) {
	crs, crbs, rs, rbs := DefaultPolicy()
	aggregate(t, crs)
	var objs []runtime.Object
	for i := range crs {
		objs = append(objs, &crs[i])
	}
	for i := range crbs {
		objs = append(objs, &crbs[i])
	}
	for i := range rs {
		objs = append(objs, &rs[i])
	}
	for i := range rbs {
		objs = append(objs, &rbs[i])
	}
	// Users of the namespace roles.
	objs = append(objs,
		testRB("team", "viewer", "ClusterRole", "view", userSubject("viewer")),
		testRB("team", "editor", "ClusterRole", "edit", userSubject("editor")),
		testRB("team", "admin", "ClusterRole", "admin", userSubject("owner")),
	)
	a := newTestAuthorizer(t, objs...)

	authn := func(name string, groups ...string) user.Info {
		return &user.DefaultInfo{Name: name, Groups: append(groups, user.AllAuthenticated)}
	}
	anonymous := &user.DefaultInfo{Name: user.Anonymous, Groups: []string{user.AllUnauthenticated}}
	master := authn("root", user.SystemPrivilegedGroup)
	viewer, editor, owner := authn("viewer"), authn("editor"), authn("owner")
	scheduler := authn(user.KubeScheduler)
	kcm := authn(user.KubeControllerManager)
	proxy := authn(user.KubeProxy)
	node := authn("system:node:n1", user.NodesGroup)
	bootstrap := authn("system:bootstrap:abcdef", "system:bootstrappers")
	sa := authn("system:serviceaccount:team:default", "system:serviceaccounts", "system:serviceaccounts:team")
	kubeletClient := authn(kubeletAPIClientUser)

	tests := []struct {
		name  string
		attrs authorizer.AttributesRecord
		allow bool
	}{
		{"masters do anything", resourceAttrs(master, "delete", "", "nodes", "", "", "n1"), true},
		{"masters reach any path", pathAttrs(master, "get", "/metrics"), true},
		{"authenticated discover", pathAttrs(viewer, "get", "/apis/coordination.k8s.io/v1"), true},
		{"authenticated read the version", pathAttrs(viewer, "get", "/version"), true},
		{"authenticated cannot read metrics", pathAttrs(viewer, "get", "/metrics"), false},
		{"authenticated review themselves", resourceAttrs(viewer, "create", "authorization.k8s.io", "selfsubjectaccessreviews", "", "", ""), true},
		{"authenticated ask who they are", resourceAttrs(viewer, "create", "authentication.k8s.io", "selfsubjectreviews", "", "", ""), true},
		{"anonymous read health", pathAttrs(anonymous, "get", "/readyz"), true},
		{"anonymous cannot discover", pathAttrs(anonymous, "get", "/api"), false},
		{"anonymous read cluster-info", resourceAttrs(anonymous, "get", "", "configmaps", "", "kube-public", "cluster-info"), true},
		{"anonymous read no other config map", resourceAttrs(anonymous, "get", "", "configmaps", "", "kube-public", "other"), false},
		{"anonymous list no config maps", resourceAttrs(anonymous, "list", "", "configmaps", "", "kube-public", ""), false},
		{"service accounts read OIDC discovery", pathAttrs(sa, "get", "/openid/v1/jwks"), true},
		{"service accounts get no namespace rights", resourceAttrs(sa, "get", "", "pods", "", "team", ""), false},
		{"view reads pods", resourceAttrs(viewer, "list", "", "pods", "", "team", ""), true},
		{"view reads logs", resourceAttrs(viewer, "get", "", "pods", "log", "team", "p"), true},
		{"view reads endpoint slices", resourceAttrs(viewer, "watch", "discovery.k8s.io", "endpointslices", "", "team", ""), true},
		{"view reads new events", resourceAttrs(viewer, "list", "events.k8s.io", "events", "", "team", ""), true},
		{"view cannot read secrets", resourceAttrs(viewer, "get", "", "secrets", "", "team", "s"), false},
		{"view cannot exec", resourceAttrs(viewer, "create", "", "pods", "exec", "team", "p"), false},
		{"view is namespaced", resourceAttrs(viewer, "list", "", "pods", "", "other", ""), false},
		{"edit includes view", resourceAttrs(editor, "get", "", "pods", "log", "team", "p"), true},
		{"edit reads secrets", resourceAttrs(editor, "get", "", "secrets", "", "team", "s"), true},
		{"edit execs", resourceAttrs(editor, "create", "", "pods", "exec", "team", "p"), true},
		{"edit port-forwards", resourceAttrs(editor, "create", "", "pods", "portforward", "team", "p"), true},
		{"edit creates tokens", resourceAttrs(editor, "create", "", "serviceaccounts", "token", "team", "default"), true},
		{"edit writes deployments", resourceAttrs(editor, "patch", "apps", "deployments", "", "team", "d"), true},
		{"edit writes leases", resourceAttrs(editor, "update", "coordination.k8s.io", "leases", "", "team", "l"), true},
		{"edit cannot write endpoints", resourceAttrs(editor, "create", "", "endpoints", "", "team", ""), false},
		{"edit cannot write roles", resourceAttrs(editor, "create", "rbac.authorization.k8s.io", "roles", "", "team", ""), false},
		{"admin includes edit", resourceAttrs(owner, "delete", "", "secrets", "", "team", "s"), true},
		{"admin writes role bindings", resourceAttrs(owner, "create", "rbac.authorization.k8s.io", "rolebindings", "", "team", ""), true},
		{"admin cannot write cluster roles", resourceAttrs(owner, "create", "rbac.authorization.k8s.io", "clusterroles", "", "", ""), false},
		{"scheduler binds pods", resourceAttrs(scheduler, "create", "", "pods", "binding", "team", "p"), true},
		{"scheduler updates pod status", resourceAttrs(scheduler, "patch", "", "pods", "status", "team", "p"), true},
		{"scheduler holds its lease", resourceAttrs(scheduler, "update", "coordination.k8s.io", "leases", "", "kube-system", "kube-scheduler"), true},
		{"scheduler holds no other lease", resourceAttrs(scheduler, "update", "coordination.k8s.io", "leases", "", "kube-system", "kube-controller-manager"), false},
		{"scheduler cannot read secrets", resourceAttrs(scheduler, "get", "", "secrets", "", "team", "s"), false},
		{"controllers delete anything", resourceAttrs(kcm, "deletecollection", "", "pods", "", "team", ""), true},
		{"controllers approve", resourceAttrs(kcm, "approve", "certificates.k8s.io", "signers", "", "", "kubernetes.io/kube-apiserver-client-kubelet"), true},
		{"controllers sign", resourceAttrs(kcm, "sign", "certificates.k8s.io", "signers", "", "", "kubernetes.io/kubelet-serving"), true},
		{"controllers escalate cluster roles", resourceAttrs(kcm, "escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", "admin"), true},
		{"controllers cannot bind", resourceAttrs(kcm, "bind", "rbac.authorization.k8s.io", "clusterroles", "", "", "cluster-admin"), false},
		{"controllers cannot impersonate", resourceAttrs(kcm, "impersonate", "", "users", "", "", "root"), false},
		{"proxy watches slices", resourceAttrs(proxy, "watch", "discovery.k8s.io", "endpointslices", "", "", ""), true},
		{"proxy cannot read secrets", resourceAttrs(proxy, "list", "", "secrets", "", "", ""), false},
		{"bootstrappers create CSRs", resourceAttrs(bootstrap, "create", "certificates.k8s.io", "certificatesigningrequests", "", "", ""), true},
		{"bootstrappers request node client certs", resourceAttrs(bootstrap, "create", "certificates.k8s.io", "certificatesigningrequests", "nodeclient", "", "x"), true},
		{"nodes renew their client certs", resourceAttrs(node, "create", "certificates.k8s.io", "certificatesigningrequests", "selfnodeclient", "", "x"), true},
		{"nodes get nothing else from RBAC", resourceAttrs(node, "get", "", "secrets", "", "team", "s"), false},
		{"kubelet API client proxies", resourceAttrs(kubeletClient, "create", "", "nodes", "proxy", "", "n1"), true},
		{"kubelet API client reads logs", resourceAttrs(kubeletClient, "get", "", "nodes", "log", "", "n1"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, reason, err := a.Authorize(t.Context(), tt.attrs)
			if err != nil {
				t.Fatal(err)
			}
			if (d == authorizer.DecisionAllow) != tt.allow {
				t.Errorf("Authorize(%+v) = %v (%q), want allow %v", tt.attrs, d, reason, tt.allow)
			}
		})
	}
}
