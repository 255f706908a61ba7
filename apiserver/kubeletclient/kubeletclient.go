// Package kubeletclient is the API server's side of path P5: it finds the
// kubelet of a node and connects to it over HTTPS, presenting the API
// server's own client certificate (user kube-apiserver-kubelet-client,
// from the cluster client CA) and always verifying the kubelet's serving
// certificate against the cluster server CA, under the exact address it
// dials. The pod subresources that reach a kubelet (log, exec, attach,
// portforward; package registry) get their location and transport here.
//
// Failures are never papered over: a kubelet whose certificate does not
// verify is an error (502) naming the node and address, and an unreachable
// kubelet is another (503). Turning verification off takes an explicit,
// loudly logged setting.
package kubeletclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tether/tunnel"
)

// DefaultPort is the kubelet port used when a Node does not report one in
// status.daemonEndpoints.kubeletEndpoint.
const DefaultPort = 10250

// DefaultPreferredAddressTypes is the order in which a node's addresses are
// tried when Config.PreferredAddressTypes is empty.
var DefaultPreferredAddressTypes = []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeHostName}

// ReasonBadGateway is the Status reason of a 502: the kubelet was reached
// but could not be trusted or did not answer sensibly.
const ReasonBadGateway metav1.StatusReason = "BadGateway"

// NodeGetter reads a Node by name. Its errors should already be API
// errors (a missing node is a NotFound for nodes).
type NodeGetter interface {
	Get(ctx context.Context, name string) (*corev1.Node, error)
}

// NodeGetterFunc adapts a function to NodeGetter.
type NodeGetterFunc func(ctx context.Context, name string) (*corev1.Node, error)

// Get implements NodeGetter.
func (f NodeGetterFunc) Get(ctx context.Context, name string) (*corev1.Node, error) {
	return f(ctx, name)
}

// Config configures a Client.
type Config struct {
	// Nodes reads Nodes for their addresses and kubelet port. Required.
	Nodes NodeGetter
	// ServerCA is the PEM bundle that verifies kubelet serving
	// certificates: the cluster server CA. Required unless
	// InsecureSkipTLSVerify is set.
	ServerCA []byte
	// ClientCertificate returns the certificate presented to kubelets, as
	// Identity.GetClientCertificate does. Required.
	ClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// PreferredAddressTypes is the order in which a node's addresses are
	// considered; the first address of the first type the node has is
	// used. If empty, DefaultPreferredAddressTypes.
	PreferredAddressTypes []corev1.NodeAddressType
	// InsecureSkipTLSVerify accepts any kubelet serving certificate. Every
	// connection it is used for logs a warning. Never the default.
	InsecureSkipTLSVerify bool
	// DialTimeout bounds connecting and the TLS handshake. If 0, 10 s.
	DialTimeout time.Duration
	// Logger receives warnings. If nil, they are discarded.
	Logger *slog.Logger
	// Tunnels, if set, reach the nodes that keep a tunnel to the API
	// server (path P10): their kubelets are dialled through it, with the
	// same TLS, verified the same way, on top.
	Tunnels Tunnels
}

// Tunnels dials through the tunnels nodes keep open to the API server;
// *tunnel.Server implements it.
type Tunnels interface {
	// Connected reports whether node has a tunnel now.
	Connected(node string) bool
	// DialNode connects to addr (an IP address and port) from node.
	DialNode(ctx context.Context, node, addr string) (net.Conn, error)
}

// Client connects the API server to kubelets. It keeps one transport per
// node, so connections to a kubelet are reused (keep-alive) and each
// transport verifies the name of exactly one address.
type Client struct {
	cfg   Config
	roots *x509.CertPool

	mu         sync.Mutex
	transports map[string]*nodeTransport // by node name
}

// nodeTransport is the transport for one node at one host:port.
type nodeTransport struct {
	hostPort  string
	transport *http.Transport
}

// New validates cfg, reporting every problem at once.
func New(cfg Config) (*Client, error) {
	var errs []error
	if cfg.Nodes == nil {
		errs = append(errs, errors.New("kubeletclient: no node getter"))
	}
	if cfg.ClientCertificate == nil {
		errs = append(errs, errors.New("kubeletclient: no client certificate source"))
	}
	var roots *x509.CertPool
	if !cfg.InsecureSkipTLSVerify {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(cfg.ServerCA) {
			errs = append(errs, errors.New("kubeletclient: the server CA bundle holds no certificate"))
		}
	}
	if len(cfg.PreferredAddressTypes) == 0 {
		cfg.PreferredAddressTypes = DefaultPreferredAddressTypes
	}
	if err := ValidateAddressTypes(cfg.PreferredAddressTypes); err != nil {
		errs = append(errs, err)
	}
	if cfg.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("kubeletclient: dial timeout %s is negative", cfg.DialTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.PreferredAddressTypes = slices.Clone(cfg.PreferredAddressTypes)
	return &Client{cfg: cfg, roots: roots, transports: map[string]*nodeTransport{}}, nil
}

// ValidateAddressTypes checks a --kubelet-preferred-address-types list: not
// empty, known types only, none twice.
func ValidateAddressTypes(types []corev1.NodeAddressType) error {
	if len(types) == 0 {
		return errors.New("kubeletclient: no preferred address types")
	}
	known := []corev1.NodeAddressType{corev1.NodeHostName, corev1.NodeInternalIP, corev1.NodeExternalIP, corev1.NodeInternalDNS, corev1.NodeExternalDNS}
	var errs []error
	for i, t := range types {
		if !slices.Contains(known, t) {
			errs = append(errs, fmt.Errorf("kubeletclient: unknown node address type %q (known: %v)", t, known))
		}
		if slices.Contains(types[:i], t) {
			errs = append(errs, fmt.Errorf("kubeletclient: node address type %q is listed twice", t))
		}
	}
	return errors.Join(errs...)
}

// Location returns the base URL of the kubelet of nodeName
// (https://address:port, no path) and the transport to reach it with. The
// transport presents the API server's client certificate and verifies the
// kubelet's serving certificate against the server CA for the host of the
// URL. Errors are API errors: the node's (e.g. NotFound), or 503 when the
// node has no address of a preferred type.
func (c *Client) Location(ctx context.Context, nodeName string) (*url.URL, http.RoundTripper, error) {
	node, err := c.cfg.Nodes.Get(ctx, nodeName)
	if err != nil {
		return nil, nil, err
	}
	if err := c.TunnelOnly(node); err != nil {
		return nil, nil, err
	}
	host, err := c.address(node)
	if err != nil {
		return nil, nil, err
	}
	port := DefaultPort
	if p := node.Status.DaemonEndpoints.KubeletEndpoint.Port; p > 0 {
		port = int(p)
	}
	hostPort := net.JoinHostPort(host, strconv.Itoa(port))
	if c.cfg.InsecureSkipTLSVerify {
		c.cfg.Logger.Warn("connecting to a kubelet WITHOUT verifying its serving certificate (--kubelet-insecure-skip-tls-verify)",
			"component", "kubeletclient", "node", nodeName, "address", hostPort)
	}
	return &url.URL{Scheme: "https", Host: hostPort}, c.transportFor(nodeName, host, hostPort), nil
}

// TunnelOnly returns a 503 if node is reached only through its tunnel
// (its agent runs with --tunnel, tunnel.EgressAnnotation) and that tunnel
// is not connected: connecting to the node directly would not get
// through, and would hide why.
func (c *Client) TunnelOnly(node *corev1.Node) error {
	return TunnelOnly(node, c.cfg.Tunnels)
}

// TunnelOnly is Client.TunnelOnly with the tunnels given (nil: none).
func TunnelOnly(node *corev1.Node, tunnels Tunnels) error {
	if node.Annotations[tunnel.EgressAnnotation] != tunnel.EgressTunnel {
		return nil
	}
	if tunnels != nil && tunnels.Connected(node.Name) {
		return nil
	}
	return apierrors.NewServiceUnavailable(fmt.Sprintf(
		"node %s is reached only through its tunnel (annotation %s=%s) and its tunnel is not connected; is its agent running and able to reach the API server?",
		node.Name, tunnel.EgressAnnotation, tunnel.EgressTunnel))
}

// address picks the node's address by the preferred types.
func (c *Client) address(node *corev1.Node) (string, error) {
	for _, t := range c.cfg.PreferredAddressTypes {
		for _, a := range node.Status.Addresses {
			if a.Type == t && a.Address != "" {
				return a.Address, nil
			}
		}
	}
	known := make([]string, 0, len(node.Status.Addresses))
	for _, a := range node.Status.Addresses {
		known = append(known, fmt.Sprintf("%s=%s", a.Type, a.Address))
	}
	return "", apierrors.NewServiceUnavailable(fmt.Sprintf(
		"node %s has no address of the types %v (--kubelet-preferred-address-types); its addresses are %v",
		node.Name, c.cfg.PreferredAddressTypes, known))
}

// transportFor returns the transport of a node, replacing it when the
// node's address changed.
func (c *Client) transportFor(nodeName, host, hostPort string) *http.Transport {
	c.mu.Lock()
	defer c.mu.Unlock()
	if nt := c.transports[nodeName]; nt != nil {
		if nt.hostPort == hostPort {
			return nt.transport
		}
		nt.transport.CloseIdleConnections()
	}
	tlsConfig := &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetClientCertificate: c.cfg.ClientCertificate,
		// Every exec, attach and port-forward is a new connection (an
		// upgraded one cannot be reused): resuming the TLS session saves
		// the full handshake. A resumed session belongs to a server that
		// proved this node's certificate before; an impostor has no
		// ticket and gets a full, verified handshake.
		ClientSessionCache: tls.NewLRUClientSessionCache(32),
	}
	if c.cfg.InsecureSkipTLSVerify {
		tlsConfig.InsecureSkipVerify = true
	} else {
		// The name checked against the certificate's SANs is the address
		// dialled: an IP for IP addresses, a DNS name for host names.
		tlsConfig.RootCAs = c.roots
		tlsConfig.ServerName = host
	}
	dialer := &net.Dialer{Timeout: c.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	if tunnels := c.cfg.Tunnels; tunnels != nil {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if tunnels.Connected(nodeName) {
				ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
				defer cancel()
				return tunnels.DialNode(ctx, nodeName, addr)
			}
			return dialer.DialContext(ctx, network, addr)
		}
	}
	t := &http.Transport{
		// Kubelets are reached directly, never through an environment
		// proxy.
		Proxy:               nil,
		DialContext:         dial,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: c.cfg.DialTimeout,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		// HTTP/1.1 only: upgrades (exec, attach, port-forward) need it and
		// the upgrade dialers reuse this TLS configuration.
		ForceAttemptHTTP2: false,
	}
	c.transports[nodeName] = &nodeTransport{hostPort: hostPort, transport: t}
	return t
}

// CloseIdleConnections closes the idle connections to every kubelet.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nt := range c.transports {
		nt.transport.CloseIdleConnections()
	}
}

// StatusError turns an error met while talking to the kubelet of
// nodeName at location into the API error the client sees. API errors are
// returned as they are. A serving certificate that does not verify is a
// 502 "the kubelet certificate for node X (address A) is not valid: …"; a
// kubelet that cannot be connected to is a 503 naming the node and
// address; other failures are 502s naming them too.
func (c *Client) StatusError(nodeName string, location *url.URL, err error) error {
	addr := ""
	if location != nil {
		addr = location.Host
	}
	return describe(err, problemText{
		certificate: fmt.Sprintf("the kubelet certificate for node %s (address %s) is not valid: ", nodeName, addr),
		unreachable: fmt.Sprintf("the kubelet of node %s is unreachable at %s: ", nodeName, addr),
		refused:     fmt.Sprintf("the kubelet of node %s (address %s) refused the TLS connection: ", nodeName, addr),
		other:       fmt.Sprintf("error talking to the kubelet of node %s (address %s): ", nodeName, addr),
	})
}

// UpstreamError is StatusError for the API server's other upstreams
// (target, such as "pod default/web", at address addr): the same
// classification, naming target and address.
func UpstreamError(target, addr string, err error) error {
	return describe(err, problemText{
		certificate: fmt.Sprintf("the serving certificate of %s (address %s) is not valid: ", target, addr),
		unreachable: fmt.Sprintf("%s is unreachable at %s: ", target, addr),
		refused:     fmt.Sprintf("%s (address %s) refused the TLS connection: ", target, addr),
		other:       fmt.Sprintf("error talking to %s (address %s): ", target, addr),
	})
}

// problemText holds the start of the message of each kind of failure.
type problemText struct{ certificate, unreachable, refused, other string }

func describe(err error, text problemText) error {
	if err == nil {
		return nil
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return err
	}
	if reason, ok := certificateProblem(err); ok {
		return badGateway(text.certificate + reason)
	}
	if unreachable(err) {
		return apierrors.NewServiceUnavailable(text.unreachable + err.Error())
	}
	if remoteTLSAlert(err) {
		return badGateway(text.refused + err.Error())
	}
	return badGateway(text.other + err.Error())
}

// certificateProblem reports whether err is a failed verification of the
// peer's certificate, and why.
func certificateProblem(err error) (string, bool) {
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return verr.Err.Error(), true
	}
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknown):
		return unknown.Error(), true
	case errors.As(err, &hostname):
		return hostname.Error(), true
	case errors.As(err, &invalid):
		return invalid.Error(), true
	}
	// The upgrade dialers of k8s.io/apimachinery wrap the handshake error
	// with %v, so only its text survives.
	if msg := err.Error(); strings.Contains(msg, "tls: failed to verify certificate") {
		if i := strings.Index(msg, "x509: "); i >= 0 {
			return msg[i:], true
		}
		return msg, true
	}
	return "", false
}

// unreachable reports whether err means no connection could be made.
func unreachable(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// As for certificates, an upgrade dial error may arrive as text only.
	msg := err.Error()
	if !strings.Contains(msg, "error dialing backend: ") {
		return false
	}
	for _, s := range []string{"connection refused", "no route to host", "network is unreachable", "no such host", "i/o timeout"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// remoteTLSAlert reports whether the kubelet ended the handshake with an
// alert (for example, because it did not accept the client certificate).
func remoteTLSAlert(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "remote error" {
		return true
	}
	var alert tls.AlertError
	return errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls: ")
}

func badGateway(msg string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusBadGateway,
		Reason:  ReasonBadGateway,
		Message: msg,
	}}
}
