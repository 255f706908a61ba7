package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"tether/test/framework"
)

func TestPatch(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)
	client := fastClient(t, c)

	t.Run("StrategicMerge", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "smp")
		pods := client.CoreV1().Pods(ns)
		if _, err := pods.Create(ctx, newPod("web", "busybox:1.36", "nginx:1.27"), metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(pod web) = %v", err)
		}
		// Containers merge by name: only c1 changes, c0 stays.
		patch := `{"metadata":{"labels":{"patched":"yes"}},"spec":{"containers":[{"name":"c1","image":"nginx:1.28"}]}}`
		p, err := pods.Patch(ctx, "web", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil {
			t.Fatalf("Patch(pod web, strategic %s) = %v", patch, err)
		}
		var images []string
		for _, c := range p.Spec.Containers {
			images = append(images, c.Name+"="+c.Image)
		}
		if want := []string{"c0=busybox:1.36", "c1=nginx:1.28"}; !slices.Equal(images, want) {
			t.Errorf("Patch(pod web, strategic).containers = %v, want %v", images, want)
		}
		if p.Labels["patched"] != "yes" {
			t.Errorf("Patch(pod web, strategic).labels = %v, want patched=yes", p.Labels)
		}
		if p.Generation != 2 {
			t.Errorf("Patch(pod web, strategic).generation = %d, want 2", p.Generation)
		}
	})

	t.Run("JSONMerge", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "merge")
		cms := client.CoreV1().ConfigMaps(ns)
		if _, err := cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "cm"},
			Data:       map[string]string{"a": "1", "b": "2"},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(cm) = %v", err)
		}
		patch := `{"metadata":{"labels":{"x":"y"}},"data":{"a":null,"c":"3"}}`
		cm, err := cms.Patch(ctx, "cm", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil {
			t.Fatalf("Patch(cm, merge %s) = %v", patch, err)
		}
		if want := map[string]string{"b": "2", "c": "3"}; !maps.Equal(cm.Data, want) {
			t.Errorf("Patch(cm, merge).data = %v, want %v", cm.Data, want)
		}
		if cm.Labels["x"] != "y" {
			t.Errorf("Patch(cm, merge).labels = %v, want x=y", cm.Labels)
		}
	})

	t.Run("JSONPatch", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "jsonpatch")
		cms := client.CoreV1().ConfigMaps(ns)
		if _, err := cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "cm"},
			Data:       map[string]string{"a": "1", "b": "2"},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(cm) = %v", err)
		}
		patch := `[{"op":"test","path":"/data/a","value":"1"},{"op":"replace","path":"/data/a","value":"10"},{"op":"remove","path":"/data/b"},{"op":"add","path":"/data/d","value":"4"}]`
		cm, err := cms.Patch(ctx, "cm", types.JSONPatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil {
			t.Fatalf("Patch(cm, json %s) = %v", patch, err)
		}
		if want := map[string]string{"a": "10", "d": "4"}; !maps.Equal(cm.Data, want) {
			t.Errorf("Patch(cm, json).data = %v, want %v", cm.Data, want)
		}

		failing := `[{"op":"test","path":"/data/a","value":"1"},{"op":"replace","path":"/data/a","value":"11"}]`
		_, err = cms.Patch(ctx, "cm", types.JSONPatchType, []byte(failing), metav1.PatchOptions{})
		if statusCode(err) != http.StatusUnprocessableEntity {
			t.Errorf("Patch(cm, json with a failing test op) = %v (code %d), want 422", err, statusCode(err))
		}
	})

	t.Run("Apply", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "apply")
		cms := client.CoreV1().ConfigMaps(ns)
		body := func(data map[string]string) []byte {
			b, err := json.Marshal(map[string]any{
				"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]any{"name": "cm", "namespace": ns},
				"data":     data,
			})
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			return b
		}

		// Apply creates the object.
		cm, err := cms.Patch(ctx, "cm", types.ApplyPatchType, body(map[string]string{"k": "alice", "a": "1"}), metav1.PatchOptions{FieldManager: "alice"})
		if err != nil {
			t.Fatalf("Apply(cm, manager alice) = %v", err)
		}
		if want := map[string]string{"k": "alice", "a": "1"}; !maps.Equal(cm.Data, want) {
			t.Errorf("Apply(cm, manager alice).data = %v, want %v", cm.Data, want)
		}
		if m := managers(cm.ManagedFields); !slices.Contains(m, "alice/Apply") {
			t.Errorf("Apply(cm, manager alice).managedFields managers = %v, want alice/Apply", m)
		}

		// A second manager that sets the same field conflicts...
		_, err = cms.Patch(ctx, "cm", types.ApplyPatchType, body(map[string]string{"k": "bob"}), metav1.PatchOptions{FieldManager: "bob"})
		if !apierrors.IsConflict(err) || statusCode(err) != http.StatusConflict {
			t.Fatalf("Apply(cm data.k, manager bob) = %v (code %d), want 409 Conflict", err, statusCode(err))
		}
		if !hasCause(err, metav1.CauseTypeFieldManagerConflict, ".data.k") {
			t.Errorf("Apply(cm data.k, manager bob) causes = %v, want a FieldManagerConflict on .data.k", statusCauses(err))
		}

		// ...unless it forces.
		cm, err = cms.Patch(ctx, "cm", types.ApplyPatchType, body(map[string]string{"k": "bob"}), metav1.PatchOptions{FieldManager: "bob", Force: ptrTo(true)})
		if err != nil {
			t.Fatalf("Apply(cm data.k, manager bob, force) = %v", err)
		}
		if want := map[string]string{"k": "bob", "a": "1"}; !maps.Equal(cm.Data, want) {
			t.Errorf("Apply(cm, manager bob, force).data = %v, want %v", cm.Data, want)
		}
		if m := managers(cm.ManagedFields); !slices.Contains(m, "alice/Apply") || !slices.Contains(m, "bob/Apply") {
			t.Errorf("Apply(cm, manager bob, force).managedFields managers = %v, want alice/Apply and bob/Apply", m)
		}

		// alice now owns only data.a: applying without it removes it.
		cm, err = cms.Patch(ctx, "cm", types.ApplyPatchType, body(map[string]string{}), metav1.PatchOptions{FieldManager: "alice"})
		if err != nil {
			t.Fatalf("Apply(cm, manager alice, empty data) = %v", err)
		}
		if want := map[string]string{"k": "bob"}; !maps.Equal(cm.Data, want) {
			t.Errorf("Apply(cm, manager alice, empty data).data = %v, want %v", cm.Data, want)
		}

		// The typed client builds the same request from an apply configuration.
		cm, err = cms.Apply(ctx, corev1ac.ConfigMap("cm", ns).WithData(map[string]string{"typed": "yes"}), metav1.ApplyOptions{FieldManager: "carol"})
		if err != nil {
			t.Fatalf("typed Apply(cm, manager carol) = %v", err)
		}
		if cm.Data["typed"] != "yes" || cm.Data["k"] != "bob" {
			t.Errorf("typed Apply(cm, manager carol).data = %v, want typed=yes and k=bob", cm.Data)
		}
	})

	t.Run("DryRun", func(t *testing.T) {
		ns := createNamespace(t, client, "dryrun")
		cms := client.CoreV1().ConfigMaps(ns)
		if _, err := cms.Create(t.Context(), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "stored"},
			Data:       map[string]string{"k": "v"},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(stored) = %v", err)
		}
		all := []string{metav1.DryRunAll}
		tests := []struct {
			name string
			// do runs the dry-run request and checks its answer.
			do func(t *testing.T) error
			// wantName is the object that must (not) exist afterwards, with
			// wantData its data; nil wantData means it must not exist.
			wantName string
			wantData map[string]string
		}{
			{
				name: "Create",
				do: func(t *testing.T) error {
					cm, err := cms.Create(t.Context(), &corev1.ConfigMap{
						ObjectMeta: metav1.ObjectMeta{Name: "created"}, Data: map[string]string{"k": "v"},
					}, metav1.CreateOptions{DryRun: all})
					if err == nil && cm.Name != "created" {
						t.Errorf("Create(created, dryRun).Name = %q, want %q", cm.Name, "created")
					}
					return err
				},
				wantName: "created",
			},
			{
				name: "CreateGenerateName",
				do: func(t *testing.T) error {
					cm, err := cms.Create(t.Context(), &corev1.ConfigMap{
						ObjectMeta: metav1.ObjectMeta{GenerateName: "gen-"},
					}, metav1.CreateOptions{DryRun: all})
					if err != nil {
						return err
					}
					if cm.Name == "" {
						t.Errorf("Create(gen-, dryRun).Name is empty, want a generated name")
						return nil
					}
					if _, err := cms.Get(t.Context(), cm.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
						t.Errorf("Get(%q) after a dry-run create = %v, want NotFound", cm.Name, err)
					}
					return nil
				},
				wantName: "stored",
				wantData: map[string]string{"k": "v"},
			},
			{
				name: "Update",
				do: func(t *testing.T) error {
					cm, err := cms.Get(t.Context(), "stored", metav1.GetOptions{})
					if err != nil {
						return err
					}
					cm.Data["k"] = "dry"
					got, err := cms.Update(t.Context(), cm, metav1.UpdateOptions{DryRun: all})
					if err == nil && got.Data["k"] != "dry" {
						t.Errorf("Update(stored, dryRun).data = %v, want k=dry in the answer", got.Data)
					}
					return err
				},
				wantName: "stored",
				wantData: map[string]string{"k": "v"},
			},
			{
				name: "Patch",
				do: func(t *testing.T) error {
					got, err := cms.Patch(t.Context(), "stored", types.MergePatchType, []byte(`{"data":{"k":"dry"}}`), metav1.PatchOptions{DryRun: all})
					if err == nil && got.Data["k"] != "dry" {
						t.Errorf("Patch(stored, dryRun).data = %v, want k=dry in the answer", got.Data)
					}
					return err
				},
				wantName: "stored",
				wantData: map[string]string{"k": "v"},
			},
			{
				name: "Apply",
				do: func(t *testing.T) error {
					_, err := cms.Apply(t.Context(), corev1ac.ConfigMap("stored", ns).WithData(map[string]string{"k": "dry"}),
						metav1.ApplyOptions{FieldManager: "dry", Force: true, DryRun: all})
					return err
				},
				wantName: "stored",
				wantData: map[string]string{"k": "v"},
			},
			{
				name: "Delete",
				do: func(t *testing.T) error {
					return cms.Delete(t.Context(), "stored", metav1.DeleteOptions{DryRun: all})
				},
				wantName: "stored",
				wantData: map[string]string{"k": "v"},
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				before, err := cms.Get(t.Context(), "stored", metav1.GetOptions{})
				if err != nil {
					t.Fatalf("Get(stored) = %v", err)
				}
				if err := tc.do(t); err != nil {
					t.Fatalf("dry-run %s = %v, want nil error", tc.name, err)
				}
				got, err := cms.Get(t.Context(), tc.wantName, metav1.GetOptions{})
				if tc.wantData == nil {
					if !apierrors.IsNotFound(err) {
						t.Errorf("Get(%q) after dry-run %s = %v, want NotFound", tc.wantName, tc.name, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Get(%q) after dry-run %s = %v", tc.wantName, tc.name, err)
				}
				if !maps.Equal(got.Data, tc.wantData) {
					t.Errorf("Get(%q).data after dry-run %s = %v, want %v", tc.wantName, tc.name, got.Data, tc.wantData)
				}
				if got.ResourceVersion != before.ResourceVersion {
					t.Errorf("Get(%q).resourceVersion after dry-run %s = %s, want %s (unchanged)", tc.wantName, tc.name, got.ResourceVersion, before.ResourceVersion)
				}
			})
		}
	})
}

// managers returns "manager/operation" for each managedFields entry.
func managers(entries []metav1.ManagedFieldsEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s/%s", e.Manager, e.Operation))
	}
	return out
}

// statusCauses returns the causes of an API error.
func statusCauses(err error) []metav1.StatusCause {
	var s apierrors.APIStatus
	if !errors.As(err, &s) || s.Status().Details == nil {
		return nil
	}
	return s.Status().Details.Causes
}

// hasCause reports whether err has a cause of type typ whose field is field.
func hasCause(err error, typ metav1.CauseType, field string) bool {
	return slices.ContainsFunc(statusCauses(err), func(c metav1.StatusCause) bool {
		return c.Type == typ && c.Field == field
	})
}
