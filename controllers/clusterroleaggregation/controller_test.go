package clusterroleaggregation

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"testing/synctest"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
)

func role(name string, labels map[string]string, resources ...string) *rbacv1.ClusterRole {
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	for _, r := range resources {
		cr.Rules = append(cr.Rules, rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{r}})
	}
	return cr
}

func aggregated(name string, labels map[string]string, selectors ...map[string]string) *rbacv1.ClusterRole {
	cr := role(name, labels)
	cr.AggregationRule = &rbacv1.AggregationRule{}
	for _, s := range selectors {
		cr.AggregationRule.ClusterRoleSelectors = append(cr.AggregationRule.ClusterRoleSelectors, metav1.LabelSelector{MatchLabels: s})
	}
	return cr
}

type fixture struct {
	c      *Controller
	client *fake.Clientset
}

// start runs a controller on objs until the test ends and waits until it
// has nothing left to do. It must be called inside a synctest bubble.
func start(t *testing.T, shared bool, objs ...runtime.Object) *fixture {
	t.Helper()
	client := fake.NewClientset(objs...)
	cfg := Config{Client: client, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	if shared {
		cfg.Informers = informers.NewSharedInformerFactory(client, 0)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		if shared {
			cfg.Informers.Shutdown()
		}
	})
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run() returned %v before Ready", err)
	}
	synctest.Wait()
	return &fixture{c: c, client: client}
}

// resources returns the resources of the rules of the named role, in order.
func (f *fixture) resources(t *testing.T, name string) string {
	t.Helper()
	cr, err := f.client.RbacV1().ClusterRoles().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	var out []string
	for _, r := range cr.Rules {
		out = append(out, r.Resources...)
	}
	return fmt.Sprint(out)
}

func (f *fixture) updates() int {
	n := 0
	for _, a := range f.client.Actions() {
		if a.GetVerb() == "update" && a.GetResource().Resource == "clusterroles" {
			n++
		}
	}
	return n
}

func TestAggregation(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				x, y := map[string]string{"x": "1"}, map[string]string{"y": "1"}
				stale := aggregated("agg", nil, x, y)
				stale.Rules = role("", nil, "stale").Rules
				f := start(t, shared,
					role("b", x, "pods", "services"),
					role("a", x, "secrets", "pods"),
					role("c", y, "nodes"),
					role("unrelated", map[string]string{"z": "1"}, "leases"),
					stale,
				)
				// Selector order, then role name, then rule order; no duplicates.
				if got, want := f.resources(t, "agg"), "[secrets pods services nodes]"; got != want {
					t.Fatalf("agg rules = %s, want %s", got, want)
				}

				ctx := t.Context()
				crs := f.client.RbacV1().ClusterRoles()
				if _, err := crs.Create(ctx, role("d", y, "configmaps"), metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if got, want := f.resources(t, "agg"), "[secrets pods services nodes configmaps]"; got != want {
					t.Errorf("after adding d: agg rules = %s, want %s", got, want)
				}

				if _, err := crs.Update(ctx, role("b", x, "services"), metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
				if err := crs.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if got, want := f.resources(t, "agg"), "[services nodes configmaps]"; got != want {
					t.Errorf("after changing b and deleting a: agg rules = %s, want %s", got, want)
				}

				// A label change moves a role in or out.
				if _, err := crs.Update(ctx, role("unrelated", x, "leases"), metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if got, want := f.resources(t, "agg"), "[services leases nodes configmaps]"; got != want {
					t.Errorf("after relabelling: agg rules = %s, want %s", got, want)
				}

				// Nothing that matters changes: no write.
				before := f.updates()
				if _, err := crs.Create(ctx, role("other", map[string]string{"z": "2"}, "events"), metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if n := f.updates() - before; n != 0 {
					t.Errorf("an unrelated role caused %d updates, want 0", n)
				}
			})
		})
	}
}

func TestChainedAggregation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		toAdmin, toEdit, toView := map[string]string{"to-admin": "true"}, map[string]string{"to-edit": "true"}, map[string]string{"to-view": "true"}
		f := start(t, false,
			aggregated("admin", nil, toAdmin),
			aggregated("edit", toAdmin, toEdit),
			aggregated("view", toEdit, toView),
			role("base-admin", toAdmin, "roles"),
			role("base-edit", toEdit, "secrets"),
			role("base-view", toView, "pods"),
		)
		for name, want := range map[string]string{
			"view": "[pods]",
			// Matching roles in name order: base-edit before view.
			"edit":  "[secrets pods]",
			"admin": "[roles secrets pods]",
		} {
			if got := f.resources(t, name); got != want {
				t.Errorf("%s rules = %s, want %s", name, got, want)
			}
		}
	})
}

func TestSelfSelectionIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := map[string]string{"x": "1"}
		self := aggregated("self", l, l)
		f := start(t, false, self, role("a", l, "pods"))
		if got := f.resources(t, "self"); got != "[pods]" {
			t.Errorf("self rules = %s, want [pods]", got)
		}
	})
}

func TestUnchangedRoleNotWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := map[string]string{"x": "1"}
		agg := aggregated("agg", nil, l)
		agg.Rules = role("", nil, "pods").Rules
		f := start(t, false, agg, role("a", l, "pods"))
		if n := f.updates(); n != 0 {
			t.Errorf("%d updates of a role already aggregated, want 0", n)
		}
	})
}

func TestNewRequiresClient(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New(Config{}) = nil error, want Client required")
	}
	if _, err := New(Config{Client: fake.NewClientset(), ResyncPeriod: -1}); err == nil {
		t.Error("New with a negative resync = nil error")
	}
}
