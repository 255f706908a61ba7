package server

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/exec"
)

type executorFunc func(cfg *rest.Config, u string) (remotecommand.Executor, error)

var executors = map[string]executorFunc{
	"spdy": func(cfg *rest.Config, u string) (remotecommand.Executor, error) {
		parsed, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		return remotecommand.NewSPDYExecutor(cfg, http.MethodPost, parsed)
	},
	"websocket-v5": func(cfg *rest.Config, u string) (remotecommand.Executor, error) {
		return remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, u)
	},
}

type fixedSize struct{ sent bool }

func (f *fixedSize) Next() *remotecommand.TerminalSize {
	if f.sent {
		return nil // no more resizes
	}
	f.sent = true
	return &remotecommand.TerminalSize{Width: 80, Height: 24}
}

func streamURL(base, kind string, cmd []string, q url.Values) string {
	if q == nil {
		q = url.Values{}
	}
	for _, c := range cmd {
		q.Add("command", c)
	}
	return base + "/" + kind + "/default/web/app?" + q.Encode()
}

func TestExec(t *testing.T) {
	e := startEnv(t)
	tests := []struct {
		name       string
		cmd        []string
		stdin      string
		tty        bool
		wantStdout string
		wantStderr string
		wantExit   int // 0: success
	}{
		{name: "stdout", cmd: []string{"echo", "hello", "world"}, wantStdout: "hello world\n"},
		{name: "stderr", cmd: []string{"warn", "careful"}, wantStderr: "careful\n"},
		{name: "stdin", cmd: []string{"cat"}, stdin: "from stdin\nline two\n", wantStdout: "from stdin\nline two\n"},
		{name: "exit code", cmd: []string{"fail"}, wantStdout: "bye\n", wantExit: 3},
		{name: "tty and resize", cmd: []string{"tty"}, stdin: "", tty: true, wantStdout: "tty=true 80x24\n"},
	}
	for kind, newExec := range executors {
		for _, user := range []string{"admin", "admin-token"} {
			cfg := e.restConfig(t, user)
			for _, tt := range tests {
				t.Run(kind+"/"+user+"/"+tt.name, func(t *testing.T) {
					q := url.Values{"output": {"1"}}
					opts := remotecommand.StreamOptions{}
					var stdout, stderr bytes.Buffer
					opts.Stdout = &stdout
					if tt.tty {
						q.Set("tty", "1")
						q.Set("input", "1")
						opts.Tty = true
						opts.Stdin = strings.NewReader(tt.stdin)
						opts.TerminalSizeQueue = &fixedSize{}
					} else {
						q.Set("error", "1")
						opts.Stderr = &stderr
					}
					if tt.stdin != "" {
						q.Set("input", "1")
						opts.Stdin = strings.NewReader(tt.stdin)
					}
					ex, err := newExec(cfg, streamURL(e.url, "exec", tt.cmd, q))
					if err != nil {
						t.Fatal(err)
					}
					err = ex.StreamWithContext(t.Context(), opts)
					if tt.wantExit == 0 && err != nil {
						t.Fatalf("exec %v: %v", tt.cmd, err)
					}
					if tt.wantExit != 0 {
						var ce exec.CodeExitError
						if !errors.As(err, &ce) || ce.Code != tt.wantExit {
							t.Fatalf("exec %v = %v (%T), want exit code %d", tt.cmd, err, err, tt.wantExit)
						}
					}
					if stdout.String() != tt.wantStdout || stderr.String() != tt.wantStderr {
						t.Errorf("exec %v: stdout %q stderr %q, want %q %q", tt.cmd, stdout.String(), stderr.String(), tt.wantStdout, tt.wantStderr)
					}
				})
			}
		}
	}
}

func TestAttach(t *testing.T) {
	e := startEnv(t)
	for kind, newExec := range executors {
		t.Run(kind, func(t *testing.T) {
			ex, err := newExec(e.restConfig(t, "admin"), streamURL(e.url, "attach", nil, url.Values{"input": {"1"}, "output": {"1"}}))
			if err != nil {
				t.Fatal(err)
			}
			var stdout bytes.Buffer
			if err := ex.StreamWithContext(t.Context(), remotecommand.StreamOptions{Stdin: strings.NewReader("typed\n"), Stdout: &stdout}); err != nil {
				t.Fatalf("attach: %v", err)
			}
			if want := "attached to app-2\ntyped\n"; stdout.String() != want {
				t.Errorf("attach stdout = %q, want %q", stdout.String(), want)
			}
		})
	}
}

// A WebSocket upgrade is a GET; get rights on nodes/proxy must not be
// enough to run a command.
func TestWebSocketExecNeedsCreate(t *testing.T) {
	e := startEnv(t)
	for _, path := range []string{"/exec/default/web/app?command=sh&input=1&output=1", "/attach/default/web/app?output=1", "/portForward/default/web"} {
		req, _ := http.NewRequest(http.MethodGet, e.url+path, nil)
		req.Header.Set("Authorization", "Bearer getter-token")
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Protocol", "v5.channel.k8s.io")
		resp, err := e.httpClient(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "user=getter, verb=create, resource=nodes, subresource(s)=[proxy]") {
			t.Errorf("websocket GET %s as getter = %d %q, want 403 for verb create", path, resp.StatusCode, body)
		}
	}
	for _, sar := range e.lastSARs() {
		if sar.User == "getter" && sar.ResourceAttributes.Verb != "create" {
			t.Errorf("SubjectAccessReview for a websocket exec asked verb %q, want create", sar.ResourceAttributes.Verb)
		}
	}
	// The same user through client-go's WebSocket executor fails too.
	ex, err := remotecommand.NewWebSocketExecutor(e.restConfig(t, "getter-token"), http.MethodGet, streamURL(e.url, "exec", []string{"echo", "x"}, url.Values{"output": {"1"}}))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := ex.StreamWithContext(t.Context(), remotecommand.StreamOptions{Stdout: &out}); err == nil {
		t.Errorf("websocket exec as getter succeeded with %q, want an error", out.String())
	}
}

func TestRun(t *testing.T) {
	e := startEnv(t)
	tests := []struct {
		cmd      string
		wantCode int
		wantBody string
	}{
		{"echo a b", 200, "a b\n"},
		{"fail", 500, "bye\n"},
		{"", 400, "missing command"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/run/default/web/app?cmd="+url.QueryEscape(tt.cmd), nil)
		req.Header.Set("Authorization", "Bearer admin-token")
		resp, err := e.httpClient(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode || !strings.HasPrefix(string(body), tt.wantBody) {
			t.Errorf("POST /run?cmd=%q = %d %q, want %d starting with %q", tt.cmd, resp.StatusCode, body, tt.wantCode, tt.wantBody)
		}
	}
}

func TestPortForward(t *testing.T) {
	e := startEnv(t)
	echo := echoServer(t)
	u, _ := url.Parse(e.url + "/portForward/default/web")
	dialers := map[string]func(cfg *rest.Config) (httpstream.Dialer, error){
		"spdy": func(cfg *rest.Config) (httpstream.Dialer, error) {
			transport, upgrader, err := spdy.RoundTripperFor(cfg)
			if err != nil {
				return nil, err
			}
			return spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u), nil
		},
		"spdy-over-websocket": func(cfg *rest.Config) (httpstream.Dialer, error) {
			return portforward.NewSPDYOverWebsocketDialer(u, cfg)
		},
	}
	for name, newDialer := range dialers {
		t.Run(name, func(t *testing.T) {
			dialer, err := newDialer(e.restConfig(t, "admin"))
			if err != nil {
				t.Fatal(err)
			}
			stop, ready := make(chan struct{}), make(chan struct{})
			var errOut lockedBuffer
			pf, err := portforward.New(dialer, []string{"0:" + strconv.Itoa(echo)}, stop, ready, io.Discard, &errOut)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- pf.ForwardPorts() }()
			select {
			case <-ready:
				defer func() {
					close(stop)
					<-done
				}()
			case err := <-done:
				t.Fatalf("ForwardPorts: %v (%s)", err, errOut.Bytes())
			case <-time.After(10 * time.Second):
				t.Fatal("port-forward not ready")
			}
			ports, err := pf.GetPorts()
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				msg := fmt.Sprintf("ping %d through the kubelet", i)
				if got := roundTrip(t, ports[0].Local, msg); got != msg {
					t.Errorf("connection %d echoed %q, want %q", i, got, msg)
				}
			}
		})
	}
}

// roundTrip sends msg to a local port and returns what comes back.
func roundTrip(t *testing.T, port uint16, msg string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	return string(buf)
}

// One connection of a session failing (its port is closed) must leave the
// session and its other connections working. client-go's port-forwarder
// gives up on the whole session at the first error, so this speaks SPDY
// directly.
func TestPortForwardFailureIsPerConnection(t *testing.T) {
	e := startEnv(t)
	echo, closed := echoServer(t), closedPort(t)
	u, _ := url.Parse(e.url + "/portForward/default/web")
	transport, upgrader, err := spdy.RoundTripperFor(e.restConfig(t, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	conn, proto, err := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u).Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if proto != portforward.PortForwardProtocolV1Name {
		t.Fatalf("negotiated %q, want %q", proto, portforward.PortForwardProtocolV1Name)
	}
	open := func(id, port int) (errStream, data httpstream.Stream) {
		h := http.Header{}
		h.Set("streamType", "error")
		h.Set("port", strconv.Itoa(port))
		h.Set("requestID", strconv.Itoa(id))
		errStream, err := conn.CreateStream(h)
		if err != nil {
			t.Fatalf("create error stream %d: %v", id, err)
		}
		errStream.Close() // the client never writes on it
		h.Set("streamType", "data")
		data, err = conn.CreateStream(h)
		if err != nil {
			t.Fatalf("create data stream %d: %v", id, err)
		}
		return errStream, data
	}
	readErr := func(s httpstream.Stream) string {
		ch := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(s)
			ch <- string(b)
		}()
		select {
		case m := <-ch:
			return m
		case <-time.After(10 * time.Second):
			return "<timeout>"
		}
	}

	// Connection 1 (echo) opens first and stays open across connection
	// 2's failure.
	_, data1 := open(1, echo)
	errStream2, _ := open(2, closed)
	if msg := readErr(errStream2); !strings.Contains(msg, fmt.Sprintf("error forwarding port %d", closed)) {
		t.Errorf("error stream of the closed port = %q, want an error forwarding port %d", msg, closed)
	}
	for i, data := range []httpstream.Stream{data1, func() httpstream.Stream { _, d := open(3, echo); return d }()} {
		msg := "still working " + randHex(t)
		if _, err := io.WriteString(data, msg); err != nil {
			t.Fatalf("write connection %d: %v", i, err)
		}
		buf := make([]byte, len(msg))
		got := make(chan error, 1)
		go func() { _, err := io.ReadFull(data, buf); got <- err }()
		select {
		case err := <-got:
			if err != nil || string(buf) != msg {
				t.Errorf("echo on connection %d after a failed one = %q, %v; want %q", i, buf, err, msg)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no echo on connection %d after a failed one", i)
		}
		data.Close()
	}
}

func randHex(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
