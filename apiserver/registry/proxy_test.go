package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/proxy"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/utils/ptr"

	"tether/apiserver/kubeletclient"
	"tether/apiserver/scheme"
	"tether/pki"
)

// proxyObjects is a rest.Getter over fixed objects, keyed by
// namespace/name; the namespace is the request context's.
type proxyObjects struct {
	resource string
	objs     map[string]runtime.Object
}

func newProxyObjects(resource string, objs ...runtime.Object) proxyObjects {
	g := proxyObjects{resource: resource, objs: map[string]runtime.Object{}}
	for _, o := range objs {
		m := o.(metav1.Object)
		g.objs[m.GetNamespace()+"/"+m.GetName()] = o
	}
	return g
}

func (g proxyObjects) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	if o, ok := g.objs[request.NamespaceValue(ctx)+"/"+name]; ok {
		return o.DeepCopyObject(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: g.resource}, name)
}

// proxySlices is a rest.Lister of EndpointSlices that honours the
// namespace and the label selector.
type proxySlices struct {
	rest.TableConvertor // never called
	items               []discoveryv1.EndpointSlice
}

func (proxySlices) NewList() runtime.Object { return &discoveryv1.EndpointSliceList{} }

func (l proxySlices) List(ctx context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	sel := labels.Everything()
	if opts != nil && opts.LabelSelector != nil {
		sel = opts.LabelSelector
	}
	out := &discoveryv1.EndpointSliceList{}
	for _, s := range l.items {
		if s.Namespace == request.NamespaceValue(ctx) && sel.Matches(labels.Set(s.Labels)) {
			out.Items = append(out.Items, *s.DeepCopy())
		}
	}
	return out, nil
}

// proxyKubelets locates the kubelet of node-1 (only) at a fixed URL,
// reached with its own transport.
type proxyKubelets struct {
	loc *url.URL
	rt  http.RoundTripper
}

func (k proxyKubelets) Location(_ context.Context, name string) (*url.URL, http.RoundTripper, error) {
	if k.loc == nil || name != "node-1" {
		return nil, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, name)
	}
	u := *k.loc
	return &u, k.rt, nil
}

func (proxyKubelets) StatusError(name string, loc *url.URL, err error) error {
	return kubeletclient.UpstreamError("the kubelet of node "+name, loc.Host, err)
}

// proxyCountingTransport counts the requests sent through it.
type proxyCountingTransport struct {
	rt http.RoundTripper
	n  atomic.Int32
}

func (c *proxyCountingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

// proxyResponder is a rest.Responder that records the errors it is given.
type proxyResponder struct{ errs []error }

func (r *proxyResponder) Object(int, runtime.Object) {}
func (r *proxyResponder) Error(err error)            { r.errs = append(r.errs, err) }

// proxySeen is a request as a backend received it.
type proxySeen struct{ method, path, query, body string }

// proxyBackend is an httptest server that records what it receives and
// answers 202 "from <name>".
type proxyBackend struct {
	name string
	srv  *httptest.Server

	mu   sync.Mutex
	seen []proxySeen
}

// startProxyBackend starts a backend on 127.0.0.1, over TLS with cert
// if it is not nil.
func startProxyBackend(t *testing.T, name string, cert *tls.Certificate) *proxyBackend {
	t.Helper()
	b := &proxyBackend{name: name}
	b.srv = httptest.NewUnstartedServer(b)
	b.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are expected
	if cert != nil {
		b.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
		b.srv.StartTLS()
	} else {
		b.srv.Start()
	}
	t.Cleanup(b.srv.Close)
	return b
}

func (b *proxyBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.seen = append(b.seen, proxySeen{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, body: string(body)})
	b.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, "from "+b.name)
}

func (b *proxyBackend) port() int32 { return int32(b.srv.Listener.Addr().(*net.TCPAddr).Port) }

func (b *proxyBackend) portString() string { return strconv.Itoa(int(b.port())) }

func (b *proxyBackend) requests() []proxySeen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]proxySeen(nil), b.seen...)
}

func proxyCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// proxyServingCert issues a serving certificate for the names and IPs.
func proxyServingCert(t *testing.T, ca *pki.CA, dnsNames []string, ips ...net.IP) *tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{
		CommonName:  "backend",
		DNSNames:    dnsNames,
		IPAddresses: ips,
		Usages:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		Validity:    time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

var proxyLoopback = netip.MustParseAddr("127.0.0.1")

// proxyAllowLoopback lets the tests reach their backends on 127.0.0.1.
func proxyAllowLoopback(a netip.Addr) bool { return a == proxyLoopback }

// proxyTestStorage fills in the parts of cfg a test leaves out and builds
// the storage.
func proxyTestStorage(t *testing.T, cfg ProxyConfig) ProxyStorage {
	t.Helper()
	if cfg.Pods == nil {
		cfg.Pods = newProxyObjects("pods")
	}
	if cfg.Nodes == nil {
		cfg.Nodes = newProxyObjects("nodes")
	}
	if cfg.Services == nil {
		cfg.Services = newProxyObjects("services")
	}
	if cfg.EndpointSlices == nil {
		cfg.EndpointSlices = proxySlices{}
	}
	if cfg.Kubelets == nil {
		cfg.Kubelets = proxyKubelets{}
	}
	if cfg.TrustBundle == nil {
		cfg.TrustBundle = proxyCA(t, "unused-ca").CertPEM()
	}
	s, err := NewProxyStorage(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func proxyPod(name, ip string, containers ...corev1.Container) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.PodSpec{Containers: containers},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	if ip != "" {
		pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	return pod
}

func proxyContainer(name string, ports ...corev1.ContainerPort) corev1.Container {
	return corev1.Container{Name: name, Image: "img", Ports: ports}
}

// proxyCall is one request to a proxy subresource.
type proxyCall struct {
	resource string // nodes, pods or services
	ns, id   string
	method   string // GET if empty
	path     string // what follows /proxy, e.g. /a/b/
	query    string
	body     string
}

func (c proxyCall) url() string {
	u := "/api/v1/"
	if c.ns != "" {
		u += "namespaces/" + c.ns + "/"
	}
	u += c.resource + "/" + c.id + "/proxy" + c.path
	if c.query != "" {
		u += "?" + c.query
	}
	return u
}

// proxyResult is what one proxyCall produced.
type proxyResult struct {
	connectErr error                      // Connect's own error
	handler    http.Handler               // what Connect returned
	rec        *httptest.ResponseRecorder // the response, if Connect succeeded
	errs       []error                    // the errors given to the responder
}

// proxyDo drives s as the generic API server does: the options decoded
// from the query with the subpath as "path", Connect called with the
// namespace in the context, the request served by the handler returned.
func proxyDo(t *testing.T, s rest.Storage, c proxyCall) proxyResult {
	t.Helper()
	conn := s.(rest.Connecter)
	opts, subpath, key := conn.NewConnectOptions()
	if !subpath || key != "path" {
		t.Fatalf("NewConnectOptions() = %T, %v, %q; want a subpath in \"path\"", opts, subpath, key)
	}
	q, err := url.ParseQuery(c.query)
	if err != nil {
		t.Fatal(err)
	}
	q.Set(key, c.path)
	if err := scheme.ParameterCodec.DecodeParameters(q, corev1.SchemeGroupVersion, opts); err != nil {
		t.Fatalf("decode %T: %v", opts, err)
	}
	ctx := t.Context()
	if c.ns != "" {
		ctx = request.WithNamespace(ctx, c.ns)
	}
	responder := &proxyResponder{}
	h, err := conn.Connect(ctx, c.id, opts, responder)
	if err != nil {
		return proxyResult{connectErr: err}
	}
	method := c.method
	if method == "" {
		method = http.MethodGet
	}
	req := httptest.NewRequestWithContext(ctx, method, c.url(), strings.NewReader(c.body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return proxyResult{handler: h, rec: rec, errs: responder.errs}
}

// wantBody fails unless the request was proxied and answered by backend.
func (r proxyResult) wantBody(t *testing.T, backend string) {
	t.Helper()
	switch {
	case r.connectErr != nil:
		t.Fatalf("Connect: %v", r.connectErr)
	case len(r.errs) > 0:
		t.Fatalf("the responder got errors %v", r.errs)
	}
	if r.rec.Code != http.StatusAccepted || r.rec.Body.String() != "from "+backend {
		t.Fatalf("response %d %q, want %d %q", r.rec.Code, r.rec.Body.String(), http.StatusAccepted, "from "+backend)
	}
}

// responderError returns the one error the responder got.
func (r proxyResult) responderError(t *testing.T) error {
	t.Helper()
	if r.connectErr != nil {
		t.Fatalf("Connect: %v; want it to succeed and the request to fail", r.connectErr)
	}
	if len(r.errs) != 1 {
		t.Fatalf("the responder got %d errors %v (response %d %q), want 1", len(r.errs), r.errs, r.rec.Code, r.rec.Body.String())
	}
	return r.errs[0]
}

// proxyWantStatus fails unless err is an API error with code whose message
// contains each of want.
func proxyWantStatus(t *testing.T, err error, code int32, want ...string) {
	t.Helper()
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		t.Fatalf("error %v (%T), want an API error %d", err, err, code)
	}
	if got := st.Status().Code; got != code {
		t.Errorf("error code %d (%v), want %d", got, err, code)
	}
	for _, w := range want {
		if !strings.Contains(st.Status().Message, w) {
			t.Errorf("error message %q does not contain %q", st.Status().Message, w)
		}
	}
}

// The constructor reports every missing dependency at once.
func TestProxyStorageConfig(t *testing.T) {
	_, err := NewProxyStorage(ProxyConfig{DialTimeout: -time.Second})
	if err == nil {
		t.Fatal("NewProxyStorage(empty config) succeeded")
	}
	for _, want := range []string{"pod storage", "node storage", "service storage", "EndpointSlice storage", "kubelet client", "trust bundle", "negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// pods/proxy forwards the method, path (its trailing slash kept), query
// and body, and returns the backend's status and body.
func TestProxyPodHTTP(t *testing.T) {
	web := startProxyBackend(t, "web", nil)
	s := proxyTestStorage(t, ProxyConfig{
		Pods:         newProxyObjects("pods", proxyPod("web", "127.0.0.1", proxyContainer("c", corev1.ContainerPort{Name: "http", ContainerPort: web.port()}))),
		AllowAddress: proxyAllowLoopback,
	})
	for _, tc := range []struct {
		name string
		call proxyCall
		want proxySeen
	}{
		{"GET with trailing slash and query",
			proxyCall{method: http.MethodGet, path: "/a/b/", query: "x=1&y=two"},
			proxySeen{method: http.MethodGet, path: "/a/b/", query: "x=1&y=two"}},
		{"GET without trailing slash",
			proxyCall{path: "/a/b"},
			proxySeen{method: http.MethodGet, path: "/a/b"}},
		{"root",
			proxyCall{path: "/"},
			proxySeen{method: http.MethodGet, path: "/"}},
		{"POST with a body",
			proxyCall{method: http.MethodPost, path: "/submit", query: "dry=1", body: `{"k":"v"}`},
			proxySeen{method: http.MethodPost, path: "/submit", query: "dry=1", body: `{"k":"v"}`}},
		{"DELETE",
			proxyCall{method: http.MethodDelete, path: "/items/3"},
			proxySeen{method: http.MethodDelete, path: "/items/3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(web.requests())
			c := tc.call
			c.resource, c.ns, c.id = "pods", "default", "web:"+web.portString()
			proxyDo(t, s.Pods, c).wantBody(t, "web")
			seen := web.requests()
			if len(seen) != before+1 {
				t.Fatalf("the backend got %d requests, want 1", len(seen)-before)
			}
			if got := seen[len(seen)-1]; got != tc.want {
				t.Errorf("the backend got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A GET of …/proxy without a path is redirected to …/proxy/, so that the
// target's relative links resolve under it; nothing reaches the backend.
func TestProxyRootRedirect(t *testing.T) {
	web := startProxyBackend(t, "web", nil)
	s := proxyTestStorage(t, ProxyConfig{
		Pods:         newProxyObjects("pods", proxyPod("web", "127.0.0.1", proxyContainer("c", corev1.ContainerPort{ContainerPort: web.port()}))),
		AllowAddress: proxyAllowLoopback,
	})
	res := proxyDo(t, s.Pods, proxyCall{resource: "pods", ns: "default", id: "web", query: "x=1"})
	if res.connectErr != nil {
		t.Fatal(res.connectErr)
	}
	want := "/api/v1/namespaces/default/pods/web/proxy/?x=1"
	if res.rec.Code != http.StatusMovedPermanently || res.rec.Header().Get("Location") != want {
		t.Errorf("GET …/proxy: %d Location %q, want 301 to %s", res.rec.Code, res.rec.Header().Get("Location"), want)
	}
	if n := len(web.requests()); n != 0 {
		t.Errorf("the backend got %d requests, want none", n)
	}
}

// pods/proxy picks the port asked for by number or container port name,
// else the first container port of the first container that has one.
func TestProxyPodPort(t *testing.T) {
	right := startProxyBackend(t, "right", nil)
	wrong := startProxyBackend(t, "wrong", nil)
	app := proxyPod("app", "127.0.0.1",
		proxyContainer("sidecar"),
		proxyContainer("main",
			corev1.ContainerPort{Name: "http", ContainerPort: right.port()},
			corev1.ContainerPort{Name: "admin", ContainerPort: wrong.port()}),
		proxyContainer("extra", corev1.ContainerPort{Name: "extra", ContainerPort: wrong.port()}),
	)
	pending := proxyPod("pending", "", proxyContainer("c"))
	pending.Status.Phase = corev1.PodPending
	s := proxyTestStorage(t, ProxyConfig{
		Pods:         newProxyObjects("pods", app, pending),
		AllowAddress: proxyAllowLoopback,
	})
	for _, tc := range []struct {
		id      string
		backend string // reached, or
		code    int32  // the error of Connect
		msg     []string
	}{
		{id: "app", backend: "right"},
		{id: "app:" + right.portString(), backend: "right"},
		{id: "app:" + wrong.portString(), backend: "wrong"},
		{id: "app:http", backend: "right"},
		{id: "app:admin", backend: "wrong"},
		{id: "app:extra", backend: "wrong"},
		{id: "http:app:http", backend: "right"},
		{id: "app:metrics", code: http.StatusBadRequest, msg: []string{`"metrics"`, "app"}},
		{id: "app:0", code: http.StatusBadRequest, msg: []string{"invalid port 0"}},
		{id: "app:65536", code: http.StatusBadRequest, msg: []string{"invalid port 65536"}},
		{id: "pending:80", code: http.StatusServiceUnavailable, msg: []string{"pod default/pending has no IP"}},
		{id: "missing", code: http.StatusNotFound, msg: []string{"missing"}},
	} {
		t.Run(tc.id, func(t *testing.T) {
			r := proxyDo(t, s.Pods, proxyCall{resource: "pods", ns: "default", id: tc.id, path: "/"})
			if tc.backend != "" {
				r.wantBody(t, tc.backend)
				return
			}
			proxyWantStatus(t, r.connectErr, tc.code, tc.msg...)
		})
	}
}

// With the default AllowAddress, loopback, link-local and unspecified
// addresses are refused before anything is dialled, for pods, nodes and
// service endpoints alike.
func TestProxyDefaultAllowAddressRefusesLoopback(t *testing.T) {
	backend := startProxyBackend(t, "backend", nil)
	port := backend.port()
	for _, ip := range []string{"127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1"} {
		t.Run("pod at "+ip, func(t *testing.T) {
			s := proxyTestStorage(t, ProxyConfig{
				Pods: newProxyObjects("pods", proxyPod("web", ip, proxyContainer("c", corev1.ContainerPort{ContainerPort: port}))),
			})
			r := proxyDo(t, s.Pods, proxyCall{resource: "pods", ns: "default", id: "web", path: "/"})
			proxyWantStatus(t, r.connectErr, http.StatusBadRequest, "address not allowed", "pod default/web")
		})
	}
	t.Run("node at 127.0.0.1", func(t *testing.T) {
		s := proxyTestStorage(t, ProxyConfig{
			Kubelets: proxyKubelets{loc: &url.URL{Scheme: "https", Host: "127.0.0.1:10250"}, rt: http.DefaultTransport},
		})
		r := proxyDo(t, s.Nodes, proxyCall{resource: "nodes", id: "node-1:" + backend.portString(), path: "/"})
		proxyWantStatus(t, r.connectErr, http.StatusBadRequest, "address not allowed", "node node-1")
	})
	t.Run("service endpoint at 127.0.0.1", func(t *testing.T) {
		s := proxyTestStorage(t, ProxyConfig{
			Pods:     newProxyObjects("pods", proxyPod("web", "127.0.0.1")),
			Services: newProxyObjects("services", proxyService("svc", corev1.ServicePort{Name: "http", Port: 80})),
			EndpointSlices: proxySlices{items: []discoveryv1.EndpointSlice{
				proxySlice("svc-a", "svc", "http", port, proxyEndpoint("127.0.0.1", "default", "web", nil)),
			}},
		})
		r := proxyDo(t, s.Services, proxyCall{resource: "services", ns: "default", id: "svc:http", path: "/"})
		proxyWantStatus(t, r.connectErr, http.StatusServiceUnavailable, "no endpoints available")
	})
	if n := len(backend.requests()); n != 0 {
		t.Errorf("the backend got %d requests, want none", n)
	}
}

// An https: pod target must present a certificate from the trust bundle
// valid for the pod's IP; anything else is a 502 naming the pod.
func TestProxyPodHTTPS(t *testing.T) {
	trusted := proxyCA(t, "cluster-ca")
	other := proxyCA(t, "other-ca")
	loopback := net.ParseIP("127.0.0.1")
	good := startProxyBackend(t, "good", proxyServingCert(t, trusted, nil, loopback))
	foreign := startProxyBackend(t, "foreign", proxyServingCert(t, other, nil, loopback))
	misnamed := startProxyBackend(t, "misnamed", proxyServingCert(t, trusted, []string{"other"}))
	s := proxyTestStorage(t, ProxyConfig{
		Pods:         newProxyObjects("pods", proxyPod("web", "127.0.0.1", proxyContainer("c", corev1.ContainerPort{ContainerPort: good.port()}))),
		TrustBundle:  trusted.CertPEM(),
		AllowAddress: proxyAllowLoopback,
	})
	call := func(id string) proxyResult {
		return proxyDo(t, s.Pods, proxyCall{resource: "pods", ns: "default", id: id, path: "/healthz"})
	}

	t.Run("trusted certificate for the pod IP", func(t *testing.T) {
		call("https:web:"+good.portString()).wantBody(t, "good")
		// scheme:name: with no port: the first container port. (A bare
		// "https:web" would be pod "https", port "web".)
		call("https:web:").wantBody(t, "good")
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		err := call("https:web:" + foreign.portString()).responderError(t)
		proxyWantStatus(t, err, http.StatusBadGateway,
			"serving certificate of pod default/web", "127.0.0.1:"+foreign.portString(), "is not valid")
	})
	t.Run("trusted certificate for another name", func(t *testing.T) {
		err := call("https:web:" + misnamed.portString()).responderError(t)
		proxyWantStatus(t, err, http.StatusBadGateway,
			"serving certificate of pod default/web", "127.0.0.1:"+misnamed.portString(), "is not valid")
	})
	if n := len(foreign.requests()) + len(misnamed.requests()); n != 0 {
		t.Errorf("untrusted backends got %d requests, want none", n)
	}
}

func proxyService(name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: ports},
	}
}

func proxySlice(name, service, portName string, port int32, endpoints ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
	return discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(portName), Port: ptr.To(port)}},
		Endpoints:   endpoints,
	}
}

func proxyEndpoint(addr, podNamespace, pod string, ready *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ready},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: podNamespace, Name: pod},
	}
}

// services/proxy only uses ready endpoints whose pod, in the Service's
// namespace, has the endpoint's address; maps a port number to the
// Service port's name; and verifies https: targets as <svc>.<ns>.svc.
func TestProxyService(t *testing.T) {
	trusted := proxyCA(t, "cluster-ca")
	good := startProxyBackend(t, "good", nil)
	metrics := startProxyBackend(t, "metrics", nil)
	decoy := startProxyBackend(t, "decoy", nil) // never to be reached
	secure := startProxyBackend(t, "secure", proxyServingCert(t, trusted, []string{"secure.default.svc"}))
	local := startProxyBackend(t, "local", proxyServingCert(t, trusted, []string{"local.default.svc.cluster.local"}))

	otherNS := proxyPod("good", "127.0.0.1")
	otherNS.Namespace = "other"
	pods := newProxyObjects("pods",
		proxyPod("good", "127.0.0.1"),
		proxyPod("liar", "10.0.0.9"), // its endpoints claim 127.0.0.1
		otherNS,
	)
	// Endpoints that must never be used, whatever the service.
	unusable := func() []discoveryv1.Endpoint {
		node := proxyEndpoint("127.0.0.1", "", "good", nil)
		node.TargetRef.Kind = "Node"
		return []discoveryv1.Endpoint{
			proxyEndpoint("127.0.0.1", "default", "liar", nil),           // not its pod's IP
			proxyEndpoint("127.0.0.1", "default", "good", ptr.To(false)), // not ready
			proxyEndpoint("127.0.0.1", "other", "good", nil),             // pod in another namespace
			proxyEndpoint("127.0.0.1", "default", "ghost", nil),          // no such pod
			{Addresses: []string{"127.0.0.1"}},                           // no pod at all
			node,                                                         // not a pod
		}
	}
	s := proxyTestStorage(t, ProxyConfig{
		Pods: pods,
		Services: newProxyObjects("services",
			proxyService("svc", corev1.ServicePort{Name: "http", Port: 80}, corev1.ServicePort{Name: "metrics", Port: 9090}),
			proxyService("empty", corev1.ServicePort{Name: "http", Port: 80}),
			proxyService("secure", corev1.ServicePort{Name: "https", Port: 443}),
			proxyService("local", corev1.ServicePort{Name: "https", Port: 443}),
			proxyService("misnamed", corev1.ServicePort{Name: "https", Port: 443}),
		),
		EndpointSlices: proxySlices{items: []discoveryv1.EndpointSlice{
			proxySlice("svc-good", "svc", "http", good.port(), proxyEndpoint("127.0.0.1", "default", "good", ptr.To(true))),
			proxySlice("svc-decoy", "svc", "http", decoy.port(), unusable()...),
			proxySlice("svc-metrics", "svc", "metrics", metrics.port(), proxyEndpoint("127.0.0.1", "", "good", nil)),
			proxySlice("another-svc", "another", "http", decoy.port(), proxyEndpoint("127.0.0.1", "default", "good", nil)),
			proxySlice("empty-decoy", "empty", "http", decoy.port(), unusable()...),
			proxySlice("secure-a", "secure", "https", secure.port(), proxyEndpoint("127.0.0.1", "default", "good", nil)),
			proxySlice("local-a", "local", "https", local.port(), proxyEndpoint("127.0.0.1", "default", "good", nil)),
			// Its certificate is valid for secure.default.svc only.
			proxySlice("misnamed-a", "misnamed", "https", secure.port(), proxyEndpoint("127.0.0.1", "default", "good", nil)),
		}},
		TrustBundle:  trusted.CertPEM(),
		AllowAddress: proxyAllowLoopback,
	})
	call := func(id string) proxyResult {
		return proxyDo(t, s.Services, proxyCall{resource: "services", ns: "default", id: id, path: "/"})
	}

	// The endpoint is picked at random: repeat so that a usable decoy
	// would be picked at least once.
	for _, tc := range []struct{ id, backend string }{
		{"svc:http", "good"},
		{"svc:80", "good"},
		{"http:svc:80", "good"},
		{"svc:metrics", "metrics"},
		{"svc:9090", "metrics"},
		{"https:secure:443", "secure"},
		{"https:secure:https", "secure"},
		{"https:local:443", "local"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			for range 20 {
				call(tc.id).wantBody(t, tc.backend)
			}
		})
	}
	for _, tc := range []struct {
		id   string
		code int32
		msg  []string
	}{
		{"empty:http", http.StatusServiceUnavailable, []string{"no endpoints available", "service default/empty"}},
		{"svc:7777", http.StatusServiceUnavailable, []string{`no port "7777"`, "default/svc"}},
		{"missing:80", http.StatusNotFound, []string{"missing"}},
	} {
		t.Run(tc.id, func(t *testing.T) {
			proxyWantStatus(t, call(tc.id).connectErr, tc.code, tc.msg...)
		})
	}
	t.Run("https:misnamed:443", func(t *testing.T) {
		err := call("https:misnamed:443").responderError(t)
		proxyWantStatus(t, err, http.StatusBadGateway, "serving certificate of service default/misnamed", "is not valid")
	})
	if seen := decoy.requests(); len(seen) != 0 {
		t.Errorf("the decoy backend got %d requests, want none", len(seen))
	}
}

// nodes/proxy goes to the kubelet, with the kubelet's transport, for no
// port or the kubelet's port; to the node's address over plain http for
// another numeric port.
func TestProxyNode(t *testing.T) {
	kubeletCA := proxyCA(t, "kubelet-ca") // trusted by the kubelet transport only
	kubelet := startProxyBackend(t, "kubelet", proxyServingCert(t, kubeletCA, nil, net.ParseIP("127.0.0.1")))
	other := startProxyBackend(t, "other", nil)
	roots := x509.NewCertPool()
	roots.AddCert(kubeletCA.Cert)
	kubeletRT := &proxyCountingTransport{rt: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	s := proxyTestStorage(t, ProxyConfig{
		Kubelets:     proxyKubelets{loc: &url.URL{Scheme: "https", Host: "127.0.0.1:" + kubelet.portString()}, rt: kubeletRT},
		AllowAddress: proxyAllowLoopback,
	})
	for _, tc := range []struct {
		id      string
		backend string
	}{
		{"node-1", "kubelet"},
		{"node-1:" + kubelet.portString(), "kubelet"},
		{"https:node-1:", "kubelet"},
		{"node-1:" + other.portString(), "other"},
		{"http:node-1:" + other.portString(), "other"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			sent := kubeletRT.n.Load()
			r := proxyDo(t, s.Nodes, proxyCall{resource: "nodes", id: tc.id, path: "/stats/summary", query: "only_cpu=true"})
			r.wantBody(t, tc.backend)
			wantSent := sent
			if tc.backend == "kubelet" {
				wantSent++
			}
			if got := kubeletRT.n.Load(); got != wantSent {
				t.Errorf("the kubelet transport carried %d requests, want %d", got-sent, wantSent-sent)
			}
		})
	}
	if got := kubelet.requests(); len(got) == 0 || got[0] != (proxySeen{method: http.MethodGet, path: "/stats/summary", query: "only_cpu=true"}) {
		t.Errorf("the kubelet got %+v", got)
	}
	for _, tc := range []struct {
		id   string
		code int32
		msg  string
	}{
		{"node-1:metrics", http.StatusBadRequest, `invalid port "metrics"`},
		{"node-1:0", http.StatusBadRequest, `invalid port "0"`},
		{"node-1:65536", http.StatusBadRequest, `invalid port "65536"`},
		{"missing", http.StatusNotFound, "missing"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			r := proxyDo(t, s.Nodes, proxyCall{resource: "nodes", id: tc.id, path: "/"})
			proxyWantStatus(t, r.connectErr, tc.code, tc.msg)
		})
	}
}

// Ids that are not name, name:port or scheme:name:port with scheme http
// or https are 400s naming the id, for every resource.
func TestProxyBadIDs(t *testing.T) {
	s := proxyTestStorage(t, ProxyConfig{
		Pods:     newProxyObjects("pods", proxyPod("web", "10.0.0.1")),
		Services: newProxyObjects("services", proxyService("web", corev1.ServicePort{Port: 80})),
	})
	for _, res := range []struct {
		name string
		s    rest.Storage
		ns   string
	}{
		{"pods", s.Pods, "default"},
		{"services", s.Services, "default"},
		{"nodes", s.Nodes, ""},
	} {
		for _, id := range []string{"a:b:c:d", "ftp:web:80", ":80", "https::80"} {
			t.Run(res.name+"/"+id, func(t *testing.T) {
				r := proxyDo(t, res.s, proxyCall{resource: res.name, ns: res.ns, id: id, path: "/"})
				proxyWantStatus(t, r.connectErr, http.StatusBadRequest, strconv.Quote(id))
			})
		}
	}
}

// The dialer checks the address actually connected to, so a name that
// resolves to a refused address, or an address refused after the
// location was checked, is never reached.
func TestProxyDialerRechecksAddresses(t *testing.T) {
	backend := startProxyBackend(t, "backend", nil)

	t.Run("node named localhost", func(t *testing.T) {
		// A DNS name: only the dialer can see it is loopback.
		s := proxyTestStorage(t, ProxyConfig{
			Kubelets: proxyKubelets{loc: &url.URL{Scheme: "https", Host: "localhost:10250"}, rt: http.DefaultTransport},
		})
		err := proxyDo(t, s.Nodes, proxyCall{resource: "nodes", id: "node-1:" + backend.portString(), path: "/"}).responderError(t)
		var st apierrors.APIStatus
		if !errors.As(err, &st) || st.Status().Code < 500 || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("error %v, want a 5xx API error saying the address is not allowed", err)
		}
	})
	t.Run("pod address refused once located", func(t *testing.T) {
		var calls atomic.Int32
		s := proxyTestStorage(t, ProxyConfig{
			Pods: newProxyObjects("pods", proxyPod("web", "127.0.0.1", proxyContainer("c", corev1.ContainerPort{ContainerPort: backend.port()}))),
			// Allowed when the location is checked, refused ever after.
			AllowAddress: func(a netip.Addr) bool { return calls.Add(1) == 1 && a == proxyLoopback },
		})
		err := proxyDo(t, s.Pods, proxyCall{resource: "pods", ns: "default", id: "web", path: "/"}).responderError(t)
		var st apierrors.APIStatus
		if !errors.As(err, &st) || st.Status().Code < 500 || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("error %v, want a 5xx API error saying the address is not allowed", err)
		}
		if calls.Load() < 2 {
			t.Errorf("AllowAddress was called %d times, want it called again when dialling", calls.Load())
		}
	})
	if n := len(backend.requests()); n != 0 {
		t.Errorf("the backend got %d requests, want none", n)
	}
}

// An IPv6 pod IP is bracketed in the target URL, with or without a port
// (upstream brackets it in both cases).
func TestProxyPodIPv6Location(t *testing.T) {
	s := proxyTestStorage(t, ProxyConfig{
		Pods: newProxyObjects("pods",
			proxyPod("bare", "2001:db8::5", proxyContainer("c")),
			proxyPod("served", "2001:db8::6", proxyContainer("c", corev1.ContainerPort{ContainerPort: 8080}))),
	})
	for _, tc := range []struct{ id, host string }{
		{"served", "[2001:db8::6]:8080"},
		{"bare:8080", "[2001:db8::5]:8080"},
		{"bare", "[2001:db8::5]"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			// Only Connect: nothing is served at these addresses.
			var (
				h   http.Handler
				err error
			)
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("Connect(%q) panicked: %v", tc.id, p)
					}
				}()
				opts := &corev1.PodProxyOptions{Path: "/"}
				h, err = s.Pods.(rest.Connecter).Connect(request.WithNamespace(t.Context(), "default"), tc.id, opts, &proxyResponder{})
			}()
			if err != nil {
				t.Fatal(err)
			}
			if got := h.(*proxy.UpgradeAwareHandler).Location.Host; got != tc.host {
				t.Errorf("target host %q, want %q", got, tc.host)
			}
		})
	}
}
