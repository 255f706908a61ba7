// Package tokencleaner deletes expired bootstrap tokens (path P0).
//
// A bootstrap token is the Secret kube-system/bootstrap-token-<id> of type
// bootstrap.kubernetes.io/token; its "expiration" key is an RFC 3339 time.
// Once that time has passed the token no longer authenticates or signs
// anything, and the controller deletes the Secret so that the secret part
// does not linger in etcd. A token whose expiration cannot be parsed counts
// as expired, as it does for the authenticator; a token without an
// expiration is left alone.
//
// The controller looks at a token when it is added or changed, and again at
// its expiry time, so a token is gone within moments of expiring without any
// polling. It runs in the controller manager and reaches the apiserver only
// through client-go; it needs to list, watch and delete Secrets in
// kube-system.
package tokencleaner

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
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstrapsecrets "k8s.io/cluster-bootstrap/util/secrets"

	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

// DefaultResyncPeriod is used when Config.ResyncPeriod is zero and the
// controller builds its own informer.
const DefaultResyncPeriod = 10 * time.Minute

// Back-off bounds for a failed deletion.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Minute
)

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads and deletes bootstrap token Secrets. Required.
	Client kubernetes.Interface
	// Informers, if set, is the shared informer factory whose Secret
	// informer the controller uses; New registers it, and Run starts the
	// factory's informers that are not running yet (with Run's context) but
	// does not shut the factory down. That informer watches Secrets in every
	// namespace. If nil, the controller builds its own, which watches only
	// bootstrap token Secrets in kube-system, and owns it.
	Informers informers.SharedInformerFactory
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// ResyncPeriod is how often an own informer replays its cache, so that
	// every token is looked at again. If 0, DefaultResyncPeriod is used.
	// Ignored when Informers is set.
	ResyncPeriod time.Duration
}

// Controller deletes expired bootstrap tokens. Create it with New and start
// it with Run.
type Controller struct {
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	owned    bool
	informer cache.SharedIndexInformer
	lister   corelisters.SecretLister
	log      *slog.Logger
	now      func() time.Time

	ready chan struct{}

	queue workqueue.TypedRateLimitingInterface[string] // set by Run; keys are Secret names
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("tokencleaner: Config.Client is required"))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("tokencleaner: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		client:  cfg.Client,
		factory: cfg.Informers,
		log:     log.With("component", "token-cleaner"),
		now:     time.Now,
		ready:   make(chan struct{}),
	}
	if c.factory == nil {
		resync := cfg.ResyncPeriod
		if resync == 0 {
			resync = DefaultResyncPeriod
		}
		c.factory = informer.NewFactory(cfg.Client, resync,
			informers.WithNamespace(metav1.NamespaceSystem),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("type", string(bootstrapapi.SecretTypeBootstrapToken)).String()
			}))
		c.owned = true
	}
	secrets := c.factory.Core().V1().Secrets()
	c.informer, c.lister = secrets.Informer(), secrets.Lister()
	return c, nil
}

// Ready returns a channel that is closed once the Secret cache has synced
// and the controller is about to work.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run deletes expired bootstrap tokens until ctx ends. It must be called at
// most once. On return its worker has finished and its event handler is
// removed; an owned informer has stopped. Run returns nil when ctx ends
// after a successful start, and an error if the cache could not be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("tokencleaner", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown()
	if c.owned {
		defer c.factory.Shutdown() // after ctx ends; waits for the informer goroutines
	}

	err := queue.Run(ctx, queue.Config[string]{
		Queue: c.queue,
		Sync:  c.sync,
		Handlers: []queue.Handler{{
			Informer: c.informer,
			Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    c.enqueue,
				UpdateFunc: func(_, obj any) { c.enqueue(obj) },
			},
		}},
		Informers: []queue.Starter{c.factory},
		Start: func(context.Context) error {
			c.log.Info("started")
			return nil
		},
		Ready: c.ready,
		Failed: func(name string, err error) {
			c.log.Error("delete expired bootstrap token", "namespace", metav1.NamespaceSystem, "name", name, "err", err)
		},
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("tokencleaner: %w", err)
	}
	return nil
}

// enqueue queues bootstrap token Secrets in kube-system by name.
func (c *Controller) enqueue(obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok || s.Namespace != metav1.NamespaceSystem || s.Type != bootstrapapi.SecretTypeBootstrapToken {
		return
	}
	c.queue.Add(s.Name)
}

// sync deletes the token Secret name if it has expired, and otherwise
// queues it again for its expiry time.
func (c *Controller) sync(ctx context.Context, name string) error {
	s, err := c.lister.Secrets(metav1.NamespaceSystem).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get secret %s/%s from cache: %w", metav1.NamespaceSystem, name, err)
	}
	if s.Type != bootstrapapi.SecretTypeBootstrapToken || s.DeletionTimestamp != nil {
		return nil
	}
	remaining, expired := bootstrapsecrets.GetExpiration(s, c.now())
	if !expired {
		if remaining > 0 { // 0: no expiration
			c.queue.AddAfter(name, remaining)
		}
		return nil
	}

	// The UID precondition spares a token recreated under the same name
	// since the cache saw this one.
	uid := s.UID
	opts := metav1.DeleteOptions{}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err = c.client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, name, opts)
	switch {
	case err == nil:
		c.log.Info("deleted expired bootstrap token", "namespace", metav1.NamespaceSystem, "name", name,
			"expiration", bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenExpirationKey))
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		// A new token took the name; its own event queues it.
		return nil
	default:
		return fmt.Errorf("delete secret %s/%s: %w", metav1.NamespaceSystem, name, err)
	}
}
