package bootstrap

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/util/flowcontrol"
)

func testObjects() []runtime.Object {
	return []runtime.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "sa", UID: "sa-uid"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "n1-uid"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "p", UID: "p-uid"}},
		tokenSecretObj(),
	}
}

// getAll reads every object of testObjects through g.
func getAll(t *testing.T, g *Getter) {
	t.Helper()
	if sa, err := g.GetServiceAccount(t.Context(), "default", "sa"); err != nil || sa.UID != "sa-uid" {
		t.Errorf("GetServiceAccount(default, sa) = %v, %v", sa, err)
	}
	if n, err := g.GetNode(t.Context(), "n1"); err != nil || n.UID != "n1-uid" {
		t.Errorf("GetNode(n1) = %v, %v", n, err)
	}
	if p, err := g.GetPod(t.Context(), "default", "p"); err != nil || p.UID != "p-uid" {
		t.Errorf("GetPod(default, p) = %v, %v", p, err)
	}
	if s, err := g.GetSecret(t.Context(), "kube-system", "bootstrap-token-"+tokenID); err != nil || s.Name != "bootstrap-token-"+tokenID {
		t.Errorf("GetSecret(kube-system, bootstrap-token-%s) = %v, %v", tokenID, s, err)
	}
	if _, err := g.GetServiceAccount(t.Context(), "default", "missing"); !apierrors.IsNotFound(err) {
		t.Errorf("GetServiceAccount(default, missing) err = %v, want not found", err)
	}
}

func TestGetterReadsTheCaches(t *testing.T) {
	client := fake.NewClientset(testObjects()...)
	f := informers.NewSharedInformerFactory(client, 0)
	g := NewGetter(f, client)
	f.Start(t.Context().Done())
	t.Cleanup(f.Shutdown)
	for typ, ok := range f.WaitForCacheSync(t.Context().Done()) {
		if !ok {
			t.Fatalf("informer for %v did not sync", typ)
		}
	}
	client.ClearActions()
	getAll(t, g)
	for _, a := range client.Actions() {
		if a.GetVerb() == "get" && a.(k8stesting.GetAction).GetName() != "missing" {
			t.Errorf("live read %v of an object the cache holds", a)
		}
	}
}

// TestGetterReadsLive covers objects the informers have not seen yet: here
// the factory is never started, so every read misses the cache.
func TestGetterReadsLive(t *testing.T) {
	client := fake.NewClientset(testObjects()...)
	g := NewGetter(informers.NewSharedInformerFactory(client, 0), client)
	getAll(t, g)
	if got := len(client.Actions()); got != 5 {
		t.Errorf("client saw %d actions, want 5 live reads", got)
	}
}

func TestGetterLimitsLiveReads(t *testing.T) {
	client := fake.NewClientset()
	f := informers.NewSharedInformerFactory(client, 0)
	g := NewGetter(f, client)
	g.live = flowcontrol.NewFakeNeverRateLimiter()
	f.Start(t.Context().Done())
	t.Cleanup(f.Shutdown)
	f.WaitForCacheSync(t.Context().Done())
	client.ClearActions()

	if _, err := g.GetSecret(t.Context(), "kube-system", "bootstrap-token-zzzzzz"); !apierrors.IsNotFound(err) {
		t.Errorf("GetSecret err = %v, want not found", err)
	}
	if a := client.Actions(); len(a) != 0 {
		t.Errorf("client saw %d actions %v, want none once the live limit is reached", len(a), a)
	}

	noClient := NewGetter(informers.NewSharedInformerFactory(client, time.Hour), nil)
	if _, err := noClient.GetNode(t.Context(), "n1"); !apierrors.IsNotFound(err) {
		t.Errorf("GetNode without a client err = %v, want not found", err)
	}
}
