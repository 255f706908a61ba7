// Package csrsigning is the signer of certificate signing requests for
// the built-in signers (paths P2 and P6 in DESIGN.md). It runs in the
// controller manager and issues a certificate for every request that is
// approved, not denied, not failed and not yet issued:
//
//   - kubernetes.io/kube-apiserver-client and
//     kubernetes.io/kube-apiserver-client-kubelet with the client CA, as
//     client-auth certificates;
//   - kubernetes.io/kubelet-serving with the server CA, as server-auth
//     certificates for the request's DNS and IP subject alternative names.
//
// A certificate is valid for what the request asks in
// spec.expirationSeconds, at most Config.MaxDuration
// (--cluster-signing-duration), and MaxDuration when it asks for nothing;
// it never outlives its CA. The certificate is written to
// status.certificate; as upstream, no condition is added on success. A
// request that cannot be signed (a broken request, a usage or subject the
// signer does not issue) gets a Failed condition saying why. Each outcome
// is also an Event about the request in the default namespace.
//
// Who may approve is not this package's concern: the apiserver lets only
// those with the approve verb on the signer add an Approved condition.
package csrsigning

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	certlisters "k8s.io/client-go/listers/certificates/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"tether/controllers/internal/certrequest"
	"tether/controllers/internal/queue"
	"tether/internal/informer"
	"tether/pki"
)

// Defaults used when the corresponding Config field is zero.
const (
	DefaultMaxDuration  = 24 * time.Hour
	DefaultWorkers      = 2
	DefaultResyncPeriod = 10 * time.Minute
)

// Back-off bounds for a request whose certificate could not be written.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Minute
)

// Event reasons.
const (
	EventSigned        = "CSRSigned"
	EventSigningFailed = "CSRSigningFailed"
)

// ReasonFailed is the reason of the Failed condition, as upstream.
const ReasonFailed = "SignerValidationFailure"

// component names the controller in Events and logs.
const component = "csrsigning-controller"

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads requests and writes certificates, conditions and
	// Events. Required.
	Client kubernetes.Interface
	// ClientCA signs kube-apiserver-client and
	// kube-apiserver-client-kubelet certificates. Required, with its key.
	ClientCA *pki.CA
	// ServerCA signs kubelet-serving certificates. Required, with its key.
	ServerCA *pki.CA
	// MaxDuration is the longest validity of an issued certificate
	// (--cluster-signing-duration). If 0, DefaultMaxDuration.
	MaxDuration time.Duration
	// Informers, if set, is the shared informer factory whose
	// CertificateSigningRequest informer the controller uses; Run starts
	// the factory's informers that are not running yet but does not shut
	// the factory down. If nil, the controller builds its own factory from
	// Client and owns it.
	Informers informers.SharedInformerFactory
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Workers is how many requests are signed at once. If 0,
	// DefaultWorkers.
	Workers int
	// ResyncPeriod is how often an own factory replays its cache. If 0,
	// DefaultResyncPeriod. Ignored when Informers is set.
	ResyncPeriod time.Duration
}

// Controller signs approved requests. Create it with New and start it with
// Run.
type Controller struct {
	client   kubernetes.Interface
	issuer   issuer
	factory  informers.SharedInformerFactory
	owned    bool
	informer cache.SharedIndexInformer
	lister   certlisters.CertificateSigningRequestLister
	log      *slog.Logger
	events   certrequest.Recorder
	workers  int

	ready chan struct{}

	queue workqueue.TypedRateLimitingInterface[string] // set by Run
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("csrsigning: Config.Client is required"))
	}
	for name, ca := range map[string]*pki.CA{"ClientCA": cfg.ClientCA, "ServerCA": cfg.ServerCA} {
		if ca == nil || ca.Cert == nil || ca.Key == nil {
			errs = append(errs, fmt.Errorf("csrsigning: Config.%s with its certificate and key is required", name))
		}
	}
	if cfg.MaxDuration < 0 {
		errs = append(errs, fmt.Errorf("csrsigning: Config.MaxDuration is %v, want >= 0", cfg.MaxDuration))
	}
	if cfg.Workers < 0 {
		errs = append(errs, fmt.Errorf("csrsigning: Config.Workers is %d, want >= 0", cfg.Workers))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("csrsigning: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", component)
	c := &Controller{
		client:  cfg.Client,
		issuer:  issuer{clientCA: cfg.ClientCA, serverCA: cfg.ServerCA, maxDuration: cfg.MaxDuration},
		factory: cfg.Informers,
		log:     log,
		events:  certrequest.Recorder{Client: cfg.Client, Component: component, Logger: log},
		workers: cfg.Workers,
		ready:   make(chan struct{}),
	}
	if c.issuer.maxDuration == 0 {
		c.issuer.maxDuration = DefaultMaxDuration
	}
	if c.workers == 0 {
		c.workers = DefaultWorkers
	}
	if c.factory == nil {
		resync := cfg.ResyncPeriod
		if resync == 0 {
			resync = DefaultResyncPeriod
		}
		c.factory = informer.NewFactory(cfg.Client, resync)
		c.owned = true
	}
	csrs := c.factory.Certificates().V1().CertificateSigningRequests()
	c.informer, c.lister = csrs.Informer(), csrs.Lister()
	return c, nil
}

// Ready returns a channel that is closed once the request cache has synced
// and the workers are about to start.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run signs requests until ctx ends. It must be called at most once. On
// return the workers have finished their current request and the event
// handler is removed; an owned informer factory has stopped. Run returns
// nil when ctx ends after a successful start, and an error if the cache
// could not be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("csrsigning", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown()
	if c.owned {
		defer c.factory.Shutdown()
	}
	err := queue.Run(ctx, queue.Config[string]{
		Queue:   c.queue,
		Sync:    c.sync,
		Workers: c.workers,
		Handlers: []queue.Handler{{
			Informer: c.informer,
			Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    c.enqueue,
				UpdateFunc: func(_, obj any) { c.enqueue(obj) },
			},
		}},
		Informers: []queue.Starter{c.factory},
		Start: func(context.Context) error {
			c.log.Info("started", "workers", c.workers, "max_duration", c.issuer.maxDuration.String())
			return nil
		},
		Ready: c.ready,
		Failed: func(name string, err error) {
			c.log.Error("sign certificatesigningrequest", "name", name, "err", err)
		},
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("csrsigning: %w", err)
	}
	return nil
}

func (c *Controller) enqueue(obj any) {
	if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok && signable(csr) {
		c.queue.Add(csr.Name)
	}
}

// sync signs one request, or marks it Failed.
func (c *Controller) sync(ctx context.Context, name string) error {
	cached, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get certificatesigningrequest %q from cache: %w", name, err)
	}
	if !signable(cached) {
		return nil
	}
	csr := cached.DeepCopy()
	cert, signErr := c.issuer.sign(csr)
	var reqErr *requestError
	switch {
	case errors.As(signErr, &reqErr):
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type:           certificatesv1.CertificateFailed,
			Status:         corev1.ConditionTrue,
			Reason:         ReasonFailed,
			Message:        reqErr.msg,
			LastUpdateTime: metav1.Now(),
		})
	case signErr != nil:
		return fmt.Errorf("sign certificatesigningrequest %q: %w", name, signErr)
	default:
		csr.Status.Certificate = pki.EncodeCert(cert)
	}
	// A certificate issued here and then lost to a conflict is never
	// handed out; the retry issues another.
	updated, err := c.client.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("update status of certificatesigningrequest %q: %w", name, err)
	}
	if reqErr != nil {
		c.log.Info("cannot sign", "name", name, "signer", csr.Spec.SignerName, "err", reqErr)
		c.events.Event(ctx, updated, corev1.EventTypeWarning, EventSigningFailed, "cannot sign: "+reqErr.msg)
		return nil
	}
	msg := fmt.Sprintf("signed by %q for %s: serial %s, valid until %s", cert.Issuer.CommonName,
		cert.Subject.CommonName, cert.SerialNumber.Text(16), cert.NotAfter.UTC().Format(time.RFC3339))
	c.log.Info("signed", "name", name, "signer", csr.Spec.SignerName, "subject", cert.Subject.CommonName,
		"serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	c.events.Event(ctx, updated, corev1.EventTypeNormal, EventSigned, msg)
	return nil
}
