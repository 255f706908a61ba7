package rbac

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/component-helpers/auth/rbac/validation"
)

// writes returns the mutating actions a fake clientset recorded.
func writes(c *fake.Clientset) []string {
	var out []string
	for _, a := range c.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
			continue
		}
		name := ""
		if n, ok := a.(interface{ GetName() string }); ok {
			name = n.GetName()
		}
		if o, ok := a.(interface{ GetObject() runtime.Object }); ok {
			if m, ok := o.GetObject().(metav1.Object); ok {
				name = m.GetName()
			}
		}
		out = append(out, a.GetVerb()+" "+a.GetResource().Resource+" "+name)
	}
	return out
}

func TestReconcileIdempotent(t *testing.T) {
	client := fake.NewClientset()
	if err := Reconcile(t.Context(), client, nil); err != nil {
		t.Fatalf("first Reconcile: %v", err)
	}
	crs, crbs, rs, rbs := DefaultPolicy()
	want := len(crs) + len(crbs) + len(rs) + len(rbs) + 1 // and the kube-public namespace
	if got := writes(client); len(got) != want {
		t.Errorf("first Reconcile made %d writes, want %d creates: %q", len(got), want, got)
	}
	for _, r := range crs {
		got, err := client.RbacV1().ClusterRoles().Get(t.Context(), r.Name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("ClusterRole %s: %v", r.Name, err)
			continue
		}
		if ok, missing := validation.Covers(got.Rules, r.Rules); !ok {
			t.Errorf("ClusterRole %s lacks %v", r.Name, missing)
		}
	}
	if _, err := client.RbacV1().RoleBindings("kube-public").Get(t.Context(), ClusterInfoReader, metav1.GetOptions{}); err != nil {
		t.Errorf("RoleBinding kube-public/%s: %v", ClusterInfoReader, err)
	}

	client.ClearActions()
	if err := Reconcile(t.Context(), client, nil); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}
	if got := writes(client); len(got) != 0 {
		t.Errorf("second Reconcile wrote %q, want nothing", got)
	}
}

func TestReconcileKeepsChanges(t *testing.T) {
	extra := rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{"example.com"}, Resources: []string{"widgets"}}
	client := fake.NewClientset(
		// An administrator added a rule and a label, and lost the defaults'.
		&rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "system:aggregate-to-edit", Labels: map[string]string{"team": "a"}},
			Rules:      []rbacv1.PolicyRule{extra},
		},
		// Opted out of updates.
		&rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "view", Annotations: map[string]string{rbacv1.AutoUpdateAnnotationKey: "false"}},
			Rules:      []rbacv1.PolicyRule{extra},
		},
		// An extra subject.
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "system:discovery"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:discovery"},
			Subjects:   []rbacv1.Subject{userSubject("x")},
		},
		// The wrong role.
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "system:basic-user"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []rbacv1.Subject{groupSubject("system:authenticated")},
		},
	)
	if err := Reconcile(t.Context(), client, nil); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	ctx := t.Context()

	edit, err := client.RbacV1().ClusterRoles().Get(ctx, "system:aggregate-to-edit", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(edit.Rules, func(r rbacv1.PolicyRule) bool { return slices.Equal(r.Resources, extra.Resources) }) {
		t.Errorf("the added rule is gone: %v", edit.Rules)
	}
	if ok, missing := validation.Covers(edit.Rules, editRules()); !ok {
		t.Errorf("default rules missing: %v", missing)
	}
	if edit.Labels["team"] != "a" || edit.Labels[aggregateToEdit] != "true" || edit.Labels[BootstrappingLabel] != "rbac-defaults" {
		t.Errorf("labels = %v, want the administrator's and the defaults", edit.Labels)
	}
	if edit.Annotations[rbacv1.AutoUpdateAnnotationKey] != "true" {
		t.Errorf("annotations = %v, want autoupdate=true", edit.Annotations)
	}

	view, err := client.RbacV1().ClusterRoles().Get(ctx, "view", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if view.AggregationRule != nil || len(view.Rules) != 1 || view.Labels != nil {
		t.Errorf("view with autoupdate=false changed: %+v", view)
	}

	disc, err := client.RbacV1().ClusterRoleBindings().Get(ctx, "system:discovery", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []rbacv1.Subject{userSubject("x"), groupSubject("system:authenticated")}; !slices.Equal(disc.Subjects, want) {
		t.Errorf("system:discovery subjects = %v, want %v", disc.Subjects, want)
	}

	basic, err := client.RbacV1().ClusterRoleBindings().Get(ctx, "system:basic-user", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if basic.RoleRef.Name != "system:basic-user" {
		t.Errorf("system:basic-user roleRef = %v, want it recreated with ClusterRole system:basic-user", basic.RoleRef)
	}
	deleted := slices.Contains(writes(client), "delete clusterrolebindings system:basic-user")
	if !deleted {
		t.Errorf("writes = %q, want the binding with the wrong roleRef deleted", writes(client))
	}

	client.ClearActions()
	if err := Reconcile(ctx, client, nil); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}
	if got := writes(client); len(got) != 0 {
		t.Errorf("second Reconcile wrote %q, want nothing", got)
	}
}

func TestReconcileRetriesConflicts(t *testing.T) {
	client := fake.NewClientset(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "system:basic-user"}})
	conflicts := 0
	client.PrependReactor("update", "clusterroles", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts < 2 {
			conflicts++
			return true, nil, apierrors.NewConflict(rbacv1.Resource("clusterroles"), "system:basic-user", nil)
		}
		return false, nil, nil
	})
	if err := Reconcile(t.Context(), client, nil); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	r, err := client.RbacV1().ClusterRoles().Get(t.Context(), "system:basic-user", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if conflicts != 2 || len(r.Rules) == 0 {
		t.Errorf("after %d conflicts, rules = %v; want the defaults written on the third try", conflicts, r.Rules)
	}
}

func TestReconcileReportsErrors(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "clusterrolebindings", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(rbacv1.Resource("clusterrolebindings"), "", nil)
	})
	err := Reconcile(t.Context(), client, nil)
	if !apierrors.IsForbidden(err) {
		t.Errorf("Reconcile() = %v, want the Forbidden errors", err)
	}
	// Everything else was still written.
	if _, err := client.RbacV1().RoleBindings("kube-public").Get(t.Context(), ClusterInfoReader, metav1.GetOptions{}); err != nil {
		t.Errorf("RoleBinding after an earlier failure: %v", err)
	}
}
