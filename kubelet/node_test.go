package kubelet

import (
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tether/tunnel"
)

func testSpec() nodeSpec {
	return nodeSpec{
		Name: "node-1",
		IP:   net.ParseIP("10.0.0.5"),
		Port: 10250,
		Info: machineInfo{
			CPUs: 4, MemoryBytes: 8 << 30, EphemeralStorageBytes: 100 << 30, Architecture: "amd64",
			KernelVersion: "6.1.0-18-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)",
			MachineID: "m", BootID: "b", ContainerRuntimeVersion: "runc://1.1.5",
		},
	}
}

func condition(n *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == t {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func TestNewNode(t *testing.T) {
	now := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	n := testSpec().newNode(now)

	wantLabels := map[string]string{"kubernetes.io/hostname": "node-1", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
	for k, v := range wantLabels {
		if n.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, n.Labels[k], v)
		}
	}
	if len(n.Labels) != len(wantLabels) {
		t.Errorf("labels = %v, want exactly %v", n.Labels, wantLabels)
	}
	wantAddrs := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.5"}, {Type: corev1.NodeHostName, Address: "node-1"}}
	if len(n.Status.Addresses) != 2 || n.Status.Addresses[0] != wantAddrs[0] || n.Status.Addresses[1] != wantAddrs[1] {
		t.Errorf("addresses = %v, want %v", n.Status.Addresses, wantAddrs)
	}
	if p := n.Status.DaemonEndpoints.KubeletEndpoint.Port; p != 10250 {
		t.Errorf("kubelet port = %d, want 10250", p)
	}
	for _, rl := range []corev1.ResourceList{n.Status.Capacity, n.Status.Allocatable} {
		for name, want := range map[corev1.ResourceName]string{"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"} {
			if q := rl[name]; q.Cmp(resource.MustParse(want)) != 0 {
				t.Errorf("%s = %s, want %s", name, q.String(), want)
			}
		}
	}
	info := n.Status.NodeInfo
	if !strings.HasPrefix(info.KubeletVersion, "v1.37.2-tether.") || info.OperatingSystem != "linux" || info.Architecture != "amd64" ||
		info.KernelVersion != "6.1.0-18-amd64" || info.OSImage != "Debian GNU/Linux 12 (bookworm)" || info.ContainerRuntimeVersion != "runc://1.1.5" {
		t.Errorf("nodeInfo = %+v", info)
	}
	for _, want := range []struct {
		t      corev1.NodeConditionType
		status corev1.ConditionStatus
		reason string
	}{
		{corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"},
		{corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"},
		{corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"},
		{corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"},
	} {
		c := condition(n, want.t)
		if c == nil || c.Status != want.status || c.Reason != want.reason || !c.LastHeartbeatTime.Time.Equal(now) || !c.LastTransitionTime.Time.Equal(now) {
			t.Errorf("condition %s = %+v, want %s %s at %s", want.t, c, want.status, want.reason, now)
		}
	}
	if len(n.Spec.Taints) != 0 || n.Spec.PodCIDR != "" {
		t.Errorf("spec = %+v, want nothing set by the agent", n.Spec)
	}
}

func TestNewNodeOmitsUnknownResources(t *testing.T) {
	s := testSpec()
	s.Info.MemoryBytes, s.Info.EphemeralStorageBytes = 0, 0
	n := s.newNode(time.Now())
	for _, r := range []corev1.ResourceName{corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
		if _, ok := n.Status.Capacity[r]; ok {
			t.Errorf("capacity has %s although it is unknown", r)
		}
	}
}

func TestStatusKeepsOthersAndTransitions(t *testing.T) {
	s := testSpec()
	t0 := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	cur := s.newNode(t0).Status
	// The node-lifecycle controller marked the node unreachable, and a
	// network plugin set its own condition.
	condition(&corev1.Node{Status: cur}, corev1.NodeReady).Status = corev1.ConditionUnknown
	cur.Conditions = append(cur.Conditions, corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "RouteCreated"})
	cur.Images = []corev1.ContainerImage{{Names: []string{"busybox"}}}

	if !s.statusDiffers(cur) {
		t.Errorf("statusDiffers = false for Ready=Unknown, want true")
	}
	got := &corev1.Node{Status: s.status(cur, t1)}
	if c := condition(got, corev1.NodeNetworkUnavailable); c == nil || c.Reason != "RouteCreated" {
		t.Errorf("NetworkUnavailable = %+v, want it kept", c)
	}
	if len(got.Status.Images) != 1 {
		t.Errorf("images = %v, want them kept", got.Status.Images)
	}
	ready := condition(got, corev1.NodeReady)
	if ready.Status != corev1.ConditionTrue || !ready.LastTransitionTime.Time.Equal(t1) || !ready.LastHeartbeatTime.Time.Equal(t1) {
		t.Errorf("Ready = %+v, want True, transitioned and heartbeat at %s", ready, t1)
	}
	mem := condition(got, corev1.NodeMemoryPressure)
	if !mem.LastTransitionTime.Time.Equal(t0) || !mem.LastHeartbeatTime.Time.Equal(t1) {
		t.Errorf("MemoryPressure = %+v, want transition %s kept and heartbeat %s", mem, t0, t1)
	}
	if s.statusDiffers(got.Status) {
		t.Errorf("statusDiffers = true right after status(), want false")
	}
	later := s.status(got.Status, t1.Add(time.Hour))
	if s.statusDiffers(later) {
		t.Errorf("statusDiffers = true for a status that differs only in heartbeat times")
	}
	moved := testSpec()
	moved.IP = net.ParseIP("10.0.0.6")
	if !moved.statusDiffers(got.Status) {
		t.Errorf("statusDiffers = false after the node IP changed")
	}
}

func TestLease(t *testing.T) {
	now := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	l := testSpec().lease("uid-1", now)
	if l.Namespace != "kube-node-lease" || l.Name != "node-1" || *l.Spec.HolderIdentity != "node-1" ||
		*l.Spec.LeaseDurationSeconds != 40 || !l.Spec.RenewTime.Time.Equal(now) {
		t.Errorf("lease = %+v", l)
	}
	want := metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: "node-1", UID: "uid-1"}
	if len(l.OwnerReferences) != 1 || l.OwnerReferences[0] != want {
		t.Errorf("owner references = %v, want [%v]", l.OwnerReferences, want)
	}
}

func TestDetectNodeIP(t *testing.T) {
	tests := []struct {
		server string
		want   string
	}{
		{"https://127.0.0.1:6443", "127.0.0.1"},
		{"https://127.0.0.1", "127.0.0.1"},
	}
	for _, tt := range tests {
		got, err := detectNodeIP(tt.server)
		if err != nil || got.String() != tt.want {
			t.Errorf("detectNodeIP(%q) = %v, %v; want %s", tt.server, got, err, tt.want)
		}
	}
	// The source address of the route to a non-local address is one of
	// this machine's addresses.
	if ip, err := detectNodeIP("https://192.0.2.200:6443"); err == nil {
		if !isLocal(t, ip) {
			t.Errorf("detectNodeIP(192.0.2.200) = %s, not an address of this machine", ip)
		}
	} else {
		t.Logf("no route to 192.0.2.200 here: %v", err)
	}
	for _, bad := range []string{"https://", "::not a url"} {
		if ip, err := detectNodeIP(bad); err == nil {
			t.Errorf("detectNodeIP(%q) = %s, want an error", bad, ip)
		}
	}
}

func isLocal(t *testing.T, ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func TestParseMachineFiles(t *testing.T) {
	mem, err := parseMemTotal("MemTotal:       16318480 kB\nMemFree:         1234 kB\n")
	if err != nil || mem != 16318480*1024 {
		t.Errorf("parseMemTotal = %d, %v; want %d", mem, err, 16318480*1024)
	}
	if _, err := parseMemTotal("MemFree: 1 kB\n"); err == nil {
		t.Errorf("parseMemTotal without MemTotal succeeded")
	}
	for in, want := range map[string]string{
		"NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n": "Debian GNU/Linux 12 (bookworm)",
		"PRETTY_NAME='Alpine Linux v3.20'\n":                                          "Alpine Linux v3.20",
		"PRETTY_NAME=Plain\n":                                                         "Plain",
		"ID=foo\n":                                                                    "Linux",
	} {
		if got := parseOSRelease(in); got != want {
			t.Errorf("parseOSRelease(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1\nspec: 1.0.2-dev\n": "1.1.5+ds1",
		"something else\n": "unknown",
	} {
		if got := parseRuncVersion(in); got != want {
			t.Errorf("parseRuncVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{
		Server:       "http://10.0.0.1:6443",
		Token:        "nope",
		CACertHashes: []string{"sha256:xyz"},
		NodeName:     "Node_1",
		NodeIP:       net.IPv4zero,
		KubeletPort:  70000,
	})
	if err == nil {
		t.Fatal("New with bad values succeeded")
	}
	for _, want := range []string{"https://", "token", "CA pin", "Node_1", "0.0.0.0", "70000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New error %q does not mention %q", err, want)
		}
	}
	a, err := New(Config{NodeName: "node-1", CACertHashes: []string{"sha256:" + strings.Repeat("AB", 32)}})
	if err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
	if a.cfg.DataDir != DefaultDataDir || a.cfg.KubeletPort != DefaultKubeletPort || a.cfg.HeartbeatInterval != DefaultHeartbeatInterval ||
		a.cfg.StatusReportInterval != DefaultStatusReportInterval || a.cfg.CACertHashes[0] != "sha256:"+strings.Repeat("ab", 32) {
		t.Errorf("defaults = %+v", a.cfg)
	}
}

// A node with --tunnel says so on its Node (the API server then reaches
// it only through the tunnel); one without removes what an earlier run
// with --tunnel left.
func TestNodeEgressAnnotation(t *testing.T) {
	tunnelled := nodeSpec{Name: "n", Tunnel: true}
	if got := tunnelled.newNode(time.Now()).Annotations[tunnel.EgressAnnotation]; got != tunnel.EgressTunnel {
		t.Errorf("registered Node's %s = %q, want %q", tunnel.EgressAnnotation, got, tunnel.EgressTunnel)
	}
	if _, has := (nodeSpec{Name: "n"}).newNode(time.Now()).Annotations[tunnel.EgressAnnotation]; has {
		t.Errorf("a node without --tunnel registered with %s", tunnel.EgressAnnotation)
	}
	marked := map[string]string{tunnel.EgressAnnotation: tunnel.EgressTunnel, "other": "x"}
	for _, tc := range []struct {
		spec        nodeSpec
		annotations map[string]string
		differ      bool
	}{
		{tunnelled, marked, false},
		{tunnelled, map[string]string{"other": "x"}, true},
		{tunnelled, map[string]string{tunnel.EgressAnnotation: "direct"}, true},
		{nodeSpec{Name: "n"}, marked, true},
		{nodeSpec{Name: "n"}, map[string]string{"other": "x"}, false},
		{nodeSpec{Name: "n"}, nil, false},
	} {
		if got := tc.spec.annotationsDiffer(tc.annotations); got != tc.differ {
			t.Errorf("Tunnel=%v, annotations %v: annotationsDiffer = %v, want %v", tc.spec.Tunnel, tc.annotations, got, tc.differ)
		}
	}
}
