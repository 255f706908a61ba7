// Package nodeipam is the node IPAM controller: it gives every Node its own
// slice of the pod network. The cluster CIDR (--cluster-cidr) is divided
// into equal subnets (a /24 each by default) and each Node without a pod CIDR
// gets the next free one in spec.podCIDR and spec.podCIDRs. The kubelet and
// the CNI plugins of that node then give its pods addresses from it.
//
// A node keeps its subnet for as long as it exists: the apiserver lets
// spec.podCIDRs change only from empty to set, and the controller never
// tries to change it. When a Node is deleted its subnet is released and
// reused, after the subnets that have not been used yet. A Node that already
// has a pod CIDR (set by an administrator, or by this controller before a
// restart) is left alone; the subnets it overlaps are marked used. On start
// the controller rebuilds that record from every existing Node before it
// allocates anything, so a restart never hands out a subnet twice. When the
// range is full, the Node gets a CIDRNotAvailable Event and waits until a
// subnet is freed.
//
// Only IPv4 pod networks are supported for now; dual-stack would add a
// second set and a second entry in spec.podCIDRs.
//
// The controller runs in the controller manager and reaches the apiserver
// only through client-go. It must be the only writer of spec.podCIDRs: its
// record of used subnets lives in memory and is rebuilt from the Nodes.
package nodeipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

// DefaultNodeMaskSize is the prefix length of a node's pod CIDR when
// Config.NodeMaskSize is zero: 254 pod addresses per node, enough for the
// kubelet's default of 110 pods.
const DefaultNodeMaskSize = 24

// Event reasons, as upstream.
const (
	// ReasonCIDRNotAvailable is on a Node that could not get a pod CIDR
	// because every subnet of the cluster CIDR is taken.
	ReasonCIDRNotAvailable = "CIDRNotAvailable"
)

const (
	// workers is how many Nodes are handled at once.
	workers = 4
	// resyncPeriod is how often every Node is looked at again; a Node that
	// found the range full retries then, if no deletion woke it earlier.
	resyncPeriod = 5 * time.Minute
	// Back-off bounds for a Node whose patch failed.
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Minute
)

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads and patches Nodes and writes Events. Required.
	Client kubernetes.Interface
	// ClusterCIDR is the pod network to divide among the nodes
	// (--cluster-cidr). Required; IPv4 only for now.
	ClusterCIDR *net.IPNet
	// NodeMaskSize is the prefix length of each node's pod CIDR. If 0,
	// DefaultNodeMaskSize (24) is used. It must be at least the prefix
	// length of ClusterCIDR and at most 16 more than it.
	NodeMaskSize int
	// ServiceCIDR, if set, is the service network
	// (--service-cluster-ip-range). Node subnets that overlap it are
	// never handed out. If nil, every subnet is available.
	ServiceCIDR *net.IPNet
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Controller assigns pod CIDRs to Nodes. Create it with New and start it
// with Run.
type Controller struct {
	client  kubernetes.Interface
	cluster *net.IPNet
	cidrs   *cidrSet
	log     *slog.Logger

	ready chan struct{}

	// Set by Run.
	lister   corelisters.NodeLister
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("nodeipam: Config.Client is required"))
	}
	mask := cfg.NodeMaskSize
	if mask == 0 {
		mask = DefaultNodeMaskSize
	}
	var cidrs *cidrSet
	if cfg.ClusterCIDR == nil {
		errs = append(errs, errors.New("nodeipam: Config.ClusterCIDR is required"))
	} else {
		var err error
		if cidrs, err = newCIDRSet(cfg.ClusterCIDR, mask); err != nil {
			errs = append(errs, fmt.Errorf("nodeipam: Config.ClusterCIDR: %w", err))
		}
	}
	if cfg.ServiceCIDR != nil && cfg.ServiceCIDR.IP == nil {
		errs = append(errs, errors.New("nodeipam: Config.ServiceCIDR has no address"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.ServiceCIDR != nil {
		cidrs.reserve(cfg.ServiceCIDR) // an IPv6 service CIDR overlaps nothing
		if used, total := cidrs.usage(); used == total {
			return nil, fmt.Errorf("nodeipam: service CIDR %s covers all of cluster CIDR %s: no node subnet left", cfg.ServiceCIDR, cfg.ClusterCIDR)
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cluster := &net.IPNet{IP: cfg.ClusterCIDR.IP.Mask(cfg.ClusterCIDR.Mask), Mask: cfg.ClusterCIDR.Mask}
	return &Controller{
		client:  cfg.Client,
		cluster: cluster,
		cidrs:   cidrs,
		log:     logger.With("component", "node-ipam-controller"),
		ready:   make(chan struct{}),
	}, nil
}

// Ready returns a channel that is closed once the Node cache has synced and
// the record of used subnets has been rebuilt from it, just before the
// first allocation.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run assigns pod CIDRs until ctx ends. It must be called at most once. On
// return the workers have finished their current Node, the informer has
// stopped and the event broadcaster is shut down (its goroutines exit right
// after). Run returns nil when ctx ends after a successful start, and an
// error if the Node cache could not be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("nodeipam", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown()

	// client-go's event machinery logs through klog; send that to our logger.
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(c.log.Handler()))
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "node-ipam-controller"})

	factory := informer.NewFactory(c.client, resyncPeriod)
	defer factory.Shutdown() // waits for the informer goroutines
	nodes := factory.Core().V1().Nodes()
	informer := nodes.Informer()
	c.lister = nodes.Lister()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueue,
		UpdateFunc: func(old, obj any) {
			// Status heartbeats of Nodes that have their pod CIDRs need
			// no work.
			o, ok1 := old.(*corev1.Node)
			n, ok2 := obj.(*corev1.Node)
			if ok1 && ok2 && hasPodCIDR(n) && slices.Equal(podCIDRs(o), podCIDRs(n)) {
				return
			}
			c.enqueue(obj)
		},
		DeleteFunc: c.enqueue,
	}); err != nil {
		return fmt.Errorf("nodeipam: add event handler: %w", err)
	}

	err := queue.Run(ctx, queue.Config[string]{
		Queue:     c.queue,
		Sync:      c.sync,
		Workers:   workers,
		Informers: []queue.Starter{factory},
		Synced:    []cache.InformerSynced{informer.HasSynced},
		Start:     c.start,
		Ready:     c.ready,
		Failed: func(name string, err error) {
			c.log.Error("sync node", "node", name, "err", err)
		},
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("nodeipam: %w", err)
	}
	return nil
}

// start records every pod CIDR in use before the first allocation. The
// workers have not started, so nothing is allocated from a partial record;
// Nodes added from now on are queued and seen by a worker.
func (c *Controller) start(context.Context) error {
	all, err := c.lister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes from cache: %w", err)
	}
	for _, node := range all {
		c.occupy(node)
	}
	used, total := c.cidrs.usage()
	c.log.Info("started", "clusterCIDR", c.cluster.String(), "nodeMaskSize", c.cidrs.maskSize, "used", used, "subnets", total)
	return nil
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

// sync makes sure Node name has a pod CIDR, or releases the one it had if
// the Node is gone. The queue never hands the same Node to two workers at
// once; different Nodes are allocated concurrently, and the cidrSet's lock
// keeps them from getting the same subnet.
func (c *Controller) sync(ctx context.Context, name string) error {
	node, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		if c.cidrs.release(name) {
			c.log.Info("released pod CIDR of deleted node", "node", name)
			c.enqueueWaiting()
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get node %q from cache: %w", name, err)
	}
	if hasPodCIDR(node) {
		c.occupy(node)
		return nil
	}
	if node.DeletionTimestamp != nil {
		return nil // going away; its deletion releases what it holds
	}

	cidr, err := c.cidrs.allocate(name)
	if errors.Is(err, ErrRangeFull) {
		used, total := c.cidrs.usage()
		c.log.Warn("no pod CIDR left for node", "node", name, "clusterCIDR", c.cluster.String(), "used", used, "subnets", total)
		c.recorder.Eventf(node, corev1.EventTypeWarning, ReasonCIDRNotAvailable,
			"no pod CIDR for this node: all %d /%d subnets of cluster CIDR %s are taken; delete unused Nodes or widen --cluster-cidr",
			total, c.cidrs.maskSize, c.cluster)
		// No retry with back-off: a deletion wakes waiting Nodes, and the
		// periodic resync retries them too.
		return nil
	}
	if err != nil {
		return fmt.Errorf("allocate pod CIDR for node %q: %w", name, err)
	}

	patch, err := podCIDRPatch(cidr)
	if err != nil {
		return err
	}
	// A strategic-merge patch touches nothing but the pod CIDRs. If the
	// Node got pod CIDRs in the meantime, the apiserver refuses the change
	// and the retry finds them in the cache. The subnet stays reserved for
	// this Node until then, so a retry patches the same one.
	_, err = c.client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		c.cidrs.release(name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("patch node %q with pod CIDR %s: %w", name, cidr, err)
	}
	c.log.Info("assigned pod CIDR", "node", name, "podCIDR", cidr.String())
	return nil
}

// occupy records the pod CIDRs node already has. A subnet that another
// Node (or the service CIDR) holds as well is logged; neither Node is
// changed, and the subnet stays with its first holder.
func (c *Controller) occupy(node *corev1.Node) {
	var cidrs []*net.IPNet
	for _, s := range podCIDRs(node) {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			c.log.Warn("node has an unparsable pod CIDR", "node", node.Name, "podCIDR", s, "err", err)
			continue
		}
		cidrs = append(cidrs, n)
	}
	if others := c.cidrs.occupy(node.Name, cidrs); len(others) > 0 {
		// A holder named reservedOwner is the service CIDR.
		c.log.Error("pod CIDR of node overlaps subnets held by others; leaving both as they are", "node", node.Name, "podCIDRs", podCIDRs(node), "heldBy", others)
	}
}

// enqueueWaiting queues every Node without a pod CIDR, after a subnet was
// freed.
func (c *Controller) enqueueWaiting() {
	all, err := c.lister.List(labels.Everything())
	if err != nil {
		c.log.Error("list nodes from cache", "err", err)
		return
	}
	for _, node := range all {
		if !hasPodCIDR(node) {
			c.queue.Add(node.Name)
		}
	}
}

// podCIDRs returns the pod CIDRs in node's spec. The apiserver keeps
// podCIDR equal to podCIDRs[0]; a Node that only sets the singular field
// (older clients) counts too.
func podCIDRs(node *corev1.Node) []string {
	if len(node.Spec.PodCIDRs) > 0 {
		return node.Spec.PodCIDRs
	}
	if node.Spec.PodCIDR != "" {
		return []string{node.Spec.PodCIDR}
	}
	return nil
}

func hasPodCIDR(node *corev1.Node) bool { return len(podCIDRs(node)) > 0 }

// podCIDRPatch returns the strategic-merge patch that sets a Node's pod
// CIDRs to cidr.
func podCIDRPatch(cidr *net.IPNet) ([]byte, error) {
	type spec struct {
		PodCIDR  string   `json:"podCIDR"`
		PodCIDRs []string `json:"podCIDRs"`
	}
	b, err := json.Marshal(struct {
		Spec spec `json:"spec"`
	}{spec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}}})
	if err != nil {
		return nil, fmt.Errorf("encode pod CIDR patch: %w", err)
	}
	return b, nil
}
