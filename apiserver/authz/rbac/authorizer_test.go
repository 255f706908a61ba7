package rbac

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// newTestAuthorizer returns an Authorizer whose informer caches hold objs;
// nothing is started and no server is involved.
func newTestAuthorizer(tb testing.TB, objs ...runtime.Object) *Authorizer {
	tb.Helper()
	factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	a := New(factory)
	v1 := factory.Rbac().V1()
	for _, o := range objs {
		var idx cache.Indexer
		switch o.(type) {
		case *rbacv1.Role:
			idx = v1.Roles().Informer().GetIndexer()
		case *rbacv1.ClusterRole:
			idx = v1.ClusterRoles().Informer().GetIndexer()
		case *rbacv1.RoleBinding:
			idx = v1.RoleBindings().Informer().GetIndexer()
		case *rbacv1.ClusterRoleBinding:
			idx = v1.ClusterRoleBindings().Informer().GetIndexer()
		default:
			tb.Fatalf("unexpected %T", o)
		}
		if err := idx.Add(o); err != nil {
			tb.Fatal(err)
		}
	}
	return a
}

func testClusterRole(name string, rs ...ruleBuilder) *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules(rs...)}
}

func testRole(ns, name string, rs ...ruleBuilder) *rbacv1.Role {
	return &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules(rs...)}
}

func testCRB(name, role string, subjects ...rbacv1.Subject) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   subjects,
	}
}

func testRB(ns, name, kind, role string, subjects ...rbacv1.Subject) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role},
		Subjects:   subjects,
	}
}

func saSubject(ns, name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}
}

// testPolicy is the fixture of the authorizer tests.
func testPolicy() []runtime.Object {
	return []runtime.Object{
		testClusterRole("pod-reader", rule("get", "list", "watch").groups("").resources("pods")),
		testClusterRole("secret-s1", rule("get").groups("").resources("secrets").names("s1")),
		testClusterRole("log-reader", rule("get").groups("").resources("pods/log")),
		testClusterRole("scale-all", rule("get", "update").groups("*").resources("*/scale")),
		testClusterRole("pods-star", rule("get").groups("").resources("pods/*")),
		testClusterRole("all-apps", rule("*").groups("apps").resources("*")),
		testClusterRole("health", rule("get").urls("/healthz", "/logs/*")),
		testClusterRole("everything", rule("*").groups("*").resources("*"), rule("*").urls("*")),
		testRole("ns1", "cm-editor", rule("update").groups("").resources("configmaps")),

		testCRB("alice-pods", "pod-reader", userSubject("alice")),
		testCRB("devs-secret", "secret-s1", groupSubject("devs")),
		testCRB("sa-apps", "all-apps", saSubject("ns2", "deployer")),
		testCRB("ops-health", "health", groupSubject("ops")),
		testCRB("carol-star", "pods-star", userSubject("carol")),
		testCRB("root", "everything", userSubject("root")),
		testCRB("by-sa-username", "pod-reader", userSubject("system:serviceaccount:ns3:robot")),
		testRB("ns1", "bob-cm", "Role", "cm-editor", userSubject("bob")),
		testRB("ns2", "bob-cm", "Role", "cm-editor", userSubject("bob")), // no such Role in ns2
		testRB("ns1", "bob-logs", "ClusterRole", "log-reader", userSubject("bob")),
		testRB("ns1", "sa-scale", "ClusterRole", "scale-all", saSubject("", "builder")),
		testRB("ns1", "eve-health", "ClusterRole", "health", userSubject("eve")),
		testRB("ns1", "dave", "Role", "nope", userSubject("dave")),
	}
}

func resourceAttrs(u user.Info, verb, group, resource, sub, ns, name string) authorizer.AttributesRecord {
	return authorizer.AttributesRecord{User: u, Verb: verb, APIGroup: group, APIVersion: "v1", Resource: resource,
		Subresource: sub, Namespace: ns, Name: name, ResourceRequest: true}
}

func pathAttrs(u user.Info, verb, path string) authorizer.AttributesRecord {
	return authorizer.AttributesRecord{User: u, Verb: verb, Path: path}
}

func TestAuthorize(t *testing.T) {
	alice := &user.DefaultInfo{Name: "alice", Groups: []string{user.AllAuthenticated}}
	bob := &user.DefaultInfo{Name: "bob"}
	carol := &user.DefaultInfo{Name: "carol"}
	dev := &user.DefaultInfo{Name: "x", Groups: []string{"staff", "devs"}}
	ops := &user.DefaultInfo{Name: "y", Groups: []string{"ops"}}
	eve := &user.DefaultInfo{Name: "eve"}
	root := &user.DefaultInfo{Name: "root"}
	builder := &user.DefaultInfo{Name: "system:serviceaccount:ns1:builder"}
	otherBuilder := &user.DefaultInfo{Name: "system:serviceaccount:ns2:builder"}
	deployer := &user.DefaultInfo{Name: "system:serviceaccount:ns2:deployer"}
	robot := &user.DefaultInfo{Name: "system:serviceaccount:ns3:robot"}
	// A user name that only looks like the deployer's: no separator.
	notDeployer := &user.DefaultInfo{Name: "system:serviceaccount:ns2deployer"}

	tests := []struct {
		name   string
		attrs  authorizer.AttributesRecord
		allow  bool
		reason string // checked if not empty
	}{
		{"cluster role binding grants in a namespace", resourceAttrs(alice, "get", "", "pods", "", "ns1", "p"), true,
			`RBAC: allowed by ClusterRoleBinding "alice-pods" of ClusterRole "pod-reader" to User "alice"`},
		{"cluster role binding grants across namespaces", resourceAttrs(alice, "list", "", "pods", "", "", ""), true, ""},
		{"verb not granted", resourceAttrs(alice, "delete", "", "pods", "", "ns1", "p"), false, ""},
		{"resource does not grant its subresource", resourceAttrs(alice, "get", "", "pods", "log", "ns1", "p"), false, ""},
		{"other resource", resourceAttrs(alice, "get", "", "services", "", "ns1", ""), false, ""},
		{"same resource in another group", resourceAttrs(alice, "get", "example.com", "pods", "", "ns1", ""), false, ""},
		{"role binding to a role", resourceAttrs(bob, "update", "", "configmaps", "", "ns1", "c"), true,
			`RBAC: allowed by RoleBinding "ns1/bob-cm" of Role "cm-editor" to User "bob"`},
		{"role binding's role is looked up in its namespace", resourceAttrs(bob, "update", "", "configmaps", "", "ns2", "c"), false, ""},
		{"role binding does not grant cluster-wide", resourceAttrs(bob, "update", "", "configmaps", "", "", "c"), false, ""},
		{"role binding to a cluster role", resourceAttrs(bob, "get", "", "pods", "log", "ns1", "p"), true, ""},
		{"role binding to a cluster role is namespaced", resourceAttrs(bob, "get", "", "pods", "log", "ns3", "p"), false, ""},
		{"group subject with resource name", resourceAttrs(dev, "get", "", "secrets", "", "ns5", "s1"), true,
			`RBAC: allowed by ClusterRoleBinding "devs-secret" of ClusterRole "secret-s1" to Group "devs"`},
		{"other resource name", resourceAttrs(dev, "get", "", "secrets", "", "ns5", "s2"), false, ""},
		{"resource names never match a collection", resourceAttrs(dev, "list", "", "secrets", "", "ns5", ""), false, ""},
		{"*/subresource with service account defaulting to the binding namespace", resourceAttrs(builder, "update", "apps", "deployments", "scale", "ns1", "d"), true,
			`RBAC: allowed by RoleBinding "ns1/sa-scale" of ClusterRole "scale-all" to ServiceAccount "ns1/builder"`},
		{"*/subresource does not grant the resource", resourceAttrs(builder, "get", "apps", "deployments", "", "ns1", "d"), false, ""},
		{"service account of another namespace", resourceAttrs(otherBuilder, "update", "apps", "deployments", "scale", "ns1", "d"), false, ""},
		{"service account subject with namespace, verb and resource wildcards", resourceAttrs(deployer, "escalate", "apps", "statefulsets", "", "ns9", "s"), true, ""},
		{"resource wildcard does not cross groups", resourceAttrs(deployer, "create", "", "pods", "", "ns9", ""), false, ""},
		{"service account user name needs the separator", resourceAttrs(notDeployer, "create", "apps", "deployments", "", "ns9", ""), false, ""},
		{"user subject naming a service account", resourceAttrs(robot, "get", "", "pods", "", "ns1", "p"), true, ""},
		{"resource/* is not a wildcard", resourceAttrs(carol, "get", "", "pods", "log", "ns1", "p"), false, ""},
		{"non-resource URL", pathAttrs(ops, "get", "/healthz"), true,
			`RBAC: allowed by ClusterRoleBinding "ops-health" of ClusterRole "health" to Group "ops"`},
		{"non-resource URL prefix", pathAttrs(ops, "get", "/logs/kubelet/x"), true, ""},
		{"non-resource URL prefix includes the bare prefix", pathAttrs(ops, "get", "/logs/"), true, ""},
		{"non-resource URL is exact without *", pathAttrs(ops, "get", "/healthzz"), false, ""},
		{"non-resource URL verb", pathAttrs(ops, "post", "/healthz"), false, ""},
		{"non-resource rules of a resource-less role do not grant resources", resourceAttrs(ops, "get", "", "healthz", "", "", ""), false, ""},
		{"role bindings never grant non-resource URLs", pathAttrs(eve, "get", "/healthz"), false, ""},
		{"everything", resourceAttrs(root, "deletecollection", "example.com", "widgets", "status", "ns1", ""), true, ""},
		{"everything includes paths", pathAttrs(root, "put", "/anything"), true, ""},
		{"missing role", resourceAttrs(&user.DefaultInfo{Name: "dave"}, "get", "", "pods", "", "ns1", ""), false,
			`RBAC: roles.rbac.authorization.k8s.io "nope" not found`},
		{"unknown user", resourceAttrs(&user.DefaultInfo{Name: "mallory", Groups: []string{"system:authenticated"}}, "get", "", "pods", "", "ns1", ""), false, ""},
		{"no user", resourceAttrs(nil, "get", "", "pods", "", "ns1", ""), false, ""},
	}
	for _, scan := range []bool{false, true} {
		a := newTestAuthorizer(t, testPolicy()...)
		if scan {
			// The path taken when the index could not be added.
			a.rbIndexed, a.crbIndexed = false, false
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("scan=%v/%s", scan, tt.name), func(t *testing.T) {
				d, reason, err := a.Authorize(t.Context(), tt.attrs)
				if err != nil {
					t.Fatalf("Authorize() error = %v", err)
				}
				want := authorizer.DecisionNoOpinion
				if tt.allow {
					want = authorizer.DecisionAllow
				}
				if d != want {
					t.Errorf("Authorize() = %v (%q), want %v", d, reason, want)
				}
				if tt.reason != "" && reason != tt.reason {
					t.Errorf("Authorize() reason = %q, want %q", reason, tt.reason)
				}
			})
		}
	}
}

func TestAuthorizeNilUserInterface(t *testing.T) {
	a := newTestAuthorizer(t, testPolicy()...)
	d, _, err := a.Authorize(t.Context(), authorizer.AttributesRecord{Verb: "get", Path: "/healthz"})
	if d != authorizer.DecisionNoOpinion || err != nil {
		t.Errorf("Authorize(no user) = %v, %v; want NoOpinion", d, err)
	}
}

func TestPolicyRules(t *testing.T) {
	objs := append(testPolicy(),
		// Names both the user and one of its groups: visited once.
		testCRB("twice", "log-reader", userSubject("frank"), groupSubject("devs")),
	)
	a := newTestAuthorizer(t, objs...)
	describe := func(rs []rbacv1.PolicyRule) []string {
		var out []string
		for _, r := range rs {
			out = append(out, fmt.Sprint(r.Verbs, r.APIGroups, r.Resources, r.ResourceNames, r.NonResourceURLs))
		}
		slices.Sort(out)
		return out
	}
	tests := []struct {
		name    string
		u       user.Info
		ns      string
		want    []string
		wantErr bool
	}{
		{"cluster-wide only", &user.DefaultInfo{Name: "bob"}, "", nil, false},
		{"namespace", &user.DefaultInfo{Name: "bob"}, "ns1", []string{
			"[get] [] [pods/log] [] []",
			"[update] [] [configmaps] [] []",
		}, false},
		{"deduplicated binding", &user.DefaultInfo{Name: "frank", Groups: []string{"devs"}}, "", []string{
			"[get] [] [pods/log] [] []",
			"[get] [] [secrets] [s1] []",
		}, false},
		{"missing role", &user.DefaultInfo{Name: "bob"}, "ns2", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.PolicyRules(t.Context(), tt.u, tt.ns)
			if (err != nil) != tt.wantErr {
				t.Errorf("PolicyRules() error = %v, want error %v", err, tt.wantErr)
			}
			if g := describe(got); !slices.Equal(g, tt.want) {
				t.Errorf("PolicyRules() = %q, want %q", g, tt.want)
			}
		})
	}
}

func TestRulesFor(t *testing.T) {
	a := newTestAuthorizer(t, testPolicy()...)
	res, nonRes, incomplete, err := a.RulesFor(t.Context(), &user.DefaultInfo{Name: "root"}, "ns1")
	if err != nil || incomplete {
		t.Fatalf("RulesFor(root) incomplete = %v, err = %v", incomplete, err)
	}
	if len(res) != 1 || !slices.Equal(res[0].GetResources(), []string{"*"}) {
		t.Errorf("RulesFor(root) resource rules = %v, want one for *", res)
	}
	if len(nonRes) != 1 || !slices.Equal(nonRes[0].GetNonResourceURLs(), []string{"*"}) {
		t.Errorf("RulesFor(root) non-resource rules = %v, want one for *", nonRes)
	}

	_, _, incomplete, err = a.RulesFor(t.Context(), &user.DefaultInfo{Name: "dave"}, "ns1")
	if !incomplete || err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("RulesFor(dave) incomplete = %v, err = %v; want incomplete with the missing role", incomplete, err)
	}
}

func TestSharedFactory(t *testing.T) {
	// Two authorizers on one factory share the index instead of failing.
	factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	a, b := New(factory), New(factory)
	if !a.crbIndexed || !b.crbIndexed || !a.rbIndexed || !b.rbIndexed {
		t.Errorf("indexed = %v %v %v %v, want all true", a.crbIndexed, b.crbIndexed, a.rbIndexed, b.rbIndexed)
	}
	if a.HasSynced() {
		t.Error("HasSynced() = true before the factory started")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer func() { cancel(); factory.Shutdown() }()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), a.HasSynced) {
		t.Fatal("caches did not sync")
	}
}

// benchmarkPolicy builds a cluster of n roles and n bindings (half cluster,
// half namespaced, over 50 namespaces), none of them for the benchmarked
// user, plus the default policy.
func benchmarkPolicy(n int) []runtime.Object {
	var objs []runtime.Object
	crs, crbs, rs, rbs := DefaultPolicy()
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
	for i := range n / 2 {
		ns := fmt.Sprintf("ns-%d", i%50)
		objs = append(objs,
			testClusterRole(fmt.Sprintf("cr-%d", i),
				rule("get", "list").groups("").resources("pods", "services"),
				rule("update").groups("apps").resources("deployments", fmt.Sprintf("r%d", i)),
			),
			testRole(ns, fmt.Sprintf("role-%d", i), rule("*").groups("").resources("configmaps")),
			testCRB(fmt.Sprintf("crb-%d", i), fmt.Sprintf("cr-%d", i),
				userSubject(fmt.Sprintf("user-%d", i)), groupSubject(fmt.Sprintf("group-%d", i))),
			testRB(ns, fmt.Sprintf("rb-%d", i), "Role", fmt.Sprintf("role-%d", i),
				userSubject(fmt.Sprintf("user-%d", i)), saSubject("", fmt.Sprintf("sa-%d", i))),
		)
	}
	return objs
}

// BenchmarkAuthorize measures one decision with 1,000 roles and 1,000
// bindings in the cluster. The limit the design asks for is 20 µs/op for a
// request nothing allows.
func BenchmarkAuthorize(b *testing.B) {
	a := newTestAuthorizer(b, benchmarkPolicy(1000)...)
	nobody := &user.DefaultInfo{Name: "alice", Groups: []string{"team-x", user.AllAuthenticated}}
	sa := &user.DefaultInfo{Name: "system:serviceaccount:ns-7:sa-7", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:ns-7", user.AllAuthenticated}}
	admin := &user.DefaultInfo{Name: "admin", Groups: []string{user.SystemPrivilegedGroup, user.AllAuthenticated}}
	cases := []struct {
		name  string
		attrs authorizer.AttributesRecord
		allow bool
	}{
		{"no-match", resourceAttrs(nobody, "get", "", "pods", "", "ns-7", "p"), false},
		{"role-binding", resourceAttrs(sa, "update", "", "configmaps", "", "ns-7", "c"), true},
		{"cluster-admin", resourceAttrs(admin, "delete", "", "pods", "", "ns-7", "p"), true},
		{"non-resource", pathAttrs(nobody, "get", "/apis/apps/v1"), true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			var attrs authorizer.Attributes = c.attrs // box once, as the handler chain does
			b.ReportAllocs()
			for b.Loop() {
				d, _, _ := a.Authorize(ctx, attrs)
				if (d == authorizer.DecisionAllow) != c.allow {
					b.Fatalf("Authorize() = %v, want allow %v", d, c.allow)
				}
			}
		})
	}
}
