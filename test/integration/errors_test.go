package integration

import (
	"errors"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"tether/test/framework"
)

func TestErrors(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)

	for _, ct := range contentTypes {
		t.Run(ct.name, func(t *testing.T) {
			testErrors(t, newClient(t, c, ct.contentType, ct.accept))
		})
	}

	t.Run("StatusSubresource", func(t *testing.T) {
		testStatusSplit(t, fastClient(t, c))
	})
}

// testErrors checks that failures come back as Status objects with the
// code, reason and details clients act on.
func testErrors(t *testing.T, client kubernetes.Interface) {
	ns := createNamespace(t, client, "errors")
	cms := client.CoreV1().ConfigMaps(ns)
	if _, err := cms.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "exists"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("Create(exists) = %v", err)
	}

	tests := []struct {
		name     string
		do       func(t *testing.T) error
		wantCode int32
		is       func(error) bool
		// check, if set, inspects the error further.
		check func(t *testing.T, err error)
	}{
		{
			name: "GetMissing",
			do: func(t *testing.T) error {
				_, err := cms.Get(t.Context(), "missing", metav1.GetOptions{})
				return err
			},
			wantCode: http.StatusNotFound,
			is:       apierrors.IsNotFound,
			check: func(t *testing.T, err error) {
				d := statusDetails(err)
				if d == nil || d.Name != "missing" || d.Kind != "configmaps" {
					t.Errorf("Get(missing) details = %+v, want name missing, kind configmaps", d)
				}
			},
		},
		{
			name: "CreateDuplicate",
			do: func(t *testing.T) error {
				_, err := cms.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "exists"}}, metav1.CreateOptions{})
				return err
			},
			wantCode: http.StatusConflict,
			is:       apierrors.IsAlreadyExists,
		},
		{
			name: "InvalidName",
			do: func(t *testing.T) error {
				_, err := cms.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "Bad_Name"}}, metav1.CreateOptions{})
				return err
			},
			wantCode: http.StatusUnprocessableEntity,
			is:       apierrors.IsInvalid,
			check: func(t *testing.T, err error) {
				if !hasCause(err, metav1.CauseTypeFieldValueInvalid, "metadata.name") {
					t.Errorf("Create(Bad_Name) causes = %+v, want a FieldValueInvalid on metadata.name", statusCauses(err))
				}
			},
		},
		{
			name: "CreateInMissingNamespace",
			do: func(t *testing.T) error {
				_, err := client.CoreV1().ConfigMaps("no-such-namespace").Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm"}}, metav1.CreateOptions{})
				return err
			},
			wantCode: http.StatusNotFound,
			is:       apierrors.IsNotFound,
		},
		{
			name: "UpdateMissing",
			do: func(t *testing.T) error {
				_, err := cms.Update(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "missing"}}, metav1.UpdateOptions{})
				return err
			},
			wantCode: http.StatusNotFound,
			is:       apierrors.IsNotFound,
		},
		{
			name: "DeleteMissing",
			do: func(t *testing.T) error {
				return cms.Delete(t.Context(), "missing", metav1.DeleteOptions{})
			},
			wantCode: http.StatusNotFound,
			is:       apierrors.IsNotFound,
		},
		{
			name: "DeleteWrongUIDPrecondition",
			do: func(t *testing.T) error {
				return cms.Delete(t.Context(), "exists", metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions("not-the-uid")})
			},
			wantCode: http.StatusConflict,
			is:       apierrors.IsConflict,
		},
		{
			name: "NameMismatch",
			do: func(t *testing.T) error {
				// The typed client puts the object's name in the URL; a
				// raw request can disagree.
				return client.CoreV1().RESTClient().Put().Namespace(ns).Resource("configmaps").Name("exists").
					Body(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns}}).Do(t.Context()).Error()
			},
			wantCode: http.StatusBadRequest,
			is:       apierrors.IsBadRequest,
		},
		{
			// The request's own deadline has passed before the server
			// reads etcd: it gets a timeout Status, not a hang and not an
			// internal error.
			name: "DeadlinePassedGet",
			do: func(t *testing.T) error {
				return client.CoreV1().RESTClient().Get().Namespace(ns).Resource("configmaps").Name("exists").
					Param("timeout", "1ns").Do(t.Context()).Error()
			},
			wantCode: http.StatusGatewayTimeout,
			is:       apierrors.IsTimeout,
		},
		{
			name: "DeadlinePassedCreate",
			do: func(t *testing.T) error {
				return client.CoreV1().RESTClient().Post().Namespace(ns).Resource("configmaps").
					Param("timeout", "1ns").Body(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: ns}}).
					Do(t.Context()).Error()
			},
			wantCode: http.StatusGatewayTimeout,
			is:       apierrors.IsTimeout,
			check: func(t *testing.T, _ error) {
				if _, err := cms.Get(t.Context(), "late", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("Get(late) after a create that timed out = %v, want NotFound", err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do(t)
			if err == nil {
				t.Fatalf("%s = nil error, want %d", tc.name, tc.wantCode)
			}
			if got := statusCode(err); got != tc.wantCode || !tc.is(err) {
				t.Fatalf("%s = %v (code %d, reason %s), want code %d", tc.name, err, got, apierrors.ReasonForError(err), tc.wantCode)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
		})
	}
}

func statusDetails(err error) *metav1.StatusDetails {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Details
	}
	return nil
}

// testStatusSplit checks that the pods endpoint ignores status changes and
// pods/status ignores spec changes.
func testStatusSplit(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	ns := createNamespace(t, client, "status")
	pods := client.CoreV1().Pods(ns)
	p, err := pods.Create(ctx, newPod("web", "nginx:1.27"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("Create(pod web) = %v", err)
	}

	t.Run("StatusUpdateIgnoresSpec", func(t *testing.T) {
		p := p.DeepCopy()
		p.Spec.Containers[0].Image = "nginx:evil"
		p.Status.Phase = corev1.PodRunning
		p.Status.Message = "running"
		got, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("UpdateStatus(web) = %v", err)
		}
		if img := got.Spec.Containers[0].Image; img != "nginx:1.27" {
			t.Errorf("UpdateStatus(web) changed the image to %q, want nginx:1.27", img)
		}
		if got.Status.Phase != corev1.PodRunning || got.Status.Message != "running" {
			t.Errorf("UpdateStatus(web).status = %s %q, want Running \"running\"", got.Status.Phase, got.Status.Message)
		}
		if got.Generation != 1 {
			t.Errorf("UpdateStatus(web).generation = %d, want 1", got.Generation)
		}
	})

	t.Run("UpdateIgnoresStatus", func(t *testing.T) {
		cur, err := pods.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(web) = %v", err)
		}
		cur.Status.Phase = corev1.PodFailed
		cur.Status.Message = "overwritten"
		cur.Labels = map[string]string{"via": "update"}
		got, err := pods.Update(ctx, cur, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("Update(web) = %v", err)
		}
		if got.Labels["via"] != "update" {
			t.Errorf("Update(web).labels = %v, want via=update", got.Labels)
		}
		if got.Status.Phase != corev1.PodRunning || got.Status.Message != "running" {
			t.Errorf("Update(web).status = %s %q, want the stored Running \"running\"", got.Status.Phase, got.Status.Message)
		}
	})

	t.Run("CreateIgnoresStatus", func(t *testing.T) {
		in := newPod("preset", "nginx:1.27")
		in.Status.Phase = corev1.PodSucceeded
		got, err := pods.Create(ctx, in, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(preset) = %v", err)
		}
		if got.Status.Phase != corev1.PodPending {
			t.Errorf("Create(preset with phase Succeeded).status.phase = %s, want Pending", got.Status.Phase)
		}
	})
}
