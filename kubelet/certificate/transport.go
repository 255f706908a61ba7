package certificate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Source gives the client certificate to present now; nil means none. A
// new certificate must be a new pointer. certificate.Manager is a Source.
type Source interface {
	Current() *tls.Certificate
}

// Transport is an http.RoundTripper for the API server that presents the
// current certificate of a Source and switches to a rotated one without
// failing a request.
//
// Each certificate gets its own connection pool (a generation). When the
// Source returns a new certificate, new requests go to a new generation,
// which dials new TLS connections that present it; requests in flight on
// the old generation finish there. The old generation's idle connections
// are closed at once and its remaining ones (long watches) when its
// certificate expires, since the server would refuse that certificate from
// then on anyway.
//
// Create it with NewTransport; the zero value is not usable. It is safe for
// concurrent use.
type Transport struct {
	roots          *x509.CertPool
	source         Source
	onUnauthorized func()

	mu     sync.Mutex
	cur    *generation
	old    []*generation
	closed bool
}

var _ http.RoundTripper = (*Transport)(nil)

// ErrTransportClosed is returned by RoundTrip after Close.
var ErrTransportClosed = errors.New("certificate: transport closed")

// NewTransport returns a Transport that verifies the server with roots and
// presents source's certificate. If onUnauthorized is not nil it is called
// (synchronously, so it must not block) for every response with status 401
// Unauthorized: the server no longer accepts the certificate.
func NewTransport(roots *x509.CertPool, source Source, onUnauthorized func()) *Transport {
	return &Transport{roots: roots, source: source, onUnauthorized: onUnauthorized}
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	g, err := t.generation()
	if err != nil {
		return nil, err
	}
	resp, err := g.rt.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && t.onUnauthorized != nil {
		t.onUnauthorized()
	}
	return resp, err
}

// CloseIdleConnections closes the idle connections of every generation.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur != nil {
		t.cur.rt.CloseIdleConnections()
	}
	for _, g := range t.old {
		g.rt.CloseIdleConnections()
	}
}

// Close closes every connection, idle or not, and makes later requests
// fail with ErrTransportClosed.
func (t *Transport) Close() {
	t.mu.Lock()
	gens := append(t.old, t.cur)
	t.cur, t.old, t.closed = nil, nil, true
	t.mu.Unlock()
	for _, g := range gens {
		if g != nil {
			g.close()
		}
	}
}

// generation returns the pool for the current certificate, starting a new
// one and retiring the old when the certificate changed.
func (t *Transport) generation() (*generation, error) {
	cert := t.source.Current()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrTransportClosed
	}
	if t.cur != nil && t.cur.cert == cert {
		return t.cur, nil
	}
	if old := t.cur; old != nil {
		old.rt.CloseIdleConnections()
		t.old = append(t.old, old)
		wait := time.Duration(0)
		if old.cert != nil && old.cert.Leaf != nil {
			wait = time.Until(old.cert.Leaf.NotAfter)
		}
		old.timer = time.AfterFunc(max(wait, 0), func() { t.retire(old) })
	}
	t.cur = newGeneration(t.roots, cert)
	return t.cur, nil
}

// retire closes the connections of an old generation and forgets it.
func (t *Transport) retire(g *generation) {
	t.mu.Lock()
	for i, o := range t.old {
		if o == g {
			t.old = append(t.old[:i], t.old[i+1:]...)
			break
		}
	}
	t.mu.Unlock()
	g.close()
}

// generation is the connection pool of one client certificate.
type generation struct {
	cert  *tls.Certificate
	rt    *http.Transport
	timer *time.Timer // set under Transport.mu when retired

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
	done  bool
}

func newGeneration(roots *x509.CertPool, cert *tls.Certificate) *generation {
	g := &generation{cert: cert, conns: map[*trackedConn]struct{}{}}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	g.rt = &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return g.track(c), nil
		},
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    roots,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if cert == nil {
					return &tls.Certificate{}, nil // no certificate: the server answers 401
				}
				return cert, nil
			},
		},
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 25,
		IdleConnTimeout:     90 * time.Second,
	}
	return g
}

// track registers c so that close can close it; a connection dialled after
// close is closed at once.
func (g *generation) track(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, g: g}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		c.Close()
		return tc
	}
	g.conns[tc] = struct{}{}
	return tc
}

func (g *generation) close() {
	if g.timer != nil {
		g.timer.Stop()
	}
	g.rt.CloseIdleConnections()
	g.mu.Lock()
	conns := g.conns
	g.conns, g.done = map[*trackedConn]struct{}{}, true
	g.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

// trackedConn removes itself from its generation when closed.
type trackedConn struct {
	net.Conn
	g    *generation
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.g.mu.Lock()
		delete(c.g.conns, c)
		c.g.mu.Unlock()
	})
	return c.Conn.Close()
}
