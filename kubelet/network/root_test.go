package network

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSetupPod(t *testing.T) {
	skipUnlessRoot(t)
	node := newTestNode(t, "10.250.1.0/24")
	_, podNet, _ := net.ParseCIDR(node.cfg.PodCIDR)

	nsPath, ip := node.setup("pod-a")
	if !podNet.Contains(ip) || ip.Equal(net.ParseIP("10.250.1.1")) {
		t.Fatalf("SetupPod IP = %s, want a pod address in %s", ip, podNet)
	}
	if want := filepath.Join(netnsDir, node.cfg.Prefix+"pod-a"); nsPath != want {
		t.Errorf("SetupPod netns = %s, want %s", nsPath, want)
	}
	podNS := filepath.Base(nsPath)

	var links []ipAddrInfo
	ipJSON(t, &links, "-n", podNS, "addr", "show")
	var eth0, lo *ipAddrInfo
	for i := range links {
		switch links[i].IfName {
		case "eth0":
			eth0 = &links[i]
		case "lo":
			lo = &links[i]
		}
	}
	if eth0 == nil || !eth0.has(ip.String()) || !eth0.up() {
		t.Errorf("pod netns eth0 = %+v, want up with %s", eth0, ip)
	}
	if lo == nil || !lo.up() || !lo.has("127.0.0.1") {
		t.Errorf("pod netns lo = %+v, want up with 127.0.0.1", lo)
	}

	var routes []struct {
		Dst     string `json:"dst"`
		Gateway string `json:"gateway"`
	}
	ipJSON(t, &routes, "-n", podNS, "route", "show", "default")
	if len(routes) != 1 || routes[0].Gateway != "10.250.1.1" {
		t.Errorf("pod default route = %+v, want via 10.250.1.1", routes)
	}

	var br []ipAddrInfo
	ipJSON(t, &br, "-n", node.ns, "addr", "show", "dev", node.cfg.Bridge)
	if len(br) != 1 || !br[0].has("10.250.1.1") {
		t.Errorf("bridge %s in node netns = %+v, want gateway 10.250.1.1", node.cfg.Bridge, br)
	}

	// The host's network is untouched: no bridge of ours there.
	if _, err := net.InterfaceByName(node.cfg.Bridge); err == nil {
		t.Errorf("bridge %s exists in the test's own netns, want only in %s", node.cfg.Bridge, node.ns)
	}
}

func TestPodConnectivity(t *testing.T) {
	skipUnlessRoot(t)
	node := newTestNode(t, "10.250.2.0/24")
	nsA, ipA := node.setup("pod-a")
	nsB, ipB := node.setup("pod-b")
	if ipA.Equal(ipB) {
		t.Fatalf("pods got the same IP %s", ipA)
	}
	serve(t, nsA, ":8080", "a")
	serve(t, nsB, ":8080", "b")

	tests := []struct {
		name, from, to, want string
	}{
		{"pod a to pod b", nsA, net.JoinHostPort(ipB.String(), "8080"), "hello from b"},
		{"pod b to pod a", nsB, net.JoinHostPort(ipA.String(), "8080"), "hello from a"},
		{"node to pod a", filepath.Join(netnsDir, node.ns), net.JoinHostPort(ipA.String(), "8080"), "hello from a"},
		{"pod a to itself", nsA, net.JoinHostPort(ipA.String(), "8080"), "hello from a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dial(t, tt.from, tt.to)
			if err != nil || got != tt.want {
				t.Errorf("dial %s from %s = %q, %v, want %q", tt.to, tt.from, got, err, tt.want)
			}
		})
	}

	// Pod to node: a server on the gateway address in the node netns.
	serve(t, filepath.Join(netnsDir, node.ns), "10.250.2.1:9090", "node")
	if got, err := dial(t, nsA, "10.250.2.1:9090"); err != nil || got != "hello from node" {
		t.Errorf("dial node from pod a = %q, %v, want %q", got, err, "hello from node")
	}
}

func TestSetupPodAdoptsExisting(t *testing.T) {
	skipUnlessRoot(t)
	node := newTestNode(t, "10.250.3.0/24")
	ns1, ip1 := node.setup("pod-a")

	// Every helper call is a new process and a new Network on the same
	// DataDir, as after an agent restart.
	ns2, ip2 := node.setup("pod-a")
	if ns1 != ns2 || !ip1.Equal(ip2) {
		t.Errorf("second SetupPod = %s, %s, want the first %s, %s", ns2, ip2, ns1, ip1)
	}
	if resp := node.call(helperReq{Op: "podip", UID: "pod-a"}); !resp.Found || resp.IP != ip1.String() {
		t.Errorf("PodIP(pod-a) = %q, %v, want %s, true", resp.IP, resp.Found, ip1)
	}
	if resp := node.call(helperReq{Op: "podip", UID: "pod-unknown"}); resp.Found {
		t.Errorf("PodIP(pod-unknown) = %q, true, want not found", resp.IP)
	}
	_, _ = node.setup("pod-b")
	resp := node.call(helperReq{Op: "pods"})
	slices.Sort(resp.Pods)
	if !slices.Equal(resp.Pods, []string{"pod-a", "pod-b"}) {
		t.Errorf("Pods() = %q, %s, want [pod-a pod-b]", resp.Pods, resp.Err)
	}

	// A hashed name for a UID unfit for a file name still maps back.
	odd := strings.Repeat("u", 150)
	oddNS, _ := node.setup(odd)
	if strings.Contains(oddNS, odd) {
		t.Errorf("netns for a 150-character UID = %s, want a hashed name", oddNS)
	}
	resp = node.call(helperReq{Op: "pods"})
	if !slices.Contains(resp.Pods, odd) {
		t.Errorf("Pods() = %q, want it to include the long UID", resp.Pods)
	}
	node.teardown(odd)
}

func TestTeardownPod(t *testing.T) {
	skipUnlessRoot(t)
	// A /30 has exactly one pod address (.2), so reuse is visible.
	node := newTestNode(t, "10.250.4.0/30")
	nsA, ipA := node.setup("pod-a")
	if ipA.String() != "10.250.4.2" {
		t.Fatalf("SetupPod(pod-a) IP = %s, want 10.250.4.2", ipA)
	}

	// No address is left: SetupPod fails and leaves nothing behind.
	resp := node.call(helperReq{Op: "setup", UID: "pod-b"})
	if resp.Err == "" {
		t.Fatalf("SetupPod(pod-b) on a full /30 = %s, want an error", resp.IP)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, node.cfg.Prefix+"pod-b")); !os.IsNotExist(err) {
		t.Errorf("failed SetupPod(pod-b) left its netns behind (stat: %v)", err)
	}

	node.teardown("pod-a")
	if _, err := os.Stat(nsA); !os.IsNotExist(err) {
		t.Errorf("TeardownPod(pod-a) left %s (stat: %v)", nsA, err)
	}
	if resp := node.call(helperReq{Op: "podip", UID: "pod-a"}); resp.Found {
		t.Errorf("PodIP(pod-a) after teardown = %s, want not found", resp.IP)
	}
	node.teardown("pod-a") // idempotent

	_, ipB := node.setup("pod-b")
	if !ipB.Equal(ipA) {
		t.Errorf("SetupPod(pod-b) after teardown = %s, want the released %s", ipB, ipA)
	}

	// Without libcni's cache, DEL still releases the address.
	if err := os.RemoveAll(filepath.Join(node.cfg.DataDir, "cache")); err != nil {
		t.Fatal(err)
	}
	node.teardown("pod-b")
	if _, ipC := node.setup("pod-c"); !ipC.Equal(ipA) {
		t.Errorf("SetupPod(pod-c) after a cache-less teardown = %s, want %s", ipC, ipA)
	}
	if resp := node.call(helperReq{Op: "pods"}); !slices.Equal(resp.Pods, []string{"pod-c"}) {
		t.Errorf("Pods() = %q, want [pod-c]", resp.Pods)
	}
}

type routeInfo struct {
	Dst      string `json:"dst"`
	Gateway  string `json:"gateway"`
	Protocol string `json:"protocol"`
}

func nodeRoutes(t *testing.T, ns string, args ...string) map[string]string {
	t.Helper()
	var routes []routeInfo
	ipJSON(t, &routes, append([]string{"-n", ns, "route", "show"}, args...)...)
	m := make(map[string]string)
	for _, r := range routes {
		m[r.Dst] = r.Gateway
	}
	return m
}

func TestSyncRoutes(t *testing.T) {
	skipUnlessRoot(t)
	node := newTestNode(t, "10.250.5.0/24")
	// A node "uplink" with neighbours .2-.9, and a route someone else made.
	mustRun(t, "ip", "-n", node.ns, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	mustRun(t, "ip", "-n", node.ns, "addr", "add", "172.31.0.1/24", "dev", "up0")
	mustRun(t, "ip", "-n", node.ns, "link", "set", "up0", "up")
	mustRun(t, "ip", "-n", node.ns, "link", "set", "up1", "up")
	mustRun(t, "ip", "-n", node.ns, "route", "add", "10.99.0.0/24", "via", "172.31.0.9")
	mustRun(t, "ip", "netns", "exec", node.ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")

	steps := []struct {
		name    string
		routes  []helperRoute
		want    map[string]string // our routes: dst -> via
		wantErr string
	}{
		{
			name:   "add",
			routes: []helperRoute{{"10.250.6.0/24", "172.31.0.2"}, {"10.250.7.0/24", "172.31.0.3"}},
			want:   map[string]string{"10.250.6.0/24": "172.31.0.2", "10.250.7.0/24": "172.31.0.3"},
		},
		{
			name:   "no change",
			routes: []helperRoute{{"10.250.6.0/24", "172.31.0.2"}, {"10.250.7.0/24", "172.31.0.3"}},
			want:   map[string]string{"10.250.6.0/24": "172.31.0.2", "10.250.7.0/24": "172.31.0.3"},
		},
		{
			name:   "replace and remove",
			routes: []helperRoute{{"10.250.6.0/24", "172.31.0.4"}, {"10.250.8.0/24", "172.31.0.5"}},
			want:   map[string]string{"10.250.6.0/24": "172.31.0.4", "10.250.8.0/24": "172.31.0.5"},
		},
		{
			name:    "foreign destination is left alone",
			routes:  []helperRoute{{"10.250.6.0/24", "172.31.0.4"}, {"10.99.0.0/24", "172.31.0.6"}},
			want:    map[string]string{"10.250.6.0/24": "172.31.0.4"},
			wantErr: "not managed by tether",
		},
		{
			name:    "own pod CIDR is refused",
			routes:  []helperRoute{{"10.250.5.0/24", "172.31.0.6"}},
			want:    map[string]string{},
			wantErr: "overlaps this node's pod CIDR",
		},
		{
			name:   "remove all",
			routes: nil,
			want:   map[string]string{},
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			err := node.syncRoutes(st.routes...)
			switch {
			case st.wantErr == "" && err != nil:
				t.Fatalf("SyncRoutes(%v) = %v", st.routes, err)
			case st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)):
				t.Fatalf("SyncRoutes(%v) = %v, want an error mentioning %q", st.routes, err, st.wantErr)
			}
			got := nodeRoutes(t, node.ns, "proto", "116")
			if len(got) != len(st.want) {
				t.Errorf("our routes = %v, want %v", got, st.want)
			}
			for dst, via := range st.want {
				if got[dst] != via {
					t.Errorf("our route %s via %q, want via %s (all: %v)", dst, got[dst], via, got)
				}
			}
			if all := nodeRoutes(t, node.ns); all["10.99.0.0/24"] != "172.31.0.9" {
				t.Errorf("foreign route 10.99.0.0/24 = via %q, want via 172.31.0.9 untouched (all: %v)", all["10.99.0.0/24"], all)
			}
		})
	}
	if got := strings.TrimSpace(mustRun(t, "ip", "netns", "exec", node.ns, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "1" {
		t.Errorf("ip_forward in node netns = %s, want 1", got)
	}
}

func TestTwoNodes(t *testing.T) {
	skipUnlessRoot(t)
	n1 := newTestNode(t, "10.251.1.0/24")
	n2 := newTestNode(t, "10.251.2.0/24")
	// A cable between the nodes: 172.30.99.11 <-> 172.30.99.12.
	mustRun(t, "ip", "link", "add", "tnl"+n1.cfg.Bridge[3:], "netns", n1.ns, "type", "veth", "peer", "name", "tnl"+n2.cfg.Bridge[3:], "netns", n2.ns)
	for i, n := range []*testNode{n1, n2} {
		dev := "tnl" + n.cfg.Bridge[3:]
		mustRun(t, "ip", "-n", n.ns, "addr", "add", "172.30.99.1"+string(rune('1'+i))+"/24", "dev", dev)
		mustRun(t, "ip", "-n", n.ns, "link", "set", dev, "up")
	}
	if err := n1.syncRoutes(helperRoute{"10.251.2.0/24", "172.30.99.12"}); err != nil {
		t.Fatalf("SyncRoutes on node 1: %v", err)
	}
	if err := n2.syncRoutes(helperRoute{"10.251.1.0/24", "172.30.99.11"}); err != nil {
		t.Fatalf("SyncRoutes on node 2: %v", err)
	}

	ns1, ip1 := n1.setup("pod-1")
	ns2, ip2 := n2.setup("pod-2")
	serve(t, ns2, ":8080", "pod-2")
	serve(t, ns1, ":8080", "pod-1")
	if got, err := dial(t, ns1, net.JoinHostPort(ip2.String(), "8080")); err != nil || got != "hello from pod-2" {
		t.Errorf("pod on node 1 -> pod on node 2 = %q, %v, want %q", got, err, "hello from pod-2")
	}
	if got, err := dial(t, ns2, net.JoinHostPort(ip1.String(), "8080")); err != nil || got != "hello from pod-1" {
		t.Errorf("pod on node 2 -> pod on node 1 = %q, %v, want %q", got, err, "hello from pod-1")
	}
	// Each node's Pods() sees only its own pods, though all share /var/run/netns.
	if resp := n1.call(helperReq{Op: "pods"}); !slices.Equal(resp.Pods, []string{"pod-1"}) {
		t.Errorf("node 1 Pods() = %q, want [pod-1]", resp.Pods)
	}
}

// countAllocations counts host-local's address files for the network.
func countAllocations(t *testing.T, dataDir string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "ipam", networkName))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			n++
		}
	}
	return n
}

func TestSetupPodRecoversHalfMadeState(t *testing.T) {
	skipUnlessRoot(t)
	node := newTestNode(t, "10.250.8.0/24")

	t.Run("cached result without netns", func(t *testing.T) {
		nsPath, _ := node.setup("pod-a")
		mustRun(t, "ip", "netns", "delete", filepath.Base(nsPath))
		nsPath2, ip := node.setup("pod-a")
		var links []ipAddrInfo
		ipJSON(t, &links, "-n", filepath.Base(nsPath2), "addr", "show", "dev", "eth0")
		if len(links) != 1 || !links[0].has(ip.String()) {
			t.Errorf("eth0 after re-setup = %+v, want %s", links, ip)
		}
		if got := countAllocations(t, node.cfg.DataDir); got != 1 {
			t.Errorf("host-local holds %d addresses, want 1 (the stale one released)", got)
		}
	})
	t.Run("netns without cached result", func(t *testing.T) {
		nsName := node.cfg.Prefix + "pod-b"
		mustRun(t, "ip", "netns", "add", nsName)
		// And an empty file where a namespace used to be mounted.
		if err := os.WriteFile(filepath.Join(netnsDir, node.cfg.Prefix+"pod-c"), nil, 0o444); err != nil {
			t.Fatal(err)
		}
		nsPath, ip := node.setup("pod-b")
		if nsPath != filepath.Join(netnsDir, nsName) {
			t.Errorf("SetupPod(pod-b) netns = %s, want the existing %s", nsPath, nsName)
		}
		var links []ipAddrInfo
		ipJSON(t, &links, "-n", nsName, "addr", "show", "dev", "eth0")
		if len(links) != 1 || !links[0].has(ip.String()) {
			t.Errorf("eth0 = %+v, want %s", links, ip)
		}
		if got := countAllocations(t, node.cfg.DataDir); got != 2 {
			t.Errorf("host-local holds %d addresses, want 2", got)
		}
	})
	t.Run("empty file where a netns was", func(t *testing.T) {
		nsPath, ip := node.setup("pod-c")
		var links []ipAddrInfo
		ipJSON(t, &links, "-n", filepath.Base(nsPath), "addr", "show", "dev", "eth0")
		if len(links) != 1 || !links[0].has(ip.String()) {
			t.Errorf("eth0 = %+v, want %s", links, ip)
		}
	})
}

func TestSetupPodConcurrent(t *testing.T) {
	skipUnlessRoot(t)
	node := newTestNode(t, "10.250.10.0/24")
	var uids []string
	for i := range 8 {
		uids = append(uids, fmt.Sprintf("pod-%d", i))
	}
	start := time.Now()
	resp := node.call(helperReq{Op: "setupmany", UIDs: uids})
	if resp.Err != "" {
		t.Fatalf("concurrent SetupPod: %s", resp.Err)
	}
	t.Logf("8 concurrent SetupPod calls (one process) took %v", time.Since(start).Round(time.Millisecond))
	seen := make(map[string]bool)
	for _, ip := range resp.IPs {
		if seen[ip] {
			t.Errorf("IP %s handed out twice: %v", ip, resp.IPs)
		}
		seen[ip] = true
	}
	if got := node.call(helperReq{Op: "pods"}); len(got.Pods) != len(uids) {
		t.Errorf("Pods() = %q, want %d pods", got.Pods, len(uids))
	}
}

// TestUnderIPNetnsExec runs an agent's whole pod lifecycle in one process
// started with `ip netns exec`, which also gives it a private mount
// namespace.
func TestUnderIPNetnsExec(t *testing.T) {
	skipUnlessRoot(t)
	node := newTestNode(t, "10.250.9.0/24")
	req := helperReq{Op: "lifecycle", UID: "pod-x", Config: node.cfg}
	raw, _ := json.Marshal(req)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", node.ns, exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr.String())
	}
	var resp helperResp
	if err := json.Unmarshal(out, &resp); err != nil || resp.Err != "" {
		t.Fatalf("lifecycle under ip netns exec = %s, %v\nlogs: %s", resp.Err, err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "private mount namespace") {
		t.Errorf("no warning about the private mount namespace; logs:\n%s", stderr.String())
	}
	if got := countAllocations(t, node.cfg.DataDir); got != 0 {
		t.Errorf("host-local holds %d addresses after teardown, want 0", got)
	}
}
