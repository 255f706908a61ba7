package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"
)

// A streamFunc runs one exec or attach session on the given streams.
type streamFunc func(ctx context.Context, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan TerminalSize) error

// serveExec serves /exec: SPDY and the legacy WebSocket protocols through
// cri-streaming, and kubectl's v5.channel.k8s.io WebSocket itself.
func (s *Server) serveExec(w http.ResponseWriter, r *http.Request, ns, pod, uid, container string) {
	id, _, err := s.cfg.Containers.Container(ns, pod, uid, container, false)
	if err != nil {
		s.containerError(w, err)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "missing command: give at least one command= parameter", http.StatusBadRequest)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c := s.cfg.Containers
	s.log.Debug("exec", "namespace", ns, "name", pod, "container", container, "tty", opts.TTY)
	if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
		s.serveWebSocketV5(w, r, opts, func(ctx context.Context, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan TerminalSize) error {
			return c.Exec(ctx, id, cmd, stdin, stdout, stderr, tty, resize)
		})
		return
	}
	remotecommand.ServeExec(w, r, runtimeAdapter{c: c, id: id}, pod, uid, container, cmd, opts, streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

// serveAttach serves /attach like serveExec.
func (s *Server) serveAttach(w http.ResponseWriter, r *http.Request, ns, pod, uid, container string) {
	id, _, err := s.cfg.Containers.Container(ns, pod, uid, container, false)
	if err != nil {
		s.containerError(w, err)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c := s.cfg.Containers
	s.log.Debug("attach", "namespace", ns, "name", pod, "container", container, "tty", opts.TTY)
	if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
		s.serveWebSocketV5(w, r, opts, func(ctx context.Context, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan TerminalSize) error {
			return c.Attach(ctx, id, stdin, stdout, stderr, tty, resize)
		})
		return
	}
	remotecommand.ServeAttach(w, r, runtimeAdapter{c: c, id: id}, pod, uid, container, opts, streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

// runtimeAdapter adapts Containers to cri-streaming's Executor and
// Attacher for one resolved container.
type runtimeAdapter struct {
	c  Containers
	id string
}

var (
	_ remotecommand.Executor = runtimeAdapter{}
	_ remotecommand.Attacher = runtimeAdapter{}
)

func (a runtimeAdapter) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan TerminalSize, _ time.Duration) error {
	return a.c.Exec(ctx, a.id, cmd, in, out, errw, tty, resize)
}

func (a runtimeAdapter) AttachContainer(ctx context.Context, _, _, _ string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan TerminalSize) error {
	return a.c.Attach(ctx, a.id, in, out, errw, tty, resize)
}

// Channels of the v5.channel.k8s.io WebSocket protocol.
const (
	wsStdin = iota
	wsStdout
	wsStderr
	wsError
	wsResize
)

// serveWebSocketV5 serves an exec or attach session over kubectl's
// v5.channel.k8s.io WebSocket: a binary message's first byte is its channel
// (stdin, stdout, stderr, error, resize), and a [255, channel] message
// closes that channel (how the client sends stdin EOF). The session ends
// with a metav1.Status on the error channel.
func (s *Server) serveWebSocketV5(w http.ResponseWriter, r *http.Request, opts *remotecommand.Options, run streamFunc) {
	kind := func(want bool, t wsstream.ChannelType) wsstream.ChannelType {
		if want {
			return t
		}
		return wsstream.IgnoreChannel
	}
	channels := []wsstream.ChannelType{
		wsStdin:  kind(opts.Stdin, wsstream.ReadChannel),
		wsStdout: kind(opts.Stdout, wsstream.WriteChannel),
		wsStderr: kind(opts.Stderr, wsstream.WriteChannel),
		wsError:  wsstream.WriteChannel,
		wsResize: kind(opts.TTY, wsstream.ReadChannel),
	}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		remotecommand.StreamProtocolV5Name: {Binary: true, Channels: channels},
	})
	conn.SetIdleTimeout(streamIdleTimeout)
	_, streams, err := conn.Open(w, r)
	if err != nil {
		s.log.Debug("websocket upgrade failed", "path", r.URL.Path, "err", err)
		return
	}
	defer conn.Close()

	// Tell the client the session is open with an empty message on the
	// first channel it reads.
	switch {
	case opts.Stdout:
		streams[wsStdout].Write(nil)
	case opts.Stderr:
		streams[wsStderr].Write(nil)
	default:
		streams[wsError].Write(nil)
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var (
		stdin          io.Reader
		stdout, stderr io.WriteCloser
		resize         chan TerminalSize
	)
	if opts.Stdin {
		stdin = streams[wsStdin]
	}
	if opts.Stdout {
		stdout = streams[wsStdout]
	}
	if opts.Stderr {
		stderr = streams[wsStderr]
	}
	if opts.TTY {
		resize = make(chan TerminalSize)
		go decodeResizes(ctx, streams[wsResize], resize)
	}
	err = run(ctx, stdin, stdout, stderr, opts.TTY, resize)
	if b, jerr := json.Marshal(sessionStatus(err)); jerr == nil {
		streams[wsError].Write(b)
	}
}

// decodeResizes reads JSON terminal sizes from r and sends them on ch until
// r ends or ctx is done. It closes ch.
func decodeResizes(ctx context.Context, r io.Reader, ch chan<- TerminalSize) {
	defer close(ch)
	dec := json.NewDecoder(r)
	for {
		var size TerminalSize
		if err := dec.Decode(&size); err != nil {
			return
		}
		select {
		case ch <- size:
		case <-ctx.Done():
			return
		}
	}
}

// sessionStatus is the final status of an exec or attach session, as the
// v4 and v5 protocols carry it: Success, NonZeroExitCode with the exit code
// as a cause, or InternalError.
func sessionStatus(err error) *metav1.Status {
	if err == nil {
		return &metav1.Status{Status: metav1.StatusSuccess}
	}
	var exit utilexec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		return &metav1.Status{
			Status:  metav1.StatusFailure,
			Reason:  remotecommand.NonZeroExitCodeReason,
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", err),
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{
				Type:    remotecommand.ExitCodeCauseType,
				Message: strconv.Itoa(exit.ExitStatus()),
			}}},
		}
	}
	return &metav1.Status{
		Status:  metav1.StatusFailure,
		Reason:  metav1.StatusReasonInternalError,
		Code:    http.StatusInternalServerError,
		Message: fmt.Sprintf("error executing command in container: %v", err),
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Message: err.Error()}}},
	}
}

// servePortForward serves /portForward over SPDY (portforward.k8s.io),
// over SPDY tunnelled in a WebSocket (kubectl's SPDY/3.1+portforward.k8s.io)
// and over cri-streaming's legacy WebSocket protocol.
func (s *Server) servePortForward(w http.ResponseWriter, r *http.Request, ns, name, uid string) {
	pod, ok := s.findPod(ns, name, uid)
	if !ok {
		http.Error(w, fmt.Sprintf("pod %s/%s not found", ns, name), http.StatusNotFound)
		return
	}
	fw := &forwarder{c: s.cfg.Containers, ns: ns, uid: pod.UID}
	s.log.Debug("port-forward", "namespace", ns, "name", name)
	// A tunnelled request reaches this handler as a SPDY upgrade.
	spdy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opts, err := portforward.NewV4Options(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		portforward.ServePortForward(w, r, fw, name, uid, opts, streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
	})
	if wsstream.IsWebSocketRequestWithTunnelingProtocol(r) {
		proxy.NewTunnelingHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			spdy.ServeHTTP(&rawUpgradeWriter{ResponseWriter: w}, r)
		})).ServeHTTP(w, r)
		return
	}
	spdy.ServeHTTP(w, r)
}

// rawUpgradeWriter lets a SPDY upgrade served here (WriteHeader(101),
// then Hijack) run inside proxy.TunnelingHandler, which is built for a
// proxy: it expects the backend's 101 response as bytes on the hijacked
// connection, from which it completes the client's WebSocket handshake.
type rawUpgradeWriter struct {
	http.ResponseWriter
	upgrade bool
}

func (w *rawUpgradeWriter) WriteHeader(code int) {
	if code == http.StatusSwitchingProtocols {
		w.upgrade = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *rawUpgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("kubelet server: the tunnel cannot be hijacked")
	}
	conn, _, err := h.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if w.upgrade {
		var b bytes.Buffer
		b.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
		w.Header().Write(&b)
		b.WriteString("\r\n")
		if _, err := conn.Write(b.Bytes()); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	return conn, bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(conn)), nil
}

// forwarder adapts Containers to cri-streaming's PortForwarder for one pod.
type forwarder struct {
	c   Containers
	ns  string
	uid types.UID
}

var _ portforward.PortForwarder = (*forwarder)(nil)

// PortForward forwards one connection. A failure (a closed port, even a
// panic in the runtime) becomes an error on this connection's error
// stream; the session and its other connections go on.
func (f *forwarder) PortForward(ctx context.Context, name, _ string, port int32, stream io.ReadWriteCloser) (err error) {
	if port <= 0 || port > 65535 {
		return fmt.Errorf("invalid port %d", port)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("port-forward to port %d panicked: %v", port, p)
		}
	}()
	return f.c.PortForward(ctx, f.ns, name, f.uid, port, stream)
}

// serveRun serves POST /run?cmd=…: the command (split on spaces) runs
// without a TTY and the answer is its combined output; a failed command is
// a 500 whose body is the output followed by the error.
func (s *Server) serveRun(w http.ResponseWriter, r *http.Request, ns, pod, uid, container string) {
	id, _, err := s.cfg.Containers.Container(ns, pod, uid, container, false)
	if err != nil {
		s.containerError(w, err)
		return
	}
	cmd := strings.Fields(r.URL.Query().Get("cmd"))
	if len(cmd) == 0 {
		http.Error(w, "missing command: give cmd=", http.StatusBadRequest)
		return
	}
	var out lockedBuffer
	err = s.cfg.Containers.Exec(r.Context(), id, cmd, nil, &out, &out, false, nil)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write(out.Bytes())
		fmt.Fprintf(w, "error: %v\n", err)
		return
	}
	w.Write(out.Bytes())
}

// lockedBuffer collects stdout and stderr written concurrently.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Close() error { return nil }

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
