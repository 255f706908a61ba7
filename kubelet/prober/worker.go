package prober

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// worker probes one container with one of its probes until cancelled.
type worker struct {
	m           *Manager
	ps          *podState
	podUID      types.UID
	container   *corev1.Container
	containerID string
	kind        Kind
	spec        *corev1.Probe
	startedAt   time.Time

	period           time.Duration
	successThreshold int
	failureThreshold int

	ctx     context.Context
	cancel  context.CancelFunc
	trigger chan struct{}

	// Owned by the worker's goroutine.
	last   Result
	streak int
	onHold bool
}

func newWorker(m *Manager, ps *podState, uid types.UID, c *corev1.Container, id string, kind Kind, spec *corev1.Probe, startedAt time.Time) *worker {
	w := &worker{
		m:                m,
		ps:               ps,
		podUID:           uid,
		container:        c,
		containerID:      id,
		kind:             kind,
		spec:             spec.DeepCopy(),
		startedAt:        startedAt,
		period:           time.Duration(spec.PeriodSeconds) * time.Second,
		successThreshold: int(spec.SuccessThreshold),
		failureThreshold: int(spec.FailureThreshold),
		trigger:          make(chan struct{}, 1),
	}
	if w.period <= 0 {
		w.period = defaultPeriod
	}
	if w.successThreshold <= 0 {
		w.successThreshold = defaultSuccessThreshold
	}
	if w.failureThreshold <= 0 {
		w.failureThreshold = defaultFailureThreshold
	}
	w.ctx, w.cancel = context.WithCancel(m.ctx)
	return w
}

// poke asks the worker to probe now rather than at its next period.
func (w *worker) poke() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	defer w.m.wg.Done()
	defer w.cancel()

	firstAt := w.startedAt.Add(time.Duration(w.spec.InitialDelaySeconds) * time.Second)
	timer := time.NewTimer(max(0, firstAt.Sub(w.m.now())))
	defer timer.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-timer.C:
		case <-w.trigger:
			if w.m.now().Before(firstAt) {
				continue // still in the initial delay
			}
			timer.Stop()
		}
		began := time.Now()
		if !w.probe() {
			return
		}
		timer.Reset(max(0, w.period-time.Since(began)))
	}
}

// probe runs one attempt and applies the thresholds. It returns false when
// the worker has nothing more to do.
func (w *worker) probe() bool {
	if w.onHold {
		return true
	}
	pod, ok := w.m.gate(w)
	if !ok {
		return true
	}
	if pod.DeletionTimestamp != nil && (w.kind == Liveness || w.kind == Startup) {
		// The pod is going away: do not restart its containers now.
		w.m.record(w, Success, "pod is being deleted")
		return false
	}
	r, msg := Probe(w.ctx, w.m.exec, w.spec, pod, w.container, w.containerID, pod.Status.PodIP)
	if r == Unknown || w.ctx.Err() != nil {
		return true
	}
	if r == w.last {
		w.streak++
	} else {
		w.last, w.streak = r, 1
	}
	if (r == Failure && w.streak < w.failureThreshold) || (r == Success && w.streak < w.successThreshold) {
		return true
	}
	w.m.record(w, r, msg)
	if r == Failure && (w.kind == Liveness || w.kind == Startup) {
		// The container will be restarted; probe no more until a new
		// container (a new worker) replaces it.
		w.onHold = true
		w.streak = 0
	}
	return true
}
