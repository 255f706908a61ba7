// Package nodelifecycle is the node lifecycle controller: it notices nodes
// whose kubelet has gone silent and says so in the API, so that the
// scheduler, the endpoints controllers and users stop counting on them.
//
// A kubelet shows it is alive by renewing its Lease in kube-node-lease
// (named like the node, every 10 s) and by updating its Node's status,
// whose Ready condition carries a lastHeartbeatTime. The controller watches
// both. When it has seen neither change for GracePeriod (40 s by default),
// it sets the node's Ready condition, and the MemoryPressure, DiskPressure
// and PIDPressure conditions the node has, to Unknown with reason
// NodeStatusUnknown, and records a NodeNotReady Event. It keeps a NoExecute
// taint in step with the Ready condition: node.kubernetes.io/unreachable
// while Ready is Unknown, node.kubernetes.io/not-ready while it is False,
// none while it is True. So when the kubelet comes back and reports
// Ready=True itself, the unreachable taint goes away.
//
// Silence is measured on the controller's own clock, as upstream does: the
// controller notes when it saw a lease's renewTime or a heartbeat change, and
// does not compare the node's timestamps with its clock, so a node whose
// clock is off is judged correctly. The price is that after the controller
// starts, every node gets a full grace period before it can be marked.
//
// Not done here yet (upstream does them): evicting pods from tainted nodes
// (the taint-eviction controller), marking the pods of an unreachable node
// not ready, the NoSchedule taints that mirror conditions, and rate-limiting
// by zone when many nodes go silent at once.
//
// The controller runs in the controller manager and reaches the apiserver
// only through client-go. It writes node conditions through the status
// subresource and taints through an update of the Node, both with the
// resourceVersion it read, so that it never overwrites a status the kubelet
// has just posted.
package nodelifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

// Defaults used when the corresponding Config field is zero.
const (
	DefaultGracePeriod   = 40 * time.Second
	DefaultMonitorPeriod = 5 * time.Second
)

// ReasonNodeNotReady is the reason of the Event recorded when the
// controller marks a node Unknown.
const ReasonNodeNotReady = "NodeNotReady"

const (
	// workers is how many Nodes are handled at once.
	workers = 2
	// resyncPeriod is how often the informers replay their caches.
	resyncPeriod = 10 * time.Minute
	// Back-off bounds for a Node whose write failed, most often a
	// conflict with the kubelet's own status update.
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = 30 * time.Second
)

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads Nodes and Leases, updates Nodes and their status, and
	// writes Events. Required.
	Client kubernetes.Interface
	// GracePeriod is how long a node may go without renewing its Lease or
	// posting a status heartbeat before it is marked Unknown
	// (--node-monitor-grace-period). If 0, DefaultGracePeriod is used.
	GracePeriod time.Duration
	// MonitorPeriod is how often every node is checked
	// (--node-monitor-period). If 0, DefaultMonitorPeriod is used. A node is
	// marked between GracePeriod and GracePeriod+MonitorPeriod after it
	// went silent.
	MonitorPeriod time.Duration
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Now tells the time. If nil, time.Now is used. MonitorPeriod is timed
	// with the time package, which testing/synctest fakes.
	Now func() time.Time
}

// Controller marks silent nodes Unknown and taints them. Create it with New
// and start it with Run.
type Controller struct {
	client  kubernetes.Interface
	grace   time.Duration
	monitor time.Duration
	log     *slog.Logger
	now     func() time.Time

	ready chan struct{}

	mu     sync.Mutex
	health map[string]*health // by node name
	// superseded holds, by node name, the resourceVersions of the Node
	// that this controller's own writes replaced. A cached Node with one
	// of them is older than what the controller wrote: syncing it would
	// write the same change again. The watch event of the write brings a
	// newer copy and queues the node again.
	superseded map[string][]string

	// Set by Run.
	nodes    corelisters.NodeLister
	leases   coordinationlisters.LeaseNamespaceLister
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
}

// health is what the controller last saw of one node's signs of life.
type health struct {
	// probe is when, by the controller's clock, the node last showed it
	// was alive (or when the controller first saw it).
	probe time.Time
	// renew and heartbeat are the newest lease renewTime and Ready
	// lastHeartbeatTime seen, as the node reported them.
	renew, heartbeat time.Time
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("nodelifecycle: Config.Client is required"))
	}
	if cfg.GracePeriod < 0 {
		errs = append(errs, fmt.Errorf("nodelifecycle: Config.GracePeriod is %v, want >= 0", cfg.GracePeriod))
	}
	if cfg.MonitorPeriod < 0 {
		errs = append(errs, fmt.Errorf("nodelifecycle: Config.MonitorPeriod is %v, want >= 0", cfg.MonitorPeriod))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		client:  cfg.Client,
		grace:   cfg.GracePeriod,
		monitor: cfg.MonitorPeriod,
		log:     logger.With("component", "node-lifecycle-controller"),
		now:     cfg.Now,
		ready:   make(chan struct{}),
		health:  map[string]*health{},

		superseded: map[string][]string{},
	}
	if c.grace == 0 {
		c.grace = DefaultGracePeriod
	}
	if c.monitor == 0 {
		c.monitor = DefaultMonitorPeriod
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Ready returns a channel that is closed once the Node and Lease caches
// have synced and the workers are about to start.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run watches Nodes and Leases and marks silent nodes until ctx ends. It
// must be called at most once. On return the monitor and the workers have
// finished, the informers have stopped and the event broadcaster is shut
// down (its goroutines exit right after). Run returns nil when ctx ends
// after a successful start, and an error if a cache could not be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("nodelifecycle", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown()

	// client-go's event machinery logs through klog; send that to our logger.
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(c.log.Handler()))
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "node-lifecycle-controller"})

	nodeFactory := informer.NewFactory(c.client, resyncPeriod)
	defer nodeFactory.Shutdown() // waits for the informer goroutines
	leaseFactory := informer.NewFactory(c.client, resyncPeriod,
		informers.WithNamespace(corev1.NamespaceNodeLease))
	defer leaseFactory.Shutdown()

	nodes := nodeFactory.Core().V1().Nodes()
	nodeInformer := nodes.Informer()
	c.nodes = nodes.Lister()
	if _, err := nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.nodeChanged,
		UpdateFunc: func(_, obj any) { c.nodeChanged(obj) },
		DeleteFunc: c.enqueue,
	}); err != nil {
		return fmt.Errorf("nodelifecycle: add node event handler: %w", err)
	}
	leases := leaseFactory.Coordination().V1().Leases()
	leaseInformer := leases.Informer()
	c.leases = leases.Lister().Leases(corev1.NamespaceNodeLease)
	if _, err := leaseInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.leaseChanged,
		UpdateFunc: func(_, obj any) { c.leaseChanged(obj) },
		// A deleted Lease is no sign of life; the monitor goes on
		// checking the node, now by its heartbeats alone.
	}); err != nil {
		return fmt.Errorf("nodelifecycle: add lease event handler: %w", err)
	}

	var monitor sync.WaitGroup
	defer monitor.Wait() // before the informers stop; the monitor ends with ctx
	err := queue.Run(ctx, queue.Config[string]{
		Queue:     c.queue,
		Sync:      c.sync,
		Workers:   workers,
		Informers: []queue.Starter{nodeFactory, leaseFactory},
		Synced:    []cache.InformerSynced{nodeInformer.HasSynced, leaseInformer.HasSynced},
		Start: func(ctx context.Context) error {
			c.log.Info("started", "gracePeriod", c.grace, "monitorPeriod", c.monitor)
			monitor.Go(func() { c.monitorLoop(ctx) })
			return nil
		},
		Ready:  c.ready,
		Failed: c.failed,
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("nodelifecycle: %w", err)
	}
	return nil
}

// monitorLoop queues every node each monitor period until ctx ends.
func (c *Controller) monitorLoop(ctx context.Context) {
	t := time.NewTicker(c.monitor)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.enqueueAll()
		}
	}
}

// nodeChanged notes the node's heartbeat and queues it.
func (c *Controller) nodeChanged(obj any) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	var heartbeat time.Time
	if ready := condition(&node.Status, corev1.NodeReady); ready != nil {
		heartbeat = ready.LastHeartbeatTime.Time
	}
	c.observe(node.Name, time.Time{}, heartbeat)
	c.queue.Add(node.Name)
}

// leaseChanged notes the lease's renewal and queues its node.
func (c *Controller) leaseChanged(obj any) {
	lease, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	var renew time.Time
	if lease.Spec.RenewTime != nil {
		renew = lease.Spec.RenewTime.Time
	}
	c.observe(lease.Name, renew, time.Time{})
	c.queue.Add(lease.Name)
}

// observe records what a node just reported. A renewTime or heartbeat that
// differs from the last one seen (zero means "not reported") is a sign of
// life: the node's probe time becomes now. A node seen for the first time
// starts with now as well.
func (c *Controller) observe(name string, renew, heartbeat time.Time) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.health[name]
	if !ok {
		c.health[name] = &health{probe: now, renew: renew, heartbeat: heartbeat}
		return
	}
	if !renew.IsZero() && !renew.Equal(h.renew) {
		h.renew, h.probe = renew, now
	}
	if !heartbeat.IsZero() && !heartbeat.Equal(h.heartbeat) {
		h.heartbeat, h.probe = heartbeat, now
	}
}

// silence returns how long node name has shown no sign of life.
func (c *Controller) silence(name string, now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.health[name]
	if !ok { // not seen through the handlers yet
		c.health[name] = &health{probe: now}
		return 0
	}
	return now.Sub(h.probe)
}

func (c *Controller) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.health, name)
	delete(c.superseded, name)
}

// behind reports whether the cached node predates a write of this
// controller. Once the cache has moved past the controller's writes, the
// record of them is dropped.
func (c *Controller) behind(node *corev1.Node) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Contains(c.superseded[node.Name], node.ResourceVersion) {
		return true
	}
	delete(c.superseded, node.Name)
	return false
}

// wrote records that the controller replaced version old of a Node.
func (c *Controller) wrote(old *corev1.Node) {
	if old.ResourceVersion == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.superseded[old.Name] = append(c.superseded[old.Name], old.ResourceVersion)
}

// enqueue queues a Node, or the last known state of a deleted one, by name.
func (c *Controller) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		c.log.Error("queue node", "err", err)
		return
	}
	c.queue.Add(key)
}

// enqueueAll queues every node, for the periodic check.
func (c *Controller) enqueueAll() {
	all, err := c.nodes.List(labels.Everything())
	if err != nil {
		c.log.Error("list nodes from cache", "err", err)
		return
	}
	for _, node := range all {
		c.queue.Add(node.Name)
	}
}

// failed logs a Node whose sync failed and is retried with back-off.
func (c *Controller) failed(name string, err error) {
	if apierrors.IsConflict(err) {
		// The kubelet (or someone) wrote the Node first; look again at
		// the fresh copy.
		c.log.Debug("node changed while being updated, retrying", "node", name, "err", err)
		return
	}
	c.log.Error("sync node", "node", name, "err", err)
}

// sync marks Node name Unknown if it has been silent too long, and brings
// its NoExecute taints in step with its Ready condition. It writes only
// what differs.
func (c *Controller) sync(ctx context.Context, name string) error {
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		c.forget(name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get node %q from cache: %w", name, err)
	}
	if c.behind(node) {
		return nil
	}

	now := c.now()
	if silent := c.silence(name, now); silent > c.grace {
		marked, changed := markUnknown(node, now)
		if changed {
			updated, err := c.client.CoreV1().Nodes().UpdateStatus(ctx, marked, metav1.UpdateOptions{})
			if err != nil {
				return fmt.Errorf("mark node %q unknown: %w", name, err)
			}
			c.wrote(node)
			if was := condition(&node.Status, corev1.NodeReady); was == nil || was.Status != corev1.ConditionUnknown {
				c.log.Warn("node stopped posting status; marked Unknown", "node", name, "silentFor", silent.Round(time.Second), "lease", c.hasLease(name))
				c.recorder.Eventf(updated, corev1.EventTypeWarning, ReasonNodeNotReady,
					"Node %s status is now: %s (no lease renewal or status update for %v)", name, ReasonNodeNotReady, silent.Round(time.Second))
			}
			node = updated
		}
	}

	taints, changed := wantTaints(node, now)
	if !changed {
		return nil
	}
	tainted := node.DeepCopy()
	tainted.Spec.Taints = taints
	if _, err := c.client.CoreV1().Nodes().Update(ctx, tainted, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update taints of node %q: %w", name, err)
	}
	c.wrote(node)
	c.log.Info("updated node taints", "node", name, "ready", readyStatus(node), "taints", taintKeys(taints))
	return nil
}

func (c *Controller) hasLease(name string) bool {
	_, err := c.leases.Get(name)
	return err == nil
}

func readyStatus(node *corev1.Node) corev1.ConditionStatus {
	if ready := condition(&node.Status, corev1.NodeReady); ready != nil {
		return ready.Status
	}
	return ""
}

func taintKeys(taints []corev1.Taint) []string {
	out := make([]string, len(taints))
	for i, t := range taints {
		out[i] = t.ToString()
	}
	return out
}
