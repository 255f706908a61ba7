package integration

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"tether/apiserver/storage"
	"tether/controlplane"
	"tether/test/framework"
)

// TestExternalEtcd runs a control plane against an etcd that it does not
// own, and checks that /readyz follows that etcd's health.
func TestExternalEtcd(t *testing.T) {
	dir, err := os.MkdirTemp("", "tether-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	etcd, err := storage.NewEmbedded(storage.EmbeddedConfig{Dir: filepath.Join(dir, "e")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stopEtcd := context.WithCancel(context.Background())
	etcdDone := make(chan error, 1)
	go func() { etcdDone <- etcd.Run(ctx) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stopEtcd()
			<-etcdDone
		}
	})
	select {
	case <-etcd.Ready():
	case err := <-etcdDone:
		t.Fatalf("etcd: %v", err)
	}

	c := framework.StartCluster(t, func(cfg *controlplane.Config) { cfg.EtcdServers = etcd.Backend().Servers })
	if _, err := os.Stat(filepath.Join(c.DataDir, "etcd")); !os.IsNotExist(err) {
		t.Errorf("control plane with --etcd-servers made its own etcd dir (stat err %v)", err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Get(t.Context(), "kube-system", metav1.GetOptions{}); err != nil {
		t.Fatalf("get kube-system: %v", err)
	}
	if code := storageTestReadyz(t, c.Admin); code != http.StatusOK {
		t.Fatalf("/readyz with etcd up = %d, want 200", code)
	}

	stopEtcd()
	<-etcdDone
	stopped = true
	deadline := time.Now().Add(30 * time.Second)
	for storageTestReadyz(t, c.Admin) == http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still 200 30s after etcd stopped")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTwoServersOneMachine starts two control planes side by side: their
// embedded etcd members must not collide.
func TestTwoServersOneMachine(t *testing.T) {
	a := framework.StartCluster(t)
	b := framework.StartCluster(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "only-in-a"}}
	if _, err := a.Client.CoreV1().ConfigMaps("default").Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create in a: %v", err)
	}
	if _, err := b.Client.CoreV1().ConfigMaps("default").Get(t.Context(), "only-in-a", metav1.GetOptions{}); err == nil {
		t.Fatalf("configmap created in server a is visible in server b")
	}
}

func storageTestReadyz(t *testing.T, cfg *rest.Config) int {
	t.Helper()
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/readyz", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestEventsExpire checks that events are stored with an etcd lease of the
// event TTL, so they disappear on their own like upstream's.
func TestEventsExpire(t *testing.T) {
	c := framework.StartCluster(t)
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "ttl-probe", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "p", Namespace: "default"},
		Reason:         "Probe", Message: "checking the TTL", Type: corev1.EventTypeNormal,
	}
	if _, err := c.Client.CoreV1().Events("default").Create(t.Context(), ev, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create event: %v", err)
	}
	ec, err := clientv3.New(clientv3.Config{Endpoints: c.ControlPlane.EtcdServers(), DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	resp, err := ec.Get(t.Context(), "/registry/events/default/ttl-probe")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("etcd get of the event = %v, %v; want one key", resp, err)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Fatalf("event stored without a lease; it would never expire")
	}
	ttl, err := ec.TimeToLive(t.Context(), clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL < 3000 || ttl.GrantedTTL > 3700 {
		t.Errorf("event lease granted TTL = %ds, want about 3600s (one hour)", ttl.GrantedTTL)
	}
}
