package registry

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

func rbacRule(verbs, groups, resources []string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{Verbs: verbs, APIGroups: groups, Resources: resources}
}

var (
	rbacGetPods   = rbacRule([]string{"get"}, []string{""}, []string{"pods"})
	rbacAllPods   = rbacRule([]string{"*"}, []string{""}, []string{"pods"})
	rbacGetSecret = rbacRule([]string{"get", "list"}, []string{""}, []string{"secrets"})
	rbacHealthz   = rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{"/healthz"}}
)

func TestRoleValidate(t *testing.T) {
	tests := []struct {
		name  string
		role  string // name
		rules []rbacv1.PolicyRule
		want  []string
	}{
		{"valid", "system:my-role", []rbacv1.PolicyRule{rbacGetPods}, nil},
		{"no rules", "r", nil, nil},
		{"no verbs", "r", []rbacv1.PolicyRule{rbacRule(nil, []string{""}, []string{"pods"})}, []string{"FieldValueRequired rules[0].verbs"}},
		{"no groups", "r", []rbacv1.PolicyRule{rbacRule([]string{"get"}, nil, []string{"pods"})}, []string{"FieldValueRequired rules[0].apiGroups"}},
		{"no resources", "r", []rbacv1.PolicyRule{rbacRule([]string{"get"}, []string{""}, nil)}, []string{"FieldValueRequired rules[0].resources"}},
		{"URLs in a namespaced role", "r", []rbacv1.PolicyRule{rbacHealthz}, []string{"FieldValueInvalid rules[0].nonResourceURLs"}},
		{"name with a slash", "a/b", nil, []string{"FieldValueInvalid metadata.name"}},
		{"name ..", "..", nil, []string{"FieldValueInvalid metadata.name"}},
		{"name with %", "a%b", nil, []string{"FieldValueInvalid metadata.name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: tt.role, Namespace: "ns1"}, Rules: tt.rules}
			miscCheck(t, "Validate", miscValidate(Roles, r), tt.want...)
		})
	}
}

func TestClusterRoleValidate(t *testing.T) {
	mixed := rbacHealthz
	mixed.Resources = []string{"pods"}
	tests := []struct {
		name  string
		rules []rbacv1.PolicyRule
		agg   *rbacv1.AggregationRule
		want  []string
	}{
		{"resources and URLs", []rbacv1.PolicyRule{rbacGetPods, rbacHealthz}, nil, nil},
		{"mixed rule", []rbacv1.PolicyRule{mixed}, nil, []string{"FieldValueInvalid rules[0].nonResourceURLs"}},
		{"URL without verbs", []rbacv1.PolicyRule{{NonResourceURLs: []string{"/x"}}}, nil, []string{"FieldValueRequired rules[0].verbs"}},
		{"aggregation", nil, &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"a": "b"}}}}, nil},
		{"aggregation without selectors", nil, &rbacv1.AggregationRule{}, []string{"FieldValueRequired aggregationRule.clusterRoleSelectors"}},
		{"bad selector", nil, &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}},
			[]string{"FieldValueInvalid aggregationRule.clusterRoleSelectors[0].matchExpressions[0].operator"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Rules: tt.rules, AggregationRule: tt.agg}
			miscCheck(t, "Validate", miscValidate(ClusterRoles, r), tt.want...)
		})
	}
}

func rbacUser(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.UserKind, Name: name}
}

func rbacSA(ns, name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}
}

func TestBindingValidate(t *testing.T) {
	ref := func(kind, name string) rbacv1.RoleRef { return rbacv1.RoleRef{Kind: kind, Name: name} }
	tests := []struct {
		name     string
		ref      rbacv1.RoleRef
		subjects []rbacv1.Subject
		wantRB   []string
		wantCRB  []string
	}{
		{"valid", ref("ClusterRole", "view"), []rbacv1.Subject{rbacUser("alice"), {Kind: rbacv1.GroupKind, Name: "devs"}, rbacSA("ns2", "x")}, nil, nil},
		{"role ref to a Role", ref("Role", "r"), nil, nil, []string{"FieldValueNotSupported roleRef.kind"}},
		{"unknown ref kind", ref("Thing", "r"), nil, []string{"FieldValueNotSupported roleRef.kind"}, []string{"FieldValueNotSupported roleRef.kind"}},
		{"no ref name", ref("ClusterRole", ""), nil, []string{"FieldValueRequired roleRef.name"}, []string{"FieldValueRequired roleRef.name"}},
		{"bad ref name", ref("ClusterRole", "a/b"), nil, []string{"FieldValueInvalid roleRef.name"}, []string{"FieldValueInvalid roleRef.name"}},
		{"ref in another group", rbacv1.RoleRef{APIGroup: "example.com", Kind: "ClusterRole", Name: "r"}, nil,
			[]string{"FieldValueNotSupported roleRef.apiGroup"}, []string{"FieldValueNotSupported roleRef.apiGroup"}},
		{"service account without namespace", ref("ClusterRole", "view"), []rbacv1.Subject{rbacSA("", "x")}, nil, []string{"FieldValueRequired subjects[0].namespace"}},
		{"bad service account name", ref("ClusterRole", "view"), []rbacv1.Subject{rbacSA("ns", "X_y")}, []string{"FieldValueInvalid subjects[0].name"}, []string{"FieldValueInvalid subjects[0].name"}},
		{"service account with an API group", ref("ClusterRole", "view"), []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, APIGroup: rbacv1.GroupName, Namespace: "ns", Name: "x"}},
			[]string{"FieldValueNotSupported subjects[0].apiGroup"}, []string{"FieldValueNotSupported subjects[0].apiGroup"}},
		{"user in another group", ref("ClusterRole", "view"), []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: "example.com", Name: "x"}},
			[]string{"FieldValueNotSupported subjects[0].apiGroup"}, []string{"FieldValueNotSupported subjects[0].apiGroup"}},
		{"subject without name", ref("ClusterRole", "view"), []rbacv1.Subject{{Kind: rbacv1.GroupKind}},
			[]string{"FieldValueRequired subjects[0].name"}, []string{"FieldValueRequired subjects[0].name"}},
		{"unknown subject kind", ref("ClusterRole", "view"), []rbacv1.Subject{{Kind: "Robot", Name: "x"}},
			[]string{"FieldValueNotSupported subjects[0].kind"}, []string{"FieldValueNotSupported subjects[0].kind"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "system:b", Namespace: "ns1"}, RoleRef: tt.ref, Subjects: slices.Clone(tt.subjects)}
			miscCheck(t, "RoleBinding Validate", miscValidate(RoleBindings, rb), tt.wantRB...)
			crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "system:b"}, RoleRef: tt.ref, Subjects: slices.Clone(tt.subjects)}
			miscCheck(t, "ClusterRoleBinding Validate", miscValidate(ClusterRoleBindings, crb), tt.wantCRB...)
		})
	}
}

func TestBindingDefaults(t *testing.T) {
	rb := &rbacv1.RoleBinding{
		RoleRef:  rbacv1.RoleRef{Kind: "Role", Name: "r"},
		Subjects: []rbacv1.Subject{rbacUser("a"), {Kind: rbacv1.GroupKind, Name: "g"}, rbacSA("", "s")},
	}
	RoleBindings.Default(rb)
	if rb.RoleRef.APIGroup != rbacv1.GroupName {
		t.Errorf("roleRef.apiGroup = %q, want %q", rb.RoleRef.APIGroup, rbacv1.GroupName)
	}
	if got := []string{rb.Subjects[0].APIGroup, rb.Subjects[1].APIGroup, rb.Subjects[2].APIGroup}; !slices.Equal(got, []string{rbacv1.GroupName, rbacv1.GroupName, ""}) {
		t.Errorf("subject apiGroups = %q, want the RBAC group for User and Group only", got)
	}
	if rb.Subjects[2].Namespace != "" {
		t.Errorf("service account namespace = %q, want it left empty (it means the binding's)", rb.Subjects[2].Namespace)
	}
}

func TestBindingRoleRefImmutable(t *testing.T) {
	old := &rbacv1.RoleBinding{ObjectMeta: miscMeta("b"), RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"}}
	changed := old.DeepCopy()
	changed.RoleRef.Name = "edit"
	errs := miscValidateUpdate(RoleBindings, false, changed, old)
	miscCheck(t, "ValidateUpdate", errs, "FieldValueInvalid roleRef")
	if len(errs) == 1 && !strings.Contains(errs[0].Error(), "cannot change roleRef") {
		t.Errorf("error = %v, want it to say it cannot change roleRef", errs[0])
	}
	subjects := old.DeepCopy()
	subjects.Subjects = []rbacv1.Subject{rbacUser("a")}
	miscCheck(t, "ValidateUpdate of subjects", miscValidateUpdate(RoleBindings, false, subjects, old))

	oldCRB := &rbacv1.ClusterRoleBinding{ObjectMeta: miscMeta("b"), RoleRef: old.RoleRef}
	oldCRB.Namespace = ""
	changedCRB := oldCRB.DeepCopy()
	changedCRB.RoleRef.Name = "edit"
	miscCheck(t, "ClusterRoleBinding ValidateUpdate", miscValidateUpdate(ClusterRoleBindings, false, changedCRB, oldCRB), "FieldValueInvalid roleRef")
}

func TestRBACTables(t *testing.T) {
	created := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	tests := []struct {
		res  *Resource
		obj  runtime.Object
		want []interface{}
	}{
		{Roles, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "r", CreationTimestamp: created}}, []interface{}{"r", "2026-01-02T03:04:05Z"}},
		{ClusterRoles, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "c", CreationTimestamp: created}}, []interface{}{"c", "2026-01-02T03:04:05Z"}},
		{RoleBindings, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns1", CreationTimestamp: created},
			RoleRef:    rbacv1.RoleRef{Kind: "ClusterRole", Name: "view"},
			Subjects:   []rbacv1.Subject{rbacUser("a"), rbacUser("b"), {Kind: rbacv1.GroupKind, Name: "g"}, rbacSA("", "s"), rbacSA("ns2", "t")},
		}, []interface{}{"b", "ClusterRole/view", Age(created), "a, b", "g", "ns1/s, ns2/t"}},
		{ClusterRoleBindings, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "cb", CreationTimestamp: created},
			RoleRef:    rbacv1.RoleRef{Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, Name: "system:masters"}},
		}, []interface{}{"cb", "ClusterRole/cluster-admin", Age(created), "", "system:masters", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.res.Resource, func(t *testing.T) {
			tbl, err := newTable(tt.res).ConvertToTable(context.Background(), tt.obj, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(tbl.Rows) != 1 || fmt.Sprint(tbl.Rows[0].Cells) != fmt.Sprint(tt.want) {
				t.Errorf("ConvertToTable() rows = %v, want one row %q", tbl.Rows, tt.want)
			}
			if len(tbl.ColumnDefinitions) != len(tt.want) {
				t.Errorf("ConvertToTable() has %d columns for %d cells", len(tbl.ColumnDefinitions), len(tt.want))
			}
		})
	}
}

// rbacFakeRules gives each user the rules listed under "user" (cluster-wide)
// and "user/namespace".
type rbacFakeRules map[string][]rbacv1.PolicyRule

func (f rbacFakeRules) PolicyRules(_ context.Context, u user.Info, namespace string) ([]rbacv1.PolicyRule, error) {
	out := slices.Clone(f[u.GetName()])
	if namespace != "" {
		out = append(out, f[u.GetName()+"/"+namespace]...)
	}
	return out, nil
}

// rbacFakeAuthorizer allows the attributes it lists as
// "user verb resource namespace/name".
type rbacFakeAuthorizer []string

func (f rbacFakeAuthorizer) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	key := fmt.Sprintf("%s %s %s %s/%s", a.GetUser().GetName(), a.GetVerb(), a.GetResource(), a.GetNamespace(), a.GetName())
	if a.GetAPIGroup() == rbacv1.GroupName && slices.Contains(f, key) {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, "", nil
}

func rbacTestEscalation() *RBACEscalation {
	return &RBACEscalation{
		Rules: rbacFakeRules{
			"pods-everywhere": {rbacAllPods},
			"pods-in-ns1/ns1": {rbacAllPods},
			"root":            {rbacRule([]string{"*"}, []string{"*"}, []string{"*"}), {Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}},
			"resources-only":  {rbacRule([]string{"*"}, []string{"*"}, []string{"*"})},
		},
		Authorizer: rbacFakeAuthorizer{
			"escalator escalate roles ns1/r",
			"escalator escalate clusterroles /c",
			"binder bind clusterroles ns1/admin",
			"binder bind clusterroles /cluster-admin",
			"binder bind roles ns1/missing",
		},
		Roles: func(_ context.Context, namespace, name string) ([]rbacv1.PolicyRule, error) {
			if namespace == "ns1" && name == "pod-role" {
				return []rbacv1.PolicyRule{rbacGetPods}, nil
			}
			return nil, apierrors.NewNotFound(rbacv1.Resource("roles"), name)
		},
		ClusterRoles: func(_ context.Context, name string) ([]rbacv1.PolicyRule, error) {
			switch name {
			case "pod-reader":
				return []rbacv1.PolicyRule{rbacGetPods}, nil
			case "admin", "cluster-admin":
				return []rbacv1.PolicyRule{rbacAllPods, rbacGetSecret}, nil
			}
			return nil, apierrors.NewNotFound(rbacv1.Resource("clusterroles"), name)
		},
	}
}

func rbacCtx(name string, groups ...string) context.Context {
	if name == "" {
		return context.Background()
	}
	return request.WithUser(context.Background(), &user.DefaultInfo{Name: name, Groups: groups})
}

func TestRBACEscalationRoles(t *testing.T) {
	e := rbacTestEscalation()
	role := func(ns, name string, rules ...rbacv1.PolicyRule) *rbacv1.Role {
		return &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules}
	}
	clusterRole := func(name string, agg bool, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
		if agg {
			cr.AggregationRule = &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"a": "b"}}}}
		}
		return cr
	}
	tests := []struct {
		name    string
		ctx     context.Context
		obj     runtime.Object
		old     runtime.Object
		wantErr string // substring of a Forbidden error; "" for allowed
	}{
		{"held cluster-wide", rbacCtx("pods-everywhere"), role("ns1", "r", rbacGetPods), nil, ""},
		{"held in the namespace", rbacCtx("pods-in-ns1"), role("ns1", "r", rbacGetPods), nil, ""},
		{"held in another namespace", rbacCtx("pods-in-ns1"), role("ns2", "r", rbacGetPods), nil,
			`user "pods-in-ns1" (groups=[]) is attempting to grant RBAC permissions not currently held:` + "\n" + `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`},
		{"not held", rbacCtx("pods-everywhere", "g1"), role("ns1", "r", rbacGetPods, rbacGetSecret), nil,
			`user "pods-everywhere" (groups=["g1"]) is attempting to grant RBAC permissions not currently held:` + "\n" + `{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}`},
		{"namespace rules do not count for cluster roles", rbacCtx("pods-in-ns1"), clusterRole("c", false, rbacGetPods), nil, "not currently held"},
		{"held cluster role", rbacCtx("pods-everywhere"), clusterRole("c", false, rbacGetPods), nil, ""},
		{"escalate", rbacCtx("escalator"), role("ns1", "r", rbacGetSecret), nil, ""},
		{"escalate is per name", rbacCtx("escalator"), role("ns1", "other", rbacGetSecret), nil, "not currently held"},
		{"escalate cluster role", rbacCtx("escalator"), clusterRole("c", true, rbacGetSecret), nil, ""},
		{"system:masters", rbacCtx("x", user.SystemPrivilegedGroup), clusterRole("c", true, rbacHealthz), nil, ""},
		{"no user", rbacCtx(""), role("ns1", "r"), nil, "no user"},
		{"aggregation needs full authority", rbacCtx("resources-only"), clusterRole("c", true, rbacGetPods), nil, "must have cluster-admin privileges to use the aggregationRule"},
		{"aggregation with full authority", rbacCtx("root"), clusterRole("c", true, rbacGetPods), nil, ""},
		{"removing aggregation needs full authority", rbacCtx("resources-only"), clusterRole("c", false, rbacGetPods), clusterRole("c", true, rbacGetPods), "must have cluster-admin privileges"},
		{"update to rules not held", rbacCtx("pods-everywhere"), role("ns1", "r", rbacGetSecret), role("ns1", "r", rbacGetPods), "not currently held"},
		{"update of labels needs the rules", rbacCtx("nobody"), func() runtime.Object {
			r := role("ns1", "r", rbacGetSecret)
			r.Labels = map[string]string{"a": "b"}
			return r
		}(), role("ns1", "r", rbacGetSecret), "not currently held"},
		{"garbage collection needs nothing", rbacCtx("nobody"), func() runtime.Object {
			r := role("ns1", "r", rbacGetSecret)
			r.Finalizers = []string{"example.com/x"}
			r.OwnerReferences = []metav1.OwnerReference{{Name: "o", UID: "u"}}
			r.ResourceVersion = "7"
			return r
		}(), role("ns1", "r", rbacGetSecret), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.checkRole(tt.ctx, tt.obj, tt.old)
			checkRBACError(t, err, tt.wantErr)
		})
	}
}

func checkRBACError(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("check = %v, want allowed", err)
	case want != "" && (!apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want)):
		t.Errorf("check = %v, want Forbidden containing %q", err, want)
	}
}

func TestRBACEscalationBindings(t *testing.T) {
	e := rbacTestEscalation()
	rb := func(ns, kind, role string) *rbacv1.RoleBinding {
		return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b"},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role}, Subjects: []rbacv1.Subject{rbacUser("someone")}}
	}
	crb := func(role string) *rbacv1.ClusterRoleBinding {
		return &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "b"},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}, Subjects: []rbacv1.Subject{rbacUser("someone")}}
	}
	tests := []struct {
		name    string
		ctx     context.Context
		obj     runtime.Object
		old     runtime.Object
		wantErr string
	}{
		{"covers a cluster role in a namespace", rbacCtx("pods-in-ns1"), rb("ns1", "ClusterRole", "pod-reader"), nil, ""},
		{"covers a role", rbacCtx("pods-in-ns1"), rb("ns1", "Role", "pod-role"), nil, ""},
		{"namespace rules do not cover elsewhere", rbacCtx("pods-in-ns1"), rb("ns2", "ClusterRole", "pod-reader"), nil, "not currently held"},
		{"namespace rules do not cover cluster-wide", rbacCtx("pods-in-ns1"), crb("pod-reader"), nil, "not currently held"},
		{"cluster rules cover cluster-wide", rbacCtx("pods-everywhere"), crb("pod-reader"), nil, ""},
		{"not covered", rbacCtx("pods-everywhere"), rb("ns1", "ClusterRole", "admin"), nil,
			`{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}`},
		{"bind in the namespace", rbacCtx("binder"), rb("ns1", "ClusterRole", "admin"), nil, ""},
		{"bind is per namespace", rbacCtx("binder"), rb("ns2", "ClusterRole", "admin"), nil, "not currently held"},
		{"bind cluster-wide", rbacCtx("binder"), crb("cluster-admin"), nil, ""},
		{"bind a role that does not exist", rbacCtx("binder"), rb("ns1", "Role", "missing"), nil, ""},
		{"a role that does not exist needs bind", rbacCtx("root"), rb("ns1", "Role", "nope"), nil, `Role "nope" does not exist`},
		{"system:masters", rbacCtx("x", user.SystemPrivilegedGroup), crb("anything"), nil, ""},
		{"no user", rbacCtx(""), crb("pod-reader"), nil, "no user"},
		{"update of subjects needs the rules", rbacCtx("nobody"), rb("ns1", "ClusterRole", "admin"), func() runtime.Object {
			b := rb("ns1", "ClusterRole", "admin")
			b.Subjects = nil
			return b
		}(), "not currently held"},
		{"garbage collection needs nothing", rbacCtx("nobody"), func() runtime.Object {
			b := rb("ns1", "ClusterRole", "admin")
			b.Finalizers = []string{"example.com/x"}
			return b
		}(), rb("ns1", "ClusterRole", "admin"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRBACError(t, e.checkBinding(tt.ctx, tt.obj, tt.old), tt.wantErr)
		})
	}
}

func TestRBACStorageRequiresEscalation(t *testing.T) {
	if _, err := RBACStorage(nil, nil); err == nil {
		t.Error("RBACStorage(nil escalation) = nil error")
	}
	if _, err := RBACStorage(nil, &RBACEscalation{}); err == nil {
		t.Error("RBACStorage(empty escalation) = nil error")
	}
}

// TestRBACStorage drives the escalation check and roleRef immutability
// through the generic store against etcd, with the roles read back from
// storage.
func TestRBACStorage(t *testing.T) {
	e := rbacTestEscalation()
	e.Roles, e.ClusterRoles = nil, nil // read from the storage built here
	storage, err := RBACStorage(nsTestStorage(t), e)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range storage {
		t.Cleanup(s.Destroy)
	}
	in := func(ctx context.Context, ns string) context.Context { return request.WithNamespace(ctx, ns) }
	clusterRoles := storage["clusterroles"].(rest.Creater)
	roleBindings := storage["rolebindings"].(rest.StandardStorage)
	roles := storage["roles"].(rest.StandardStorage)

	// Only a master may create a role with secrets; the user with pods
	// everywhere may create one with pods.
	secrets := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "secrets"}, Rules: []rbacv1.PolicyRule{rbacGetSecret}}
	if _, err := clusterRoles.Create(in(rbacCtx("pods-everywhere"), ""), secrets.DeepCopy(), rest.ValidateAllObjectFunc, &metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("create clusterrole secrets without the rules: err = %v, want Forbidden", err)
	}
	if _, err := clusterRoles.Create(in(rbacCtx("admin", user.SystemPrivilegedGroup), ""), secrets.DeepCopy(), rest.ValidateAllObjectFunc, &metav1.CreateOptions{}); err != nil {
		t.Fatalf("create clusterrole secrets as master: %v", err)
	}
	// The caller's validation runs after the check.
	called := false
	pods := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: "ns1"}, Rules: []rbacv1.PolicyRule{rbacGetPods}}
	after := func(context.Context, runtime.Object) error { called = true; return nil }
	if _, err := roles.Create(in(rbacCtx("pods-everywhere"), "ns1"), pods, after, &metav1.CreateOptions{}); err != nil || !called {
		t.Fatalf("create role pods: err = %v, caller's validation called = %v", err, called)
	}

	// Bindings are checked against the stored role's rules.
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns1"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "secrets"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "u"}},
	}
	if _, err := roleBindings.Create(in(rbacCtx("pods-in-ns1"), "ns1"), binding.DeepCopy(), nil, &metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("bind secrets without the rules: err = %v, want Forbidden", err)
	}
	binding.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pods"}
	obj, err := roleBindings.Create(in(rbacCtx("pods-in-ns1"), "ns1"), binding.DeepCopy(), nil, &metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("bind role pods with the rules: %v", err)
	}

	// Updates: the roleRef is immutable (422); adding a subject needs the
	// rules too.
	update := func(ctx context.Context, b *rbacv1.RoleBinding) error {
		_, _, err := roleBindings.Update(in(ctx, "ns1"), b.Name, rest.DefaultUpdatedObjectInfo(b), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{})
		return err
	}
	stored := obj.(*rbacv1.RoleBinding)
	changed := stored.DeepCopy()
	changed.RoleRef.Name = "other"
	if err := update(rbacCtx("admin", user.SystemPrivilegedGroup), changed); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "cannot change roleRef") {
		t.Errorf("change roleRef: err = %v, want Invalid: cannot change roleRef", err)
	}
	more := stored.DeepCopy()
	more.Subjects = append(more.Subjects, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "g"})
	if err := update(rbacCtx("nobody"), more); !apierrors.IsForbidden(err) {
		t.Errorf("add a subject without the rules: err = %v, want Forbidden", err)
	}
	if err := update(rbacCtx("pods-everywhere"), more); err != nil {
		t.Errorf("add a subject with the rules: %v", err)
	}
}
