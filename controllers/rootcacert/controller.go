// Package rootcacert publishes the API server's CA bundle in every active
// namespace as the ConfigMap kube-root-ca.crt (path P3).
//
// A pod verifies the API server with the bundle under the key ca.crt: the
// ServiceAccount admission plugin projects that key into every pod at
// /var/run/secrets/kubernetes.io/serviceaccount/ca.crt. The controller
// creates the ConfigMap when a namespace appears, recreates it when it is
// deleted, and puts its content back when someone changes it: the data is
// exactly {ca.crt: <bundle>}, and the annotation kubernetes.io/description
// says what the bundle is for. Namespaces that are being deleted are left
// alone (the API server would refuse the write anyway).
//
// It runs in the controller manager and reaches the apiserver only through
// client-go; it needs to list and watch Namespaces and ConfigMaps and to
// create and update ConfigMaps in every namespace.
package rootcacert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/workqueue"

	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

const (
	// ConfigMapName is the name of the ConfigMap in every namespace.
	ConfigMapName = "kube-root-ca.crt"
	// Key is the ConfigMap key that holds the PEM bundle.
	Key = "ca.crt"
	// DescriptionAnnotation is the annotation that explains the ConfigMap.
	DescriptionAnnotation = "kubernetes.io/description"
	// Description is the value of DescriptionAnnotation.
	Description = "The CA bundle that verifies the Kubernetes API server when it is reached at " +
		"its in-cluster addresses, such as the kubernetes.default Service. " +
		"Other uses are not supported and may not work the same on other clusters."
)

// DefaultResyncPeriod is used when Config.ResyncPeriod is zero.
const DefaultResyncPeriod = 10 * time.Minute

// Back-off bounds for a failed write.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Minute
)

// workers is how many namespaces are synced at once.
const workers = 3

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads Namespaces and ConfigMaps and writes ConfigMaps.
	// Required.
	Client kubernetes.Interface
	// CACert is the PEM bundle of the CA(s) that sign the API server's
	// serving certificate (the server CA). Required.
	CACert []byte
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// ResyncPeriod is how often the informers replay their caches, so that
	// every namespace is looked at again even if an event was missed. If 0,
	// DefaultResyncPeriod is used.
	ResyncPeriod time.Duration
}

// Controller keeps kube-root-ca.crt in every active namespace. Create it
// with New and start it with Run.
type Controller struct {
	client kubernetes.Interface
	caCert string
	log    *slog.Logger

	factories []informers.SharedInformerFactory // owned; shut down by Run
	nsInf     cache.SharedIndexInformer
	nsLister  corelisters.NamespaceLister
	cmInf     cache.SharedIndexInformer
	cmLister  corelisters.ConfigMapLister

	ready chan struct{}
	queue workqueue.TypedRateLimitingInterface[string] // set by Run; keys are namespace names
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("rootcacert: Config.Client is required"))
	}
	if len(cfg.CACert) == 0 {
		errs = append(errs, errors.New("rootcacert: Config.CACert is required"))
	} else if _, err := certutil.ParseCertsPEM(cfg.CACert); err != nil {
		errs = append(errs, fmt.Errorf("rootcacert: Config.CACert: %w", err))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("rootcacert: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
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
	// Only the ConfigMaps the controller owns are watched, in every
	// namespace.
	cmFactory := informer.NewFactory(cfg.Client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ConfigMapName).String()
		}))
	c := &Controller{
		client:    cfg.Client,
		caCert:    string(cfg.CACert),
		log:       log.With("component", "root-ca-cert-publisher"),
		factories: []informers.SharedInformerFactory{nsFactory, cmFactory},
		ready:     make(chan struct{}),
	}
	ns := nsFactory.Core().V1().Namespaces()
	c.nsInf, c.nsLister = ns.Informer(), ns.Lister()
	cm := cmFactory.Core().V1().ConfigMaps()
	c.cmInf, c.cmLister = cm.Informer(), cm.Lister()
	return c, nil
}

// Ready returns a channel that is closed once the caches have synced and
// the controller is about to work.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run keeps kube-root-ca.crt published until ctx ends. It must be called at
// most once. On return its workers have finished, its event handlers are
// removed and its informers have stopped. Run returns nil when ctx ends
// after a successful start, and an error if the caches could not be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("rootcacert", minRetryDelay, maxRetryDelay)
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
			{Informer: c.cmInf, Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    c.enqueueConfigMap,
				UpdateFunc: func(_, obj any) { c.enqueueConfigMap(obj) },
				DeleteFunc: c.enqueueConfigMap,
			}},
		},
		Informers: starters,
		Start: func(context.Context) error {
			c.log.Info("started")
			return nil
		},
		Ready: c.ready,
		Failed: func(ns string, err error) {
			if apierrors.IsConflict(err) {
				// The cache is behind a write; retried with back-off.
				c.log.Debug("configmap changed under us, retrying", "namespace", ns, "name", ConfigMapName, "err", err)
				return
			}
			c.log.Error("publish root CA", "namespace", ns, "name", ConfigMapName, "err", err)
		},
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("rootcacert: %w", err)
	}
	return nil
}

func (c *Controller) enqueueNamespace(obj any) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		c.queue.Add(ns.Name)
	}
}

func (c *Controller) enqueueConfigMap(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == ConfigMapName {
		c.queue.Add(cm.Namespace)
	}
}

// desired returns the data the ConfigMap holds.
func (c *Controller) desired() map[string]string { return map[string]string{Key: c.caCert} }

// upToDate reports whether cm holds exactly the bundle and is annotated.
func (c *Controller) upToDate(cm *corev1.ConfigMap) bool {
	return maps.Equal(cm.Data, c.desired()) && len(cm.BinaryData) == 0 &&
		cm.Annotations[DescriptionAnnotation] == Description
}

// sync creates or corrects kube-root-ca.crt in namespace ns if ns is
// active.
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

	cms := c.client.CoreV1().ConfigMaps(ns)
	cm, err := c.cmLister.ConfigMaps(ns).Get(ConfigMapName)
	if apierrors.IsNotFound(err) {
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Namespace:   ns,
				Name:        ConfigMapName,
				Annotations: map[string]string{DescriptionAnnotation: Description},
			},
			Data: c.desired(),
		}
		_, err := cms.Create(ctx, cm, metav1.CreateOptions{})
		switch {
		case err == nil:
			c.log.Info("published root CA", "namespace", ns, "name", ConfigMapName)
			return nil
		case apierrors.IsAlreadyExists(err):
			// The cache is behind; its add event queues the namespace
			// again, and then the content is checked.
			return nil
		case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
			return nil
		}
		return fmt.Errorf("create configmap %s/%s: %w", ns, ConfigMapName, err)
	}
	if err != nil {
		return fmt.Errorf("get configmap %s/%s from cache: %w", ns, ConfigMapName, err)
	}
	if cm.DeletionTimestamp != nil || c.upToDate(cm) {
		// A ConfigMap being deleted is recreated once it is gone; its
		// delete event queues the namespace.
		return nil
	}

	update := cm.DeepCopy()
	update.Data = c.desired()
	update.BinaryData = nil
	if update.Annotations == nil {
		update.Annotations = map[string]string{}
	}
	update.Annotations[DescriptionAnnotation] = Description
	_, err = cms.Update(ctx, update, metav1.UpdateOptions{})
	switch {
	case err == nil:
		c.log.Info("restored root CA", "namespace", ns, "name", ConfigMapName)
		return nil
	case apierrors.IsNotFound(err):
		// Deleted since the cache saw it; its delete event queues us.
		return nil
	}
	return fmt.Errorf("update configmap %s/%s: %w", ns, ConfigMapName, err)
}
