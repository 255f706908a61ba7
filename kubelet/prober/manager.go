package prober

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Kind is the kind of a probe.
type Kind string

// The kinds of probe a container can have.
const (
	Liveness  Kind = "liveness"
	Readiness Kind = "readiness"
	Startup   Kind = "startup"
)

// Update reports that the result of a container's probe changed, after the
// probe's success or failure threshold was reached.
type Update struct {
	PodUID      types.UID
	Container   string
	ContainerID string
	Kind        Kind
	Result      Result
	// Message is the message of the probe attempt that caused the change.
	Message string
}

// RunningContainer describes a running container to [Manager.Sync].
type RunningContainer struct {
	// ID is the runtime's container ID; a new ID means a new container.
	ID string
	// StartedAt is when the container started; initialDelaySeconds counts
	// from it. If zero, the time of the Sync that first saw ID is used.
	StartedAt time.Time
}

// Probe defaults, as upstream's API defaulting sets them.
const (
	defaultPeriod           = 10 * time.Second
	defaultSuccessThreshold = 1
	defaultFailureThreshold = 3
)

// Manager probes the running containers of the node's pods. It keeps one
// worker goroutine per (container, probe kind); each worker waits out the
// probe's initialDelaySeconds from the container's start, then runs the
// probe every periodSeconds (default 10) with timeoutSeconds (default 1),
// and changes the container's result only after successThreshold (default
// 1) consecutive successes or failureThreshold (default 3) consecutive
// failures. An attempt that returns [Unknown] is ignored.
//
// A new container starts not ready, live, and not started (when it has a
// startup probe). Liveness and readiness probes do not run until the startup
// probe has succeeded; the startup probe stops once it has, and a readiness
// probe runs straight after. After a liveness or startup failure the worker
// holds until the container is replaced (a new ID in Sync). While a pod is
// being deleted its liveness and startup probes report success and stop.
//
// The methods are safe for concurrent use. The zero Manager is not usable;
// call [NewManager].
type Manager struct {
	exec     Execer
	onChange func(Update)
	now      func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	pods map[types.UID]*podState
}

type podState struct {
	pod        *corev1.Pod // from the latest Sync; read under Manager.mu
	containers map[string]*containerState
}

type containerState struct {
	id      string
	results map[Kind]Result
	workers map[Kind]*worker
}

// NewManager returns a Manager that runs exec probes with exec and calls
// onChange (if not nil) whenever a probe result changes. onChange is called
// from the workers' goroutines, without the Manager's lock held, so it may
// call the Manager; it should not block for long. now is the clock used for
// containers' start times; if nil, time.Now is used.
func NewManager(exec Execer, onChange func(Update), now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		exec:     exec,
		onChange: onChange,
		now:      now,
		ctx:      ctx,
		cancel:   cancel,
		pods:     make(map[types.UID]*podState),
	}
}

// probedContainers lists the containers of pod that can have probes: the
// regular containers and the restartable (sidecar) init containers.
func probedContainers(pod *corev1.Pod) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out = append(out, c)
		}
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

// Sync tells the Manager which containers of pod are running now, by
// container name. Workers start for new containers, restart for containers
// with a new ID, and stop for containers no longer running. The pod's
// address for probes without a host is pod.Status.PodIP of the latest Sync,
// so the caller should pass a pod whose status carries it. The Manager keeps
// pod until the next Sync; the caller must not modify it. Sync after Stop
// does nothing.
func (m *Manager) Sync(pod *corev1.Pod, running map[string]RunningContainer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return
	}
	ps := m.pods[pod.UID]
	if ps == nil {
		ps = &podState{containers: make(map[string]*containerState)}
		m.pods[pod.UID] = ps
	}
	ps.pod = pod

	seen := make(map[string]bool)
	for _, c := range probedContainers(pod) {
		seen[c.Name] = true
		rc, ok := running[c.Name]
		cs := ps.containers[c.Name]
		if !ok {
			if cs != nil {
				cs.stop()
				delete(ps.containers, c.Name)
			}
			continue
		}
		if cs != nil && cs.id == rc.ID {
			continue
		}
		if cs != nil {
			cs.stop()
		}
		started := rc.StartedAt
		if started.IsZero() {
			started = m.now()
		}
		cs = &containerState{id: rc.ID, results: make(map[Kind]Result), workers: make(map[Kind]*worker)}
		for kind, spec := range map[Kind]*corev1.Probe{
			Liveness:  c.LivenessProbe,
			Readiness: c.ReadinessProbe,
			Startup:   c.StartupProbe,
		} {
			if spec == nil {
				continue
			}
			cs.results[kind] = initialResult(kind)
			w := newWorker(m, ps, pod.UID, c.DeepCopy(), rc.ID, kind, spec, started)
			cs.workers[kind] = w
			m.wg.Add(1)
			go w.run()
		}
		ps.containers[c.Name] = cs
	}
	for name, cs := range ps.containers {
		if !seen[name] {
			cs.stop()
			delete(ps.containers, name)
		}
	}
}

func initialResult(kind Kind) Result {
	switch kind {
	case Readiness:
		return Failure
	case Liveness:
		return Success
	}
	return Unknown
}

func (cs *containerState) stop() {
	for _, w := range cs.workers {
		w.cancel()
	}
}

// Ready reports whether the container is ready: it is running (per the
// latest Sync), its startup probe (if any) has passed, and its readiness
// probe (if any) has succeeded.
func (m *Manager) Ready(podUID types.UID, container string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	cs := m.container(podUID, container)
	if cs == nil || !cs.started() {
		return false
	}
	r, probed := cs.results[Readiness]
	return !probed || r == Success
}

// Started reports whether the container is running (per the latest Sync)
// and its startup probe has passed; true for a running container without
// one.
func (m *Manager) Started(podUID types.UID, container string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	cs := m.container(podUID, container)
	return cs != nil && cs.started()
}

func (m *Manager) container(podUID types.UID, name string) *containerState {
	ps := m.pods[podUID]
	if ps == nil {
		return nil
	}
	return ps.containers[name]
}

func (cs *containerState) started() bool {
	r, probed := cs.results[Startup]
	return !probed || r == Success
}

// Remove stops probing the pod and forgets its results. An Update already
// being delivered may still arrive.
func (m *Manager) Remove(podUID types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps := m.pods[podUID]; ps != nil {
		for _, cs := range ps.containers {
			cs.stop()
		}
		delete(m.pods, podUID)
	}
}

// Stop stops every worker and waits for them to return. No Update is
// delivered after Stop returns.
func (m *Manager) Stop() {
	m.mu.Lock()
	m.cancel()
	m.pods = make(map[types.UID]*podState)
	m.mu.Unlock()
	m.wg.Wait()
}

// record sets the result of w's probe if w is still current and reports
// whether it changed. If the startup probe passed, the container's
// readiness worker is asked to probe at once.
func (m *Manager) record(w *worker, r Result, msg string) {
	m.mu.Lock()
	if w.ctx.Err() != nil {
		m.mu.Unlock()
		return
	}
	cs := m.container(w.podUID, w.container.Name)
	if cs == nil || cs.id != w.containerID || cs.results[w.kind] == r {
		m.mu.Unlock()
		return
	}
	cs.results[w.kind] = r
	if w.kind == Startup && r == Success {
		if rw := cs.workers[Readiness]; rw != nil {
			rw.poke()
		}
	}
	m.mu.Unlock()
	if m.onChange != nil {
		m.onChange(Update{
			PodUID:      w.podUID,
			Container:   w.container.Name,
			ContainerID: w.containerID,
			Kind:        w.kind,
			Result:      r,
			Message:     msg,
		})
	}
}

// gate reports whether w may probe now and the pod to probe: liveness and
// readiness wait for the startup probe, the startup probe stops once it has
// passed.
func (m *Manager) gate(w *worker) (pod *corev1.Pod, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cs := m.container(w.podUID, w.container.Name)
	if cs == nil || cs.id != w.containerID {
		return nil, false
	}
	if w.kind == Startup {
		return w.ps.pod, !cs.started()
	}
	return w.ps.pod, cs.started()
}
