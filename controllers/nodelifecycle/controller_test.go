package nodelifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

// The times a test waits, in the fake time of its synctest bubble.
const (
	renewInterval = 10 * time.Second // the kubelet's lease renewal period
	// markedWithin is how long after a node's last sign of life it is
	// surely marked: the grace period, then up to one monitor period.
	markedWithin = DefaultGracePeriod + DefaultMonitorPeriod + time.Second
)

// readyNode returns a Node whose kubelet last reported Ready=True, with no
// pressure, at heartbeat.
func readyNode(name string, heartbeat time.Time) *corev1.Node {
	hb := metav1.NewTime(heartbeat)
	c := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, LastHeartbeatTime: hb, LastTransitionTime: hb}
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			c(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"),
			c(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"),
			c(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"),
			c(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"),
		}},
	}
}

func lease(name string, renew time.Time) *coordinationv1.Lease {
	rt := metav1.NewMicroTime(renew)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: name},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &name, RenewTime: &rt},
	}
}

type fixture struct {
	client *fake.Clientset
	c      *Controller
}

func newFixture(t *testing.T, objects ...runtime.Object) *fixture {
	t.Helper()
	return newFixtureWith(t, Config{}, objects...)
}

// newFixtureWith builds a controller from cfg, with Client and (unless set)
// Logger filled in.
func newFixtureWith(t *testing.T, cfg Config, objects ...runtime.Object) *fixture {
	t.Helper()
	for _, o := range objects {
		if n, ok := o.(*corev1.Node); ok && n.ResourceVersion == "" {
			n.ResourceVersion = "1"
		}
	}
	client := fake.NewClientset(objects...)
	serveNodesLikeAPIServer(client)
	cfg.Client = client
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &fixture{client: client, c: c}
}

// serveNodesLikeAPIServer makes the fake clientset's Node updates behave
// like the apiserver's: a stale resourceVersion gets 409 Conflict, every
// write gets a new resourceVersion, the status subresource writes only
// status and the main resource everything else.
func serveNodesLikeAPIServer(client *fake.Clientset) {
	gvr := corev1.SchemeGroupVersion.WithResource("nodes")
	var mu sync.Mutex
	version := 100
	client.PrependReactor("update", "nodes", func(a clienttesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		in := a.(clienttesting.UpdateAction).GetObject().(*corev1.Node)
		stored, err := client.Tracker().Get(gvr, "", in.Name)
		if err != nil {
			return true, nil, err
		}
		cur := stored.(*corev1.Node)
		if in.ResourceVersion != "" && in.ResourceVersion != cur.ResourceVersion {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), in.Name,
				fmt.Errorf("resourceVersion %s is stale, stored is %s", in.ResourceVersion, cur.ResourceVersion))
		}
		out := in.DeepCopy()
		if a.GetSubresource() == "status" {
			out = cur.DeepCopy()
			out.Status = in.Status
		} else {
			out.Status = cur.Status
		}
		version++
		out.ResourceVersion = strconv.Itoa(version)
		if err := client.Tracker().Update(gvr, out, ""); err != nil {
			return true, nil, err
		}
		return true, out, nil
	})
}

// start runs the controller until the test ends and waits until it has
// nothing left to do. It must be called inside a synctest bubble.
func (f *fixture) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	select {
	case <-f.c.Ready():
	case err := <-done:
		t.Fatalf("Run() returned %v before Ready", err)
	}
	synctest.Wait()
}

// advance lets fake time pass and waits until the controller is idle.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// kubelet plays a node's kubelet for d: it renews the lease every 10 s and,
// if status is set, posts a Ready=True heartbeat as well.
func (f *fixture) kubelet(t *testing.T, name string, d time.Duration, renewLease, status bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		advance(renewInterval)
		if renewLease {
			f.renew(t, name)
		}
		if status {
			f.postReady(t, name)
		}
	}
}

func (f *fixture) renew(t *testing.T, name string) {
	t.Helper()
	l, err := f.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get lease %s: %v", name, err)
	}
	now := metav1.NewMicroTime(time.Now())
	l.Spec.RenewTime = &now
	if _, err := f.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Update(t.Context(), l, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("renew lease %s: %v", name, err)
	}
	synctest.Wait()
}

// postReady is the kubelet's status update: Ready=True, no pressure,
// heartbeat now. It keeps the node's spec (taints included).
func (f *fixture) postReady(t *testing.T, name string) {
	t.Helper()
	n := f.node(t, name)
	n.Status = readyNode(name, time.Now()).Status
	if _, err := f.client.CoreV1().Nodes().UpdateStatus(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("post status of node %s: %v", name, err)
	}
	synctest.Wait()
}

func (f *fixture) node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := f.client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get node %s: %v", name, err)
	}
	return n
}

// writes returns the controller's writes to Nodes as "verb/subresource",
// leaving out the test's own kubelet writes (status updates that set
// Ready=True).
func (f *fixture) writes() []string {
	var out []string
	for _, a := range f.client.Actions() {
		if a.GetResource().Resource != "nodes" {
			continue
		}
		switch a.GetVerb() {
		case "update", "patch":
			if u, ok := a.(clienttesting.UpdateAction); ok && a.GetSubresource() == "status" {
				if n, ok := u.GetObject().(*corev1.Node); ok && readyStatus(n) == corev1.ConditionTrue {
					continue // the test's kubelet
				}
			}
			out = append(out, a.GetVerb()+"/"+a.GetSubresource())
		}
	}
	return out
}

// events returns the reasons of the Events about Node name.
func (f *fixture) events(t *testing.T, name string) []string {
	t.Helper()
	list, err := f.client.CoreV1().Events(metav1.NamespaceDefault).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list events: %v", err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

func hasTaint(n *corev1.Node, key string) *corev1.Taint {
	for i, t := range n.Spec.Taints {
		if t.Key == key && t.Effect == corev1.TaintEffectNoExecute {
			return &n.Spec.Taints[i]
		}
	}
	return nil
}

// checkUnknown checks that node name is marked Unknown and tainted
// unreachable, and not tainted not-ready.
func (f *fixture) checkUnknown(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n := f.node(t, name)
	ready := condition(&n.Status, corev1.NodeReady)
	if ready == nil || ready.Status != corev1.ConditionUnknown || ready.Reason != ReasonNodeStatusUnknown || ready.Message != MessageNodeStatusUnknown {
		t.Errorf("node %s Ready = %+v, want Unknown/%s/%q", name, ready, ReasonNodeStatusUnknown, MessageNodeStatusUnknown)
	}
	if hasTaint(n, corev1.TaintNodeUnreachable) == nil {
		t.Errorf("node %s taints = %v, want %s:NoExecute", name, n.Spec.Taints, corev1.TaintNodeUnreachable)
	}
	if hasTaint(n, corev1.TaintNodeNotReady) != nil {
		t.Errorf("node %s taints = %v, want no %s", name, n.Spec.Taints, corev1.TaintNodeNotReady)
	}
	return n
}

func TestFreshLeaseIsUntouched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		f := newFixture(t, readyNode("n1", now), lease("n1", now))
		f.start(t)
		// The kubelet renews its lease but posts no status for 3 minutes:
		// the lease alone keeps the node Ready.
		f.kubelet(t, "n1", 3*time.Minute, true, false)

		if w := f.writes(); len(w) != 0 {
			t.Errorf("controller writes to nodes = %v, want none", w)
		}
		n := f.node(t, "n1")
		if s := readyStatus(n); s != corev1.ConditionTrue || len(n.Spec.Taints) != 0 {
			t.Errorf("node n1: Ready %s, taints %v, want True and none", s, n.Spec.Taints)
		}
		if ev := f.events(t, "n1"); len(ev) != 0 {
			t.Errorf("events about n1 = %v, want none", ev)
		}
	})
}

func TestStaleLeaseMarksUnknownOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		long := time.Now().Add(-time.Hour)
		f := newFixture(t, readyNode("n1", long), lease("n1", long))
		f.start(t)
		started := time.Now()

		// Every node gets a full grace period after the controller starts.
		advance(DefaultGracePeriod - time.Second)
		if w := f.writes(); len(w) != 0 {
			t.Fatalf("writes within the grace period = %v, want none", w)
		}
		advance(markedWithin - DefaultGracePeriod + time.Second)

		n := f.checkUnknown(t, "n1")
		for _, c := range n.Status.Conditions {
			if c.Status != corev1.ConditionUnknown || c.Reason != ReasonNodeStatusUnknown {
				t.Errorf("%s = %s/%s, want Unknown/%s", c.Type, c.Status, c.Reason, ReasonNodeStatusUnknown)
			}
			if !c.LastHeartbeatTime.Time.Equal(long) {
				t.Errorf("%s lastHeartbeatTime = %v, want the kubelet's %v", c.Type, c.LastHeartbeatTime, long)
			}
			if d := c.LastTransitionTime.Sub(started); d < DefaultGracePeriod || d > DefaultGracePeriod+DefaultMonitorPeriod {
				t.Errorf("%s lastTransitionTime = %v, want %v to %v after the start at %v", c.Type, c.LastTransitionTime, DefaultGracePeriod, DefaultGracePeriod+DefaultMonitorPeriod, started)
			}
		}
		if taint := hasTaint(n, corev1.TaintNodeUnreachable); taint != nil && taint.TimeAdded == nil {
			t.Errorf("unreachable taint has no timeAdded")
		}
		if ev := f.events(t, "n1"); len(ev) != 1 || ev[0] != ReasonNodeNotReady {
			t.Errorf("events about n1 = %v, want [%s]", ev, ReasonNodeNotReady)
		}
		want := []string{"update/status", "update/"}
		if w := f.writes(); strings.Join(w, " ") != strings.Join(want, " ") {
			t.Errorf("controller writes = %v, want %v", w, want)
		}

		// Idempotent: staying silent causes no more writes or events.
		advance(5 * time.Minute)
		if w := f.writes(); len(w) != len(want) {
			t.Errorf("controller writes after 5 more minutes = %v, want still %v", w, want)
		}
		if ev := f.events(t, "n1"); len(ev) != 1 {
			t.Errorf("events about n1 after 5 more minutes = %v, want one", ev)
		}
	})
}

func TestRenewalThenReadyRemovesTaint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		f := newFixture(t, readyNode("n1", now), lease("n1", now))
		f.start(t)
		advance(markedWithin)
		f.checkUnknown(t, "n1")

		// The lease comes back first: the node stays Unknown and tainted
		// until its kubelet says it is Ready.
		f.renew(t, "n1")
		advance(DefaultMonitorPeriod)
		f.checkUnknown(t, "n1")

		f.postReady(t, "n1")
		n := f.node(t, "n1")
		if s := readyStatus(n); s != corev1.ConditionTrue {
			t.Errorf("node n1 Ready = %s, want True", s)
		}
		if len(n.Spec.Taints) != 0 {
			t.Errorf("node n1 taints = %v after Ready=True, want none", n.Spec.Taints)
		}
		before := len(f.writes())

		// Alive again, with lease and status, for a while: left alone.
		f.kubelet(t, "n1", 2*time.Minute, true, true)
		if w := f.writes(); len(w) != before {
			t.Errorf("controller writes while the node is alive = %v, want none after the first %d", w[before:], before)
		}
	})
}

func TestNodeWithoutLeaseUsesHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, readyNode("n1", time.Now()))
		f.start(t)
		f.kubelet(t, "n1", 2*time.Minute, false, true)
		if w := f.writes(); len(w) != 0 {
			t.Fatalf("writes while heartbeats arrive = %v, want none", w)
		}
		advance(DefaultGracePeriod - time.Second)
		if w := f.writes(); len(w) != 0 {
			t.Fatalf("writes within the grace period after the last heartbeat = %v, want none", w)
		}
		advance(DefaultMonitorPeriod + 2*time.Second)
		f.checkUnknown(t, "n1")
	})
}

func TestAlreadyMarkedNodeIsNotWrittenAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// What an earlier run of the controller left behind.
		long := time.Now().Add(-time.Hour)
		n, _ := markUnknown(readyNode("n1", long), long.Add(time.Minute))
		n.Spec.Taints, _ = wantTaints(n, long.Add(time.Minute))
		f := newFixture(t, n, lease("n1", long))
		f.start(t)
		advance(5 * time.Minute)
		f.checkUnknown(t, "n1")
		if w := f.writes(); len(w) != 0 {
			t.Errorf("controller writes = %v, want none", w)
		}
		if ev := f.events(t, "n1"); len(ev) != 0 {
			t.Errorf("events = %v, want none: the transition happened before", ev)
		}
	})
}

func TestNotReadyTaintFollowsReadyFalse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		notReady := readyNode("n1", now)
		ready := condition(&notReady.Status, corev1.NodeReady)
		ready.Status, ready.Reason = corev1.ConditionFalse, "KubeletNotReady"
		f := newFixture(t, notReady, lease("n1", now))
		f.start(t)

		n := f.node(t, "n1")
		if hasTaint(n, corev1.TaintNodeNotReady) == nil || hasTaint(n, corev1.TaintNodeUnreachable) != nil {
			t.Errorf("node n1 with Ready=False: taints %v, want %s:NoExecute only", n.Spec.Taints, corev1.TaintNodeNotReady)
		}
		if w := f.writes(); len(w) != 1 || w[0] != "update/" {
			t.Errorf("controller writes = %v, want one taint update and no status write", w)
		}
		f.postReady(t, "n1")
		if n := f.node(t, "n1"); len(n.Spec.Taints) != 0 {
			t.Errorf("node n1 taints after Ready=True = %v, want none", n.Spec.Taints)
		}
	})
}

func TestNodeThatNeverReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
		f.start(t)
		if w := f.writes(); len(w) != 0 {
			t.Fatalf("writes before the grace period = %v, want none", w)
		}
		advance(markedWithin)
		n := f.node(t, "n1")
		ready := condition(&n.Status, corev1.NodeReady)
		if ready == nil || ready.Status != corev1.ConditionUnknown || ready.Reason != ReasonNodeStatusNeverUpdated {
			t.Errorf("Ready = %+v, want Unknown/%s", ready, ReasonNodeStatusNeverUpdated)
		}
		if len(n.Status.Conditions) != 1 {
			t.Errorf("conditions = %v, want Ready only", n.Status.Conditions)
		}
		if hasTaint(n, corev1.TaintNodeUnreachable) == nil {
			t.Errorf("taints = %v, want %s:NoExecute", n.Spec.Taints, corev1.TaintNodeUnreachable)
		}
	})
}

// A conflict (the kubelet wrote first) is retried against the fresh Node.
func TestStatusConflictIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		f := newFixture(t, readyNode("n1", now), lease("n1", now))
		conflicts := 1
		f.client.PrependReactor("update", "nodes", func(a clienttesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() == "status" && conflicts > 0 {
				conflicts--
				return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "n1", nil)
			}
			return false, nil, nil
		})
		f.start(t)
		advance(markedWithin)
		f.checkUnknown(t, "n1")
	})
}

func TestDeletedNodeIsForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		f := newFixture(t, readyNode("n1", now), lease("n1", now))
		f.start(t)
		if err := f.client.CoreV1().Nodes().Delete(t.Context(), "n1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		f.c.mu.Lock()
		_, ok := f.c.health["n1"]
		f.c.mu.Unlock()
		if ok {
			t.Errorf("health of deleted node n1 still kept")
		}
		advance(markedWithin)
		if w := f.writes(); len(w) != 0 {
			t.Errorf("writes = %v, want none for a deleted node", w)
		}
	})
}

func TestNowIsUsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A clock an hour ahead of the bubble's: times written come from it.
		ahead := func() time.Time { return time.Now().Add(time.Hour) }
		now := time.Now()
		f := newFixtureWith(t, Config{Now: ahead}, readyNode("n1", now), lease("n1", now))
		f.start(t)
		advance(markedWithin)
		n := f.checkUnknown(t, "n1")
		ready := condition(&n.Status, corev1.NodeReady)
		if d := ready.LastTransitionTime.Time.Sub(now); d < time.Hour {
			t.Errorf("lastTransitionTime = %v, want from the injected clock (>= %v)", ready.LastTransitionTime, now.Add(time.Hour))
		}
	})
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{GracePeriod: -1, MonitorPeriod: -1})
	if err == nil {
		t.Fatal("New(bad config) = nil error, want one")
	}
	for _, want := range []string{"Client", "GracePeriod", "MonitorPeriod"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New(bad config) error %q does not mention %s", err, want)
		}
	}
	c, err := New(Config{Client: fake.NewClientset()})
	if err != nil {
		t.Fatalf("New(minimal) = %v", err)
	}
	if c.grace != DefaultGracePeriod || c.monitor != DefaultMonitorPeriod || c.now == nil {
		t.Errorf("defaults: grace %v, monitor %v, now set %v; want %v, %v, true", c.grace, c.monitor, c.now != nil, DefaultGracePeriod, DefaultMonitorPeriod)
	}
}
