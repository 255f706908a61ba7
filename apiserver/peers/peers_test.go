package peers

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func newReconciler(t *testing.T, client *fake.Clientset, ip string, port int) *Reconciler {
	t.Helper()
	r, err := New(Config{Client: client, Address: net.ParseIP(ip), Port: port,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

// peerLease is the lease of a server at endpoint, renewed age ago.
func peerLease(endpoint string, age time.Duration) *coordinationv1.Lease {
	d := int32(15)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: LeaseNamespace, Name: LeaseName(endpoint),
			Labels:      map[string]string{IdentityLabel: IdentityValue},
			Annotations: map[string]string{EndpointAnnotation: endpoint}},
		Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: &d, RenewTime: &metav1.MicroTime{Time: time.Now().Add(-age)}},
	}
}

// published returns the addresses in the Endpoints and in the slice, and
// fails the test if they differ.
func published(t *testing.T, client *fake.Clientset) []string {
	t.Helper()
	ep, err := client.CoreV1().Endpoints(ServiceNamespace).Get(t.Context(), ServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get endpoints: %v", err)
	}
	if ep.Labels[discoveryv1.LabelSkipMirror] != "true" {
		t.Errorf("endpoints labels = %v, want %s=true", ep.Labels, discoveryv1.LabelSkipMirror)
	}
	fromEP := []string{}
	for _, ss := range ep.Subsets {
		for _, a := range ss.Addresses {
			fromEP = append(fromEP, a.IP)
		}
		if len(ss.Ports) != 1 || ss.Ports[0].Name != "https" || ss.Ports[0].Protocol != corev1.ProtocolTCP {
			t.Errorf("endpoints ports = %+v, want one named https", ss.Ports)
		}
	}
	sl, err := client.DiscoveryV1().EndpointSlices(ServiceNamespace).Get(t.Context(), ServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get endpoint slice: %v", err)
	}
	if len(sl.Labels) != 1 || sl.Labels[discoveryv1.LabelServiceName] != ServiceName {
		t.Errorf("slice labels = %v, want only %s=%s", sl.Labels, discoveryv1.LabelServiceName, ServiceName)
	}
	fromSlice := []string{}
	for _, e := range sl.Endpoints {
		if e.Conditions.Ready == nil || !*e.Conditions.Ready {
			t.Errorf("endpoint %v is not ready", e.Addresses)
		}
		fromSlice = append(fromSlice, e.Addresses...)
	}
	if !slices.Equal(fromEP, fromSlice) {
		t.Errorf("endpoints list %v, slice lists %v", fromEP, fromSlice)
	}
	return fromEP
}

func writes(client *fake.Clientset, resource string) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == resource && (a.GetVerb() == "create" || a.GetVerb() == "update" || a.GetVerb() == "delete") {
			n++
		}
	}
	return n
}

func TestSync(t *testing.T) {
	client := fake.NewClientset(
		peerLease("192.0.2.11:6443", time.Second),    // alive
		peerLease("192.0.2.12:6443", time.Minute),    // expired
		peerLease("192.0.2.13:7443", time.Second),    // another port
		peerLease("127.0.0.2:6443", time.Second),     // loopback
		peerLease("[2001:db8::1]:6443", time.Second), // another family
		peerLease("192.0.2.14:6443", 10*time.Hour),   // long gone
		&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{ // written once by an older server
			Namespace: ServiceNamespace, Name: ServiceName},
			Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "192.0.2.99"}}}}},
	)
	r := newReconciler(t, client, "192.0.2.10", 6443)
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got, want := published(t, client), []string{"192.0.2.10", "192.0.2.11"}; !slices.Equal(got, want) {
		t.Errorf("published %v, want %v", got, want)
	}
	l, err := client.CoordinationV1().Leases(LeaseNamespace).Get(t.Context(), LeaseName("192.0.2.10:6443"), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("own lease: %v", err)
	}
	if l.Labels[IdentityLabel] != IdentityValue || l.Annotations[EndpointAnnotation] != "192.0.2.10:6443" || !fresh(l, time.Now()) {
		t.Errorf("own lease = %+v", l)
	}
	if _, err := client.CoordinationV1().Leases(LeaseNamespace).Get(t.Context(), LeaseName("192.0.2.14:6443"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("lease of a server gone for hours: err = %v, want NotFound", err)
	}

	// Again: nothing to write (the lease is not due either).
	before := writes(client, "endpoints") + writes(client, "endpointslices") + writes(client, "leases")
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if n := writes(client, "endpoints") + writes(client, "endpointslices") + writes(client, "leases") - before; n != 0 {
		t.Errorf("%d writes on a sync with nothing new, want 0", n)
	}
}

func TestLoopbackPublishesNothing(t *testing.T) {
	client := fake.NewClientset()
	r := newReconciler(t, client, "127.0.0.1", 6443)
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := published(t, client); len(got) != 0 {
		t.Errorf("published %v, want nothing", got)
	}
}

func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		a := newReconciler(t, client, "192.0.2.10", 6443)
		b := newReconciler(t, client, "192.0.2.11", 6443)
		ctxA, stopA := context.WithCancel(t.Context())
		ctxB, stopB := context.WithCancel(t.Context())
		doneA, doneB := make(chan error, 1), make(chan error, 1)
		go func() { doneA <- a.Run(ctxA) }()
		synctest.Wait()
		go func() { doneB <- b.Run(ctxB) }()
		synctest.Wait()
		if got, want := published(t, client), []string{"192.0.2.10", "192.0.2.11"}; !slices.Equal(got, want) {
			t.Errorf("with two servers: published %v, want %v", got, want)
		}

		// Leases are renewed: after several lease durations both are
		// still there.
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := published(t, client); len(got) != 2 {
			t.Errorf("after a minute: published %v, want both", got)
		}

		// B stops cleanly: it removes itself at once.
		stopB()
		if err := <-doneB; err != nil {
			t.Errorf("Run() = %v", err)
		}
		synctest.Wait()
		if got, want := published(t, client), []string{"192.0.2.10"}; !slices.Equal(got, want) {
			t.Errorf("after b stopped: published %v, want %v", got, want)
		}

		// A peer that dies without a word drops out once its lease expires.
		dead := peerLease("192.0.2.12:6443", 0)
		if _, err := client.CoordinationV1().Leases(LeaseNamespace).Create(t.Context(), dead, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := published(t, client); !slices.Contains(got, "192.0.2.12") {
			t.Errorf("after a peer's lease appeared: published %v, want it included", got)
		}
		time.Sleep(DefaultLeaseDuration + DefaultRenewInterval)
		synctest.Wait()
		if got, want := published(t, client), []string{"192.0.2.10"}; !slices.Equal(got, want) {
			t.Errorf("after the peer's lease expired: published %v, want %v", got, want)
		}
		stopA()
		if err := <-doneA; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New(Config{}) = nil error, want one")
	}
	if _, err := New(Config{Client: fake.NewClientset(), Address: net.ParseIP("192.0.2.1"), Port: 6443,
		LeaseDuration: 5 * time.Second, RenewInterval: 10 * time.Second}); err == nil {
		t.Error("New with a renew interval longer than the lease = nil error, want one")
	}
}
