// Package scheduler is tether's pod scheduler: it places each pending pod
// that names it (spec.schedulerName) on a node and binds the pod there
// through the pods/binding subresource. It runs in the control plane as
// system:kube-scheduler and reaches the API server only through client-go
// (path P4), like an out-of-process kube-scheduler would.
//
// Placement follows upstream's default filters and a simple score:
//
//   - the node must be schedulable (spec.unschedulable) and report Ready;
//     tether derives the NoSchedule taints upstream's lifecycle controller
//     would set from the node's conditions (not-ready, unreachable,
//     memory-, disk-, pid-pressure, network-unavailable), so a pod that
//     tolerates them may still go there;
//   - every NoSchedule and NoExecute taint must be tolerated;
//   - spec.nodeSelector and required node affinity must match;
//   - requested host ports must be free;
//   - the pod's requests plus those of the unfinished pods on the node must
//     fit the node's allocatable for every resource the pod asks for, and
//     the pod count must fit allocatable pods;
//   - among fitting nodes, the one with the largest share of CPU and memory
//     left wins (least requested), ties broken at random.
//
// A pod that fits nowhere gets a FailedScheduling Event and a PodScheduled
// condition False with reason Unschedulable, both saying why in upstream's
// words ("0/3 nodes are available: 1 Insufficient memory, ..."). It is
// tried again when a node is added or changes in a way that matters, when
// a bound pod goes away or finishes, and otherwise after an exponential
// back-off of 1 s up to a minute. tether does not preempt.
//
// Pods are placed one at a time. A pod just bound counts on its node at
// once, before the informer shows the binding, so back-to-back pods do not
// overcommit a node.
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"tether/internal/informer"
)

// DefaultSchedulerName is the scheduler name pods get when they name none.
const DefaultSchedulerName = corev1.DefaultSchedulerName

// Event reasons.
const (
	ReasonScheduled        = "Scheduled"
	ReasonFailedScheduling = "FailedScheduling"
)

// Back-off of a pod that could not be placed (or bound), between event
// driven retries.
const (
	minRetryDelay = time.Second
	maxRetryDelay = time.Minute
)

// Config configures a Scheduler. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads pods and nodes, binds pods, writes pod status and
	// Events. Required.
	Client kubernetes.Interface
	// SchedulerName is the spec.schedulerName of the pods this scheduler
	// places, and the reporting controller of its Events. If empty,
	// DefaultSchedulerName ("default-scheduler").
	SchedulerName string
	// Logger receives the scheduler's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Now tells the time of condition transitions. If nil, time.Now.
	Now func() time.Time
}

// Scheduler places pending pods on nodes. Create it with New and start it
// with Run.
type Scheduler struct {
	client kubernetes.Interface
	name   string
	log    *slog.Logger
	now    func() time.Time
	// pick returns a random number in [0, n); tests replace it.
	pick func(n int) int

	ready chan struct{}
	cache *nodeCache

	mu sync.Mutex
	// unschedulable holds the keys of pods that fit nowhere at their last
	// attempt; cluster changes queue them again.
	unschedulable map[string]bool
	running       bool

	// Set by Run.
	queue    workqueue.TypedRateLimitingInterface[string]
	pods     corelisters.PodLister
	recorder events.EventRecorder
}

// New validates cfg and returns a Scheduler. It starts nothing.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Client == nil {
		return nil, errors.New("scheduler: Config.Client is required")
	}
	s := &Scheduler{
		client:        cfg.Client,
		name:          cfg.SchedulerName,
		log:           cfg.Logger,
		now:           cfg.Now,
		pick:          rand.IntN,
		ready:         make(chan struct{}),
		cache:         newCache(),
		unschedulable: map[string]bool{},
	}
	if s.name == "" {
		s.name = DefaultSchedulerName
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "scheduler")
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Ready returns a channel that is closed once the pod and node caches have
// synced and the scheduler has started placing pods.
func (s *Scheduler) Ready() <-chan struct{} { return s.ready }

// Run places pods until ctx ends; it must be called at most once. It
// returns nil when ctx ends, and an error if the caches could not be
// synced. On return the worker and the informers have stopped and the
// event broadcaster is shut down.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("scheduler: Run called twice")
	}
	s.running = true
	s.mu.Unlock()

	// client-go's event machinery logs through klog; send that to our logger.
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(s.log.Handler()))
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: s.client.EventsV1()})
	defer broadcaster.Shutdown()
	if err := broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		return fmt.Errorf("scheduler: start event recording: %w", err)
	}
	s.recorder = broadcaster.NewRecorder(scheme.Scheme, s.name)

	s.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](minRetryDelay, maxRetryDelay),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "scheduler"},
	)
	defer s.queue.ShutDown()

	// Finished pods hold no resources: like upstream, the pod informer
	// does not see them, and a pod that finishes leaves it as a deletion.
	podFactory := informer.NewFactory(s.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.AndSelectors(
				fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
				fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed)),
			).String()
		}))
	defer podFactory.Shutdown()
	nodeFactory := informer.NewFactory(s.client, 0)
	defer nodeFactory.Shutdown()

	podInformer := podFactory.Core().V1().Pods()
	s.pods = podInformer.Lister()
	podReg, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.podAdded,
		UpdateFunc: s.podUpdated,
		DeleteFunc: s.podDeleted,
	})
	if err != nil {
		return fmt.Errorf("scheduler: add pod event handler: %w", err)
	}
	nodeReg, err := nodeFactory.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.nodeAdded,
		UpdateFunc: s.nodeUpdated,
		DeleteFunc: s.nodeDeleted,
	})
	if err != nil {
		return fmt.Errorf("scheduler: add node event handler: %w", err)
	}
	podFactory.Start(ctx.Done())
	nodeFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podReg.HasSynced, nodeReg.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("scheduler: caches did not sync")
	}
	s.log.Info("started", "schedulerName", s.name)
	close(s.ready)

	var wg sync.WaitGroup
	wg.Go(func() {
		for s.next(ctx) {
		}
	})
	<-ctx.Done()
	s.queue.ShutDown()
	wg.Wait()
	s.log.Info("stopped")
	return nil
}

// next schedules one pod from the queue and reports whether to go on.
func (s *Scheduler) next(ctx context.Context) bool {
	key, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(key)
	if s.scheduleOne(ctx, key) && ctx.Err() == nil {
		s.queue.AddRateLimited(key)
	} else {
		s.queue.Forget(key)
	}
	return true
}

// Event handlers.

func podKey(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

// pending reports whether pod waits for this scheduler.
func (s *Scheduler) pending(pod *corev1.Pod) bool {
	return pod.Spec.NodeName == "" && pod.Spec.SchedulerName == s.name &&
		pod.DeletionTimestamp == nil && len(pod.Spec.SchedulingGates) == 0 &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

func (s *Scheduler) podAdded(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.Spec.NodeName != "" {
		s.cache.setPod(podKey(pod), pod)
		return
	}
	if s.pending(pod) {
		s.queue.Add(podKey(pod))
	}
}

func (s *Scheduler) podUpdated(oldObj, newObj any) {
	old, ok1 := oldObj.(*corev1.Pod)
	pod, ok2 := newObj.(*corev1.Pod)
	if !ok1 || !ok2 {
		return
	}
	key := podKey(pod)
	if pod.Spec.NodeName != "" {
		s.cache.setPod(key, pod)
		if old.Spec.NodeName == "" {
			s.settled(key) // bound, by us or by someone else
		}
		return
	}
	if !s.pending(pod) {
		s.settled(key)
		return
	}
	// Only a change to what placement reads makes a new attempt worth it;
	// status writes (ours included) do not.
	if !equality.Semantic.DeepEqual(old.Spec, pod.Spec) || !equality.Semantic.DeepEqual(old.Labels, pod.Labels) ||
		!equality.Semantic.DeepEqual(old.Annotations, pod.Annotations) || !s.pending(old) {
		s.queue.Add(key)
	}
}

func (s *Scheduler) podDeleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := podKey(pod)
	s.settled(key)
	if s.cache.removePod(key) {
		// Its node has room again.
		s.retryUnschedulable("pod " + key + " gone")
	}
}

func (s *Scheduler) nodeAdded(obj any) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	s.cache.setNode(node)
	s.retryUnschedulable("node " + node.Name + " added")
}

func (s *Scheduler) nodeUpdated(oldObj, newObj any) {
	old, ok1 := oldObj.(*corev1.Node)
	node, ok2 := newObj.(*corev1.Node)
	if !ok1 || !ok2 {
		return
	}
	s.cache.setNode(node)
	if nodeChanged(old, node) {
		s.retryUnschedulable("node " + node.Name + " changed")
	}
}

func (s *Scheduler) nodeDeleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if node, ok := obj.(*corev1.Node); ok {
		s.cache.removeNode(node.Name)
	}
}

// nodeChanged reports whether a node changed in a way that can let a pod
// fit that did not: not its heartbeats.
func nodeChanged(old, node *corev1.Node) bool {
	if !equality.Semantic.DeepEqual(old.Labels, node.Labels) ||
		!equality.Semantic.DeepEqual(old.Spec.Taints, node.Spec.Taints) ||
		old.Spec.Unschedulable != node.Spec.Unschedulable ||
		!equality.Semantic.DeepEqual(old.Status.Allocatable, node.Status.Allocatable) {
		return true
	}
	status := func(n *corev1.Node) map[corev1.NodeConditionType]corev1.ConditionStatus {
		m := map[corev1.NodeConditionType]corev1.ConditionStatus{}
		for _, c := range n.Status.Conditions {
			m[c.Type] = c.Status
		}
		return m
	}
	return !equality.Semantic.DeepEqual(status(old), status(node))
}

// settled drops a pod from the unschedulable set: it is bound, gone or no
// longer ours.
func (s *Scheduler) settled(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.unschedulable, key)
}

// retryUnschedulable queues every unschedulable pod again at once.
func (s *Scheduler) retryUnschedulable(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.unschedulable) == 0 {
		return
	}
	s.log.Debug("retrying unschedulable pods", "pods", len(s.unschedulable), "why", why)
	for key := range s.unschedulable {
		s.queue.Add(key)
	}
}

// Scheduling.

// scheduleOne tries to place the pod behind key and reports whether it
// should be tried again after a back-off.
func (s *Scheduler) scheduleOne(ctx context.Context, key string) (retry bool) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return false
	}
	pod, err := s.pods.Pods(ns).Get(name)
	if err != nil || !s.pending(pod) || s.cache.has(key) {
		// Gone, bound, or bound by us and not yet seen so.
		s.settled(key)
		return false
	}
	log := s.log.With("namespace", ns, "name", name)

	node, fitErr := s.cache.place(pod, s.pick)
	if fitErr != nil {
		msg := fitErr.Error()
		log.Info("pod does not fit any node", "reason", msg)
		s.mu.Lock()
		s.unschedulable[key] = true
		s.mu.Unlock()
		s.recorder.Eventf(pod, nil, corev1.EventTypeWarning, ReasonFailedScheduling, "Scheduling", msg)
		if err := s.markUnschedulable(ctx, pod, msg); err != nil && ctx.Err() == nil {
			log.Error("set PodScheduled condition", "err", err)
		}
		return true
	}

	s.cache.assume(key, pod, node)
	err = s.client.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{})
	switch {
	case err == nil:
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		// Bound by someone else, deleted or replaced meanwhile: the
		// informer will tell.
		s.cache.forget(key)
		log.Debug("pod not bound", "node", node, "err", err)
		s.settled(key)
		return false
	default:
		s.cache.forget(key)
		if ctx.Err() != nil {
			return false
		}
		log.Error("bind pod", "node", node, "err", err)
		s.recorder.Eventf(pod, nil, corev1.EventTypeWarning, ReasonFailedScheduling, "Scheduling", "Binding rejected: %v", err)
		return true
	}
	s.settled(key)
	log.Info("pod bound", "node", node)
	s.recorder.Eventf(pod, nil, corev1.EventTypeNormal, ReasonScheduled, "Binding", "Successfully assigned %s/%s to %s", ns, name, node)
	return false
}

// markUnschedulable sets the pod's PodScheduled condition to False with
// reason Unschedulable and msg, unless it says so already.
func (s *Scheduler) markUnschedulable(ctx context.Context, pod *corev1.Pod, msg string) error {
	cond := corev1.PodCondition{
		Type:               corev1.PodScheduled,
		Status:             corev1.ConditionFalse,
		Reason:             corev1.PodReasonUnschedulable,
		Message:            msg,
		LastTransitionTime: metav1.NewTime(s.now()),
	}
	for _, c := range pod.Status.Conditions {
		if c.Type != corev1.PodScheduled {
			continue
		}
		if c.Status == cond.Status && c.Reason == cond.Reason && c.Message == cond.Message {
			return nil
		}
		if c.Status == cond.Status {
			cond.LastTransitionTime = c.LastTransitionTime
		}
	}
	// The conditions merge by type: only PodScheduled changes. The uid
	// makes sure the patch lands on the pod that was placed.
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status":   map[string]any{"conditions": []corev1.PodCondition{cond}},
	})
	if err != nil {
		return err
	}
	_, err = s.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone or replaced; nothing to report on
	}
	return err
}
