// Package serviceaccount keeps a ServiceAccount named "default" in every
// active namespace (path P3).
//
// A pod that names no service account runs as "default", and the
// ServiceAccount admission plugin refuses a pod whose service account does
// not exist; so every namespace needs one from the moment it is created.
// The controller creates it when a namespace appears, and again whenever it
// is deleted while its namespace is active. It leaves namespaces that are
// being deleted alone (the API server would refuse the write anyway), and
// it never changes an existing "default" account: what its owner put in it
// (image pull secrets, automountServiceAccountToken) stays.
//
// It runs in the controller manager and reaches the apiserver only through
// client-go; it needs to list and watch Namespaces and ServiceAccounts and
// to create ServiceAccounts in every namespace.
package serviceaccount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

// DefaultName is the name of the service account every namespace gets.
const DefaultName = "default"

// DefaultResyncPeriod is used when Config.ResyncPeriod is zero.
const DefaultResyncPeriod = 10 * time.Minute

// Back-off bounds for a failed creation.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Minute
)

// workers is how many namespaces are synced at once.
const workers = 3

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads Namespaces and ServiceAccounts and creates
	// ServiceAccounts. Required.
	Client kubernetes.Interface
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// ResyncPeriod is how often the informers replay their caches, so that
	// every namespace is looked at again even if an event was missed. If 0,
	// DefaultResyncPeriod is used.
	ResyncPeriod time.Duration
}

// Controller keeps the default ServiceAccount in every active namespace.
// Create it with New and start it with Run.
type Controller struct {
	client kubernetes.Interface
	log    *slog.Logger

	factories []informers.SharedInformerFactory // owned; shut down by Run
	nsInf     cache.SharedIndexInformer
	nsLister  corelisters.NamespaceLister
	saInf     cache.SharedIndexInformer
	saLister  corelisters.ServiceAccountLister

	ready chan struct{}
	queue workqueue.TypedRateLimitingInterface[string] // set by Run; keys are namespace names
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("serviceaccount: Config.Client is required"))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("serviceaccount: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	resync := cfg.ResyncPeriod
	if resync == 0 {
		resync = DefaultResyncPeriod
	}
	nsFactory := informer.NewFactory(cfg.Client, resync)
	// Only the accounts the controller owns are watched, in every namespace.
	saFactory := informer.NewFactory(cfg.Client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", DefaultName).String()
		}))
	c := &Controller{
		client:    cfg.Client,
		log:       log.With("component", "serviceaccount-controller"),
		factories: []informers.SharedInformerFactory{nsFactory, saFactory},
		ready:     make(chan struct{}),
	}
	ns := nsFactory.Core().V1().Namespaces()
	c.nsInf, c.nsLister = ns.Informer(), ns.Lister()
	sa := saFactory.Core().V1().ServiceAccounts()
	c.saInf, c.saLister = sa.Informer(), sa.Lister()
	return c, nil
}

// Ready returns a channel that is closed once the caches have synced and
// the controller is about to work.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run keeps the default ServiceAccounts until ctx ends. It must be called at
// most once. On return its workers have finished, its event handlers are
// removed and its informers have stopped. Run returns nil when ctx ends
// after a successful start, and an error if the caches could not be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("serviceaccount", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown()
	var starters []queue.Starter
	for _, f := range c.factories {
		defer f.Shutdown() // after ctx ends; waits for the informer goroutines
		starters = append(starters, f)
	}
	err := queue.Run(ctx, queue.Config[string]{
		Queue:   c.queue,
		Sync:    c.sync,
		Workers: workers,
		Handlers: []queue.Handler{
			{Informer: c.nsInf, Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    c.enqueueNamespace,
				UpdateFunc: func(_, obj any) { c.enqueueNamespace(obj) },
			}},
			{Informer: c.saInf, Handler: cache.ResourceEventHandlerFuncs{
				// Only a deletion can leave a namespace without its account.
				DeleteFunc: c.enqueueAccount,
			}},
		},
		Informers: starters,
		Start: func(context.Context) error {
			c.log.Info("started")
			return nil
		},
		Ready: c.ready,
		Failed: func(ns string, err error) {
			c.log.Error("create service account", "namespace", ns, "name", DefaultName, "err", err)
		},
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("serviceaccount: %w", err)
	}
	return nil
}

func (c *Controller) enqueueNamespace(obj any) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		c.queue.Add(ns.Name)
	}
}

func (c *Controller) enqueueAccount(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if sa, ok := obj.(*corev1.ServiceAccount); ok && sa.Name == DefaultName {
		c.queue.Add(sa.Namespace)
	}
}

// sync creates the default ServiceAccount in namespace ns if ns is active
// and the account is missing.
func (c *Controller) sync(ctx context.Context, ns string) error {
	n, err := c.nsLister.Get(ns)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get namespace %s from cache: %w", ns, err)
	}
	if n.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating {
		return nil
	}
	switch _, err := c.saLister.ServiceAccounts(ns).Get(DefaultName); {
	case err == nil:
		return nil
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get service account %s/%s from cache: %w", ns, DefaultName, err)
	}

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: DefaultName}}
	_, err = c.client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{})
	switch {
	case err == nil:
		c.log.Info("created service account", "namespace", ns, "name", DefaultName)
		return nil
	case apierrors.IsAlreadyExists(err):
		// The cache is behind; the account is there.
		return nil
	case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
		// The namespace started terminating since the cache saw it.
		return nil
	}
	return fmt.Errorf("create service account %s/%s: %w", ns, DefaultName, err)
}
