package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
)

// nodeUserPrefix is how a node's user name starts.
const nodeUserPrefix = "system:node:"

// The Status of a refused tunnel is encoded as core/v1's.
var (
	schemaGV = schema.GroupVersion{Version: "v1"}
	schemaGR = schema.GroupResource{Resource: "tunnel"}
)

// Server is the API server's end of the tunnels: an http.Handler for Path
// (installed behind authentication and authorization) and the dialer the
// API server's connections to tunnelled nodes use.
type Server struct {
	log   *slog.Logger
	codec runtime.NegotiatedSerializer

	mu       sync.Mutex
	sessions map[string]*session // by node name
}

type session struct {
	mux     *yamux.Session
	since   time.Time
	address string // the node's remote address, for logs
}

// NewServer returns a Server. codecs encode the Status of a refused
// request; logger may be nil.
func NewServer(codecs runtime.NegotiatedSerializer, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{log: logger.With("component", "tunnel"), codec: codecs, sessions: map[string]*session{}}
}

// ServeHTTP accepts a node's tunnel: the user must be a node, the request
// an upgrade to Protocol over HTTP/1.1. It returns when the tunnel ends
// (either side closes it, it stops answering, or the request's context
// ends, e.g. because the node's certificate was revoked).
func (s *Server) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	node, err := nodeName(req.Context())
	if err == nil && (req.Method != http.MethodGet || !upgradeTo(req, Protocol)) {
		err = apierrors.NewBadRequest(fmt.Sprintf("%s must be a GET with Connection: Upgrade and Upgrade: %s", Path, Protocol))
	}
	if err != nil {
		responsewriters.ErrorNegotiated(err, s.codec, schemaGV, w, req)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		responsewriters.ErrorNegotiated(apierrors.NewBadRequest(Path+" needs HTTP/1.1 (the connection cannot be taken over)"), s.codec, schemaGV, w, req)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		s.log.Warn("take over the tunnel connection", "node", node, "err", err)
		return
	}
	// The HTTP server may have left deadlines on the connection; the
	// tunnel lives as long as the node keeps it.
	conn.SetDeadline(time.Time{})
	if _, err := rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + Protocol + "\r\n\r\n"); err == nil {
		err = rw.Flush()
	}
	if err != nil {
		conn.Close()
		return
	}
	var c net.Conn = conn
	if rw.Reader.Buffered() > 0 {
		c = &bufferedConn{Conn: conn, r: rw.Reader}
	}
	mux, err := yamux.Client(c, muxConfig())
	if err != nil {
		conn.Close()
		return
	}
	sess := &session{mux: mux, since: time.Now(), address: req.RemoteAddr}
	s.mu.Lock()
	old := s.sessions[node]
	s.sessions[node] = sess
	s.mu.Unlock()
	if old != nil {
		old.mux.Close()
	}
	s.log.Info("node tunnel up", "node", node, "address", req.RemoteAddr)
	select {
	case <-mux.CloseChan():
	case <-req.Context().Done():
		mux.Close()
	}
	s.mu.Lock()
	if s.sessions[node] == sess {
		delete(s.sessions, node)
	}
	s.mu.Unlock()
	s.log.Info("node tunnel down", "node", node, "address", req.RemoteAddr, "after", time.Since(sess.since).Round(time.Second).String())
}

// Connected reports whether node has a tunnel.
func (s *Server) Connected(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[node]
	return sess != nil && !sess.mux.IsClosed()
}

// Nodes returns the names of the nodes with a tunnel, sorted.
func (s *Server) Nodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n, sess := range s.sessions {
		if !sess.mux.IsClosed() {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// ErrNoTunnel is returned by DialNode for a node without a tunnel.
var ErrNoTunnel = errors.New("tunnel: the node has no tunnel")

// DialNode opens a connection to addr ("host:port") from node, through its
// tunnel. The agent refuses addresses its allow-list does not hold.
func (s *Server) DialNode(ctx context.Context, node, addr string) (net.Conn, error) {
	s.mu.Lock()
	sess := s.sessions[node]
	s.mu.Unlock()
	if sess == nil || sess.mux.IsClosed() {
		return nil, fmt.Errorf("%w: node %s", ErrNoTunnel, node)
	}
	stream, err := sess.mux.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("tunnel: open a stream to node %s: %w", node, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		stream.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { stream.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeTarget(stream, addr); err != nil {
		stream.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(stream, 512)
	line, err := readLine(r)
	if err != nil {
		stream.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("tunnel: dial %s through node %s: %w", addr, node, ctx.Err())
		}
		return nil, fmt.Errorf("tunnel: dial %s through node %s: %w", addr, node, err)
	}
	if !stop() {
		stream.Close()
		return nil, fmt.Errorf("tunnel: dial %s through node %s: %w", addr, node, ctx.Err())
	}
	stream.SetDeadline(time.Time{})
	if msg, ok := strings.CutPrefix(line, replyError); ok {
		stream.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("through the tunnel of node %s: %s", node, msg)}
	}
	if line != replyOK {
		stream.Close()
		return nil, fmt.Errorf("tunnel: node %s answered %q", node, line)
	}
	var c net.Conn = stream
	if r.Buffered() > 0 {
		c = &bufferedConn{Conn: stream, r: r}
	}
	return c, nil
}

// nodeName returns the node a request comes from, or a 403.
func nodeName(ctx context.Context) (string, error) {
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok {
		return "", apierrors.NewUnauthorized("no user")
	}
	name, isNode := strings.CutPrefix(u.GetName(), nodeUserPrefix)
	if !isNode || name == "" || !slices.Contains(u.GetGroups(), user.NodesGroup) {
		return "", apierrors.NewForbidden(schemaGR, Path, fmt.Errorf("only nodes (system:node:<name> in group %s) may open a tunnel; you are %q", user.NodesGroup, u.GetName()))
	}
	return name, nil
}

// upgradeTo reports whether req asks to upgrade to proto.
func upgradeTo(req *http.Request, proto string) bool {
	connUpgrade := false
	for _, v := range req.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				connUpgrade = true
			}
		}
	}
	return connUpgrade && strings.EqualFold(req.Header.Get("Upgrade"), proto)
}
