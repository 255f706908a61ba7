package prober

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// fakeRuntime answers exec probes: the command's first word names a check
// whose exit code the test sets; it counts calls per check.
type fakeRuntime struct {
	mu    sync.Mutex
	codes map[string]int // check → exit code; missing means 0
	calls map[string]int
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{codes: make(map[string]int), calls: make(map[string]int)}
}

func (f *fakeRuntime) exec(_ context.Context, id string, cmd []string, _ time.Duration) ([]byte, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := id + "/" + cmd[0]
	f.calls[key]++
	return nil, f.codes[key], nil
}

func (f *fakeRuntime) set(id, check string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.codes[id+"/"+check] = code
}

func (f *fakeRuntime) count(id, check string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id+"/"+check]
}

// recorder keeps the Updates a Manager delivers.
type recorder struct {
	mu      sync.Mutex
	updates []Update
}

func (r *recorder) add(u Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u.Message = ""
	r.updates = append(r.updates, u)
}

func (r *recorder) take() []Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.updates
	r.updates = nil
	return out
}

func execProbe(check string, initialDelay, period, success, failure int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:        corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{check}}},
		InitialDelaySeconds: initialDelay,
		PeriodSeconds:       period,
		SuccessThreshold:    success,
		FailureThreshold:    failure,
	}
}

func probePod(c corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "uid-1"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
		Status:     corev1.PodStatus{PodIP: "10.244.0.5"},
	}
}

// at sleeps until d after start and lets the workers settle.
func at(start time.Time, d time.Duration) {
	time.Sleep(time.Until(start.Add(d)))
	synctest.Wait()
}

func TestManagerReadinessThresholds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, rec := newFakeRuntime(), &recorder{}
		m := NewManager(rt.exec, rec.add, nil)
		defer m.Stop()
		pod := probePod(corev1.Container{Name: "app", ReadinessProbe: execProbe("ready", 2, 1, 2, 2)})
		start := time.Now()
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c1", StartedAt: start}})
		synctest.Wait()

		check := func(when string, wantReady bool, wantCalls int) {
			t.Helper()
			if got := m.Ready("uid-1", "app"); got != wantReady {
				t.Errorf("%s: Ready() = %v, want %v", when, got, wantReady)
			}
			if got := rt.count("c1", "ready"); got != wantCalls {
				t.Errorf("%s: probe ran %d times, want %d", when, got, wantCalls)
			}
		}
		check("at start", false, 0)
		if !m.Started("uid-1", "app") {
			t.Errorf("Started() = false for a container without a startup probe")
		}
		at(start, 1500*time.Millisecond)
		check("in the initial delay", false, 0)
		at(start, 2500*time.Millisecond)
		check("after one success", false, 1)
		at(start, 3500*time.Millisecond)
		check("after two successes", true, 2)
		if got, want := rec.take(), []Update{{PodUID: "uid-1", Container: "app", ContainerID: "c1", Kind: Readiness, Result: Success}}; !slices.Equal(got, want) {
			t.Errorf("updates = %+v, want %+v", got, want)
		}

		rt.set("c1", "ready", 1)
		at(start, 4500*time.Millisecond)
		check("after one failure", true, 3)
		at(start, 5500*time.Millisecond)
		check("after two failures", false, 4)
		if got, want := rec.take(), []Update{{PodUID: "uid-1", Container: "app", ContainerID: "c1", Kind: Readiness, Result: Failure}}; !slices.Equal(got, want) {
			t.Errorf("updates = %+v, want %+v", got, want)
		}
		// Readiness keeps probing after failures.
		rt.set("c1", "ready", 0)
		at(start, 7500*time.Millisecond)
		check("recovered", true, 6)
	})
}

func TestManagerLivenessRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, rec := newFakeRuntime(), &recorder{}
		m := NewManager(rt.exec, rec.add, nil)
		defer m.Stop()
		pod := probePod(corev1.Container{Name: "app", LivenessProbe: execProbe("live", 0, 1, 0, 0)})
		start := time.Now()
		rt.set("c1", "live", 1)
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c1", StartedAt: start}})
		synctest.Wait()
		// Failure threshold defaults to 3: probes at 0s, 1s, 2s.
		at(start, 1500*time.Millisecond)
		if got := rec.take(); len(got) != 0 {
			t.Fatalf("updates before the threshold: %+v", got)
		}
		at(start, 2500*time.Millisecond)
		want := []Update{{PodUID: "uid-1", Container: "app", ContainerID: "c1", Kind: Liveness, Result: Failure}}
		if got := rec.take(); !slices.Equal(got, want) {
			t.Fatalf("updates = %+v, want %+v", got, want)
		}
		// On hold until the container is replaced.
		at(start, 6*time.Second)
		if got := rt.count("c1", "live"); got != 3 {
			t.Errorf("liveness probe ran %d times after failing, want 3", got)
		}
		if !m.Ready("uid-1", "app") {
			t.Errorf("Ready() = false for a container without a readiness probe")
		}

		// The sync loop restarts the container: a fresh worker, live again.
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c2", StartedAt: time.Now()}})
		synctest.Wait()
		if got := rt.count("c2", "live"); got != 1 {
			t.Errorf("new container probed %d times, want 1", got)
		}
		at(start, 10*time.Second)
		if got := rt.count("c1", "live"); got != 3 {
			t.Errorf("old container probed %d times, want 3", got)
		}
		if got := rec.take(); len(got) != 0 {
			t.Errorf("updates for a healthy new container: %+v", got)
		}
	})
}

func TestManagerStartupGating(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, rec := newFakeRuntime(), &recorder{}
		m := NewManager(rt.exec, rec.add, nil)
		defer m.Stop()
		pod := probePod(corev1.Container{
			Name:           "app",
			StartupProbe:   execProbe("startup", 0, 1, 1, 10),
			LivenessProbe:  execProbe("live", 0, 5, 1, 1),
			ReadinessProbe: execProbe("ready", 0, 5, 1, 1),
		})
		start := time.Now()
		rt.set("c1", "startup", 1)
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c1", StartedAt: start}})
		at(start, 2500*time.Millisecond)
		if m.Started("uid-1", "app") || m.Ready("uid-1", "app") {
			t.Errorf("Started() or Ready() true before the startup probe passed")
		}
		if l, r := rt.count("c1", "live"), rt.count("c1", "ready"); l != 0 || r != 0 {
			t.Errorf("liveness/readiness ran %d/%d times before startup passed, want 0/0", l, r)
		}
		if got := rec.take(); len(got) != 0 {
			t.Errorf("updates before startup passed: %+v", got)
		}

		rt.set("c1", "startup", 0)
		at(start, 3500*time.Millisecond) // startup succeeds at 3s
		if !m.Started("uid-1", "app") {
			t.Fatalf("Started() = false after the startup probe passed")
		}
		// Readiness runs at once rather than at its next period (5s).
		if !m.Ready("uid-1", "app") {
			t.Errorf("Ready() = false right after startup passed")
		}
		got := rec.take()
		want := []Update{
			{PodUID: "uid-1", Container: "app", ContainerID: "c1", Kind: Startup, Result: Success},
			{PodUID: "uid-1", Container: "app", ContainerID: "c1", Kind: Readiness, Result: Success},
		}
		if !slices.Equal(got, want) {
			t.Errorf("updates = %+v, want %+v", got, want)
		}
		startupCalls := rt.count("c1", "startup")
		at(start, 5500*time.Millisecond)
		if rt.count("c1", "live") != 1 {
			t.Errorf("liveness ran %d times by 5.5s, want 1", rt.count("c1", "live"))
		}
		if rt.count("c1", "startup") != startupCalls {
			t.Errorf("startup probe kept running after it passed")
		}
	})
}

func TestManagerStartupFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, rec := newFakeRuntime(), &recorder{}
		m := NewManager(rt.exec, rec.add, nil)
		defer m.Stop()
		pod := probePod(corev1.Container{Name: "app", StartupProbe: execProbe("startup", 0, 1, 1, 2)})
		rt.set("c1", "startup", 1)
		start := time.Now()
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c1", StartedAt: start}})
		at(start, 5*time.Second)
		want := []Update{{PodUID: "uid-1", Container: "app", ContainerID: "c1", Kind: Startup, Result: Failure}}
		if got := rec.take(); !slices.Equal(got, want) {
			t.Errorf("updates = %+v, want %+v", got, want)
		}
		if got := rt.count("c1", "startup"); got != 2 {
			t.Errorf("startup probe ran %d times, want 2 (then on hold)", got)
		}
		if m.Started("uid-1", "app") {
			t.Errorf("Started() = true after the startup probe failed")
		}
	})
}

func TestManagerContainersComeAndGo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, rec := newFakeRuntime(), &recorder{}
		m := NewManager(rt.exec, rec.add, nil)
		defer m.Stop()
		sidecar := corev1.ContainerRestartPolicyAlways
		pod := probePod(corev1.Container{Name: "app", ReadinessProbe: execProbe("ready", 0, 1, 1, 1)})
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "plain"})
		pod.Spec.InitContainers = []corev1.Container{
			{Name: "init", ReadinessProbe: execProbe("init-ready", 0, 1, 1, 1)},
			{Name: "sidecar", RestartPolicy: &sidecar, ReadinessProbe: execProbe("side-ready", 0, 1, 1, 1)},
		}
		start := time.Now()
		m.Sync(pod, map[string]RunningContainer{
			"app":     {ID: "c1", StartedAt: start},
			"plain":   {ID: "c2", StartedAt: start},
			"init":    {ID: "c3", StartedAt: start},
			"sidecar": {ID: "c4", StartedAt: start},
		})
		at(start, 500*time.Millisecond)
		for _, c := range []string{"app", "plain", "sidecar"} {
			if !m.Ready("uid-1", c) || !m.Started("uid-1", c) {
				t.Errorf("Ready(%q), Started(%q) = %v, %v; want true, true", c, c, m.Ready("uid-1", c), m.Started("uid-1", c))
			}
		}
		if rt.count("c3", "init-ready") != 0 {
			t.Errorf("a regular init container was probed")
		}
		if m.Ready("uid-1", "nope") || m.Ready("other", "app") {
			t.Errorf("Ready() = true for an unknown container")
		}

		// The app container exits.
		m.Sync(pod, map[string]RunningContainer{"plain": {ID: "c2", StartedAt: start}})
		synctest.Wait()
		if m.Ready("uid-1", "app") || m.Started("uid-1", "app") {
			t.Errorf("Ready() or Started() true for a container that is not running")
		}
		if !m.Ready("uid-1", "plain") {
			t.Errorf("Ready(plain) = false")
		}
		calls := rt.count("c1", "ready")
		at(start, 5*time.Second)
		if rt.count("c1", "ready") != calls {
			t.Errorf("a stopped container is still probed")
		}

		m.Remove("uid-1")
		synctest.Wait()
		if m.Ready("uid-1", "plain") {
			t.Errorf("Ready() = true after Remove")
		}
		side := rt.count("c4", "side-ready")
		at(start, 10*time.Second)
		if rt.count("c4", "side-ready") != side {
			t.Errorf("a removed pod is still probed")
		}
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c5"}})
		synctest.Wait()
		if !m.Ready("uid-1", "app") {
			t.Errorf("Ready() = false after the pod came back")
		}
	})
}

func TestManagerPodDeletion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, rec := newFakeRuntime(), &recorder{}
		m := NewManager(rt.exec, rec.add, nil)
		defer m.Stop()
		pod := probePod(corev1.Container{Name: "app", LivenessProbe: execProbe("live", 0, 1, 1, 1)})
		start := time.Now()
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c1", StartedAt: start}})
		at(start, 500*time.Millisecond)

		deleting := pod.DeepCopy()
		deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		m.Sync(deleting, map[string]RunningContainer{"app": {ID: "c1", StartedAt: start}})
		rt.set("c1", "live", 1)
		at(start, 5*time.Second)
		if got := rt.count("c1", "live"); got != 1 {
			t.Errorf("liveness ran %d times, want 1 (none while the pod is deleted)", got)
		}
		if got := rec.take(); len(got) != 0 {
			t.Errorf("updates while deleting: %+v", got)
		}
	})
}

func TestManagerInjectedClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		// The kubelet's clock says the container started 30s ago, so the
		// 20s initial delay is over.
		clock := func() time.Time { return time.Now().Add(30 * time.Second) }
		m := NewManager(rt.exec, nil, clock)
		defer m.Stop()
		pod := probePod(corev1.Container{Name: "app", ReadinessProbe: execProbe("ready", 20, 1, 1, 1)})
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c1", StartedAt: time.Now()}})
		synctest.Wait()
		if !m.Ready("uid-1", "app") {
			t.Errorf("Ready() = false; the initial delay should be over by the injected clock")
		}
	})
}

func TestManagerStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		m := NewManager(rt.exec, func(Update) {}, nil)
		pod := probePod(corev1.Container{Name: "app", ReadinessProbe: execProbe("ready", 0, 1, 1, 1)})
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c1"}})
		synctest.Wait()
		m.Stop()
		m.Sync(pod, map[string]RunningContainer{"app": {ID: "c2"}})
		synctest.Wait()
		if rt.count("c2", "ready") != 0 || m.Ready(types.UID("uid-1"), "app") {
			t.Errorf("the Manager kept working after Stop")
		}
		// synctest.Test fails if any worker goroutine is left behind.
	})
}
