// Package kubelet is tether's node agent: it joins the node to the cluster
// (package bootstrap, path P0), registers the Node and keeps it alive with
// a Lease and status updates, keeps the node's client and serving
// certificates rotated (package certificate, paths P2 and P6), and serves
// the kubelet HTTPS port (package server). Pods, volumes and the kubelet
// API come later.
//
// An Agent talks to the API server only through client-go, as the user
// system:node:<name>; the Node authorizer and NodeRestriction admission
// limit it to its own Node, Lease and CSRs.
package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clientcert "k8s.io/client-go/util/certificate"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"tether/kubelet/bootstrap"
	"tether/kubelet/certificate"
	"tether/kubelet/network"
	"tether/kubelet/server"
	"tether/proxy"
)

// Defaults.
const (
	DefaultDataDir              = "/var/lib/tether/agent"
	DefaultKubeletPort          = 10250
	DefaultHeartbeatInterval    = 10 * time.Second
	DefaultStatusReportInterval = time.Minute
)

// ErrCertificateRejected is returned by Run when the API server answers
// 401 Unauthorized to the node's client certificate: it was revoked, it
// expired, or the cluster no longer trusts it.
var ErrCertificateRejected = errors.New("kubelet: the API server rejected the node's client certificate")

// Config configures an Agent. A Config is not changed after New.
type Config struct {
	// Server is the API server's https URL. Required to join; on later
	// runs the URL stored with the credentials is used when it is empty.
	Server string
	// Token is the bootstrap token "<id>.<secret>"; needed only to join.
	Token string
	// GetToken, if Token is empty, is called when a token is needed. May
	// be nil.
	GetToken func(ctx context.Context) (string, error)
	// CACertHashes are the accepted pins of the server CA
	// ("sha256:<hex>"); needed only to join.
	CACertHashes []string
	// InsecureSkipCAPin joins without a pin, trusting whatever CA the
	// server names (with a loud warning).
	InsecureSkipCAPin bool
	// Rejoin discards existing credentials and joins again with Token.
	Rejoin bool
	// DataDir holds the node's kubeconfig and key pairs. If empty,
	// DefaultDataDir.
	DataDir string
	// NodeName is the Node's name. If empty, the host name, lower-cased.
	NodeName string
	// NodeIP is the node's InternalIP. If nil, the source address of the
	// route to the server.
	NodeIP net.IP
	// KubeletPort is the kubelet's HTTPS port on NodeIP. If 0,
	// DefaultKubeletPort.
	KubeletPort int
	// Listener, if set, is used for the kubelet's HTTPS port instead of
	// listening on NodeIP:KubeletPort (tests pass 127.0.0.1:0); Run closes
	// it. The Node reports its port.
	Listener net.Listener
	// HeartbeatInterval is how often the Lease is renewed and the Node's
	// status checked. If 0, DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// StatusReportInterval is the longest time between two status updates
	// when nothing changes. If 0, DefaultStatusReportInterval.
	StatusReportInterval time.Duration
	// Progress receives one line per step of joining and registering. If
	// nil, progress is discarded.
	Progress io.Writer
	// Logger receives the agent's messages. If nil, they are discarded.
	Logger *slog.Logger

	// RunPods runs the pods bound to the node (needs root, runc and the
	// CNI plugins). If false, the agent only registers and heartbeats.
	RunPods bool
	// Bridge is the pod network's bridge. If empty, "tether0".
	Bridge string
	// CgroupParent is the cgroupfs parent of the pods' cgroups. If empty,
	// "/tether/<node name>".
	CgroupParent string
	// LogDir holds the container logs. If empty, /var/log/pods.
	LogDir string
	// InsecureRegistries may be reached over plain HTTP (loopback
	// registries always may).
	InsecureRegistries []string
	// ShimCommand starts a container shim. If empty, this binary's "shim"
	// command.
	ShimCommand []string

	// Tunnel keeps a tunnel open to the API server that carries its
	// connections to this node (path P10): for nodes the API server
	// cannot connect to (behind NAT, no inbound port).
	Tunnel bool

	// RunProxy runs the service proxy (nftables; needs root and nft).
	RunProxy bool
	// ProxyTable is the proxy's nftables table. If empty, "tether".
	ProxyTable string
}

// Agent is a node agent. Create it with New.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	ready chan struct{}

	rejectOnce sync.Once
	rejected   chan struct{}

	clientCA   clientCA       // verifies client certificates on the kubelet port
	containers lazyContainers // the pods, for the kubelet API
	podNet     atomic.Pointer[network.Network]
}

// New validates cfg, reporting every problem at once, and fills in
// defaults. It starts nothing.
func New(cfg Config) (*Agent, error) {
	var errs []error
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			errs = append(errs, fmt.Errorf("kubelet: no node name given and the host name is unknown: %w", err))
		}
		cfg.NodeName = strings.ToLower(h)
	}
	if cfg.NodeName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(cfg.NodeName) {
			errs = append(errs, fmt.Errorf("kubelet: node name %q: %s", cfg.NodeName, msg))
		}
	}
	if cfg.Server != "" {
		if err := CheckServerURL(cfg.Server); err != nil {
			errs = append(errs, fmt.Errorf("kubelet: %w", err))
		}
	}
	if cfg.Token != "" && !bootstraputil.IsValidBootstrapToken(cfg.Token) {
		errs = append(errs, errors.New("kubelet: the token is not of the form <6 characters [a-z0-9]>.<16 characters [a-z0-9]>"))
	}
	pins := make([]string, 0, len(cfg.CACertHashes))
	for _, h := range cfg.CACertHashes {
		p, err := bootstrap.NormalizePin(h)
		if err != nil {
			errs = append(errs, fmt.Errorf("kubelet: %w", err))
		}
		pins = append(pins, p)
	}
	cfg.CACertHashes = pins
	if cfg.NodeIP != nil && cfg.NodeIP.IsUnspecified() {
		errs = append(errs, fmt.Errorf("kubelet: node IP %s is not a usable address", cfg.NodeIP))
	}
	if cfg.KubeletPort == 0 {
		cfg.KubeletPort = DefaultKubeletPort
	}
	if cfg.KubeletPort < 1 || cfg.KubeletPort > 65535 {
		errs = append(errs, fmt.Errorf("kubelet: kubelet port %d is not between 1 and 65535", cfg.KubeletPort))
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.StatusReportInterval <= 0 {
		cfg.StatusReportInterval = DefaultStatusReportInterval
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ProxyTable == "" {
		cfg.ProxyTable = proxy.DefaultTableName
	}
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "kubelet", "node", cfg.NodeName),
		ready:    make(chan struct{}),
		rejected: make(chan struct{}),
	}
	a.clientCA.read = make(chan struct{})
	return a, nil
}

// NodeName is the name the agent registers its Node under.
func (a *Agent) NodeName() string { return a.cfg.NodeName }

// Ready is closed once the Node is registered and its first Lease written.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run joins the cluster if needed, registers the Node, and then until ctx
// ends renews the Lease, updates the Node's status, rotates the client and
// serving certificates and serves the kubelet HTTPS port. It returns nil
// when ctx ends, and an error when joining fails, the Node cannot be
// registered, or the API server rejects the node's certificate
// (ErrCertificateRejected). On the way out it stops the heartbeats and the
// HTTPS server, then the certificate managers, and closes its connections.
// Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	cfg := a.cfg
	if cfg.Listener != nil {
		defer cfg.Listener.Close()
	}
	// The address and port come first, so that a port in use or an
	// unknown route fails before the node asks for a certificate.
	serverURL := cfg.Server
	if serverURL == "" {
		if creds, err := bootstrap.LoadCredentials(cfg.DataDir); err == nil && creds != nil {
			serverURL = creds.Server
		}
	}
	var (
		nodeIP net.IP
		ln     net.Listener
	)
	if serverURL != "" {
		var err error
		if nodeIP, ln, err = a.listen(serverURL); err != nil {
			return err
		}
		defer ln.Close()
	}

	res, err := bootstrap.Join(ctx, bootstrap.Config{
		Server:            cfg.Server,
		Token:             cfg.Token,
		GetToken:          cfg.GetToken,
		CACertHashes:      cfg.CACertHashes,
		InsecureSkipCAPin: cfg.InsecureSkipCAPin,
		Rejoin:            cfg.Rejoin,
		NodeName:          cfg.NodeName,
		DataDir:           cfg.DataDir,
		SignatureWait:     15 * time.Second,
		Progress:          cfg.Progress,
		Logger:            cfg.Logger,
	})
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(res.CAPEM) {
		return fmt.Errorf("kubelet: %s: no CA certificate", res.Kubeconfig)
	}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The node's client: its rotating certificate, through a transport
	// that switches connections when it changes and reports 401s.
	var client kubernetes.Interface
	certCfg := certificate.Config{
		NodeName: cfg.NodeName,
		Dir:      res.PKIDir,
		Client:   func() (kubernetes.Interface, error) { return client, nil },
		Logger:   cfg.Logger,
	}
	clientCerts, err := certificate.NewClientManager(ctx, certCfg)
	if err != nil {
		return err
	}
	transport := certificate.NewTransport(roots, clientCerts, a.reject)
	defer transport.Close()
	client, err = kubernetes.NewForConfig(&rest.Config{
		Host:      res.Server,
		Transport: transport,
		UserAgent: "tether-agent/" + KubeletVersion + " (" + cfg.NodeName + ")",
		QPS:       50,
		Burst:     100,
	})
	if err != nil {
		return fmt.Errorf("kubelet: client for %s: %w", res.Server, err)
	}
	clientCerts.Start()
	defer clientCerts.Stop()

	if ln == nil {
		if nodeIP, ln, err = a.listen(res.Server); err != nil {
			return err
		}
		defer ln.Close()
	}
	spec := nodeSpec{
		Name: cfg.NodeName,
		IP:   nodeIP,
		Port: int32(ln.Addr().(*net.TCPAddr).Port),
		Info: readMachineInfo(ctx, cfg.DataDir),
		// A node that runs no pods says so with a taint, so that the
		// scheduler never binds pods to it.
		NoPods: !cfg.RunPods,
		Tunnel: cfg.Tunnel,
	}
	n := &nodeAgent{agent: a, client: client, spec: spec, certs: map[string]clientcert.Manager{ClientCertExpiryAnnotation: clientCerts}}

	servingCerts, err := certificate.NewServingManager(ctx, certCfg, n.addresses)
	if err != nil {
		return err
	}
	n.certs[ServingCertExpiryAnnotation] = servingCerts
	srv, err := server.New(server.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := servingCerts.Current(); c != nil {
				return c, nil
			}
			return nil, errors.New("kubelet: no serving certificate yet (its CSR awaits approval)")
		},
		NodeName:   cfg.NodeName,
		ClientCA:   a.clientCA.Pool,
		Client:     client,
		Containers: &a.containers,
		Logger:     cfg.Logger.With("component", "kubelet-server"),
	})
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-a.rejected:
			return a.rejectedError()
		}
	})
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { return a.clientCA.run(gctx, a, res.Server, res.CAPEM) })
	if cfg.Tunnel {
		g.Go(func() error { return a.runTunnel(gctx, res.Server, roots, clientCerts, ln.Addr()) })
	}
	g.Go(func() error {
		if err := n.register(gctx); err != nil {
			return a.fatal(gctx, err)
		}
		if err := retry(gctx, a.log, "write the node's lease", n.renewLease); err != nil {
			return a.fatal(gctx, err)
		}
		servingCerts.Start()
		close(a.ready)
		fmt.Fprintf(cfg.Progress, "[%d/%d] node %s registered; serving kubelet HTTPS on %s\n", bootstrap.Steps, bootstrap.Steps, cfg.NodeName, ln.Addr())
		a.log.Info("node registered", "address", nodeIP.String(), "kubeletAddress", ln.Addr().String())
		hb, hctx := errgroup.WithContext(gctx)
		hb.Go(func() error { return a.every(hctx, n.renewLease, "renew the node's lease") })
		hb.Go(func() error { return a.every(hctx, n.updateStatus, "update the node's status") })
		if cfg.RunPods {
			hb.Go(func() error { return a.runPods(hctx, client, nodeIP) })
		}
		if cfg.RunProxy {
			hb.Go(func() error { return a.runProxy(hctx, client, nodeIP) })
		}
		return hb.Wait()
	})
	err = g.Wait()
	servingCerts.Stop()
	if parent.Err() != nil {
		return nil // asked to stop: what failed on the way out does not matter
	}
	return err
}

// listen returns the node's address (NodeIP, or the source address of the
// route to server) and the kubelet's listener (Listener, or one on that
// address and KubeletPort).
func (a *Agent) listen(server string) (net.IP, net.Listener, error) {
	nodeIP := a.cfg.NodeIP
	if nodeIP == nil {
		var err error
		if nodeIP, err = detectNodeIP(server); err != nil {
			return nil, nil, fmt.Errorf("kubelet: %w; set the node's address with --node-ip", err)
		}
	}
	if a.cfg.Listener != nil {
		return nodeIP, a.cfg.Listener, nil
	}
	addr := net.JoinHostPort(nodeIP.String(), strconv.Itoa(a.cfg.KubeletPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet: listen on %s (--node-ip, --kubelet-port): %w", addr, err)
	}
	return nodeIP, ln, nil
}

// every calls f every HeartbeatInterval until ctx ends. A failure is logged
// and retried at the next tick; a 401 (the certificate was rejected) ends
// the loop with the rejection.
func (a *Agent) every(ctx context.Context, f func(context.Context) error, what string) error {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := f(ctx); err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case apierrors.IsUnauthorized(err):
				return a.rejectedError()
			case untrusted(err):
				return a.untrustedServer(err)
			}
			a.log.Warn("failed to "+what, "err", err)
		}
	}
}

// retry calls f until it succeeds, ctx ends or it fails for good (401,
// 403, 422), backing off from 500ms to 10s.
func retry(ctx context.Context, log *slog.Logger, what string, f func(context.Context) error) error {
	wait := 500 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil || permanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("failed to "+what+"; retrying", "err", err, "retryIn", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// permanent reports whether err will not go away by retrying.
func permanent(err error) bool {
	return apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || untrusted(err)
}

// untrusted reports whether err is a server certificate that the node's
// cluster CA does not verify.
func untrusted(err error) bool {
	var verr *tls.CertificateVerificationError
	return errors.As(err, &verr)
}

// reject records that the API server answered 401 to the node.
func (a *Agent) reject() {
	a.rejectOnce.Do(func() { close(a.rejected) })
}

// fatal turns a 401 into the rejection error, and an error caused by the
// end of ctx into nil.
func (a *Agent) fatal(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return nil
	case apierrors.IsUnauthorized(err):
		return a.rejectedError()
	case untrusted(err):
		return a.untrustedServer(err)
	}
	return err
}

// untrustedServer explains a server certificate the node's CA does not
// verify: the cluster was rebuilt with a new CA, or it is not the cluster.
func (a *Agent) untrustedServer(err error) error {
	return fmt.Errorf("kubelet: the API server's certificate does not verify with the cluster CA stored in %s: %w. "+
		"If the cluster was rebuilt, join it again: run `tether token create` on the server, then start the agent with the printed --server, --token and --ca-cert-hash and --rejoin",
		a.cfg.DataDir, err)
}

// rejectedError explains a 401 to the node's certificate and how to
// recover.
func (a *Agent) rejectedError() error {
	how := fmt.Sprintf("To rejoin, run `tether token create` on the server, then start the agent with the printed --server, --token and --ca-cert-hash and --rejoin (data dir %s)", a.cfg.DataDir)
	creds, err := bootstrap.LoadCredentials(a.cfg.DataDir)
	if err != nil || creds == nil {
		return fmt.Errorf("%w (401 Unauthorized) for node %s. %s", ErrCertificateRejected, a.cfg.NodeName, how)
	}
	c := creds.Certificate
	if !time.Now().Before(c.NotAfter) {
		return fmt.Errorf("%w: node %s's client certificate expired at %s before it could be renewed (is the server's CSR approver running?). %s",
			ErrCertificateRejected, a.cfg.NodeName, c.NotAfter.UTC().Format(time.RFC3339), how)
	}
	return fmt.Errorf("%w (401 Unauthorized): node %s's certificate (serial %s, valid until %s) was revoked (`tether node revoke`) or the cluster no longer knows it; the agent stopped. %s",
		ErrCertificateRejected, a.cfg.NodeName, c.SerialNumber.Text(16), c.NotAfter.UTC().Format(time.RFC3339), how)
}

// nodeAgent keeps the Node and its Lease.
type nodeAgent struct {
	agent  *Agent
	client kubernetes.Interface
	spec   nodeSpec
	// certs are the node's certificate managers by annotation key; their
	// expiry is published on the Node so operators (and later metrics) see
	// it.
	certs map[string]clientcert.Manager

	mu         sync.Mutex
	uid        types.UID
	registered bool
	lastReport time.Time
	lease      *coordinationv1.Lease
}

// addresses returns the Node's addresses once it is registered, nil before.
func (n *nodeAgent) addresses() []corev1.NodeAddress {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.registered {
		return nil
	}
	return n.spec.addresses()
}

// register creates the Node, or brings an existing one up to date,
// retrying until it succeeds or fails for good.
func (n *nodeAgent) register(ctx context.Context) error {
	err := retry(ctx, n.agent.log, "register the node", n.registerOnce)
	if err != nil && !apierrors.IsUnauthorized(err) && ctx.Err() == nil {
		return fmt.Errorf("kubelet: register node %s: %w", n.spec.Name, err)
	}
	return err
}

func (n *nodeAgent) registerOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nodes := n.client.CoreV1().Nodes()
	node, err := nodes.Create(ctx, n.spec.newNode(time.Now()), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		if node, err = nodes.Get(ctx, n.spec.Name, metav1.GetOptions{}); err != nil {
			return err
		}
		if n.spec.labelsDiffer(node.Labels) || n.spec.annotationsDiffer(node.Annotations) {
			if node.Labels == nil {
				node.Labels = map[string]string{}
			}
			for k, v := range n.spec.labels() {
				node.Labels[k] = v
			}
			for k, v := range n.spec.annotations() {
				if v == nil {
					delete(node.Annotations, k)
				} else {
					metav1.SetMetaDataAnnotation(&node.ObjectMeta, k, *v)
				}
			}
			if node, err = nodes.Update(ctx, node, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
		node.Status = n.spec.status(node.Status, time.Now())
		node, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.uid, n.registered, n.lastReport = node.UID, true, time.Now()
	return nil
}

// updateStatus updates the Node's status when it differs from what the
// agent reports (another component changed it, or the machine did) or
// StatusReportInterval has passed since the last update. A deleted Node is
// registered again.
func (n *nodeAgent) updateStatus(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nodes := n.client.CoreV1().Nodes()
	// Most checks find nothing to write: read from the API server's watch
	// cache (resourceVersion 0) as upstream's kubelet does, and go to etcd
	// only when the cached copy is missing or an update conflicts.
	node, err := nodes.Get(ctx, n.spec.Name, metav1.GetOptions{ResourceVersion: "0"})
	if apierrors.IsNotFound(err) {
		node, err = nodes.Get(ctx, n.spec.Name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		n.agent.log.Warn("the node's Node object is gone; registering it again")
		return n.registerOnce(ctx)
	}
	if err != nil {
		return err
	}
	if err := n.annotateCertificates(ctx, node); err != nil {
		return err
	}
	n.mu.Lock()
	due := time.Since(n.lastReport) >= n.agent.cfg.StatusReportInterval
	n.mu.Unlock()
	if !due && !n.spec.statusDiffers(node.Status) {
		return nil
	}
	now := time.Now()
	node.Status = n.spec.status(node.Status, now)
	_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		// The cached copy was stale: read the current one and try once more.
		if node, err = nodes.Get(ctx, n.spec.Name, metav1.GetOptions{}); err != nil {
			return err
		}
		node.Status = n.spec.status(node.Status, now)
		_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.uid, n.lastReport = node.UID, time.Now()
	n.mu.Unlock()
	return nil
}

// Annotations on the Node with the expiry (RFC 3339) of the node's current
// certificates.
const (
	ClientCertExpiryAnnotation  = "tether.dev/client-certificate-expires"
	ServingCertExpiryAnnotation = "tether.dev/serving-certificate-expires"
)

// annotateCertificates publishes the expiry of the node's current
// certificates on its Node when it changed (after each rotation), and
// keeps the agent's other annotations (its egress) as they should be.
func (n *nodeAgent) annotateCertificates(ctx context.Context, node *corev1.Node) error {
	want := map[string]any{}
	for key, m := range n.certs {
		if c := m.Current(); c != nil && c.Leaf != nil {
			if v := c.Leaf.NotAfter.UTC().Format(time.RFC3339); node.Annotations[key] != v {
				want[key] = v
			}
		}
	}
	if n.spec.annotationsDiffer(node.Annotations) {
		for key, v := range n.spec.annotations() {
			if v == nil {
				want[key] = nil // a merge patch's null removes it
			} else {
				want[key] = *v
			}
		}
	}
	if len(want) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": want}})
	if err != nil {
		return err
	}
	_, err = n.client.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// renewLease writes the node's Lease with the current time, creating it if
// needed; on a conflict or a missing Lease it reads it again and retries
// once.
func (n *nodeAgent) renewLease(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	leases := n.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	n.mu.Lock()
	uid, cur := n.uid, n.lease
	n.mu.Unlock()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if cur == nil {
			cur, err = leases.Get(ctx, n.spec.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				cur, err = leases.Create(ctx, n.spec.lease(uid, time.Now()), metav1.CreateOptions{})
				if err == nil {
					break
				}
			}
			if err != nil {
				cur = nil
				if apierrors.IsAlreadyExists(err) {
					continue
				}
				return err
			}
		}
		l := cur.DeepCopy()
		n.spec.renew(l, uid, time.Now())
		cur, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		if err == nil {
			break
		}
		cur = nil
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return err
		}
	}
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.lease = cur
	n.mu.Unlock()
	return nil
}

// detectNodeIP returns the source address this machine uses to reach the
// server in serverURL: it "connects" a UDP socket (which sends nothing) and
// reads the local address the kernel chose.
func detectNodeIP(serverURL string) (net.IP, error) {
	u, err := url.Parse(serverURL)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("cannot find the node's address: server URL %q has no host", serverURL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	conn, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, fmt.Errorf("cannot find the node's address: no route to %s: %w", u.Hostname(), err)
	}
	defer conn.Close()
	ip := conn.LocalAddr().(*net.UDPAddr).IP
	if ip4 := ip.To4(); ip4 != nil {
		ip = ip4
	}
	return ip, nil
}

// CheckServerURL checks that s is an https URL of the form
// https://<host>[:<port>], as --server must be.
func CheckServerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("server %q is not a URL: %w", s, err)
	}
	var errs []string
	if u.Scheme != "https" {
		errs = append(errs, "must start with https://")
	}
	if u.Hostname() == "" {
		errs = append(errs, "has no host")
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		errs = append(errs, "must be https://<host>[:<port>] with nothing after it")
	}
	if len(errs) > 0 {
		return fmt.Errorf("server %q %s", s, strings.Join(errs, ", "))
	}
	return nil
}
