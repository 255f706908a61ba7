package proxy

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"
)

func TestNewValidates(t *testing.T) {
	_, err := New(Config{ServiceCIDR: mustCIDR(t, "fd00::/108"), MinSyncInterval: -1})
	if err == nil {
		t.Fatal("New(bad config) succeeded")
	}
	for _, want := range []string{"Client is required", "NodeName is required", "not IPv4", "negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New(bad config) = %q, want it to mention %q", err, want)
		}
	}
}

// TestRun drives a Proxier through client-go informers on a fake clientset
// into knftables' fake.
func TestRun(t *testing.T) {
	svc := makeService("default", "web", "10.96.0.10", 80, nodePort(30080))
	slice := makeSlice("default", "web", "a", 8080, readyEP("10.244.0.2"), readyEP("10.244.1.2"))
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "other"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.12"}}},
	}
	client := fake.NewClientset(svc, slice, node)
	nft := knftables.NewFake(knftables.IPv4Family, "tether-test")
	reg := prometheus.NewPedanticRegistry()
	p, err := New(Config{
		Client:          client,
		NodeName:        "n1",
		NodeIPs:         []net.IP{net.ParseIP("192.0.2.11")},
		ServiceCIDR:     mustCIDR(t, "10.96.0.0/12"),
		ClusterCIDR:     mustCIDR(t, "10.244.0.0/16"),
		TableName:       "tether-test",
		NFTables:        nft,
		Registerer:      reg,
		MinSyncInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var routes atomic.Int32
	p.serviceRoute = func(_ context.Context, cidr *net.IPNet) error {
		if cidr.String() != "10.96.0.0/12" {
			t.Errorf("service route for %s, want 10.96.0.0/12", cidr)
		}
		routes.Add(1)
		return nil
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("Run ended before Ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not Ready after 10s")
	}

	tb := dumpTable(nft)
	if !tb.hasElement(mapServiceIPs, "10.96.0.10 . tcp . 80 : goto svc-default/web/tcp/80") ||
		!tb.hasElement(mapServiceNodePorts, "tcp . 30080 : goto ext-default/web/tcp/80") {
		t.Fatalf("after the first sync the table lacks web's ClusterIP or NodePort:\n%s", tb)
	}
	for _, ip := range []string{"192.0.2.11", "192.0.2.12"} {
		if !tb.hasElement(setNodeIPs, ip) {
			t.Errorf("node-ips = %v, want %s in it", tb.elements[setNodeIPs], ip)
		}
	}
	if routes.Load() != 1 {
		t.Errorf("service route installed %d times, want 1", routes.Load())
	}

	// An endpoint becomes not ready.
	slice = makeSlice("default", "web", "a", 8080, readyEP("10.244.0.2"), notReadyEP("10.244.1.2"))
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the unready endpoint's chain to go", func() bool {
		c := dumpTable(nft).chains
		_, gone := c["ep-default/web/tcp/80__10.244.1.2/8080"]
		return !gone && len(c["svc-default/web/tcp/80"]) == 2 && strings.HasPrefix(c["svc-default/web/tcp/80"][1], "goto ")
	})
	if !strings.Contains(nft.LastTransaction.String(), "flush chain") || strings.Contains(nft.LastTransaction.String(), "delete table") {
		t.Errorf("the endpoint update was not an incremental sync:\n%s", nft.LastTransaction)
	}

	// The Service is deleted.
	if err := client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "web's rules to go", func() bool {
		tb := dumpTable(nft)
		return len(tb.dynamicChains()) == 0 && len(tb.elements[mapServiceIPs]) == 0 && len(tb.elements[mapServiceNodePorts]) == 0
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if nft.Table == nil {
		t.Error("the table was removed when Run ended; it must stay")
	}

	if n := testutil.ToFloat64(p.metrics.rules); n < 10 {
		t.Errorf("tether_proxy_rules = %v, want the skeleton's rules at least", n)
	}
	if n := testutil.ToFloat64(p.metrics.lastSync); n < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("tether_proxy_last_sync_timestamp_seconds = %v, want about now", n)
	}
	if n, err := testutil.GatherAndCount(reg, "tether_proxy_sync_duration_seconds"); err != nil || n != 2 {
		t.Errorf("tether_proxy_sync_duration_seconds series = %d, %v; want full and partial", n, err)
	}
}

// TestRunRetries checks that a failed sync is retried as a full rebuild.
func TestRunRetries(t *testing.T) {
	client := fake.NewClientset(makeService("default", "web", "10.96.0.10", 80))
	nft := knftables.NewFake(knftables.IPv4Family, "tether")
	p, err := New(Config{Client: client, NodeName: "n1", NFTables: nft, ServiceCIDR: mustCIDR(t, "10.96.0.0/12")})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	p.serviceRoute = func(context.Context, *net.IPNet) error {
		if calls.Add(1) == 1 {
			return errors.New("ip: no such device")
		}
		return nil
	}
	go func() { _ = p.Run(t.Context()) }()
	select {
	case <-p.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not Ready after a failed first sync")
	}
	if calls.Load() < 2 {
		t.Errorf("route installed %d times, want a retry", calls.Load())
	}
	if n := testutil.ToFloat64(p.metrics.errors); n != 1 {
		t.Errorf("tether_proxy_sync_errors_total = %v, want 1", n)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
