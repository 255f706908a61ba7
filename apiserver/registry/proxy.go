package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/proxy"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"tether/apiserver/kubeletclient"
	"tether/apiserver/scheme"
)

// ProxyConfig is what the proxy subresources of nodes, pods and services
// need (path P8).
type ProxyConfig struct {
	// Pods, Nodes and Services read the objects proxied to. Required.
	Pods, Nodes, Services rest.Getter
	// EndpointSlices lists a Service's endpoints. Required.
	EndpointSlices rest.Lister
	// Kubelets reaches a node's kubelet, for nodes/proxy on the kubelet
	// port. Required.
	Kubelets Kubelets
	// TrustBundle is the PEM bundle that verifies https: targets: the
	// cluster's trust bundle (the server CA, as in kube-root-ca.crt).
	// Required.
	TrustBundle []byte
	// ClusterDomain is the DNS domain of Services, for the names a
	// Service's serving certificate may carry. If empty, cluster.local.
	ClusterDomain string
	// AllowAddress decides which addresses may be connected to (the
	// kubelet port of a node excepted). If nil, global unicast addresses
	// only: never loopback, link-local, multicast or unspecified ones,
	// so the proxy cannot reach the API server's own host services.
	AllowAddress func(netip.Addr) bool
	// DialTimeout bounds connecting and the TLS handshake. If 0, 10 s.
	DialTimeout time.Duration
	// Tunnels, if set, reach pods and nodes whose node keeps a tunnel to
	// the API server (path P10) through it.
	Tunnels kubeletclient.Tunnels
}

// ProxyStorage holds the storage of nodes/proxy, pods/proxy and
// services/proxy.
type ProxyStorage struct {
	Nodes, Pods, Services rest.Storage
}

// NewProxyStorage returns the storage of the proxy subresources:
//
//	/api/v1/nodes/{[scheme:]name[:port]}/proxy/{path}
//	/api/v1/namespaces/{ns}/pods/{[scheme:]name[:port]}/proxy/{path}
//	/api/v1/namespaces/{ns}/services/{[scheme:]name[:port]}/proxy/{path}
//
// Each forwards the request (any method, the query passed through,
// upgrades allowed) to the address the API knows for the object, as
// upstream does, with two differences that make it safe by default:
//
//   - an https: target's certificate is verified against the cluster's
//     trust bundle, for the name the API gives it: the pod's IP for a pod;
//     <service>.<namespace>.svc (or .svc.<cluster domain>) or the chosen
//     endpoint's IP for a Service; the address dialled for a node.
//     Upstream skips this verification.
//   - only addresses the API knows, and only allowed ones (global unicast
//     by default), are dialled; the check is made again on the socket
//     being connected.
//
// A node's kubelet port (no port, or the port it reports) is reached as
// pods/log and exec reach it: its serving certificate verified, the API
// server's kubelet client certificate presented.
func NewProxyStorage(cfg ProxyConfig) (ProxyStorage, error) {
	var errs []error
	for _, need := range []struct {
		missing bool
		what    string
	}{
		{cfg.Pods == nil, "the pod storage"},
		{cfg.Nodes == nil, "the node storage"},
		{cfg.Services == nil, "the service storage"},
		{cfg.EndpointSlices == nil, "the EndpointSlice storage"},
		{cfg.Kubelets == nil, "a kubelet client"},
	} {
		if need.missing {
			errs = append(errs, fmt.Errorf("registry: the proxy subresources need %s", need.what))
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(cfg.TrustBundle) {
		errs = append(errs, errors.New("registry: the proxy subresources' trust bundle holds no certificate"))
	}
	if cfg.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("registry: proxy dial timeout %s is negative", cfg.DialTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return ProxyStorage{}, err
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.AllowAddress == nil {
		cfg.AllowAddress = func(a netip.Addr) bool { return a.IsGlobalUnicast() }
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if err := registerProxyConversions(); err != nil {
		return ProxyStorage{}, err
	}
	t := &proxyTransports{cfg: cfg, roots: roots, verified: map[string]*http.Transport{}}
	t.plain = t.newTransport(nil)
	return ProxyStorage{
		Nodes:    &proxyREST{kind: "nodes", newOpts: func() runtime.Object { return &corev1.NodeProxyOptions{} }, locate: t.node},
		Pods:     &proxyREST{kind: "pods", newOpts: func() runtime.Object { return &corev1.PodProxyOptions{} }, locate: t.pod},
		Services: &proxyREST{kind: "services", newOpts: func() runtime.Object { return &corev1.ServiceProxyOptions{} }, locate: t.service},
	}, nil
}

// proxyTarget is where one proxy request goes.
type proxyTarget struct {
	location  *url.URL // scheme, host and base path
	transport http.RoundTripper
	node      string // the node the target is on, for its tunnel
	// statusError explains a failure to talk to the target.
	statusError func(error) error
}

// proxyREST serves the proxy subresource of one resource.
type proxyREST struct {
	kind    string // nodes, pods or services
	newOpts func() runtime.Object
	locate  func(ctx context.Context, scheme, name, port string) (proxyTarget, error)
}

var _ rest.Connecter = (*proxyREST)(nil)

// New implements rest.Storage.
func (r *proxyREST) New() runtime.Object {
	switch r.kind {
	case "nodes":
		return &corev1.Node{}
	case "pods":
		return &corev1.Pod{}
	}
	return &corev1.Service{}
}

// Destroy implements rest.Storage; the resource's storage owns the store.
func (r *proxyREST) Destroy() {}

// ConnectMethods implements rest.Connecter.
func (r *proxyREST) ConnectMethods() []string {
	return []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}
}

// NewConnectOptions implements rest.Connecter: the rest of the URL after
// /proxy arrives as the options' path.
func (r *proxyREST) NewConnectOptions() (runtime.Object, bool, string) {
	return r.newOpts(), true, "path"
}

// Connect implements rest.Connecter.
func (r *proxyREST) Connect(ctx context.Context, id string, opts runtime.Object, responder rest.Responder) (http.Handler, error) {
	var path string
	switch o := opts.(type) {
	case *corev1.NodeProxyOptions:
		path = o.Path
	case *corev1.PodProxyOptions:
		path = o.Path
	case *corev1.ServiceProxyOptions:
		path = o.Path
	default:
		return nil, apierrors.NewInternalError(fmt.Errorf("unexpected proxy options %T", opts))
	}
	scheme, name, port, ok := utilnet.SplitSchemeNamePort(id)
	if !ok || name == "" {
		return nil, apierrors.NewBadRequest(fmt.Sprintf(
			"invalid %s request %q: the name must be name, name:port or scheme:name:port, with scheme http or https (invalid scheme or too many colons)", strings.TrimSuffix(r.kind, "s"), id))
	}
	target, err := r.locate(ctx, scheme, name, port)
	if err != nil {
		return nil, err
	}
	loc := *target.location
	// An empty path stays empty: a GET of …/proxy is then redirected to
	// …/proxy/, so that the target's relative links resolve under it.
	loc.Path = utilnet.JoinPreservingTrailingSlash(loc.Path, path)
	// The handler wraps the transport in one that rewrites links and
	// turns every transport error into a 503 "error trying to reach
	// service" with the cause as text; the first error of this request
	// is kept underneath it so the client learns what went wrong (a 502
	// for a certificate that does not verify, naming the target).
	rec := &recordingTransport{rt: target.transport}
	errs := &proxyErrorResponder{responder: responder, statusError: target.statusError, transport: rec}
	h := proxy.NewUpgradeAwareHandler(&loc, rec, true, false, errs)
	if target.node == "" {
		return h, nil
	}
	// The transports dial through the node's tunnel when it has one.
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), tunnelNodeKey{}, target.node)))
	}), nil
}

// tunnelNodeKey holds, in a proxied request's context, the node its
// target is on.
type tunnelNodeKey struct{}

// recordingTransport remembers the first error of its round trips.
type recordingTransport struct {
	rt http.RoundTripper

	mu  sync.Mutex
	err error
}

func (t *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		t.mu.Lock()
		if t.err == nil {
			t.err = err
		}
		t.mu.Unlock()
	}
	return resp, err
}

// WrappedRoundTripper lets the upgrade dialer find the TLS configuration
// and dialer of the transport underneath (utilnet.RoundTripperWrapper).
func (t *recordingTransport) WrappedRoundTripper() http.RoundTripper { return t.rt }

func (t *recordingTransport) firstError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// proxyErrorResponder reports a failure to reach a target as the API
// error that explains it.
type proxyErrorResponder struct {
	responder   rest.Responder
	statusError func(error) error
	transport   *recordingTransport
}

// Error implements proxy.ErrorResponder.
func (r *proxyErrorResponder) Error(_ http.ResponseWriter, _ *http.Request, err error) {
	if first := r.transport.firstError(); first != nil {
		err = first
	}
	r.responder.Error(r.statusError(err))
}

// proxyTransports locates targets and keeps their transports: one plain
// transport for http: targets, one per target name set for https: ones.
type proxyTransports struct {
	cfg   ProxyConfig
	roots *x509.CertPool
	plain *http.Transport

	mu       sync.Mutex
	verified map[string]*http.Transport // by host and accepted names
}

// maxVerifiedTransports bounds the cache of https: transports (pod IPs
// come and go); past it the cache starts again.
const maxVerifiedTransports = 256

// node locates nodes/proxy: the kubelet for no port or its port, else
// the node's address (picked as for the kubelet) at the port.
func (t *proxyTransports) node(ctx context.Context, scheme, name, port string) (proxyTarget, error) {
	kubelet, kubeletTransport, err := t.cfg.Kubelets.Location(ctx, name)
	if err != nil {
		return proxyTarget{}, err
	}
	if port == "" || port == kubelet.Port() {
		// The kubelet speaks https only, whatever scheme was asked for.
		return proxyTarget{
			location:    kubelet,
			transport:   kubeletTransport,
			statusError: func(err error) error { return t.cfg.Kubelets.StatusError(name, kubelet, err) },
		}, nil
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return proxyTarget{}, apierrors.NewBadRequest(fmt.Sprintf("invalid port %q in node proxy request %q: a node's port must be a number from 1 to 65535", port, name))
	}
	host := kubelet.Hostname()
	if addr, err := netip.ParseAddr(host); err == nil {
		if err := t.allowed(addr, "node "+name); err != nil {
			return proxyTarget{}, err
		}
	}
	return t.target(scheme, net.JoinHostPort(host, port), "node "+name, name, []string{host})
}

// pod locates pods/proxy: the pod's IP, at the port asked for (a number,
// or the name of one of its container ports), else at its first container
// port, else at the scheme's default port.
func (t *proxyTransports) pod(ctx context.Context, scheme, name, port string) (proxyTarget, error) {
	ns, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || ns == "" {
		return proxyTarget{}, apierrors.NewBadRequest("a pod proxy request needs a namespace")
	}
	pod, err := getAs[*corev1.Pod](ctx, t.cfg.Pods, name)
	if err != nil {
		return proxyTarget{}, err
	}
	what := "pod " + ns + "/" + name
	if pod.Status.PodIP == "" {
		return proxyTarget{}, apierrors.NewServiceUnavailable(fmt.Sprintf("%s has no IP address yet (phase %s)", what, pod.Status.Phase))
	}
	addr, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil {
		return proxyTarget{}, apierrors.NewInternalError(fmt.Errorf("%s has the invalid IP %q", what, pod.Status.PodIP))
	}
	if err := t.allowed(addr, what); err != nil {
		return proxyTarget{}, err
	}
	port, err = podPort(pod, port)
	if err != nil {
		return proxyTarget{}, err
	}
	hostPort := addr.String()
	switch {
	case port != "":
		hostPort = net.JoinHostPort(hostPort, port)
	case addr.Is6():
		hostPort = "[" + hostPort + "]"
	}
	if err := t.reachable(ctx, pod.Spec.NodeName); err != nil {
		return proxyTarget{}, err
	}
	return t.target(scheme, hostPort, what, pod.Spec.NodeName, []string{addr.String()})
}

// podPort resolves the port of a pod proxy request.
func podPort(pod *corev1.Pod, port string) (string, error) {
	if port == "" {
		for _, c := range pod.Spec.Containers {
			if len(c.Ports) > 0 {
				return strconv.Itoa(int(c.Ports[0].ContainerPort)), nil
			}
		}
		return "", nil
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 1 || n > 65535 {
			return "", apierrors.NewBadRequest(fmt.Sprintf("invalid port %d in a proxy request to pod %s: it must be from 1 to 65535", n, pod.Name))
		}
		return port, nil
	}
	var names []string
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == port {
				return strconv.Itoa(int(p.ContainerPort)), nil
			}
			if p.Name != "" {
				names = append(names, p.Name)
			}
		}
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("pod %s has no container port named %q (its named ports: %v)", pod.Name, port, names))
}

// service locates services/proxy: a ready endpoint of the Service's port
// (by name or number), picked at random among those whose pod is in the
// Service's namespace and has that IP.
func (t *proxyTransports) service(ctx context.Context, scheme, name, port string) (proxyTarget, error) {
	ns, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || ns == "" {
		return proxyTarget{}, apierrors.NewBadRequest("a service proxy request needs a namespace")
	}
	svc, err := getAs[*corev1.Service](ctx, t.cfg.Services, name)
	if err != nil {
		return proxyTarget{}, err
	}
	what := "service " + ns + "/" + name
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return proxyTarget{}, apierrors.NewBadRequest(fmt.Sprintf("%s is of type ExternalName: only Services with endpoints can be proxied", what))
	}
	portName, err := servicePortName(svc, port)
	if err != nil {
		return proxyTarget{}, err
	}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name})
	listed, err := t.cfg.EndpointSlices.List(ctx, &metainternalversion.ListOptions{LabelSelector: sel})
	if err != nil {
		return proxyTarget{}, err
	}
	slices, ok := listed.(*discoveryv1.EndpointSliceList)
	if !ok {
		return proxyTarget{}, apierrors.NewInternalError(fmt.Errorf("EndpointSlice storage returned %T", listed))
	}
	type candidate struct {
		addr netip.Addr
		port int32
		pod  string
	}
	var candidates []candidate
	for _, s := range slices.Items {
		var p *int32
		for _, sp := range s.Ports {
			if sp.Name != nil && *sp.Name == portName && sp.Port != nil {
				p = sp.Port
			}
		}
		if p == nil {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			if e.TargetRef == nil || e.TargetRef.Kind != "Pod" || (e.TargetRef.Namespace != "" && e.TargetRef.Namespace != ns) {
				continue
			}
			for _, a := range e.Addresses {
				if addr, err := netip.ParseAddr(a); err == nil && t.cfg.AllowAddress(addr.Unmap()) {
					candidates = append(candidates, candidate{addr: addr.Unmap(), port: *p, pod: e.TargetRef.Name})
				}
			}
		}
	}
	rand.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	var unreachable error
	for _, c := range candidates {
		// An EndpointSlice is only as trustworthy as whoever wrote it: the
		// address must be the IP of the pod it names, in this namespace.
		pod, err := getAs[*corev1.Pod](ctx, t.cfg.Pods, c.pod)
		if err != nil || !podHasIP(pod, c.addr) {
			continue
		}
		if err := t.reachable(ctx, pod.Spec.NodeName); err != nil {
			unreachable = err // another endpoint may be reachable
			continue
		}
		names := []string{
			name + "." + ns + ".svc",
			name + "." + ns + ".svc." + t.cfg.ClusterDomain,
			c.addr.String(),
		}
		return t.target(scheme, net.JoinHostPort(c.addr.String(), strconv.Itoa(int(c.port))), what, pod.Spec.NodeName, names)
	}
	if unreachable != nil {
		return proxyTarget{}, unreachable
	}
	return proxyTarget{}, apierrors.NewServiceUnavailable(fmt.Sprintf("no endpoints available for %s (port %q)", what, portName))
}

// servicePortName maps the port of a service proxy request to the name of
// one of the Service's ports: "" is the Service's unnamed port (as
// upstream, a Service whose only port is named needs that name or
// number), a number is the port with that number.
func servicePortName(svc *corev1.Service, port string) (string, error) {
	n, numErr := strconv.Atoi(port)
	for _, p := range svc.Spec.Ports {
		if p.Name == port || (numErr == nil && int(p.Port) == n) {
			return p.Name, nil
		}
	}
	if port == "" {
		return "", nil
	}
	return "", apierrors.NewServiceUnavailable(fmt.Sprintf("service %s/%s has no port %q", svc.Namespace, svc.Name, port))
}

func podHasIP(pod *corev1.Pod, addr netip.Addr) bool {
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Unmap() == addr {
			return true
		}
	}
	a, err := netip.ParseAddr(pod.Status.PodIP)
	return err == nil && a.Unmap() == addr
}

// reachable refuses a target on a node that is reached only through its
// tunnel while that tunnel is down.
func (t *proxyTransports) reachable(ctx context.Context, nodeName string) error {
	if nodeName == "" {
		return nil
	}
	node, err := getAs[*corev1.Node](genericapirequest.WithNamespace(ctx, metav1.NamespaceNone), t.cfg.Nodes, nodeName)
	if err != nil {
		return nil // the node's state is unknown: the dial says what happens
	}
	return kubeletclient.TunnelOnly(node, t.cfg.Tunnels)
}

// getAs reads name from g as a T; a storage that returns anything else is
// an internal error.
func getAs[T runtime.Object](ctx context.Context, g rest.Getter, name string) (T, error) {
	var zero T
	obj, err := g.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return zero, err
	}
	v, ok := obj.(T)
	if !ok {
		return zero, apierrors.NewInternalError(fmt.Errorf("the storage of %T returned %T", zero, obj))
	}
	return v, nil
}

// allowed refuses an address the proxy must not connect to.
func (t *proxyTransports) allowed(addr netip.Addr, what string) error {
	if t.cfg.AllowAddress(addr.Unmap()) {
		return nil
	}
	return apierrors.NewBadRequest(fmt.Sprintf("address not allowed: %s is at %s, which the API server does not proxy to (only global unicast addresses)", what, addr))
}

// target builds the target at hostPort, on node, for the scheme asked
// for. names are the names an https: target's certificate may be valid
// for.
func (t *proxyTransports) target(scheme, hostPort, what, node string, names []string) (proxyTarget, error) {
	statusError := func(err error) error { return kubeletclient.UpstreamError(what, hostPort, err) }
	switch scheme {
	case "", "http":
		return proxyTarget{location: &url.URL{Scheme: "http", Host: hostPort}, transport: t.plain, node: node, statusError: statusError}, nil
	case "https":
		return proxyTarget{location: &url.URL{Scheme: "https", Host: hostPort}, transport: t.verifiedTransport(hostPort, names), node: node, statusError: statusError}, nil
	}
	return proxyTarget{}, apierrors.NewBadRequest(fmt.Sprintf("invalid scheme %q in a proxy request to %s: use http or https", scheme, what))
}

func (t *proxyTransports) verifiedTransport(hostPort string, names []string) *http.Transport {
	key := hostPort + " " + strings.Join(names, ",")
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr := t.verified[key]; tr != nil {
		return tr
	}
	if len(t.verified) >= maxVerifiedTransports {
		for _, tr := range t.verified {
			tr.CloseIdleConnections()
		}
		clear(t.verified)
	}
	tr := t.newTransport(&tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain and the name are checked by VerifyConnection, which
		// accepts any one of several names; InsecureSkipVerify only
		// turns off the single-name check crypto/tls would make instead.
		InsecureSkipVerify: true,
		VerifyConnection:   verifyAnyName(t.roots, names),
	})
	t.verified[key] = tr
	return tr
}

// verifyAnyName verifies a peer's chain against roots and requires its
// leaf to be valid for one of names (IP addresses or DNS names).
func verifyAnyName(roots *x509.CertPool, names []string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &tls.CertificateVerificationError{Err: errors.New("the server sent no certificate")}
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		for _, n := range names {
			if leaf.VerifyHostname(n) == nil {
				return nil
			}
		}
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: fmt.Errorf(
			"x509: certificate is valid for %v, not for any of %v", append(leaf.DNSNames, ipStrings(leaf.IPAddresses)...), names)}
	}
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// newTransport returns a transport whose connections go only to allowed
// addresses, checked on the socket as it connects.
func (t *proxyTransports) newTransport(tlsConfig *tls.Config) *http.Transport {
	dialer := &net.Dialer{
		Timeout:   t.cfg.DialTimeout,
		KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("proxy: unexpected address %q: %w", address, err)
			}
			if !t.cfg.AllowAddress(ap.Addr().Unmap()) {
				return fmt.Errorf("proxy: address not allowed: %s", ap.Addr())
			}
			return nil
		},
	}
	dial := dialer.DialContext
	if tunnels := t.cfg.Tunnels; tunnels != nil {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			node, _ := ctx.Value(tunnelNodeKey{}).(string)
			if node == "" || !tunnels.Connected(node) {
				return dialer.DialContext(ctx, network, addr)
			}
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || !t.cfg.AllowAddress(ap.Addr().Unmap()) {
				return nil, fmt.Errorf("proxy: address not allowed: %s", addr)
			}
			ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
			defer cancel()
			return tunnels.DialNode(ctx, node, addr)
		}
	}
	return &http.Transport{
		// Targets are reached directly, never through an environment
		// proxy.
		Proxy:                 nil,
		DialContext:           dial,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   t.cfg.DialTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // long-running: the client decides
	}
}

var (
	proxyConversionsOnce sync.Once
	proxyConversionsErr  error
)

// registerProxyConversions teaches the scheme to decode the options of
// the proxy subresources (their path) from a query, as
// registerPodStreamConversions does for the streams.
func registerProxyConversions() error {
	proxyConversionsOnce.Do(func() {
		path := func(out func(any) *string) conversion.ConversionFunc {
			return func(in, o any, s conversion.Scope) error {
				q, err := queryOf(in, s)
				if err != nil {
					return err
				}
				return q.str("path", out(o))
			}
		}
		for _, c := range []struct {
			out any
			fn  conversion.ConversionFunc
		}{
			{(*corev1.NodeProxyOptions)(nil), path(func(o any) *string { return &o.(*corev1.NodeProxyOptions).Path })},
			{(*corev1.PodProxyOptions)(nil), path(func(o any) *string { return &o.(*corev1.PodProxyOptions).Path })},
			{(*corev1.ServiceProxyOptions)(nil), path(func(o any) *string { return &o.(*corev1.ServiceProxyOptions).Path })},
		} {
			if err := scheme.Scheme.AddConversionFunc((*url.Values)(nil), c.out, c.fn); err != nil {
				proxyConversionsErr = fmt.Errorf("registry: register query conversion for %T: %w", c.out, err)
				return
			}
		}
	})
	return proxyConversionsErr
}
