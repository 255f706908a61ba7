// Package namespace is the namespace lifecycle controller. It runs in the
// controller manager and finishes the deletion of namespaces: once the
// apiserver marks a namespace as terminating (metadata.deletionTimestamp set,
// "kubernetes" still in spec.finalizers), the controller deletes every
// namespaced object in it, waits until nothing is left, then removes the
// "kubernetes" finalizer through the namespaces/finalize subresource so that
// the apiserver can remove the namespace itself.
//
// The controller reaches the apiserver only through client-go: a typed
// clientset for namespaces, the metadata client to list and delete objects of
// any resource without knowing their types, and discovery to learn which
// resources exist.
package namespace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

// Defaults used when the corresponding Config field is zero.
const (
	DefaultWorkers      = 2
	DefaultResyncPeriod = 5 * time.Minute
)

// Back-off bounds for a namespace that cannot be finalized yet, for example
// because pods in it are still shutting down gracefully.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Minute
)

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads namespaces, finalizes and deletes them. Required.
	Client kubernetes.Interface
	// Metadata lists and deletes the objects of any namespaced resource.
	// Required.
	Metadata metadata.Interface
	// Discovery tells which namespaced resources the apiserver serves.
	// Required; Client.Discovery() is fine.
	Discovery discovery.DiscoveryInterface
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Workers is how many namespaces are processed at once. If 0,
	// DefaultWorkers is used.
	Workers int
	// ResyncPeriod is how often every cached namespace is looked at again,
	// even without a change. If 0, DefaultResyncPeriod is used.
	ResyncPeriod time.Duration
}

// Controller deletes the contents of terminating namespaces and then
// finalizes them. Create it with New and start it with Run.
type Controller struct {
	client    kubernetes.Interface
	metadata  metadata.Interface
	discovery discovery.DiscoveryInterface
	log       *slog.Logger
	workers   int
	resync    time.Duration

	ready chan struct{}

	// Set by Run.
	lister corelisters.NamespaceLister
	queue  workqueue.TypedRateLimitingInterface[string]
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("namespace: Config.Client is required"))
	}
	if cfg.Metadata == nil {
		errs = append(errs, errors.New("namespace: Config.Metadata is required"))
	}
	if cfg.Discovery == nil {
		errs = append(errs, errors.New("namespace: Config.Discovery is required"))
	}
	if cfg.Workers < 0 {
		errs = append(errs, fmt.Errorf("namespace: Config.Workers is %d, want >= 0", cfg.Workers))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("namespace: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		client:    cfg.Client,
		metadata:  cfg.Metadata,
		discovery: cfg.Discovery,
		log:       logger.With("component", "namespace-controller"),
		workers:   cfg.Workers,
		resync:    cfg.ResyncPeriod,
		ready:     make(chan struct{}),
	}
	if c.workers == 0 {
		c.workers = DefaultWorkers
	}
	if c.resync == 0 {
		c.resync = DefaultResyncPeriod
	}
	return c, nil
}

// Ready returns a channel that is closed once the namespace cache has synced
// and the workers are about to start.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run watches namespaces and processes terminating ones until ctx ends. It
// must be called at most once. On return the workers have finished their
// current namespace and the informer has stopped: no goroutine started by
// Run is left. Run returns nil when ctx ends after a successful start, and
// an error if the namespace cache could not be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("namespace", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown() // also on early return; shutting down twice is fine

	factory := informer.NewFactory(c.client, c.resync)
	defer factory.Shutdown() // waits for the informer goroutines
	nsInformer := factory.Core().V1().Namespaces()
	informer := nsInformer.Informer()
	c.lister = nsInformer.Lister()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
	}); err != nil {
		return fmt.Errorf("namespace: add event handler: %w", err)
	}

	err := queue.Run(ctx, queue.Config[string]{
		Queue:     c.queue,
		Sync:      c.sync,
		Workers:   c.workers,
		Informers: []queue.Starter{factory},
		Synced:    []cache.InformerSynced{informer.HasSynced},
		Start: func(context.Context) error {
			c.log.Info("started", "workers", c.workers)
			return nil
		},
		Ready:  c.ready,
		Failed: c.failed,
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	return nil
}

// enqueue adds a namespace to the queue when it is terminating. Namespaces
// in use need no work from this controller.
func (c *Controller) enqueue(obj any) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok || ns.DeletionTimestamp == nil {
		return
	}
	c.queue.Add(ns.Name)
}

// failed logs a namespace whose sync failed and is retried with back-off.
func (c *Controller) failed(name string, err error) {
	if errors.Is(err, errContentRemaining) {
		c.log.Info("namespace not empty yet, will retry", "name", name, "err", err)
		return
	}
	c.log.Error("sync namespace", "name", name, "err", err)
}

// sync brings one namespace one step closer to being gone.
func (c *Controller) sync(ctx context.Context, name string) error {
	cached, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get namespace %q from cache: %w", name, err)
	}
	if cached.DeletionTimestamp == nil {
		return nil
	}

	// Work from the live object: the cache may lag behind a finalize that
	// already happened, and finalize needs the current resourceVersion.
	ns, err := c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get namespace %q: %w", name, err)
	}
	if ns.DeletionTimestamp == nil {
		return nil
	}
	if ns.Status.Phase != corev1.NamespaceTerminating {
		// The apiserver sets both together; deletionTimestamp is the one
		// that cannot be undone, so it decides.
		c.log.Debug("deleting namespace whose phase is not Terminating", "name", name, "phase", ns.Status.Phase)
	}

	if slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		if err := c.deleteContent(ctx, name); err != nil {
			return err
		}
		ns, err = c.finalize(ctx, ns)
		if err != nil || ns == nil {
			return err
		}
	}
	if len(ns.Spec.Finalizers) > 0 {
		c.log.Info("waiting for other finalizers", "name", name, "finalizers", ns.Spec.Finalizers)
		return nil
	}
	return c.deleteNamespace(ctx, ns)
}

// finalize removes the "kubernetes" finalizer from ns. It returns the
// updated namespace, or nil if the namespace is already gone.
func (c *Controller) finalize(ctx context.Context, ns *corev1.Namespace) (*corev1.Namespace, error) {
	ns = ns.DeepCopy()
	ns.Spec.Finalizers = slices.DeleteFunc(ns.Spec.Finalizers, func(f corev1.FinalizerName) bool {
		return f == corev1.FinalizerKubernetes
	})

	updated, err := c.client.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("finalize namespace %q: %w", ns.Name, err)
	}
	c.log.Info("finalized namespace", "name", ns.Name)
	return updated, nil
}

// deleteNamespace asks the apiserver again to delete ns, which removes it
// now that no finalizer is left. The UID precondition keeps a namespace
// recreated under the same name safe.
func (c *Controller) deleteNamespace(ctx context.Context, ns *corev1.Namespace) error {
	uid := ns.UID
	opts := metav1.DeleteOptions{}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err := c.client.CoreV1().Namespaces().Delete(ctx, ns.Name, opts)
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		// The UID differs: ours is gone and a new namespace took the name.
		return nil
	default:
		return fmt.Errorf("delete namespace %q: %w", ns.Name, err)
	}
}
