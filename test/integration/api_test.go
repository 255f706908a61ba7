package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"tether/test/framework"
)

func TestAPI(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)

	t.Run("SystemNamespaces", func(t *testing.T) {
		for _, name := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
			t.Run(name, func(t *testing.T) {
				ns, err := c.Client.CoreV1().Namespaces().Get(t.Context(), name, metav1.GetOptions{})
				if err != nil {
					t.Fatalf("Get(%q) = %v, want nil error", name, err)
				}
				if ns.Status.Phase != corev1.NamespaceActive {
					t.Errorf("Get(%q).Status.Phase = %q, want %q", name, ns.Status.Phase, corev1.NamespaceActive)
				}
			})
		}
	})

	t.Run("Readyz", func(t *testing.T) {
		code, body, err := getStatus(t.Context(), c.Client, "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz: %v", err)
		}
		if code != http.StatusOK {
			t.Errorf("GET /readyz = %d %q, want %d", code, body, http.StatusOK)
		}
	})

	t.Run("StorageMetrics", func(t *testing.T) {
		// The API server's reads and writes reach the embedded member in
		// process; upstream's storage metrics still count them.
		code, body, err := getStatus(t.Context(), c.Client, "/metrics")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /metrics = %d, %v", code, err)
		}
		if !strings.Contains(string(body), `etcd_request_duration_seconds_count{group="",operation="get",resource="namespaces"}`) {
			t.Errorf("GET /metrics has no etcd_request_duration_seconds for namespace reads")
		}
	})

	t.Run("Version", func(t *testing.T) {
		v, err := c.Client.Discovery().ServerVersion()
		if err != nil {
			t.Fatalf("ServerVersion() = %v", err)
		}
		if v.Major != "1" {
			t.Errorf("ServerVersion().Major = %q, want %q", v.Major, "1")
		}
		if v.Minor != "37" {
			t.Errorf("ServerVersion().Minor = %q, want %q", v.Minor, "37")
		}
		if want := "v1.37.2+tether."; !strings.HasPrefix(v.GitVersion, want) {
			t.Errorf("ServerVersion().GitVersion = %q, want prefix %q", v.GitVersion, want)
		}
	})

	for _, ct := range contentTypes {
		t.Run("CRUD/"+ct.name, func(t *testing.T) {
			testCRUD(t, newClient(t, c, ct.contentType, ct.accept))
		})
	}

	client := fastClient(t, c)

	t.Run("Defaulting", func(t *testing.T) {
		testDefaulting(t, client)
	})

	t.Run("PodGeneration", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "generation")
		pods := client.CoreV1().Pods(ns)
		p, err := pods.Create(ctx, newPod("web", "nginx:1.27"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(pod web) = %v", err)
		}
		if p.Generation != 1 {
			t.Errorf("Create(pod web).Generation = %d, want 1", p.Generation)
		}

		p.Labels = map[string]string{"only": "metadata"}
		if p, err = pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update(pod web, label) = %v", err)
		}
		if p.Generation != 1 {
			t.Errorf("after a label change, Generation = %d, want 1", p.Generation)
		}

		p.Spec.Containers[0].Image = "nginx:1.28"
		if p, err = pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update(pod web, image) = %v", err)
		}
		if p.Generation != 2 {
			t.Errorf("after an image change, Generation = %d, want 2", p.Generation)
		}
	})

	t.Run("Conflict", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "conflict")
		cms := client.CoreV1().ConfigMaps(ns)
		cm, err := cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "cm"},
			Data:       map[string]string{"k": "v0"},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(cm) = %v", err)
		}
		stale := cm.DeepCopy()

		cm.Data["k"] = "v1"
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update(cm) = %v", err)
		}
		stale.Data["k"] = "v2"
		_, err = cms.Update(ctx, stale, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) || statusCode(err) != http.StatusConflict {
			t.Fatalf("Update(cm, stale resourceVersion %s) = %v (code %d), want 409 Conflict", stale.ResourceVersion, err, statusCode(err))
		}
		// A patch that states a resourceVersion is checked the same way.
		stalePatch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"data":{"k":"v3"}}`, stale.ResourceVersion)
		_, err = cms.Patch(ctx, "cm", types.MergePatchType, []byte(stalePatch), metav1.PatchOptions{})
		if !apierrors.IsConflict(err) {
			t.Errorf("Patch(cm, %s) = %v, want 409 Conflict", stalePatch, err)
		}
		got, err := cms.Get(ctx, "cm", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(cm) = %v", err)
		}
		if got.Data["k"] != "v1" {
			t.Errorf("Get(cm).Data[k] = %q, want %q", got.Data["k"], "v1")
		}
	})

	t.Run("EventsBothAPIs", func(t *testing.T) {
		testEventsBothAPIs(t, client)
	})

	t.Run("EventsV1Validation", func(t *testing.T) {
		testEventsV1Validation(t, client)
	})

	t.Run("CSRApproval", func(t *testing.T) {
		testCSRApproval(t, client)
	})
}

// object is what every typed client handles.
type object interface {
	metav1.Object
	runtime.Object
}

// typedClient is the part of a client-go typed resource client that the
// CRUD test uses; ConfigMapInterface, NodeInterface and the rest satisfy it.
type typedClient[T object, L runtime.Object] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Get(context.Context, string, metav1.GetOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
	List(context.Context, metav1.ListOptions) (L, error)
}

// crudCase runs create, get, list, update and delete on one resource. obj
// has a generateName; check, if set, verifies what the server stored.
type crudCase[T object, L runtime.Object] struct {
	client typedClient[T, L]
	obj    T
	check  func(t *testing.T, got T)
}

func (tc crudCase[T, L]) run(t *testing.T) {
	ctx := t.Context()
	prefix := tc.obj.GetGenerateName()
	created, err := tc.client.Create(ctx, tc.obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("Create(generateName %q) = %v", prefix, err)
	}
	name := created.GetName()
	if !strings.HasPrefix(name, prefix) || len(name) <= len(prefix) {
		t.Errorf("Create(generateName %q).Name = %q, want %q and a suffix", prefix, name, prefix)
	}
	if created.GetUID() == "" {
		t.Errorf("Create(%q).UID is empty", name)
	}
	if created.GetCreationTimestamp().Time.IsZero() {
		t.Errorf("Create(%q).CreationTimestamp is unset", name)
	}
	if created.GetResourceVersion() == "" {
		t.Errorf("Create(%q).ResourceVersion is empty", name)
	}
	if tc.check != nil {
		tc.check(t, created)
	}

	got, err := tc.client.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Get(%q) = %v", name, err)
	}
	if got.GetUID() != created.GetUID() {
		t.Errorf("Get(%q).UID = %q, want %q", name, got.GetUID(), created.GetUID())
	}
	if tc.check != nil {
		tc.check(t, got)
	}

	list, err := tc.client.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("List() = %v", err)
	}
	if n := itemNames(t, list); !slices.Contains(n, name) {
		t.Errorf("List() = %v, want it to contain %q", n, name)
	}

	labels := got.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels["crud"] = "updated"
	got.SetLabels(labels)
	updated, err := tc.client.Update(ctx, got, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("Update(%q) = %v", name, err)
	}
	if updated.GetResourceVersion() == created.GetResourceVersion() {
		t.Errorf("Update(%q).ResourceVersion = %s, want a new one", name, updated.GetResourceVersion())
	}
	if updated.GetLabels()["crud"] != "updated" {
		t.Errorf("Update(%q).Labels = %v, want crud=updated", name, updated.GetLabels())
	}
	if updated.GetUID() != created.GetUID() || !updated.GetCreationTimestamp().Time.Equal(created.GetCreationTimestamp().Time) {
		t.Errorf("Update(%q) changed uid or creationTimestamp: %s %v, want %s %v", name,
			updated.GetUID(), updated.GetCreationTimestamp(), created.GetUID(), created.GetCreationTimestamp())
	}

	if err := tc.client.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("Delete(%q) = %v", name, err)
	}
	if _, err := tc.client.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Get(%q) after Delete = %v, want NotFound", name, err)
	}
}

func ptrTo[T any](v T) *T { return &v }

func testCRUD(t *testing.T, client kubernetes.Interface) {
	ns := createNamespace(t, client, "crud")
	gen := func(prefix string) metav1.ObjectMeta {
		return metav1.ObjectMeta{GenerateName: prefix + "-", Labels: map[string]string{"app": "crud"}}
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))

	t.Run("configmaps", crudCase[*corev1.ConfigMap, *corev1.ConfigMapList]{
		client: client.CoreV1().ConfigMaps(ns),
		obj:    &corev1.ConfigMap{ObjectMeta: gen("cm"), Data: map[string]string{"k": "v"}, BinaryData: map[string][]byte{"b": {0, 1, 2}}},
		check: func(t *testing.T, got *corev1.ConfigMap) {
			if got.Data["k"] != "v" || string(got.BinaryData["b"]) != "\x00\x01\x02" {
				t.Errorf("configmap data = %v, binaryData = %v, want k=v, b=[0 1 2]", got.Data, got.BinaryData)
			}
		},
	}.run)

	t.Run("secrets", crudCase[*corev1.Secret, *corev1.SecretList]{
		client: client.CoreV1().Secrets(ns),
		obj:    &corev1.Secret{ObjectMeta: gen("secret"), Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("v")}},
		check: func(t *testing.T, got *corev1.Secret) {
			if string(got.Data["k"]) != "v" || got.Type != corev1.SecretTypeOpaque {
				t.Errorf("secret type, data = %q, %q, want Opaque, k=v", got.Type, got.Data)
			}
		},
	}.run)

	t.Run("services", crudCase[*corev1.Service, *corev1.ServiceList]{
		client: client.CoreV1().Services(ns),
		obj: &corev1.Service{ObjectMeta: gen("svc"), Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			Selector:              map[string]string{"app": "crud"},
			Ports:                 []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
			SessionAffinity:       corev1.ServiceAffinityNone,
			IPFamilyPolicy:        ptrTo(corev1.IPFamilyPolicySingleStack),
			InternalTrafficPolicy: ptrTo(corev1.ServiceInternalTrafficPolicyCluster),
		}},
		check: func(t *testing.T, got *corev1.Service) {
			if len(got.Spec.Ports) != 1 || got.Spec.Ports[0].Port != 80 || got.Spec.Ports[0].TargetPort.IntValue() != 8080 {
				t.Errorf("service ports = %+v, want one port 80 → 8080", got.Spec.Ports)
			}
		},
	}.run)

	podObj := newPod("", "busybox:1.36")
	podObj.ObjectMeta = gen("pod")
	t.Run("pods", crudCase[*corev1.Pod, *corev1.PodList]{
		client: client.CoreV1().Pods(ns),
		obj:    podObj,
		check: func(t *testing.T, got *corev1.Pod) {
			if len(got.Spec.Containers) != 1 || got.Spec.Containers[0].Image != "busybox:1.36" {
				t.Errorf("pod containers = %+v, want one with image busybox:1.36", got.Spec.Containers)
			}
			if got.Generation != 1 {
				t.Errorf("pod generation = %d, want 1", got.Generation)
			}
		},
	}.run)

	t.Run("serviceaccounts", crudCase[*corev1.ServiceAccount, *corev1.ServiceAccountList]{
		client: client.CoreV1().ServiceAccounts(ns),
		obj:    &corev1.ServiceAccount{ObjectMeta: gen("sa")},
	}.run)

	t.Run("events", crudCase[*corev1.Event, *corev1.EventList]{
		client: client.CoreV1().Events(ns),
		obj: &corev1.Event{
			ObjectMeta:     gen("ev"),
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web", APIVersion: "v1"},
			Reason:         "Started", Message: "started container", Type: corev1.EventTypeNormal,
			Source:         corev1.EventSource{Component: "kubelet", Host: "node-1"},
			FirstTimestamp: now, LastTimestamp: now, Count: 1,
		},
		check: func(t *testing.T, got *corev1.Event) {
			if got.Reason != "Started" || got.InvolvedObject.Name != "web" {
				t.Errorf("event reason, object = %q, %q, want Started, web", got.Reason, got.InvolvedObject.Name)
			}
		},
	}.run)

	t.Run("events.k8s.io", crudCase[*eventsv1.Event, *eventsv1.EventList]{
		client: client.EventsV1().Events(ns),
		obj: &eventsv1.Event{
			ObjectMeta: gen("ev1"),
			EventTime:  metav1.NewMicroTime(time.Now()),
			Regarding:  corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web", APIVersion: "v1"},
			Reason:     "Scheduled", Note: "assigned to node-1", Type: corev1.EventTypeNormal, Action: "Binding",
			ReportingController: "tether.test/scheduler", ReportingInstance: "scheduler-1",
		},
		check: func(t *testing.T, got *eventsv1.Event) {
			if got.Reason != "Scheduled" || got.Note != "assigned to node-1" || got.Regarding.Name != "web" {
				t.Errorf("event reason, note, regarding = %q, %q, %q, want Scheduled, assigned to node-1, web", got.Reason, got.Note, got.Regarding.Name)
			}
		},
	}.run)

	t.Run("leases", crudCase[*coordinationv1.Lease, *coordinationv1.LeaseList]{
		client: client.CoordinationV1().Leases(ns),
		obj: &coordinationv1.Lease{ObjectMeta: gen("lease"), Spec: coordinationv1.LeaseSpec{
			HolderIdentity: ptrTo("holder-1"), LeaseDurationSeconds: ptrTo[int32](40), RenewTime: ptrTo(metav1.NewMicroTime(time.Now())),
		}},
		check: func(t *testing.T, got *coordinationv1.Lease) {
			if got.Spec.HolderIdentity == nil || *got.Spec.HolderIdentity != "holder-1" {
				t.Errorf("lease holderIdentity = %v, want holder-1", got.Spec.HolderIdentity)
			}
		},
	}.run)

	t.Run("nodes", crudCase[*corev1.Node, *corev1.NodeList]{
		client: client.CoreV1().Nodes(),
		obj:    &corev1.Node{ObjectMeta: gen("node"), Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24"}},
		check: func(t *testing.T, got *corev1.Node) {
			if got.Spec.PodCIDR != "10.244.1.0/24" {
				t.Errorf("node podCIDR = %q, want 10.244.1.0/24", got.Spec.PodCIDR)
			}
		},
	}.run)

	t.Run("certificatesigningrequests", crudCase[*certificatesv1.CertificateSigningRequest, *certificatesv1.CertificateSigningRequestList]{
		client: client.CertificatesV1().CertificateSigningRequests(),
		obj: &certificatesv1.CertificateSigningRequest{ObjectMeta: gen("csr"), Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    csrPEM(t, "alice"),
			SignerName: certificatesv1.KubeAPIServerClientSignerName,
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth},
		}},
		check: func(t *testing.T, got *certificatesv1.CertificateSigningRequest) {
			if got.Spec.SignerName != certificatesv1.KubeAPIServerClientSignerName {
				t.Errorf("csr signerName = %q, want %q", got.Spec.SignerName, certificatesv1.KubeAPIServerClientSignerName)
			}
		},
	}.run)
}

// csrPEM returns a PEM certificate request for cn with a new ECDSA key.
func csrPEM(t testing.TB, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("ecdsa.GenerateKey: %v", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn, Organization: []string{"tether:test"}},
	}, key)
	if err != nil {
		t.Fatalf("x509.CreateCertificateRequest: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// testEventsBothAPIs checks that core/v1 and events.k8s.io/v1 are two views
// of the same events.
func testEventsBothAPIs(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	ns := createNamespace(t, client, "events")
	core, v1 := client.CoreV1().Events(ns), client.EventsV1().Events(ns)
	now := time.Now()

	t.Run("CreatedByEventsV1ReadByCore", func(t *testing.T) {
		_, err := v1.Create(ctx, &eventsv1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: "from-v1"},
			EventTime:  metav1.NewMicroTime(now),
			Regarding:  corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web", APIVersion: "v1"},
			Related:    &corev1.ObjectReference{Kind: "Node", Name: "node-1", APIVersion: "v1"},
			Reason:     "Scheduled", Note: "assigned", Type: corev1.EventTypeNormal, Action: "Binding",
			ReportingController: "tether.test/scheduler", ReportingInstance: "scheduler-1",
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("events.k8s.io/v1 Create(from-v1) = %v", err)
		}
		got, err := core.Get(ctx, "from-v1", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("core/v1 Get(from-v1) = %v", err)
		}
		for _, c := range []struct{ field, got, want string }{
			{"message", got.Message, "assigned"},
			{"reason", got.Reason, "Scheduled"},
			{"type", got.Type, corev1.EventTypeNormal},
			{"action", got.Action, "Binding"},
			{"involvedObject.name", got.InvolvedObject.Name, "web"},
			{"related.name", refName(got.Related), "node-1"},
			{"reportingComponent", got.ReportingController, "tether.test/scheduler"},
			{"reportingInstance", got.ReportingInstance, "scheduler-1"},
		} {
			if c.got != c.want {
				t.Errorf("core/v1 Get(from-v1).%s = %q, want %q", c.field, c.got, c.want)
			}
		}
		if !got.EventTime.Time.Equal(now.Truncate(time.Microsecond)) {
			t.Errorf("core/v1 Get(from-v1).eventTime = %v, want %v", got.EventTime, now.Truncate(time.Microsecond))
		}
	})

	t.Run("CreatedByCoreReadByEventsV1", func(t *testing.T) {
		ts := metav1.NewTime(now.Truncate(time.Second))
		_, err := core.Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: "from-core"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "db", APIVersion: "v1"},
			Reason:         "BackOff", Message: "back-off restarting", Type: corev1.EventTypeWarning,
			Source:         corev1.EventSource{Component: "kubelet", Host: "node-2"},
			FirstTimestamp: ts, LastTimestamp: ts, Count: 3,
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("core/v1 Create(from-core) = %v", err)
		}
		got, err := v1.Get(ctx, "from-core", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("events.k8s.io/v1 Get(from-core) = %v", err)
		}
		for _, c := range []struct{ field, got, want string }{
			{"note", got.Note, "back-off restarting"},
			{"reason", got.Reason, "BackOff"},
			{"type", got.Type, corev1.EventTypeWarning},
			{"regarding.name", got.Regarding.Name, "db"},
			{"deprecatedSource.component", got.DeprecatedSource.Component, "kubelet"},
			{"deprecatedSource.host", got.DeprecatedSource.Host, "node-2"},
		} {
			if c.got != c.want {
				t.Errorf("events.k8s.io/v1 Get(from-core).%s = %q, want %q", c.field, c.got, c.want)
			}
		}
		if got.DeprecatedCount != 3 {
			t.Errorf("events.k8s.io/v1 Get(from-core).deprecatedCount = %d, want 3", got.DeprecatedCount)
		}
		if !got.DeprecatedFirstTimestamp.Equal(&ts) {
			t.Errorf("events.k8s.io/v1 Get(from-core).deprecatedFirstTimestamp = %v, want %v", got.DeprecatedFirstTimestamp, ts)
		}
	})

	t.Run("ListedByBoth", func(t *testing.T) {
		want := []string{"from-core", "from-v1"}
		coreList, err := core.List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("core/v1 List() = %v", err)
		}
		if got := itemNames(t, coreList); !slices.Equal(got, want) {
			t.Errorf("core/v1 List() = %v, want %v", got, want)
		}
		v1List, err := v1.List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("events.k8s.io/v1 List() = %v", err)
		}
		if got := itemNames(t, v1List); !slices.Equal(got, want) {
			t.Errorf("events.k8s.io/v1 List() = %v, want %v", got, want)
		}
	})
}

func refName(r *corev1.ObjectReference) string {
	if r == nil {
		return ""
	}
	return r.Name
}

// testCSRApproval creates a CSR as admin, approves it through the approval
// subresource and checks who the server recorded as requester.
func testCSRApproval(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	csrs := client.CertificatesV1().CertificateSigningRequests()
	csr, err := csrs.Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "approve-me"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    csrPEM(t, "alice"),
			SignerName: certificatesv1.KubeAPIServerClientSignerName,
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth},
			// The server records the requester itself; these are ignored.
			Username: "mallory",
			Groups:   []string{"evil"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("Create(csr approve-me) = %v", err)
	}
	if csr.Spec.Username != "admin" {
		t.Errorf("Create(csr approve-me).Spec.Username = %q, want %q (the requesting user)", csr.Spec.Username, "admin")
	}
	if slices.Contains(csr.Spec.Groups, "evil") || !slices.Contains(csr.Spec.Groups, "system:masters") {
		t.Errorf("Create(csr approve-me).Spec.Groups = %v, want the admin's groups (system:masters), not evil", csr.Spec.Groups)
	}
	if len(csr.Status.Conditions) != 0 {
		t.Errorf("Create(csr approve-me).Status.Conditions = %v, want none", csr.Status.Conditions)
	}

	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type:    certificatesv1.CertificateApproved,
		Status:  corev1.ConditionTrue,
		Reason:  "IntegrationTest",
		Message: "approved by the integration test",
	})
	if _, err := csrs.UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("UpdateApproval(approve-me) = %v", err)
	}
	got, err := csrs.Get(ctx, csr.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Get(csr approve-me) = %v", err)
	}
	i := slices.IndexFunc(got.Status.Conditions, func(c certificatesv1.CertificateSigningRequestCondition) bool {
		return c.Type == certificatesv1.CertificateApproved
	})
	if i < 0 {
		t.Fatalf("Get(csr approve-me).Status.Conditions = %+v, want an Approved condition", got.Status.Conditions)
	}
	if c := got.Status.Conditions[i]; c.Status != corev1.ConditionTrue || c.Reason != "IntegrationTest" || c.LastUpdateTime.IsZero() {
		t.Errorf("Approved condition = %+v, want status True, reason IntegrationTest and a lastUpdateTime", c)
	}
	if got.Spec.Username != "admin" {
		t.Errorf("after approval, Spec.Username = %q, want %q", got.Spec.Username, "admin")
	}
	// The signer issues the certificate of an approved request; wait for
	// it so that the updates below do not race its status write.
	framework.Eventually(t, 15*time.Second, func() (bool, error) {
		got, err := csrs.Get(ctx, csr.Name, metav1.GetOptions{})
		return err == nil && len(got.Status.Certificate) > 0, err
	})

	t.Run("ApprovalIgnoresSpec", func(t *testing.T) {
		cur, err := csrs.Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(csr approve-me) = %v", err)
		}
		cur.Spec.Username = "mallory"
		cur.Spec.Usages = append(cur.Spec.Usages, certificatesv1.UsageServerAuth)
		got, err := csrs.UpdateApproval(ctx, cur.Name, cur, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("UpdateApproval(approve-me, changed spec) = %v", err)
		}
		if got.Spec.Username != "admin" || len(got.Spec.Usages) != 1 {
			t.Errorf("UpdateApproval(approve-me, changed spec).spec = username %q usages %v, want admin [client auth] (unchanged)", got.Spec.Username, got.Spec.Usages)
		}
	})

	t.Run("ApprovedAndDenied", func(t *testing.T) {
		cur, err := csrs.Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(csr approve-me) = %v", err)
		}
		cur.Status.Conditions = append(cur.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "Changed", Message: "mind changed",
		})
		if _, err := csrs.UpdateApproval(ctx, cur.Name, cur, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("UpdateApproval(approve-me, Approved and Denied) = %v, want 422 Invalid", err)
		}
	})

	t.Run("StatusCannotApprove", func(t *testing.T) {
		other, err := csrs.Create(ctx, &certificatesv1.CertificateSigningRequest{
			ObjectMeta: metav1.ObjectMeta{Name: "approve-via-status"},
			Spec: certificatesv1.CertificateSigningRequestSpec{
				Request:    csrPEM(t, "bob"),
				SignerName: certificatesv1.KubeAPIServerClientSignerName,
				Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(csr approve-via-status) = %v", err)
		}
		other.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "Sneaky", Message: "via status",
		}}
		if _, err := csrs.UpdateStatus(ctx, other, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("UpdateStatus(approve-via-status, Approved) = %v, want 422 Invalid (approval goes through /approval)", err)
		}
		got, err := csrs.Get(ctx, other.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(csr approve-via-status) = %v", err)
		}
		if len(got.Status.Conditions) != 0 {
			t.Errorf("Get(csr approve-via-status).status.conditions = %+v, want none", got.Status.Conditions)
		}
	})
}

// testDefaulting creates objects that leave defaulted fields unset, as
// kubectl users write them, and checks the server's defaults.
func testDefaulting(t *testing.T, client kubernetes.Interface) {
	ns := createNamespace(t, client, "defaults")

	t.Run("pods", func(t *testing.T) {
		p, err := client.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "minimal"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox:1.36"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(pod minimal, no defaulted fields) = %v, want nil error", err)
		}
		c := p.Spec.Containers[0]
		for _, tc := range []struct{ field, got, want string }{
			{"spec.restartPolicy", string(p.Spec.RestartPolicy), "Always"},
			{"spec.dnsPolicy", string(p.Spec.DNSPolicy), "ClusterFirst"},
			{"spec.schedulerName", p.Spec.SchedulerName, "default-scheduler"},
			{"spec.containers[0].imagePullPolicy", string(c.ImagePullPolicy), "IfNotPresent"},
			{"spec.containers[0].terminationMessagePolicy", string(c.TerminationMessagePolicy), "File"},
			{"spec.containers[0].terminationMessagePath", c.TerminationMessagePath, "/dev/termination-log"},
			{"status.phase", string(p.Status.Phase), "Pending"},
		} {
			if tc.got != tc.want {
				t.Errorf("Create(pod minimal).%s = %q, want %q", tc.field, tc.got, tc.want)
			}
		}
	})

	t.Run("secrets", func(t *testing.T) {
		s, err := client.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "minimal"},
			Data:       map[string][]byte{"k": []byte("v"), "s": []byte("replaced")},
			StringData: map[string]string{"s": "plain"},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(secret minimal) = %v", err)
		}
		if s.Type != corev1.SecretTypeOpaque {
			t.Errorf("Create(secret minimal).Type = %q, want %q", s.Type, corev1.SecretTypeOpaque)
		}
		if string(s.Data["k"]) != "v" || string(s.Data["s"]) != "plain" || len(s.StringData) != 0 {
			t.Errorf("Create(secret minimal) data = %q, stringData = %q, want data k=v, s=plain (from stringData) and no stringData", s.Data, s.StringData)
		}
	})

	t.Run("services", func(t *testing.T) {
		s, err := client.CoreV1().Services(ns).Create(t.Context(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "minimal"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "web"},
				Ports:    []corev1.ServicePort{{Port: 80}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(service minimal) = %v, want nil error", err)
		}
		for _, tc := range []struct{ field, got, want string }{
			{"spec.type", string(s.Spec.Type), "ClusterIP"},
			{"spec.sessionAffinity", string(s.Spec.SessionAffinity), "None"},
			{"spec.ports[0].protocol", string(s.Spec.Ports[0].Protocol), "TCP"},
			{"spec.ports[0].targetPort", s.Spec.Ports[0].TargetPort.String(), "80"},
		} {
			if tc.got != tc.want {
				t.Errorf("Create(service minimal).%s = %q, want %q", tc.field, tc.got, tc.want)
			}
		}
		// Cluster IPs are not allocated yet (see registry.Services), so
		// spec.clusterIP is not checked here.
	})
}

// testEventsV1Validation checks that events.k8s.io/v1 asks more of an event
// than core/v1, as upstream: an event written through it must be a
// new-style event.
func testEventsV1Validation(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	ns := createNamespace(t, client, "events-v1")
	core, v1 := client.CoreV1().Events(ns), client.EventsV1().Events(ns)
	now := time.Now()
	valid := func() *eventsv1.Event {
		return &eventsv1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "invalid-"},
			EventTime:  metav1.NewMicroTime(now),
			Regarding:  corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web", APIVersion: "v1"},
			Reason:     "Scheduled", Note: "assigned", Type: corev1.EventTypeNormal, Action: "Binding",
			ReportingController: "tether.test/scheduler", ReportingInstance: "scheduler-1",
		}
	}
	tests := []struct {
		name      string
		mutate    func(*eventsv1.Event)
		wantField string
	}{
		{"NoEventTime", func(e *eventsv1.Event) { e.EventTime = metav1.MicroTime{} }, "eventTime"},
		{"BadType", func(e *eventsv1.Event) { e.Type = "Bogus" }, "type"},
		{"NoReportingController", func(e *eventsv1.Event) { e.ReportingController = "" }, "reportingController"},
		{"NoReportingInstance", func(e *eventsv1.Event) { e.ReportingInstance = "" }, "reportingInstance"},
		{"NoAction", func(e *eventsv1.Event) { e.Action = "" }, "action"},
		{"DeprecatedCount", func(e *eventsv1.Event) { e.DeprecatedCount = 2 }, "deprecatedCount"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := valid()
			tc.mutate(ev)
			_, err := v1.Create(ctx, ev, metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) {
				t.Fatalf("events.k8s.io/v1 Create(%s) = %v, want 422 Invalid", tc.name, err)
			}
			if !slices.ContainsFunc(statusCauses(err), func(c metav1.StatusCause) bool { return c.Field == tc.wantField }) {
				t.Errorf("events.k8s.io/v1 Create(%s) causes = %+v, want one on %s", tc.name, statusCauses(err), tc.wantField)
			}
		})
	}
	t.Run("CoreAcceptsOldStyle", func(t *testing.T) {
		// core/v1 keeps accepting old-style events without eventTime.
		if _, err := core.Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{GenerateName: "old-style-"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web", APIVersion: "v1"},
			Reason:         "Pulled", Message: "pulled", Type: corev1.EventTypeNormal, Count: 2,
		}, metav1.CreateOptions{}); err != nil {
			t.Errorf("core/v1 Create(old-style event without eventTime) = %v, want nil error", err)
		}
	})
}
