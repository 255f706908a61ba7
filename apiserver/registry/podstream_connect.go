package registry

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/proxy"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	streamproxy "k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// podConnectREST serves one of pods/exec, pods/attach and
// pods/portforward: an upgraded connection proxied to the pod's kubelet.
type podConnectREST struct {
	pods        *REST
	kubelets    Kubelets
	authz       authorizer.UnconditionalAuthorizer
	subresource string // exec, attach or portforward

	// reached holds, per kubelet address, when a connection to it was
	// last verified before a WebSocket was translated (checkedTranslator).
	reached sync.Map // host:port → time.Time
}

var _ rest.Connecter = (*podConnectREST)(nil)

// New implements rest.Storage.
func (r *podConnectREST) New() runtime.Object { return &corev1.Pod{} }

// Destroy implements rest.Storage; the pod storage owns the store.
func (r *podConnectREST) Destroy() {}

// ConnectMethods implements rest.Connecter: WebSockets come as GET, SPDY
// as POST.
func (r *podConnectREST) ConnectMethods() []string {
	return []string{http.MethodGet, http.MethodPost}
}

// NewConnectOptions implements rest.Connecter.
func (r *podConnectREST) NewConnectOptions() (runtime.Object, bool, string) {
	switch r.subresource {
	case "exec":
		return &corev1.PodExecOptions{}, false, ""
	case "attach":
		return &corev1.PodAttachOptions{}, false, ""
	}
	return &corev1.PodPortForwardOptions{}, false, ""
}

// Connect implements rest.Connecter. It checks the create permission,
// validates the options, finds the pod's kubelet and returns the handler
// that proxies the upgraded connection there.
func (r *podConnectREST) Connect(ctx context.Context, name string, opts runtime.Object, responder rest.Responder) (http.Handler, error) {
	if err := r.authorizeCreate(ctx, name); err != nil {
		return nil, err
	}
	var (
		container   string
		query       url.Values
		translation streamproxy.Options
		needsName   bool
	)
	switch o := opts.(type) {
	case *corev1.PodExecOptions:
		if len(o.Command) == 0 || o.Command[0] == "" {
			return nil, apierrors.NewBadRequest("you must specify at least one command for the container")
		}
		if !o.Stdin && !o.Stdout && !o.Stderr {
			return nil, apierrors.NewBadRequest("you must specify at least one of stdin, stdout or stderr")
		}
		container, needsName = o.Container, true
		query = kubeletStreamQuery(o.Stdin, o.Stdout, o.Stderr, o.TTY, o.Command)
		translation = streamproxy.Options{Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, Tty: o.TTY}
	case *corev1.PodAttachOptions:
		if !o.Stdin && !o.Stdout && !o.Stderr {
			return nil, apierrors.NewBadRequest("you must specify at least one of stdin, stdout or stderr")
		}
		container, needsName = o.Container, true
		query = kubeletStreamQuery(o.Stdin, o.Stdout, o.Stderr, o.TTY, nil)
		translation = streamproxy.Options{Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, Tty: o.TTY}
	case *corev1.PodPortForwardOptions:
		query = url.Values{}
		for _, p := range o.Ports {
			if p < 1 || p > 65535 {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("port %d is not between 1 and 65535", p))
			}
			query.Add("port", strconv.Itoa(int(p)))
		}
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("unexpected options %T for pods/%s", opts, r.subresource))
	}

	pod, err := podStreamPod(ctx, r.pods, name)
	if err != nil {
		return nil, err
	}
	if needsName {
		if container, err = podContainer(pod, container); err != nil {
			return nil, err
		}
	}
	node := pod.Spec.NodeName
	if node == "" {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", pod.Name))
	}
	loc, transport, err := r.kubelets.Location(ctx, node)
	if err != nil {
		return nil, err
	}
	verb := r.subresource
	if verb == "portforward" {
		verb = "portForward"
	}
	loc.Path = kubeletPath(verb, pod, container)
	loc.RawQuery = query.Encode()

	errs := &kubeletErrorResponder{responder: responder, kubelets: r.kubelets, node: node, location: loc}
	// SPDY (and any WebSocket that is not translated) is proxied as is.
	upgrade := proxy.NewUpgradeAwareHandler(loc, transport, false, true, errs)
	if r.subresource == "portforward" {
		return streamproxy.NewTranslatingHandler(upgrade, streamproxy.NewTunnelingHandler(upgrade),
			wsstream.IsWebSocketRequestWithTunnelingProtocol), nil
	}
	// The translator speaks WebSocket v5 to the client and SPDY to the
	// kubelet, dialling with the same verified client-certificate TLS
	// configuration as the transport.
	translator := &checkedTranslator{
		translator: streamproxy.NewStreamTranslatorHandler(loc, transport, 0, translation),
		location:   loc, transport: transport, errs: errs, reached: &r.reached,
	}
	return streamproxy.NewTranslatingHandler(upgrade, translator,
		wsstream.IsWebSocketRequestWithStreamCloseProtocol), nil
}

// checkedTranslator connects to the kubelet once before the WebSocket is
// accepted. Once the translator has answered 101, a kubelet that cannot be
// reached or trusted could only be reported as an opaque stream error; this
// way the client gets the same 502 or 503, naming the node and address, as
// over SPDY. The translator still dials and verifies on its own, so the
// check is skipped for a kubelet that passed it within the last
// reachedFor: a repeated exec then costs one connection, not two.
type checkedTranslator struct {
	translator http.Handler
	location   *url.URL
	transport  http.RoundTripper
	errs       proxy.ErrorResponder
	reached    *sync.Map
}

// reachedFor is how long a kubelet that was reached and verified is not
// checked again before a translation.
const reachedFor = 10 * time.Second

func (h *checkedTranslator) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	host := h.location.Host
	if at, ok := h.reached.Load(host); !ok || time.Since(at.(time.Time)) > reachedFor {
		conn, err := proxy.DialURL(req.Context(), h.location, h.transport)
		if err != nil {
			h.reached.Delete(host)
			h.errs.Error(w, req, err)
			return
		}
		conn.Close()
		h.reached.Store(host, time.Now())
	}
	h.translator.ServeHTTP(w, req)
}

// authorizeCreate requires create on the subresource, whatever the
// method: a WebSocket upgrade arrives as GET and was authorized as get.
func (r *podConnectREST) authorizeCreate(ctx context.Context, name string) error {
	user, ok := genericapirequest.UserFrom(ctx)
	if !ok {
		return apierrors.NewInternalError(fmt.Errorf("no user in the request context"))
	}
	attrs := authorizer.AttributesRecord{
		User:            user,
		Verb:            "create",
		Namespace:       genericapirequest.NamespaceValue(ctx),
		APIGroup:        corev1.GroupName,
		APIVersion:      corev1.SchemeGroupVersion.Version,
		Resource:        "pods",
		Subresource:     r.subresource,
		Name:            name,
		ResourceRequest: true,
	}
	decision, reason, err := r.authz.Authorize(ctx, attrs)
	switch {
	case decision == authorizer.DecisionAllow:
		return nil
	case err != nil:
		return apierrors.NewInternalError(fmt.Errorf("authorize create on pods/%s: %w", r.subresource, err))
	}
	return responsewriters.ForbiddenStatusError(attrs, reason)
}

// kubeletErrorResponder reports a failed upgrade through the generic
// responder, as the API error the kubelet client maps it to.
type kubeletErrorResponder struct {
	responder rest.Responder
	kubelets  Kubelets
	node      string
	location  *url.URL
}

var _ proxy.ErrorResponder = (*kubeletErrorResponder)(nil)

// Error implements proxy.ErrorResponder.
func (r *kubeletErrorResponder) Error(_ http.ResponseWriter, _ *http.Request, err error) {
	r.responder.Error(r.kubelets.StatusError(r.node, r.location, err))
}
