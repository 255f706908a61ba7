package registry

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

func TestPodBindingValidate(t *testing.T) {
	tests := []struct {
		name   string
		target corev1.ObjectReference
		want   []string
	}{
		{"node", corev1.ObjectReference{Kind: "Node", Name: "node-1"}, nil},
		{"empty kind means node", corev1.ObjectReference{Name: "node-1"}, nil},
		{"no name", corev1.ObjectReference{Kind: "Node"}, []string{"FieldValueRequired target.name"}},
		{"bad name", corev1.ObjectReference{Kind: "Node", Name: "Node_1"}, []string{"FieldValueInvalid target.name"}},
		{"not a node", corev1.ObjectReference{Kind: "Pod", Name: "p"}, []string{"FieldValueNotSupported target.kind"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Target: tt.target}
			miscCheck(t, "bindingValidate", bindingValidate(b), tt.want...)
		})
	}
}

// TestBindingStorage binds pods against etcd.
func TestPodBindingStorage(t *testing.T) {
	main, _, err := NewStore(Pods, nsTestStorage(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(main.Destroy)
	bindingStorage, legacyStorage := NewBindingStorage(main)
	binding := bindingStorage.(rest.NamedCreater)
	legacy := legacyStorage.(rest.Creater)
	ctx := request.WithNamespace(t.Context(), "ns1")

	create := func(name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
		t.Helper()
		p := podTestPod()
		p.Name, p.Namespace, p.ResourceVersion = name, "ns1", ""
		for _, m := range mutate {
			m(p)
		}
		obj, err := main.Create(ctx, p, rest.ValidateAllObjectFunc, &metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(pod %s): %v", name, err)
		}
		return obj.(*corev1.Pod)
	}
	get := func(name string) *corev1.Pod {
		t.Helper()
		obj, err := main.Get(ctx, name, &metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(pod %s): %v", name, err)
		}
		return obj.(*corev1.Pod)
	}
	bind := func(name, node string, opts *metav1.CreateOptions, mutate ...func(*corev1.Binding)) error {
		b := &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns1"},
			Target:     corev1.ObjectReference{Kind: "Node", Name: node},
		}
		for _, m := range mutate {
			m(b)
		}
		if opts == nil {
			opts = &metav1.CreateOptions{}
		}
		_, err := binding.Create(ctx, name, b, rest.ValidateAllObjectFunc, opts)
		return err
	}

	t.Run("binds", func(t *testing.T) {
		create("web")
		err := bind("web", "node-1", nil, func(b *corev1.Binding) {
			b.Annotations = map[string]string{"example.com/placed-by": "test"}
		})
		if err != nil {
			t.Fatalf("bind: %v", err)
		}
		p := get("web")
		if p.Spec.NodeName != "node-1" || p.Annotations["example.com/placed-by"] != "test" {
			t.Errorf("bound pod: nodeName %q, annotations %v; want node-1 and the binding's annotation", p.Spec.NodeName, p.Annotations)
		}
		if c := podCondition(p, corev1.PodScheduled); c == nil || c.Status != corev1.ConditionTrue || c.LastTransitionTime.IsZero() {
			t.Errorf("PodScheduled condition = %+v, want True with a transition time", c)
		}

		err = bind("web", "node-2", nil)
		if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), `already assigned to node "node-1"`) {
			t.Errorf("second bind = %v, want Conflict: already assigned to node \"node-1\"", err)
		}
	})

	t.Run("missing pod", func(t *testing.T) {
		if err := bind("ghost", "node-1", nil); !apierrors.IsNotFound(err) {
			t.Errorf("bind missing pod = %v, want NotFound", err)
		}
	})

	t.Run("invalid target", func(t *testing.T) {
		create("invalid")
		if err := bind("invalid", "", nil); !apierrors.IsInvalid(err) {
			t.Errorf("bind without node = %v, want Invalid", err)
		}
		if err := bind("invalid", "n", nil, func(b *corev1.Binding) { b.Target.Kind = "Pod" }); !apierrors.IsInvalid(err) {
			t.Errorf("bind to a Pod = %v, want Invalid", err)
		}
	})

	t.Run("name mismatch", func(t *testing.T) {
		b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Target: corev1.ObjectReference{Name: "node-1"}}
		if _, err := binding.Create(ctx, "web", b, nil, &metav1.CreateOptions{}); !apierrors.IsBadRequest(err) {
			t.Errorf("bind with another name = %v, want BadRequest", err)
		}
	})

	t.Run("preconditions", func(t *testing.T) {
		p := create("pre")
		if err := bind("pre", "node-1", nil, func(b *corev1.Binding) { b.UID = types.UID("not-the-uid") }); !apierrors.IsConflict(err) {
			t.Errorf("bind with wrong uid = %v, want Conflict", err)
		}
		if err := bind("pre", "node-1", nil, func(b *corev1.Binding) { b.ResourceVersion = "1" }); !apierrors.IsConflict(err) {
			t.Errorf("bind with old resourceVersion = %v, want Conflict", err)
		}
		if err := bind("pre", "node-1", nil, func(b *corev1.Binding) { b.UID, b.ResourceVersion = p.UID, p.ResourceVersion }); err != nil {
			t.Errorf("bind with matching uid and resourceVersion = %v, want success", err)
		}
	})

	t.Run("dry run", func(t *testing.T) {
		create("dry")
		if err := bind("dry", "node-1", &metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatalf("dry-run bind: %v", err)
		}
		if p := get("dry"); p.Spec.NodeName != "" {
			t.Errorf("after dry run nodeName = %q, want empty", p.Spec.NodeName)
		}
	})

	t.Run("gated", func(t *testing.T) {
		create("gated", func(p *corev1.Pod) { p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/wait"}} })
		if err := bind("gated", "node-1", nil); !apierrors.IsConflict(err) {
			t.Errorf("bind gated pod = %v, want Conflict", err)
		}
	})

	t.Run("create validation refuses", func(t *testing.T) {
		create("refused")
		b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "refused"}, Target: corev1.ObjectReference{Name: "node-1"}}
		deny := func(_ context.Context, _ runtime.Object) error {
			return apierrors.NewForbidden(corev1.Resource("pods/binding"), "refused", nil)
		}
		if _, err := binding.Create(ctx, "refused", b, deny, &metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("bind refused by admission = %v, want Forbidden", err)
		}
		if p := get("refused"); p.Spec.NodeName != "" {
			t.Errorf("after refused bind nodeName = %q, want empty", p.Spec.NodeName)
		}
	})

	t.Run("legacy", func(t *testing.T) {
		create("old-style")
		b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "old-style", Namespace: "ns1"}, Target: corev1.ObjectReference{Name: "node-3"}}
		if _, err := legacy.Create(ctx, b, rest.ValidateAllObjectFunc, &metav1.CreateOptions{}); err != nil {
			t.Fatalf("legacy bind: %v", err)
		}
		if p := get("old-style"); p.Spec.NodeName != "node-3" {
			t.Errorf("legacy-bound nodeName = %q, want node-3", p.Spec.NodeName)
		}
	})
}
