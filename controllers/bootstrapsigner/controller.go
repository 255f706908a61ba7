// Package bootstrapsigner publishes and signs the cluster-info ConfigMap, the
// first thing a joining node reads (path P0).
//
// The controller keeps kube-public/cluster-info holding, under "kubeconfig",
// a kubeconfig with one cluster: the API server's URL and the server CA
// bundle, and no credentials. Anyone may read it, anonymous users included,
// so a node can fetch it before it trusts the server. To tell a genuine copy
// from one a man in the middle made up, the controller adds for every valid
// bootstrap token that allows signing (Secret kube-system/bootstrap-token-<id>
// with usage-bootstrap-signing "true", not expired) a key
// "jws-kubeconfig-<id>": a detached JWS (RFC 7515 appendix F, HS256) of the
// kubeconfig content, keyed by the token's secret. A node that knows the
// token recomputes it; only someone who knows the token can have made it.
// Signatures of tokens that are deleted, expire or stop allowing signing are
// removed. The format is kubeadm's, so the signatures can be checked with
// k8s.io/cluster-bootstrap/token/jws.
//
// Upstream, kubeadm writes cluster-info and the controller manager only adds
// the signatures; tether's controller does both, from its Config, and
// overwrites a kubeconfig that differs from it.
//
// It runs in the controller manager and reaches the apiserver only through
// client-go; it needs to read Secrets in kube-system and to read, create and
// update ConfigMaps in kube-public.
package bootstrapsigner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/workqueue"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

// DefaultResyncPeriod is used when Config.ResyncPeriod is zero.
const DefaultResyncPeriod = 5 * time.Minute

// Back-off bounds for a failed write of cluster-info.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Minute
)

// The queue holds a single item: everything the controller does is one
// write of cluster-info.
const queueKey = metav1.NamespacePublic + "/" + bootstrapapi.ConfigMapClusterInfo

// Keys tether adds to cluster-info: the client CA bundle, and the service
// and pod ranges. All are public.
const (
	ClientCAKey    = "client-ca.crt"
	ServiceCIDRKey = "service-cluster-ip-range"
	ClusterCIDRKey = "cluster-cidr"
)

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads bootstrap token Secrets and writes cluster-info.
	// Required.
	Client kubernetes.Interface
	// ServerURL is the API server's address as joining nodes reach it, an
	// https URL such as https://192.0.2.10:6443. Required.
	ServerURL string
	// CACert is the PEM bundle of the CA(s) that sign the API server's
	// serving certificate (the server CA). Required.
	CACert []byte
	// ClientCACert, if set, is published as ClientCAKey: the CA bundle of
	// client certificates, which node agents use to verify the API
	// server's client certificate on the kubelet port. It is public.
	ClientCACert []byte
	// Extra are further public keys published in cluster-info as they are
	// (the service and pod ranges, which node agents need).
	Extra map[string]string
	// Informers, if set, is the shared informer factory whose Secret and
	// ConfigMap informers the controller uses; New registers them, and Run
	// starts the factory's informers that are not running yet (with Run's
	// context) but does not shut the factory down. Those informers watch
	// every namespace. If nil, the controller builds its own, which watch
	// only bootstrap token Secrets in kube-system and cluster-info in
	// kube-public, and owns them.
	Informers informers.SharedInformerFactory
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// ResyncPeriod is how often cluster-info is checked even when nothing
	// changed. Expiring tokens are handled at their expiry, independent of
	// it. If 0, DefaultResyncPeriod is used.
	ResyncPeriod time.Duration
}

// Controller keeps cluster-info published and signed. Create it with New
// and start it with Run.
type Controller struct {
	client    kubernetes.Interface
	serverURL string
	content   string // the kubeconfig published in cluster-info
	clientCA  string // ClientCAKey's value; "" for none
	extra     map[string]string
	resync    time.Duration
	log       *slog.Logger
	now       func() time.Time

	factories    []informers.SharedInformerFactory // owned; shut down by Run
	shared       informers.SharedInformerFactory   // not owned; only started
	secrets      cache.SharedIndexInformer
	cms          cache.SharedIndexInformer
	secretLister corelisters.SecretLister
	cmLister     corelisters.ConfigMapLister

	ready     chan struct{}
	readyOnce sync.Once

	queue workqueue.TypedRateLimitingInterface[string] // set by Run
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("bootstrapsigner: Config.Client is required"))
	}
	if err := validateServerURL(cfg.ServerURL); err != nil {
		errs = append(errs, err)
	}
	if len(cfg.ClientCACert) > 0 {
		if _, err := certutil.ParseCertsPEM(cfg.ClientCACert); err != nil {
			errs = append(errs, fmt.Errorf("bootstrapsigner: Config.ClientCACert: %w", err))
		}
	}
	if len(cfg.CACert) == 0 {
		errs = append(errs, errors.New("bootstrapsigner: Config.CACert is required"))
	} else if _, err := certutil.ParseCertsPEM(cfg.CACert); err != nil {
		errs = append(errs, fmt.Errorf("bootstrapsigner: Config.CACert: %w", err))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("bootstrapsigner: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	content, err := kubeconfig(cfg.ServerURL, cfg.CACert)
	if err != nil {
		return nil, fmt.Errorf("bootstrapsigner: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		client:    cfg.Client,
		serverURL: cfg.ServerURL,
		content:   content,
		clientCA:  string(cfg.ClientCACert),
		extra:     maps.Clone(cfg.Extra),
		resync:    cfg.ResyncPeriod,
		log:       log.With("component", "bootstrap-signer"),
		now:       time.Now,
		shared:    cfg.Informers,
		ready:     make(chan struct{}),
	}
	if c.resync == 0 {
		c.resync = DefaultResyncPeriod
	}

	secretFactory, cmFactory := cfg.Informers, cfg.Informers
	if cfg.Informers == nil {
		// The queue resyncs; the informers need not.
		secretFactory = informer.NewFactory(cfg.Client, 0,
			informers.WithNamespace(metav1.NamespaceSystem),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("type", string(bootstrapapi.SecretTypeBootstrapToken)).String()
			}))
		cmFactory = informer.NewFactory(cfg.Client, 0,
			informers.WithNamespace(metav1.NamespacePublic),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", bootstrapapi.ConfigMapClusterInfo).String()
			}))
		c.factories = []informers.SharedInformerFactory{secretFactory, cmFactory}
	}
	secrets := secretFactory.Core().V1().Secrets()
	c.secrets, c.secretLister = secrets.Informer(), secrets.Lister()
	cms := cmFactory.Core().V1().ConfigMaps()
	c.cms, c.cmLister = cms.Informer(), cms.Lister()
	return c, nil
}

func validateServerURL(s string) error {
	if s == "" {
		return errors.New("bootstrapsigner: Config.ServerURL is required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("bootstrapsigner: Config.ServerURL: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("bootstrapsigner: Config.ServerURL is %q, want https://<host>[:<port>]", s)
	}
	return nil
}

// Ready returns a channel that is closed once cluster-info has been
// written (or found up to date) for the first time, so that a joining node
// can read it. Until then failed writes are retried with back-off.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run keeps cluster-info published and signed until ctx ends. It must be
// called at most once. On return its worker has finished and its event
// handlers are removed; owned informers have stopped. Run returns nil when
// ctx ends after a successful start, and an error if the caches could not
// be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("bootstrapsigner", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown()
	for _, f := range c.factories {
		defer f.Shutdown() // after ctx ends; waits for the informer goroutines
	}

	starters := []queue.Starter{c.shared}
	for _, f := range c.factories {
		starters = append(starters, f)
	}
	err := queue.Run(ctx, queue.Config[string]{
		Queue: c.queue,
		Sync:  c.syncKey,
		Handlers: []queue.Handler{
			{Informer: c.secrets, Handler: cache.FilteringResourceEventHandler{FilterFunc: isTokenSecret, Handler: c.handler()}},
			{Informer: c.cms, Handler: cache.FilteringResourceEventHandler{FilterFunc: isClusterInfo, Handler: c.handler()}},
		},
		Informers: starters,
		Start: func(context.Context) error {
			c.log.Info("started", "server", c.serverURL)
			c.queue.Add(queueKey) // publish cluster-info even if no event comes
			return nil
		},
		// Ready is closed by the first successful sync, not here.
		Failed: c.failed,
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("bootstrapsigner: %w", err)
	}
	return nil
}

// handler queues the single work item on every event it is given.
func (c *Controller) handler() cache.ResourceEventHandlerFuncs {
	enqueue := func(any) { c.queue.Add(queueKey) }
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}
}

// isTokenSecret passes bootstrap token Secrets in kube-system, and deletion
// tombstones (whose object may be stale or missing).
func isTokenSecret(obj any) bool {
	if _, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return true
	}
	s, ok := obj.(*corev1.Secret)
	return ok && s.Namespace == metav1.NamespaceSystem && s.Type == bootstrapapi.SecretTypeBootstrapToken
}

// isClusterInfo passes kube-public/cluster-info and deletion tombstones.
func isClusterInfo(obj any) bool {
	if _, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return true
	}
	cm, ok := obj.(*corev1.ConfigMap)
	return ok && cm.Namespace == metav1.NamespacePublic && cm.Name == bootstrapapi.ConfigMapClusterInfo
}

// syncKey syncs cluster-info, the only key, and queues it again for the
// next check. The first success closes Ready.
func (c *Controller) syncKey(ctx context.Context, key string) error {
	next, err := c.sync(ctx)
	if err != nil {
		return err
	}
	c.queue.AddAfter(key, next)
	c.readyOnce.Do(func() { close(c.ready) })
	return nil
}

// failed logs a failed sync of cluster-info, which is retried with
// back-off.
func (c *Controller) failed(_ string, err error) {
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		// The cache is behind a write (ours or another server's); the
		// event that brings it up to date queues the item again.
		c.log.Debug("cluster-info changed under us, retrying", "err", err)
		return
	}
	c.log.Error("sync cluster-info", "namespace", metav1.NamespacePublic, "name", bootstrapapi.ConfigMapClusterInfo, "err", err)
}

// sync writes cluster-info if its content or signatures differ from what
// they should be. It returns how long until the next check is due: the
// resync period, or sooner if a signing token expires before that.
func (c *Controller) sync(ctx context.Context) (time.Duration, error) {
	now := c.now()
	tokens, next, err := c.signingTokens(now)
	if err != nil {
		return 0, err
	}

	cm, err := c.cmLister.ConfigMaps(metav1.NamespacePublic).Get(bootstrapapi.ConfigMapClusterInfo)
	if apierrors.IsNotFound(err) {
		data, err := desiredData(nil, c.content, tokens)
		if err != nil {
			return 0, err
		}
		if c.clientCA != "" {
			data[ClientCAKey] = c.clientCA
		}
		maps.Copy(data, c.extra)
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespacePublic, Name: bootstrapapi.ConfigMapClusterInfo},
			Data:       data,
		}
		if _, err := c.client.CoreV1().ConfigMaps(metav1.NamespacePublic).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return 0, fmt.Errorf("create configmap %s/%s: %w", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo, err)
		}
		c.log.Info("published cluster-info", "namespace", metav1.NamespacePublic, "name", bootstrapapi.ConfigMapClusterInfo, "signatures", tokenIDs(tokens))
		return next, nil
	}
	if err != nil {
		return 0, fmt.Errorf("get configmap %s/%s from cache: %w", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo, err)
	}
	if cm.DeletionTimestamp != nil {
		// Recreated once the deletion is through; its event queues us.
		return next, nil
	}
	data, err := desiredData(cm.Data, c.content, tokens)
	if err != nil {
		return 0, err
	}
	if c.clientCA != "" {
		data[ClientCAKey] = c.clientCA
	}
	maps.Copy(data, c.extra)
	if maps.Equal(data, cm.Data) {
		return next, nil
	}
	update := cm.DeepCopy()
	update.Data = data
	if _, err := c.client.CoreV1().ConfigMaps(metav1.NamespacePublic).Update(ctx, update, metav1.UpdateOptions{}); err != nil {
		return 0, fmt.Errorf("update configmap %s/%s: %w", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo, err)
	}
	c.log.Info("updated cluster-info", "namespace", metav1.NamespacePublic, "name", bootstrapapi.ConfigMapClusterInfo,
		"kubeconfigChanged", cm.Data[bootstrapapi.KubeConfigKey] != c.content, "signatures", tokenIDs(tokens))
	return next, nil
}

// signingTokens returns the tokens that may sign cluster-info now, by ID,
// and how long until the next check is due (the resync period, or the
// first expiry of one of them if sooner).
func (c *Controller) signingTokens(now time.Time) ([]signingToken, time.Duration, error) {
	secrets, err := c.secretLister.Secrets(metav1.NamespaceSystem).List(labels.Everything())
	if err != nil {
		return nil, 0, fmt.Errorf("list secrets in %s from cache: %w", metav1.NamespaceSystem, err)
	}
	next := c.resync
	var tokens []signingToken
	for _, s := range secrets {
		t, ok := signingTokenFrom(s, now)
		if !ok {
			continue
		}
		tokens = append(tokens, t)
		if !t.expires.IsZero() {
			next = min(next, t.expires.Sub(now))
		}
	}
	slices.SortFunc(tokens, func(a, b signingToken) int { return strings.Compare(a.id, b.id) })
	return tokens, next, nil
}

func tokenIDs(tokens []signingToken) []string {
	ids := make([]string, len(tokens))
	for i, t := range tokens {
		ids[i] = t.id
	}
	return ids
}
