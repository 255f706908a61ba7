// Package server is the kubelet's HTTPS port (path P5's far end): it serves
// TLS ≥ 1.2 with the node's rotating serving certificate (path P6), whose
// SANs are the Node's addresses and whose issuer is the cluster's server CA,
// so the API server can verify it.
//
// Every request is authenticated and authorized first (path P7): a client
// certificate verified against the cluster client CA, or a bearer token
// checked with a TokenReview; anonymous requests get 401. The decision is a
// SubjectAccessReview on the node's own nodes/<subresource> (see
// attributesFor); exec, attach, port-forward and run always need the verb
// create, whatever the HTTP method.
//
// The API it serves:
//
//	GET  /healthz                                     "ok"
//	GET  /pods                                        the node's pods, a v1 PodList
//	GET  /metrics                                     Prometheus text
//	GET  /containerLogs/{ns}/{pod}/{container}        a container's log (PodLogOptions in the query)
//	GET|POST /exec/{ns}/{pod}[/{uid}]/{container}     SPDY (v1–v4) or WebSocket (v1, v4, v5) streams
//	GET|POST /attach/{ns}/{pod}[/{uid}]/{container}   the same, attached to the container's process
//	GET|POST /portForward/{ns}/{pod}[/{uid}]          SPDY portforward.k8s.io
//	POST /run/{ns}/{pod}[/{uid}]/{container}?cmd=…   runs a command and returns its output
//
// The pod side (finding containers, running processes in them, dialing into
// a pod's network namespace) is the Containers interface, implemented by the
// kubelet's pod manager.
package server

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
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// Errors a Containers implementation returns (wrapped) when the pod or the
// container asked for does not exist; the server answers 404.
var (
	ErrPodNotFound       = errors.New("kubelet server: pod not found")
	ErrContainerNotFound = errors.New("kubelet server: container not found")
)

// TerminalSize is a terminal's width and height, sent by a client with a TTY.
type TerminalSize = remotecommand.TerminalSize

// Containers is the pod side of the kubelet API, implemented by the
// kubelet's pod manager.
type Containers interface {
	// Pods returns the pods bound to this node.
	Pods() []*corev1.Pod
	// Container resolves a pod's container to the runtime: the ID of its
	// current instance (or of the previous one, when previous is true) and
	// the path of that instance's CRI-format log file. uid may be empty,
	// meaning any pod of that name. Unknown pods and containers are errors
	// wrapping ErrPodNotFound or ErrContainerNotFound.
	Container(namespace, pod, uid, container string, previous bool) (id, logPath string, err error)
	// Exec runs cmd in the container, copying stdin to the process and its
	// output to stdout and stderr. A stream the client did not ask for is
	// nil. resize is nil without a TTY. A non-zero exit is an error
	// implementing k8s.io/utils/exec.ExitError.
	Exec(ctx context.Context, containerID string, cmd []string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan TerminalSize) error
	// Attach connects the streams to the container's main process, like
	// Exec.
	Attach(ctx context.Context, containerID string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan TerminalSize) error
	// PortForward dials port inside the pod's network namespace and copies
	// bytes both ways until either side closes. It returns an error (never
	// panics) when the port cannot be reached; other forwarded connections
	// of the same session are not affected.
	PortForward(ctx context.Context, namespace, pod string, uid types.UID, port int32, stream io.ReadWriteCloser) error
}

// Config configures a Server.
type Config struct {
	// GetCertificate returns the serving certificate for a handshake; it is
	// called for every new connection, so a rotated certificate is used at
	// once. Required.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// NodeName is this node's name: authorization asks whether the user
	// may act on nodes/<subresource> of this name.
	NodeName string
	// ClientCA returns the cluster client CA that client certificates must
	// chain to; it is called for every handshake and request, so a rotated
	// bundle is used at once. If nil (or it returns nil), client
	// certificates are not requested and only bearer tokens authenticate.
	ClientCA func() *x509.CertPool
	// Client is the node's API client, used to create TokenReviews and
	// SubjectAccessReviews. If nil, bearer tokens are not accepted and every
	// authenticated request is refused (403): the server is closed, never
	// open, without it.
	Client kubernetes.Interface
	// Containers is the pod side. If nil, /pods, /containerLogs, /exec,
	// /attach, /portForward and /run answer 503.
	Containers Containers
	// Metrics is served on /metrics. If nil, an empty registry is served.
	Metrics prometheus.Gatherer
	// Logger receives the server's messages. If nil, they are discarded.
	Logger *slog.Logger
}

// Timeouts of the streaming endpoints (exec, attach, port-forward).
const (
	// streamIdleTimeout closes a session on which nothing has moved for
	// this long (the upstream kubelet's streamingConnectionIdleTimeout).
	// Clients ping every few seconds, so a live session never idles.
	streamIdleTimeout = 4 * time.Hour
	// streamCreationTimeout bounds the wait for a client's SPDY streams.
	streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
)

// Server is the kubelet HTTPS server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	authn   *authenticator
	authz   *authorizer
	metrics http.Handler
	handler http.Handler
}

// New validates cfg and returns a Server; it opens no socket.
func New(cfg Config) (*Server, error) {
	if cfg.GetCertificate == nil {
		return nil, errors.New("kubelet server: no serving certificate source")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		authn:   newAuthenticator(cfg.Client),
		authz:   newAuthorizer(cfg.Client),
		metrics: promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}),
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

// Handler is the server's HTTP handler, without TLS. Client certificates
// are read from the request's TLS state, so without TLS only bearer tokens
// authenticate.
func (s *Server) Handler() http.Handler { return s.handler }

// TLSConfig returns the server's TLS configuration: TLS ≥ 1.2, the
// rotating serving certificate, and client certificates requested and,
// when given, verified against the current client CA (a client with a
// certificate from another CA fails the handshake; a client without one may
// still use a bearer token).
func (s *Server) TLSConfig() *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.cfg.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.cfg.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			if pool := s.clientCA(); pool != nil {
				c.ClientCAs = pool
				c.ClientAuth = tls.VerifyClientCertIfGiven
			}
			return c, nil
		},
	}
}

func (s *Server) clientCA() *x509.CertPool {
	if s.cfg.ClientCA == nil {
		return nil
	}
	return s.cfg.ClientCA()
}

// Serve serves HTTPS on ln until ctx ends, then stops accepting, gives
// requests in flight five seconds to finish, and returns nil. It closes ln.
// Requests' contexts derive from ctx, so followed logs end at once and
// exec or attach sessions see their context cancelled; hijacked
// connections are not waited for.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		// Failed handshakes (a scanner, a client that does not trust the
		// server CA) are routine: log them at debug level.
		ErrorLog:    slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		return fmt.Errorf("kubelet server: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("kubelet server: serve on %s: %w", ln.Addr(), err)
	}
	return nil
}

// serveHTTP authenticates, authorizes and then routes a request.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	u, err := s.authn.authenticate(r, s.clientCA())
	if err != nil {
		s.log.Debug("unauthenticated request", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	attrs, ok := attributesFor(r, s.cfg.NodeName)
	if !ok {
		w.Header().Set("Allow", "GET, POST, PUT, PATCH, DELETE")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	allowed, err := s.authz.authorize(r.Context(), u, attrs)
	if err != nil {
		s.log.Warn("authorization failed", "user", u.Name, "path", r.URL.Path, "err", err)
		http.Error(w, fmt.Sprintf("Authorization error (user=%s, verb=%s, resource=nodes, subresource(s)=%v)", u.Name, attrs.verb, attrs.subresources), http.StatusInternalServerError)
		return
	}
	if !allowed {
		s.log.Debug("forbidden", "user", u.Name, "verb", attrs.verb, "path", r.URL.Path)
		http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=nodes, subresource(s)=%v)", u.Name, attrs.verb, attrs.subresources), http.StatusForbidden)
		return
	}
	s.route(w, r)
}

// route dispatches an authorized request to its endpoint.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	root, rest := splitPath(r.URL.Path)
	switch root {
	case "healthz":
		if len(rest) > 1 || (len(rest) == 1 && rest[0] != "ping") {
			break
		}
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		io.WriteString(w, "ok")
		return
	case "metrics":
		if len(rest) != 0 {
			break
		}
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		s.metrics.ServeHTTP(w, r)
		return
	case "pods":
		if len(rest) != 0 {
			break
		}
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) || !s.haveContainers(w) {
			return
		}
		s.servePods(w)
		return
	case "containerLogs":
		if len(rest) != 3 {
			break
		}
		if !allowMethods(w, r, http.MethodGet) || !s.haveContainers(w) {
			return
		}
		s.serveContainerLogs(w, r, rest[0], rest[1], rest[2])
		return
	case "exec", "attach", "run":
		ns, pod, uid, container, ok := podContainerPath(rest)
		if !ok {
			break
		}
		methods := []string{http.MethodGet, http.MethodPost}
		if root == "run" {
			methods = methods[1:]
		}
		if !allowMethods(w, r, methods...) || !s.haveContainers(w) {
			return
		}
		switch root {
		case "exec":
			s.serveExec(w, r, ns, pod, uid, container)
		case "attach":
			s.serveAttach(w, r, ns, pod, uid, container)
		default:
			s.serveRun(w, r, ns, pod, uid, container)
		}
		return
	case "portForward":
		if len(rest) != 2 && len(rest) != 3 {
			break
		}
		if !allowMethods(w, r, http.MethodGet, http.MethodPost) || !s.haveContainers(w) {
			return
		}
		uid := ""
		if len(rest) == 3 {
			uid = rest[2]
		}
		s.servePortForward(w, r, rest[0], rest[1], uid)
		return
	}
	http.NotFound(w, r)
}

// splitPath splits /a/b/c into "a" and [b c]; empty segments are dropped.
func splitPath(p string) (string, []string) {
	var parts []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return "", nil
	}
	return parts[0], parts[1:]
}

// podContainerPath parses {ns}/{pod}[/{uid}]/{container}.
func podContainerPath(rest []string) (ns, pod, uid, container string, ok bool) {
	switch len(rest) {
	case 3:
		return rest[0], rest[1], "", rest[2], true
	case 4:
		return rest[0], rest[1], rest[2], rest[3], true
	}
	return "", "", "", "", false
}

// allowMethods answers 405 with an Allow header unless r uses one of
// methods.
func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	return false
}

func (s *Server) haveContainers(w http.ResponseWriter) bool {
	if s.cfg.Containers == nil {
		http.Error(w, "the kubelet has no container runtime attached yet", http.StatusServiceUnavailable)
		return false
	}
	return true
}

func (s *Server) servePods(w http.ResponseWriter) {
	list := corev1.PodList{TypeMeta: typeMeta("PodList")}
	for _, p := range s.cfg.Containers.Pods() {
		pod := p.DeepCopy()
		pod.TypeMeta = typeMeta("Pod")
		list.Items = append(list.Items, *pod)
	}
	if list.Items == nil {
		list.Items = []corev1.Pod{}
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(&list); err != nil {
		s.log.Debug("write /pods", "err", err)
	}
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: "v1", Kind: kind}
}

// findPod returns the pod ns/name (with that uid, if uid is not empty)
// among the node's pods.
func (s *Server) findPod(ns, name, uid string) (*corev1.Pod, bool) {
	for _, p := range s.cfg.Containers.Pods() {
		if p.Namespace == ns && p.Name == name && (uid == "" || string(p.UID) == uid) {
			return p, true
		}
	}
	return nil, false
}

// containerError answers a failed Containers.Container lookup: 404 for an
// unknown pod or container, 500 otherwise.
func (s *Server) containerError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrPodNotFound) || errors.Is(err, ErrContainerNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	s.log.Warn("resolve container", "err", err)
	http.Error(w, err.Error(), http.StatusInternalServerError)
}
