package proxy

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// testNet is one node (its own netns, with a bridge for the pods) plus pod
// namespaces on that bridge and an outside host on a separate link.
//
//	pod p1 10.244.0.2 ─┐
//	pod p2 10.244.0.3 ─┼─ br0 10.244.0.1 [node] 192.0.2.1 ── 192.0.2.2 ext
//	client 10.244.0.4 ─┘
type testNet struct {
	node, p1, p2, client, ext string
}

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	id := "tpx" + randHex(t, 3)
	n := &testNet{node: id + "-node", p1: id + "-p1", p2: id + "-p2", client: id + "-c", ext: id + "-ext"}
	addNetns(t, n.node)
	ipn := func(args ...string) { mustRun(t, "ip", append([]string{"-n", n.node}, args...)...) }
	ipn("link", "add", "br0", "type", "bridge")
	ipn("addr", "add", "10.244.0.1/24", "dev", "br0")
	ipn("link", "set", "br0", "up")
	mustRun(t, "ip", "netns", "exec", n.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for i, pod := range []struct{ ns, ip string }{{n.p1, "10.244.0.2"}, {n.p2, "10.244.0.3"}, {n.client, "10.244.0.4"}} {
		addNetns(t, pod.ns)
		veth := fmt.Sprintf("v%d", i)
		ipn("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod.ns)
		ipn("link", "set", veth, "master", "br0", "up")
		// What the CNI bridge plugin's hairpinMode does.
		ipn("link", "set", veth, "type", "bridge_slave", "hairpin", "on")
		mustRun(t, "ip", "-n", pod.ns, "addr", "add", pod.ip+"/24", "dev", "eth0")
		mustRun(t, "ip", "-n", pod.ns, "link", "set", "eth0", "up")
		mustRun(t, "ip", "-n", pod.ns, "route", "add", "default", "via", "10.244.0.1")
	}
	addNetns(t, n.ext)
	ipn("link", "add", "vext", "type", "veth", "peer", "name", "eth0", "netns", n.ext)
	ipn("addr", "add", "192.0.2.1/24", "dev", "vext")
	ipn("link", "set", "vext", "up")
	mustRun(t, "ip", "-n", n.ext, "addr", "add", "192.0.2.2/24", "dev", "eth0")
	mustRun(t, "ip", "-n", n.ext, "link", "set", "eth0", "up")
	return n
}

// TestProxyNetns runs a real Proxier (real nft, fake API) in a node
// namespace and checks Service traffic from pods, from the node itself
// and from outside.
func TestProxyNetns(t *testing.T) {
	skipUnlessRoot(t)
	n := newTestNet(t)
	serveIn(t, n.p1, ":8080", "p1")
	serveIn(t, n.p2, ":8080", "p2")
	serveIn(t, n.node, ":9090", "node")
	serveIn(t, n.ext, ":8080", "ext")

	web := makeService("default", "web", "10.96.0.10", 80, nodePort(30080))
	self := makeService("default", "self", "10.96.0.11", 80)
	both := makeSlice("default", "web", "a", 8080, readyEP("10.244.0.2"), readyEP("10.244.0.3"))
	onlyP1 := makeSlice("default", "self", "a", 8080, readyEP("10.244.0.2"))
	// A Service backed by the node itself, like "kubernetes" → apiserver.
	host := makeService("default", "host", "10.96.0.12", 443)
	hostEP := makeSlice("default", "host", "a", 9090, readyEP("192.0.2.1"))
	const table = "tether-test"
	pc := startProxy(t, n.node, helperReq{
		Table:       table,
		ServiceCIDR: "10.96.0.0/12",
		ClusterCIDR: "10.244.0.0/16",
		NodeIPs:     []string{"192.0.2.1"},
	}, proxyState{Services: []*corev1.Service{web, self, host}, EndpointSlices: []*discoveryv1.EndpointSlice{both, onlyP1, hostEP}})

	hits := func(res dialResult) map[string]int {
		m := map[string]int{}
		for _, r := range res.Replies {
			m[r]++
		}
		return m
	}

	t.Run("pod to ClusterIP balances and keeps the pod's address", func(t *testing.T) {
		res := dialFrom(t, n.client, "10.96.0.10:80", 100)
		h := hits(res)
		if len(res.Errs) > 0 || h["p1 10.244.0.4"] == 0 || h["p2 10.244.0.4"] == 0 || h["p1 10.244.0.4"]+h["p2 10.244.0.4"] != 100 {
			t.Errorf("100 connections to the VIP: replies %v, errors %v; want both backends, seeing the client's own address", h, res.Errs)
		}
		t.Logf("100 connections in %v: %v", res.Took.Round(time.Millisecond), h)
	})

	t.Run("node to ClusterIP", func(t *testing.T) {
		res := dialFrom(t, n.node, "10.96.0.10:80", 20)
		h := hits(res)
		if len(res.Errs) > 0 || h["p1 10.244.0.1"]+h["p2 10.244.0.1"] != 20 {
			t.Errorf("20 connections from the node: replies %v, errors %v; want all answered, masqueraded to 10.244.0.1", h, res.Errs)
		}
	})

	t.Run("outside host to NodePort", func(t *testing.T) {
		res := dialFrom(t, n.ext, "192.0.2.1:30080", 20)
		h := hits(res)
		if len(res.Errs) > 0 || h["p1 10.244.0.1"]+h["p2 10.244.0.1"] != 20 {
			t.Errorf("20 connections to the NodePort: replies %v, errors %v; want all answered, masqueraded", h, res.Errs)
		}
	})

	t.Run("node to its own NodePort", func(t *testing.T) {
		res := dialFrom(t, n.node, "192.0.2.1:30080", 5)
		if len(res.Errs) > 0 {
			t.Errorf("node → own NodePort: errors %v", res.Errs)
		}
	})

	t.Run("hairpin: a pod reaches itself through its Service", func(t *testing.T) {
		res := dialFrom(t, n.p1, "10.96.0.11:80", 5)
		h := hits(res)
		if len(res.Errs) > 0 || h["p1 10.244.0.1"] != 5 {
			t.Errorf("p1 → self VIP: replies %v, errors %v; want p1 answering a masqueraded source", h, res.Errs)
		}
	})

	t.Run("Service backed by the node's own address", func(t *testing.T) {
		for _, tc := range []struct{ from, src string }{{n.client, "10.244.0.4"}, {n.node, ""}} {
			res := dialFrom(t, tc.from, "10.96.0.12:443", 5)
			if len(res.Errs) > 0 || len(res.Replies) != 5 || (tc.src != "" && res.Replies[0] != "node "+tc.src) {
				t.Errorf("from %s: replies %v, errors %v; want 5 from the node (seeing %q)", tc.from, res.Replies, res.Errs, tc.src)
			}
		}
	})

	t.Run("pod egress beyond the pod network is masqueraded", func(t *testing.T) {
		// ext has no route to the pod network: only a masqueraded
		// connection gets its reply.
		res := dialFrom(t, n.client, "192.0.2.2:8080", 3)
		if h := hits(res); len(res.Errs) > 0 || h["ext 192.0.2.1"] != 3 {
			t.Errorf("client → outside host: replies %v, errors %v; want them from the node's address", h, res.Errs)
		}
	})

	t.Run("unknown VIP is refused at once", func(t *testing.T) {
		for _, from := range []string{n.client, n.node} {
			res := dialFrom(t, from, "10.96.0.99:80", 1)
			if len(res.Errs) != 1 || !isRefused(res.Errs[0]) || res.Took > time.Second {
				t.Errorf("from %s: 10.96.0.99:80 gave %v, %v in %v; want connection refused at once", from, res.Replies, res.Errs, res.Took)
			}
		}
		// An unused port of a known VIP, too: nothing on the node answers it.
		res := dialFrom(t, n.client, "10.96.0.10:22", 1)
		if len(res.Errs) != 1 || !isRefused(res.Errs[0]) {
			t.Errorf("10.96.0.10:22 gave %v, %v; want connection refused", res.Replies, res.Errs)
		}
	})

	t.Run("an endpoint becomes not ready", func(t *testing.T) {
		took := changeTook(t, n.client, "10.96.0.10:80", "p1 10.244.0.4", func() {
			pc.send(proxyState{
				Services:       []*corev1.Service{web, self, host},
				EndpointSlices: []*discoveryv1.EndpointSlice{hostEP, onlyP1, makeSlice("default", "web", "a", 8080, readyEP("10.244.0.2"), notReadyEP("10.244.0.3"))},
			}, "APPLIED")
		})
		if took > 2*time.Second {
			t.Errorf("only p1 answers %v after p2 became not ready, want ≤2s", took)
		}
		t.Logf("only p1 answers %v after the update", took.Round(time.Millisecond))
		res := dialFrom(t, n.client, "10.96.0.10:80", 50)
		if h := hits(res); h["p1 10.244.0.4"] != 50 {
			t.Errorf("50 more connections: %v %v, want all to p1", h, res.Errs)
		}
	})

	t.Run("Service deleted: refused, not timed out", func(t *testing.T) {
		took := changeTook(t, n.client, "10.96.0.10:80", "refused", func() {
			pc.send(proxyState{Services: []*corev1.Service{self}, EndpointSlices: []*discoveryv1.EndpointSlice{onlyP1}}, "APPLIED")
		})
		if took > 2*time.Second {
			t.Errorf("the deleted Service's VIP is refused only %v after the delete, want ≤2s", took)
		}
		res := dialFrom(t, n.client, "10.96.0.10:80", 1)
		if len(res.Errs) != 1 || !isRefused(res.Errs[0]) || res.Took > time.Second {
			t.Errorf("deleted Service: %v %v after %v, want connection refused at once", res.Replies, res.Errs, res.Took)
		}
		res = dialFrom(t, n.ext, "192.0.2.1:30080", 1)
		if len(res.Errs) != 1 || !isRefused(res.Errs[0]) {
			t.Errorf("deleted Service's NodePort: %v %v, want connection refused", res.Replies, res.Errs)
		}
	})

	t.Run("a Service loses all endpoints: refused", func(t *testing.T) {
		took := changeTook(t, n.node, "10.96.0.11:80", "refused", func() {
			pc.send(proxyState{Services: []*corev1.Service{self}}, "APPLIED")
		})
		if took > 2*time.Second {
			t.Errorf("the VIP without endpoints is refused only %v after the change, want ≤2s", took)
		}
	})

	// Stopping the proxier leaves the rules; Cleanup removes them and the
	// route.
	pc.stop()
	if out := mustRun(t, "ip", "netns", "exec", n.node, "nft", "list", "table", "ip", table); !strings.Contains(out, "no-endpoint-services") {
		t.Errorf("after the proxier stopped, table %s = %s; want it kept", table, out)
	}
	if routes := localRoutes(t, n.node); !strings.Contains(routes, "10.96.0.0/12") {
		t.Errorf("local routes = %s, want the service range", routes)
	}
	runChild(t, n.node, helperReq{Op: "cleanup", Table: table}, nil)
	if out, err := exec.Command("ip", "netns", "exec", n.node, "nft", "list", "table", "ip", table).CombinedOutput(); err == nil {
		t.Errorf("after Cleanup the table is still there:\n%s", out)
	}
	if routes := localRoutes(t, n.node); strings.Contains(routes, "10.96.0.0/12") {
		t.Errorf("after Cleanup local routes = %s, want no service range", routes)
	}
	// Cleanup of nothing succeeds.
	runChild(t, n.node, helperReq{Op: "cleanup", Table: table}, nil)
}

func localRoutes(t *testing.T, netns string) string {
	t.Helper()
	var routes []struct {
		Type string `json:"type"`
		Dst  string `json:"dst"`
	}
	out := mustRun(t, "ip", "-n", netns, "-4", "-json", "route", "show", "table", "local")
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, r := range routes {
		s = append(s, r.Type+" "+r.Dst)
	}
	return strings.Join(s, ", ")
}
