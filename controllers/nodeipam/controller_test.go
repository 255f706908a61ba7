package nodeipam

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

func node(name string, podCIDRs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDRs[0], podCIDRs
	}
	return n
}

// fixture is a controller wired to a fake clientset.
type fixture struct {
	client *fake.Clientset
	cfg    Config
}

func newFixture(t *testing.T, clusterCIDR string, mask int, nodes ...runtime.Object) *fixture {
	t.Helper()
	return &fixture{
		client: fake.NewClientset(nodes...),
		cfg: Config{
			ClusterCIDR:  mustCIDR(t, clusterCIDR),
			NodeMaskSize: mask,
			Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		},
	}
}

// start runs a new controller until stop is called or the test ends, and
// waits until it has nothing left to do. It must be called inside a
// synctest bubble.
func (f *fixture) start(t *testing.T) (stop func()) {
	t.Helper()
	cfg := f.cfg
	cfg.Client = f.client
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		synctest.Wait() // let the event broadcaster's goroutines exit
	}
	t.Cleanup(stop)
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run() returned %v before Ready", err)
	}
	synctest.Wait()
	return stop
}

func (f *fixture) create(t *testing.T, n *corev1.Node) {
	t.Helper()
	if _, err := f.client.CoreV1().Nodes().Create(t.Context(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", n.Name, err)
	}
	synctest.Wait()
}

func (f *fixture) delete(t *testing.T, name string) {
	t.Helper()
	if err := f.client.CoreV1().Nodes().Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete node %s: %v", name, err)
	}
	synctest.Wait()
}

// podCIDR returns the node's spec.podCIDR and checks that spec.podCIDRs
// agrees with it.
func (f *fixture) podCIDR(t *testing.T, name string) string {
	t.Helper()
	n, err := f.client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get node %s: %v", name, err)
	}
	want := []string(nil)
	if n.Spec.PodCIDR != "" {
		want = []string{n.Spec.PodCIDR}
	}
	if !slices.Equal(n.Spec.PodCIDRs, want) {
		t.Errorf("node %s: spec.podCIDRs = %v, want %v (matching spec.podCIDR)", name, n.Spec.PodCIDRs, want)
	}
	return n.Spec.PodCIDR
}

// patches returns the names of the Nodes patched, in order.
func (f *fixture) patches() []string {
	var out []string
	for _, a := range f.client.Actions() {
		if p, ok := a.(clienttesting.PatchAction); ok && a.GetResource().Resource == "nodes" {
			out = append(out, p.GetName())
		}
	}
	return out
}

// events returns the Events recorded about Node name, as "reason: message".
func (f *fixture) events(t *testing.T, name string) []string {
	t.Helper()
	list, err := f.client.CoreV1().Events(metav1.NamespaceDefault).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list events: %v", err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == name {
			out = append(out, e.Reason+": "+e.Message)
		}
	}
	return out
}

func TestAllocationOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "10.244.0.0/16", 0)
		f.start(t)
		for i, want := range []string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"} {
			name := fmt.Sprintf("node-%d", i)
			f.create(t, node(name))
			if got := f.podCIDR(t, name); got != want {
				t.Errorf("node %s: podCIDR = %q, want %q", name, got, want)
			}
		}
		if got, want := f.patches(), []string{"node-0", "node-1", "node-2"}; !slices.Equal(got, want) {
			t.Errorf("patched nodes = %v, want %v (each once)", got, want)
		}
	})
}

func TestReuseAfterDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "10.0.0.0/22", 24)
		f.start(t)
		for i := range 4 {
			f.create(t, node(fmt.Sprintf("node-%d", i)))
		}
		if got := f.podCIDR(t, "node-1"); got != "10.0.1.0/24" {
			t.Fatalf("node-1: podCIDR = %q, want 10.0.1.0/24", got)
		}
		f.delete(t, "node-1")
		f.create(t, node("node-4"))
		if got := f.podCIDR(t, "node-4"); got != "10.0.1.0/24" {
			t.Errorf("node-4: podCIDR = %q, want node-1's freed 10.0.1.0/24", got)
		}
	})
}

func TestExhaustionThenRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "10.0.0.0/22", 24)
		f.start(t)
		for i := range 4 {
			f.create(t, node(fmt.Sprintf("node-%d", i)))
		}
		f.create(t, node("late"))
		if got := f.podCIDR(t, "late"); got != "" {
			t.Errorf("late: podCIDR = %q on a full range, want none", got)
		}
		evs := f.events(t, "late")
		if len(evs) != 1 || !strings.HasPrefix(evs[0], ReasonCIDRNotAvailable+": ") || !strings.Contains(evs[0], "10.0.0.0/22") {
			t.Errorf("events about late = %q, want one %s naming 10.0.0.0/22", evs, ReasonCIDRNotAvailable)
		}

		// Freeing a subnet wakes the waiting node without a resync.
		f.delete(t, "node-2")
		if got := f.podCIDR(t, "late"); got != "10.0.2.0/24" {
			t.Errorf("late: podCIDR after node-2 left = %q, want 10.0.2.0/24", got)
		}
	})
}

func TestSmallRangeWithSlash31(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "192.168.0.0/30", 31)
		f.start(t)
		for _, name := range []string{"a", "b", "c"} {
			f.create(t, node(name))
		}
		got := []string{f.podCIDR(t, "a"), f.podCIDR(t, "b"), f.podCIDR(t, "c")}
		if want := []string{"192.168.0.0/31", "192.168.0.2/31", ""}; !slices.Equal(got, want) {
			t.Errorf("podCIDRs of a, b, c = %q, want %q", got, want)
		}
		if evs := f.events(t, "c"); len(evs) != 1 {
			t.Errorf("events about c = %q, want one %s", evs, ReasonCIDRNotAvailable)
		}
	})
}

func TestRestartRebuildsState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "10.0.0.0/22", 24)
		stop := f.start(t)
		f.create(t, node("a"))
		f.create(t, node("b"))
		stop()

		// While no controller runs, a is deleted and c joins.
		if err := f.client.CoreV1().Nodes().Delete(t.Context(), "a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.client.CoreV1().Nodes().Create(t.Context(), node("c"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.client.ClearActions()

		f.start(t)
		// b's subnet is known to be taken; a's is free again, so c (next
		// fit restarts at the beginning) gets it.
		if got := f.podCIDR(t, "c"); got != "10.0.0.0/24" {
			t.Errorf("c: podCIDR = %q, want a's freed 10.0.0.0/24", got)
		}
		f.create(t, node("d"))
		if got := f.podCIDR(t, "d"); got != "10.0.2.0/24" {
			t.Errorf("d: podCIDR = %q, want 10.0.2.0/24 (10.0.1.0/24 is b's)", got)
		}
		if got := f.podCIDR(t, "b"); got != "10.0.1.0/24" {
			t.Errorf("b: podCIDR = %q, want its own 10.0.1.0/24 kept", got)
		}
		if got, want := f.patches(), []string{"c", "d"}; !slices.Equal(got, want) {
			t.Errorf("patched nodes after restart = %v, want %v", got, want)
		}
	})
}

func TestExistingCIDRsRespected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "10.0.0.0/22", 24,
			node("inside", "10.0.0.0/24"),
			node("half", "10.0.1.128/25"),
			node("outside", "192.168.7.0/24"),
		)
		// A node registered with a pod CIDR only in the singular field.
		legacy := node("legacy")
		legacy.Spec.PodCIDR = "10.0.3.0/24"
		if err := f.client.Tracker().Add(legacy); err != nil {
			t.Fatal(err)
		}
		f.start(t)

		f.create(t, node("new"))
		if got := f.podCIDR(t, "new"); got != "10.0.2.0/24" {
			t.Errorf("new: podCIDR = %q, want 10.0.2.0/24, the one subnet nobody overlaps", got)
		}
		if got, want := f.patches(), []string{"new"}; !slices.Equal(got, want) {
			t.Errorf("patched nodes = %v, want %v: nodes with a pod CIDR are left alone", got, want)
		}
		f.create(t, node("newer"))
		if got := f.podCIDR(t, "newer"); got != "" {
			t.Errorf("newer: podCIDR = %q, want none (range full)", got)
		}
	})
}

func TestServiceCIDRIsSkipped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "10.0.0.0/22", 24)
		f.cfg.ServiceCIDR = mustCIDR(t, "10.0.1.0/24")
		f.start(t)
		f.create(t, node("a"))
		f.create(t, node("b"))
		if got := []string{f.podCIDR(t, "a"), f.podCIDR(t, "b")}; !slices.Equal(got, []string{"10.0.0.0/24", "10.0.2.0/24"}) {
			t.Errorf("podCIDRs of a, b = %q, want the subnets around the service CIDR", got)
		}
	})
}

// A node that writes its spec without the pod CIDR (the real apiserver
// refuses that; the fake does not) gets the same subnet back, not a new one.
func TestNodeUpdateDoesNotReallocate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "10.0.0.0/22", 24)
		f.start(t)
		f.create(t, node("a"))
		if got := f.podCIDR(t, "a"); got != "10.0.0.0/24" {
			t.Fatalf("a: podCIDR = %q, want 10.0.0.0/24", got)
		}
		stale := node("a")
		stale.Labels = map[string]string{"kubernetes.io/hostname": "a"}
		if _, err := f.client.CoreV1().Nodes().Update(t.Context(), stale, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := f.podCIDR(t, "a"); got != "10.0.0.0/24" {
			t.Errorf("a: podCIDR after a stale update = %q, want 10.0.0.0/24 again", got)
		}
		f.create(t, node("b"))
		if got := f.podCIDR(t, "b"); got != "10.0.1.0/24" {
			t.Errorf("b: podCIDR = %q, want 10.0.1.0/24 (only one subnet used so far)", got)
		}
	})
}

func TestConcurrentAllocationsAreUnique(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 200
		var nodes []runtime.Object
		for i := range n {
			nodes = append(nodes, node(fmt.Sprintf("node-%03d", i)))
		}
		f := newFixture(t, "10.0.0.0/16", 24, nodes...)
		f.start(t)
		seen := map[string]string{}
		for i := range n {
			name := fmt.Sprintf("node-%03d", i)
			cidr := f.podCIDR(t, name)
			if cidr == "" {
				t.Errorf("node %s: no podCIDR", name)
				continue
			}
			if other, dup := seen[cidr]; dup {
				t.Errorf("nodes %s and %s both got %s", other, name, cidr)
			}
			seen[cidr] = name
		}
		if got := len(f.patches()); got != n {
			t.Errorf("patches = %d, want %d (one per node)", got, n)
		}
	})
}

func TestPatchFailureRetriesSameSubnet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "10.0.0.0/22", 24)
		failures := 2
		f.client.PrependReactor("patch", "nodes", func(clienttesting.Action) (bool, runtime.Object, error) {
			if failures > 0 {
				failures--
				return true, nil, fmt.Errorf("apiserver unavailable")
			}
			return false, nil, nil
		})
		f.start(t)
		f.create(t, node("a"))
		time.Sleep(time.Second) // past the first back-offs, in fake time
		synctest.Wait()
		if got := f.podCIDR(t, "a"); got != "10.0.0.0/24" {
			t.Errorf("a: podCIDR after two failed patches = %q, want 10.0.0.0/24", got)
		}
		f.create(t, node("b"))
		if got := f.podCIDR(t, "b"); got != "10.0.1.0/24" {
			t.Errorf("b: podCIDR = %q, want 10.0.1.0/24: the failed attempts used no other subnet", got)
		}
	})
}

func TestNewValidates(t *testing.T) {
	ipv4 := &net.IPNet{IP: net.IPv4(10, 0, 0, 0).To4(), Mask: net.CIDRMask(16, 32)}
	_, ipv6, _ := net.ParseCIDR("fd00:10::/48")
	client := fake.NewClientset()
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"empty", Config{}, []string{"Client is required", "ClusterCIDR is required"}},
		{"ipv6", Config{Client: client, ClusterCIDR: ipv6}, []string{"only IPv4"}},
		{"mask too short", Config{Client: client, ClusterCIDR: ipv4, NodeMaskSize: 8}, []string{"/8 does not fit"}},
		{"mask too long", Config{Client: client, ClusterCIDR: ipv4, NodeMaskSize: 33}, []string{"want /16 to /32"}},
		{"service CIDR covers all", Config{Client: client, ClusterCIDR: ipv4, ServiceCIDR: mustCIDR(t, "10.0.0.0/8")}, []string{"no node subnet left"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil {
				t.Fatalf("New(%+v) = nil error, want one", tc.cfg)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New() error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := New(Config{Client: client, ClusterCIDR: ipv4}); err != nil {
		t.Errorf("New(valid) = %v, want nil", err)
	}
}
