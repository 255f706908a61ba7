package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	"tether/apiserver/scheme"
	"tether/pki"
)

// env is an API server (httptest over mutual TLS, authenticating by client
// certificate) with a tunnel Server at Path.
type env struct {
	t                  testing.TB
	serverCA, clientCA *pki.CA
	srv                *httptest.Server
	tun                *Server

	mu      sync.Mutex
	serials []*big.Int           // client certificate serials of requests to Path
	cancels []context.CancelFunc // one per request to Path
}

func newEnv(t testing.TB) *env {
	t.Helper()
	serverCA, err := pki.NewCA("test-server-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := pki.NewCA("test-client-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, serverCA: serverCA, clientCA: clientCA, tun: NewServer(scheme.Codecs, nil)}
	serving := issue(t, serverCA, pki.CertRequest{
		CommonName:  "127.0.0.1",
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		Usages:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		Validity:    time.Hour,
	})
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.Cert)
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(e.handle))
	e.srv.EnableHTTP2 = false
	e.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{serving},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"http/1.1"},
	}
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

// handle stands in for the API server's authentication: the user is the
// verified client certificate's CN, its groups the O.
func (e *env) handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		http.NotFound(w, r)
		return
	}
	leaf := r.TLS.PeerCertificates[0]
	u := &user.DefaultInfo{Name: leaf.Subject.CommonName, Groups: leaf.Subject.Organization}
	ctx, cancel := context.WithCancel(genericapirequest.WithUser(r.Context(), u))
	defer cancel()
	e.mu.Lock()
	e.serials = append(e.serials, leaf.SerialNumber)
	e.cancels = append(e.cancels, cancel)
	e.mu.Unlock()
	e.tun.ServeHTTP(w, r.WithContext(ctx))
}

// seen returns the serials of the client certificates of requests so far.
func (e *env) seen() []*big.Int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.serials)
}

// dropAll ends every tunnel from the server side.
func (e *env) dropAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.cancels {
		c()
	}
}

func issue(t testing.TB, ca *pki.CA, req pki.CertRequest) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.NewKeyAndCert(req)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// clientCert issues a client certificate for user cn in groups orgs.
func (e *env) clientCert(cn string, orgs ...string) *tls.Certificate {
	c := issue(e.t, e.clientCA, pki.CertRequest{
		CommonName:   cn,
		Organization: orgs,
		Usages:       []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Validity:     time.Hour,
	})
	return &c
}

func (e *env) nodeCert() *tls.Certificate { return e.clientCert("system:node:n1", user.NodesGroup) }

// newClient returns an agent for node n1 using cert and the allow-list.
func (e *env) newClient(cert *atomic.Pointer[tls.Certificate], allowed ...netip.AddrPort) *Client {
	e.t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(e.serverCA.Cert)
	c, err := NewClient(ClientConfig{
		Server:  e.srv.URL,
		RootCAs: pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert.Load(), nil
		},
		Allowed:     func(a netip.AddrPort) bool { return slices.Contains(allowed, a) },
		NodeName:    "n1",
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func certVar(c *tls.Certificate) *atomic.Pointer[tls.Certificate] {
	var p atomic.Pointer[tls.Certificate]
	p.Store(c)
	return &p
}

// running is a Client's Run in progress.
type running struct {
	done chan struct{} // closed when Run returns
	err  error         // what it returned
}

// wait reports whether Run returned within d (then r.err is set).
func (r *running) wait(d time.Duration) bool {
	select {
	case <-r.done:
		return true
	case <-time.After(d):
		return false
	}
}

// run runs c until the returned cancel (or the end of the test).
func run(t testing.TB, c *Client) (context.CancelFunc, *running) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan struct{})}
	go func() {
		r.err = c.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		if !r.wait(10 * time.Second) {
			t.Error("Run did not return after its context was cancelled")
		}
	})
	return cancel, r
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitUntil(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// waitUntil polls cond until it holds (true) or d passes (false).
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// backend is a local TCP server: an echo server (closing after the echo
// of what it read) or, if silent, one that holds connections and ignores
// them.
type backend struct {
	ln       net.Listener
	addr     netip.AddrPort
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
}

func startBackend(t testing.TB, silent bool) *backend {
	t.Helper()
	if silent {
		return startServer(t, nil)
	}
	return startServer(t, func(c net.Conn) {
		io.Copy(c, c)
		c.Close()
	})
}

// startServer starts a backend that runs serve (if not nil) on each
// connection.
func startServer(t testing.TB, serve func(net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, addr: netip.MustParseAddrPort(ln.Addr().String())}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			if serve != nil {
				go serve(c)
			}
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *backend) close() {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

// deadAddr returns a local address nobody listens on.
func deadAddr(t testing.TB) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	return a
}

// echo writes p on c, half-closes it (a yamux stream's Close only ends
// its write side) and returns everything read until EOF.
func echo(c net.Conn, p []byte) ([]byte, error) {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(p)
		if err == nil {
			err = c.Close()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; err == nil {
		err = werr
	}
	return got, err
}

func randomBytes(t testing.TB, n int) []byte {
	p := make([]byte, n)
	if _, err := rand.Read(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func dial(t testing.TB, s *Server, addr netip.AddrPort) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.DialNode(ctx, "n1", addr.String())
	if err != nil {
		t.Fatalf("DialNode %s: %v", addr, err)
	}
	return c
}

// checkEcho checks that a stream to an echo backend round-trips p.
// want, if given, is what to expect instead of p.
func checkEcho(t testing.TB, s *Server, addr netip.AddrPort, p []byte, want ...byte) {
	t.Helper()
	if err := tryEcho(s, addr, p, want); err != nil {
		t.Fatal(err)
	}
}

// tryEcho is checkEcho for any goroutine.
func tryEcho(s *Server, addr netip.AddrPort, p, want []byte) error {
	if want == nil {
		want = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.DialNode(ctx, "n1", addr.String())
	if err != nil {
		return fmt.Errorf("DialNode %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	got, err := echo(c, p)
	if err != nil {
		return fmt.Errorf("echo through the tunnel: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo through the tunnel: got %d bytes, want %d (equal length: %v)", len(got), len(want), len(got) == len(want))
	}
	return nil
}

func TestEndToEnd(t *testing.T) {
	e := newEnv(t)
	echoB := startBackend(t, false)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	t.Cleanup(web.Close)
	webAddr := netip.MustParseAddrPort(web.Listener.Addr().String())

	// A target that speaks first: its first bytes may come with the
	// agent's answer.
	greeting := bytes.Repeat([]byte("220 hello\r\n"), 100)
	greeter := startServer(t, func(c net.Conn) {
		c.Write(greeting)
		io.Copy(c, c)
		c.Close()
	})

	c := e.newClient(certVar(e.nodeCert()), echoB.addr, webAddr, greeter.addr)
	run(t, c)
	waitFor(t, 5*time.Second, "the tunnel", func() bool { return e.tun.Connected("n1") })
	if !c.Connected() {
		t.Error("Client.Connected is false while the server has the tunnel")
	}
	if got := e.tun.Nodes(); !slices.Equal(got, []string{"n1"}) {
		t.Errorf("Nodes() = %v, want [n1]", got)
	}

	t.Run("small", func(t *testing.T) {
		checkEcho(t, e.tun, echoB.addr, []byte("ping"))
	})
	t.Run("large", func(t *testing.T) {
		checkEcho(t, e.tun, echoB.addr, randomBytes(t, 4<<20))
	})
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 8 {
			p := randomBytes(t, 128<<10+i)
			wg.Go(func() {
				if err := tryEcho(e.tun, echoB.addr, p, nil); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	})
	t.Run("half-close", func(t *testing.T) {
		conn := dial(t, e.tun, echoB.addr)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("half")); err != nil {
			t.Fatal(err)
		}
		// Reading before closing the write side: the echo arrives, and
		// the backend does not close yet.
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "half" {
			t.Fatalf("read %q, %v; want \"half\"", buf, err)
		}
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := conn.Read(buf); !isTimeout(err) {
			t.Fatalf("before the half-close: Read = %d, %v; want a timeout", n, err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("-close")); err != nil {
			t.Fatal(err)
		}
		conn.Close() // ends the write side only
		rest, err := io.ReadAll(conn)
		if err != nil || string(rest) != "-close" {
			t.Fatalf("after the half-close: read %q, %v; want \"-close\" then EOF", rest, err)
		}
	})
	t.Run("http", func(t *testing.T) {
		client := &http.Client{
			Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return e.tun.DialNode(ctx, "n1", addr)
			}},
			Timeout: 10 * time.Second,
		}
		defer client.CloseIdleConnections()
		for _, p := range []string{"/a", "/b"} { // the second may reuse the stream
			resp, err := client.Get(web.URL + p)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || string(body) != "hello "+p {
				t.Fatalf("GET %s: %d %q, %v", p, resp.StatusCode, body, err)
			}
		}
	})
	t.Run("target speaks first", func(t *testing.T) {
		for range 100 {
			p := append(slices.Clone(greeting), "and back"...)
			checkEcho(t, e.tun, greeter.addr, []byte("and back"), p...)
		}
	})
	t.Run("ipv4-mapped target", func(t *testing.T) {
		// The agent unmaps the address before the allow-list.
		mapped := netip.AddrPortFrom(netip.AddrFrom16(echoB.addr.Addr().As16()), echoB.addr.Port())
		checkEcho(t, e.tun, mapped, []byte("mapped"))
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestAllowList(t *testing.T) {
	e := newEnv(t)
	allowed := startBackend(t, false)
	refused := startBackend(t, false)
	dead := deadAddr(t)
	run(t, e.newClient(certVar(e.nodeCert()), allowed.addr, dead))
	waitFor(t, 5*time.Second, "the tunnel", func() bool { return e.tun.Connected("n1") })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := e.tun.DialNode(ctx, "n1", refused.addr.String())
	if err == nil {
		c.Close()
		t.Fatal("DialNode to an address outside the allow-list succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, "n1") || !strings.Contains(msg, "does not let") {
		t.Errorf("refused: error %q should name node n1 and say it does not let", msg)
	}

	for _, target := range []string{"localhost:80", "localhost:" + fmt.Sprint(allowed.addr.Port()), "127.0.0.1", "garbage"} {
		c, err := e.tun.DialNode(ctx, "n1", target)
		if err == nil {
			c.Close()
			t.Errorf("DialNode %q succeeded; want an error (not an IP and port)", target)
		} else if !strings.Contains(err.Error(), "not an IP") {
			t.Errorf("DialNode %q: error %q should say it is not an IP address and port", target, err)
		}
	}
	// An invalid request line never leaves the server.
	if _, err := e.tun.DialNode(ctx, "n1", "127.0.0.1:1\n127.0.0.1:2"); err == nil {
		t.Error("DialNode with a newline in the target succeeded")
	}
	if _, err := e.tun.DialNode(ctx, "n1", strings.Repeat("1", maxTarget)); err == nil {
		t.Error("DialNode with an overlong target succeeded")
	}

	// Allowed, but nobody listens: the agent's dial fails.
	c, err = e.tun.DialNode(ctx, "n1", dead.String())
	if err == nil {
		c.Close()
		t.Fatal("DialNode to a dead address succeeded")
	}
	if !strings.Contains(err.Error(), "n1") {
		t.Errorf("dead target: error %q should name the node", err)
	}

	// The tunnel is still usable.
	checkEcho(t, e.tun, allowed.addr, []byte("still up"))
	time.Sleep(50 * time.Millisecond)
	if n := refused.accepted.Load(); n != 0 {
		t.Errorf("the refused backend saw %d connections, want 0", n)
	}
	if !e.tun.Connected("n1") {
		t.Error("the tunnel went down after refused streams")
	}
}

func TestDialContext(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, false)
	run(t, e.newClient(certVar(e.nodeCert()), b.addr))
	waitFor(t, 5*time.Second, "the tunnel", func() bool { return e.tun.Connected("n1") })

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if c, err := e.tun.DialNode(ctx, "n1", b.addr.String()); err == nil {
		c.Close()
		t.Error("DialNode with a cancelled context succeeded")
	} else if !errors.Is(err, context.Canceled) {
		t.Errorf("DialNode with a cancelled context: %v; want context.Canceled", err)
	}
	// A deadline set for the dial does not stay on the connection.
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c, err := e.tun.DialNode(ctx, "n1", b.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(400 * time.Millisecond)
	got, err := echo(c, []byte("late"))
	if err != nil || string(got) != "late" {
		t.Errorf("echo after the dial's deadline: %q, %v", got, err)
	}
}

func TestNoTunnel(t *testing.T) {
	s := NewServer(scheme.Codecs, nil)
	_, err := s.DialNode(context.Background(), "ghost", "127.0.0.1:80")
	if !errors.Is(err, ErrNoTunnel) {
		t.Fatalf("DialNode without a tunnel: %v; want ErrNoTunnel", err)
	}
	if !strings.Contains(err.Error(), "ghost") {
		t.Errorf("error %q should name the node", err)
	}
	if s.Connected("ghost") || len(s.Nodes()) != 0 {
		t.Error("a server without tunnels reports one")
	}
}

func TestNotANode(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"user", e.clientCert("alice", "devs")},
		{"node name without the nodes group", e.clientCert("system:node:n1", "devs")},
		{"empty node name", e.clientCert("system:node:", user.NodesGroup)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.newClient(certVar(tc.cert))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := c.serve(ctx)
			if err == nil {
				t.Fatal("serve succeeded")
			}
			if msg := err.Error(); !strings.Contains(msg, "403") || !strings.Contains(msg, "only nodes") {
				t.Errorf("serve: %q; want a 403 saying only nodes may open a tunnel", msg)
			}
			if c.Connected() || len(e.tun.Nodes()) != 0 || e.tun.Connected("n1") {
				t.Error("a tunnel is up for a non-node")
			}
		})
	}

	// A node's request that is not an upgrade to the tunnel protocol.
	pool := x509.NewCertPool()
	pool.AddCert(e.serverCA.Cert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{*e.nodeCert()},
	}}}
	defer hc.CloseIdleConnections()
	for _, tc := range []struct {
		name, method string
		header       map[string]string
	}{
		{"plain GET", http.MethodGet, nil},
		{"other protocol", http.MethodGet, map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}},
		{"upgrade without Connection", http.MethodGet, map[string]string{"Upgrade": Protocol}},
		{"POST", http.MethodPost, map[string]string{"Connection": "Upgrade", "Upgrade": Protocol}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.srv.URL+Path, nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d (%s), want 400", resp.StatusCode, body)
			}
			if !strings.Contains(string(body), Protocol) {
				t.Errorf("body %q should name the protocol", body)
			}
			if e.tun.Connected("n1") {
				t.Error("a tunnel is up after a refused request")
			}
		})
	}
}

func TestReconnect(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, false)
	c := e.newClient(certVar(e.nodeCert()), b.addr)
	run(t, c)
	waitFor(t, 5*time.Second, "the tunnel", func() bool { return e.tun.Connected("n1") })
	checkEcho(t, e.tun, b.addr, []byte("first"))

	e.dropAll()
	waitFor(t, 5*time.Second, "the server to drop the tunnel", func() bool { return len(e.seen()) == 1 && !e.tun.Connected("n1") })
	start := time.Now()
	waitFor(t, 5*time.Second, "the agent to reconnect", func() bool { return len(e.seen()) == 2 && e.tun.Connected("n1") })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("reconnected after %v; want about 1 s", d)
	}
	checkEcho(t, e.tun, b.addr, []byte("second"))
	if got := e.tun.Nodes(); !slices.Equal(got, []string{"n1"}) {
		t.Errorf("Nodes() = %v, want [n1]", got)
	}
}

func TestSecondConnectionReplacesFirst(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, false)
	cert := certVar(e.nodeCert())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	first, second := e.newClient(cert, b.addr), e.newClient(cert, b.addr)
	firstDone, secondDone := make(chan error, 1), make(chan error, 1)
	go func() { firstDone <- first.serve(ctx) }()
	waitFor(t, 5*time.Second, "the first tunnel", func() bool { return e.tun.Connected("n1") && first.Connected() })
	go func() { secondDone <- second.serve(ctx) }()
	select {
	case err := <-firstDone:
		if err == nil {
			t.Error("the replaced tunnel's serve returned nil; want an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first tunnel was not closed when the second one came")
	}
	waitFor(t, 5*time.Second, "the second tunnel", func() bool { return second.Connected() && e.tun.Connected("n1") })
	if first.Connected() {
		t.Error("the first client still reports a tunnel")
	}
	if got := e.tun.Nodes(); !slices.Equal(got, []string{"n1"}) {
		t.Errorf("Nodes() = %v, want [n1] once", got)
	}
	checkEcho(t, e.tun, b.addr, []byte("through the second"))

	cancel()
	select {
	case err := <-secondDone:
		if err != nil {
			t.Errorf("serve after its context was cancelled: %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after its context was cancelled")
	}
	waitFor(t, 5*time.Second, "the server to drop the tunnel", func() bool { return !e.tun.Connected("n1") && len(e.tun.Nodes()) == 0 })
}

// TestRotation waits for the agent's 10 s certificate check, with two
// agents at once: one gets a new certificate, the other another value
// holding the same one.
func TestRotation(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false)
	start := func(e *env) *atomic.Pointer[tls.Certificate] {
		cert := certVar(e.nodeCert())
		run(t, e.newClient(cert, b.addr))
		waitFor(t, 5*time.Second, "the tunnel", func() bool { return e.tun.Connected("n1") })
		if s := e.seen(); len(s) != 1 || s[0].Cmp(cert.Load().Leaf.SerialNumber) != 0 {
			t.Fatalf("serials seen %v, want [%v]", s, cert.Load().Leaf.SerialNumber)
		}
		return cert
	}
	rotated, same := newEnv(t), newEnv(t)
	rotatedCert, sameCert := start(rotated), start(same)

	renewed := rotated.nodeCert()
	copied := *sameCert.Load()
	copied.Certificate = slices.Clone(copied.Certificate)
	swapped := time.Now()
	rotatedCert.Store(renewed)
	sameCert.Store(&copied)

	waitFor(t, 15*time.Second, "the tunnel to reopen with the new certificate", func() bool {
		s := rotated.seen()
		return len(s) == 2 && s[1].Cmp(renewed.Leaf.SerialNumber) == 0 && rotated.tun.Connected("n1")
	})
	checkEcho(t, rotated.tun, b.addr, []byte("renewed"))
	if d := 11*time.Second - time.Since(swapped); d > 0 {
		time.Sleep(d) // past the same-certificate agent's first check
	}
	if s := same.seen(); len(s) != 1 || !same.tun.Connected("n1") {
		t.Errorf("the tunnel was reopened (%d connections) although the certificate did not change", len(s))
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, false)
	c := e.newClient(certVar(e.nodeCert()), b.addr)
	cancel, done := run(t, c)
	waitFor(t, 5*time.Second, "the tunnel", func() bool { return e.tun.Connected("n1") })
	// An idle stream to the echo backend is open.
	conn := dial(t, e.tun, b.addr)
	defer conn.Close()

	cancel()
	if !done.wait(3 * time.Second) {
		t.Fatal("Run did not return promptly after its context was cancelled")
	} else if done.err != nil {
		t.Errorf("Run: %v; want nil", done.err)
	}
	if c.Connected() {
		t.Error("Client.Connected is true after Run returned")
	}
	waitFor(t, 5*time.Second, "the server to drop the tunnel", func() bool { return !e.tun.Connected("n1") && len(e.tun.Nodes()) == 0 })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); isTimeout(err) {
		t.Error("a stream of the dropped tunnel is still open")
	}
	if _, err := e.tun.DialNode(context.Background(), "n1", b.addr.String()); !errors.Is(err, ErrNoTunnel) {
		t.Errorf("DialNode after the tunnel closed: %v; want ErrNoTunnel", err)
	}
}

// TestSilentTarget: a stream whose target neither closes nor writes (it
// ignores the end of its input) must not keep the agent from returning
// when cancelled, nor from opening the tunnel again when it drops.
func TestSilentTarget(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) (*env, *backend, context.CancelFunc, *running) {
		e := newEnv(t)
		silent := startBackend(t, true)
		c := e.newClient(certVar(e.nodeCert()), silent.addr)
		cancel, done := run(t, c)
		waitFor(t, 5*time.Second, "the tunnel", func() bool { return e.tun.Connected("n1") })
		conn := dial(t, e.tun, silent.addr)
		t.Cleanup(func() { conn.Close() })
		waitFor(t, 5*time.Second, "the target to be reached", func() bool { return silent.accepted.Load() == 1 })
		return e, silent, cancel, done
	}
	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		_, silent, cancel, done := setup(t)
		cancel()
		if !done.wait(3 * time.Second) {
			t.Error("Run did not return within 3 s of its context being cancelled while a stream to a silent target was open")
			silent.close() // lets Run return
		}
	})
	t.Run("tunnel drop", func(t *testing.T) {
		t.Parallel()
		e, silent, _, _ := setup(t)
		e.dropAll()
		if !waitUntil(5*time.Second, func() bool { return len(e.seen()) == 2 && e.tun.Connected("n1") }) {
			t.Error("the agent did not reopen the dropped tunnel within 5 s while a stream to a silent target was open")
			silent.close()
			// Once the target lets go, the tunnel comes back.
			waitFor(t, 5*time.Second, "the tunnel after the target closed", func() bool { return e.tun.Connected("n1") })
		}
	})
}

func TestTargetLine(t *testing.T) {
	var buf bytes.Buffer
	if err := writeTarget(&buf, "10.0.0.1:10250"); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("rest")
	line, err := readLine(&buf)
	if err != nil || line != "10.0.0.1:10250" {
		t.Fatalf("readLine = %q, %v", line, err)
	}
	if buf.String() != "rest" {
		t.Errorf("readLine consumed past the line: %q left", buf.String())
	}
	if _, err := readLine(strings.NewReader(strings.Repeat("x", maxTarget+1))); err == nil {
		t.Error("readLine accepted an overlong line")
	}
	if _, err := readLine(strings.NewReader("no newline")); !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		t.Errorf("readLine without a newline: %v; want EOF", err)
	}
	for _, bad := range []string{"a\nb", "a\rb", strings.Repeat("1", maxTarget)} {
		if err := writeTarget(io.Discard, bad); err == nil {
			t.Errorf("writeTarget(%q) succeeded", bad)
		}
	}
}

func TestNewClientValidates(t *testing.T) {
	_, err := NewClient(ClientConfig{Server: "http://example"})
	if err == nil {
		t.Fatal("NewClient accepted an empty config")
	}
	for _, want := range []string{"https", "server CA", "client certificate", "allow-list"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	c, err := NewClient(ClientConfig{
		Server:               "https://api.example",
		RootCAs:              x509.NewCertPool(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return nil, nil },
		Allowed:              func(netip.AddrPort) bool { return false },
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.host != "api.example:443" || c.name != "api.example" {
		t.Errorf("host %q name %q; want api.example:443 and api.example", c.host, c.name)
	}
}
