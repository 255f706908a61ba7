// Package csrapproving is the approver of node certificate signing
// requests (paths P2 and P6 in DESIGN.md). It runs in the controller
// manager and decides, without a human, on two kinds of request:
//
//   - kubernetes.io/kube-apiserver-client-kubelet, a node's client
//     certificate: approved when the subject is exactly
//     CN=system:node:<name>, O=system:nodes, there are no subject
//     alternative names, the usages are client auth (plus optionally
//     digital signature and key encipherment), the key is ECDSA or RSA, and
//     a SubjectAccessReview says the requester may create
//     certificatesigningrequests/nodeclient (any node: bootstrap tokens) or,
//     when the requester is that very node renewing, .../selfnodeclient.
//   - kubernetes.io/kubelet-serving, a node's serving certificate: approved
//     when the requester is system:node:<name> in group system:nodes, the
//     subject is that same user in O=system:nodes, the usages are server
//     auth and digital signature (plus optionally key encipherment), and
//     every subject alternative name is exactly one of the Node's
//     status.addresses.
//
// Every other request to those two signers is denied, with a reason and a
// message saying what is wrong. Upstream leaves a node client request whose
// requester lacks the permission pending for an administrator; tether
// denies it, so that the agent learns at once that it will not join.
// Requests to any other signer are left alone. Each decision is also
// recorded as an Event about the request, in the default namespace.
//
// The controller reaches the apiserver only through client-go, as
// system:kube-controller-manager, which may approve for these signers.
package csrapproving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
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
)

// Defaults used when the corresponding Config field is zero.
const (
	DefaultWorkers      = 2
	DefaultResyncPeriod = 10 * time.Minute
)

// Back-off bounds for a request whose decision could not be made or
// written.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Minute
)

// Event reasons, one per decision.
const (
	EventApproved = "CSRApproved"
	EventDenied   = "CSRDenied"
)

// component names the controller in Events and logs.
const component = "csrapproving-controller"

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads requests and Nodes, asks SubjectAccessReviews, writes
	// approvals and Events. Required.
	Client kubernetes.Interface
	// Informers, if set, is the shared informer factory whose
	// CertificateSigningRequest informer the controller uses; Run starts
	// the factory's informers that are not running yet but does not shut
	// the factory down. If nil, the controller builds its own factory from
	// Client and owns it.
	Informers informers.SharedInformerFactory
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Workers is how many requests are decided at once. If 0,
	// DefaultWorkers is used.
	Workers int
	// ResyncPeriod is how often an own factory replays its cache. If 0,
	// DefaultResyncPeriod is used. Ignored when Informers is set.
	ResyncPeriod time.Duration
}

// Controller approves or denies node certificate requests. Create it with
// New and start it with Run.
type Controller struct {
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	owned    bool
	informer cache.SharedIndexInformer
	lister   certlisters.CertificateSigningRequestLister
	log      *slog.Logger
	events   certrequest.Recorder
	workers  int
	now      func() time.Time

	ready chan struct{}

	queue workqueue.TypedRateLimitingInterface[string] // set by Run
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("csrapproving: Config.Client is required"))
	}
	if cfg.Workers < 0 {
		errs = append(errs, fmt.Errorf("csrapproving: Config.Workers is %d, want >= 0", cfg.Workers))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("csrapproving: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
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
		factory: cfg.Informers,
		log:     log,
		events:  certrequest.Recorder{Client: cfg.Client, Component: component, Logger: log},
		workers: cfg.Workers,
		now:     time.Now,
		ready:   make(chan struct{}),
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

// Run decides on requests until ctx ends. It must be called at most once.
// On return the workers have finished their current request and the event
// handler is removed; an owned informer factory has stopped. Run returns
// nil when ctx ends after a successful start, and an error if the cache
// could not be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("csrapproving", minRetryDelay, maxRetryDelay)
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
			c.log.Info("started", "workers", c.workers)
			return nil
		},
		Ready: c.ready,
		Failed: func(name string, err error) {
			c.log.Error("decide on certificatesigningrequest", "name", name, "err", err)
		},
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("csrapproving: %w", err)
	}
	return nil
}

// enqueue queues undecided requests to the two signers the approver
// handles.
func (c *Controller) enqueue(obj any) {
	csr, ok := obj.(*certificatesv1.CertificateSigningRequest)
	if !ok || decided(csr) {
		return
	}
	switch csr.Spec.SignerName {
	case certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName:
		c.queue.Add(csr.Name)
	}
}

// sync decides on one request and writes the decision.
func (c *Controller) sync(ctx context.Context, name string) error {
	cached, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get certificatesigningrequest %q from cache: %w", name, err)
	}
	d, err := decide(ctx, cached, apiFacts{c.client})
	if err != nil {
		return fmt.Errorf("certificatesigningrequest %q: %w", name, err)
	}
	if d.Action == Skip {
		return nil
	}

	csr := cached.DeepCopy()
	cond := certificatesv1.CertificateSigningRequestCondition{
		Type:           certificatesv1.CertificateApproved,
		Status:         corev1.ConditionTrue,
		Reason:         d.Reason,
		Message:        d.Message,
		LastUpdateTime: metav1.NewTime(c.now()),
	}
	eventType, eventReason := corev1.EventTypeNormal, EventApproved
	if d.Action == Deny {
		cond.Type = certificatesv1.CertificateDenied
		eventType, eventReason = corev1.EventTypeWarning, EventDenied
	}
	csr.Status.Conditions = append(csr.Status.Conditions, cond)
	// The resourceVersion of the cached object guards against a decision
	// made meanwhile by someone else: that is a conflict, and the retry
	// finds the request decided.
	updated, err := c.client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, name, csr, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s certificatesigningrequest %q: %w", d.Action, name, err)
	}
	c.log.Info("decided", "name", name, "signer", csr.Spec.SignerName, "requester", csr.Spec.Username,
		"decision", d.Action.String(), "reason", d.Reason, "message", d.Message)
	c.events.Event(ctx, updated, eventType, eventReason, d.Message)
	return nil
}

// apiFacts learns the facts of a decision from the apiserver. The Node is
// read live rather than from a cache: a denial is final, and a node that
// registered or changed its addresses a moment ago must not be denied
// because a cache lags.
type apiFacts struct{ client kubernetes.Interface }

var _ facts = apiFacts{}

func (f apiFacts) node(ctx context.Context, name string) (*corev1.Node, error) {
	n, err := f.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get node %q: %w", name, err)
	}
	return n, nil
}

func (f apiFacts) allowed(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, subresource string) (bool, string, error) {
	sar := &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   csr.Spec.Username,
			UID:    csr.Spec.UID,
			Groups: csr.Spec.Groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Group:       certificatesv1.GroupName,
				Resource:    "certificatesigningrequests",
				Subresource: subresource,
				Verb:        "create",
			},
		},
	}
	if len(csr.Spec.Extra) > 0 {
		sar.Spec.Extra = make(map[string]authorizationv1.ExtraValue, len(csr.Spec.Extra))
		for k, v := range csr.Spec.Extra {
			sar.Spec.Extra[k] = authorizationv1.ExtraValue(v)
		}
	}
	resp, err := f.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("subjectaccessreview for %s on certificatesigningrequests/%s: %w", csr.Spec.Username, subresource, err)
	}
	why := resp.Status.Reason
	if resp.Status.EvaluationError != "" {
		if why != "" {
			why += "; "
		}
		why += "evaluation error: " + resp.Status.EvaluationError
	}
	return resp.Status.Allowed, why, nil
}
