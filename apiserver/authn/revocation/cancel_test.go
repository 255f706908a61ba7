package revocation

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"tether/pki"
)

// streamServer serves, over TLS on loopback, a handler that writes one line
// and then holds the request open until its context ends, like a watch. It
// asks for client certificates from ca.
type streamServer struct {
	srv *httptest.Server
	mu  sync.Mutex
	// ended receives, per user (CN), the cause of the end of each request.
	ended map[string]chan error
}

func newStreamServer(t *testing.T, ca *pki.CA, wrap func(http.Handler) http.Handler, http2 bool) *streamServer {
	t.Helper()
	s := &streamServer{ended: map[string]chan error{}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := r.TLS.PeerCertificates[0].Subject.CommonName
		_, _ = io.WriteString(w, "watching\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		s.endedFor(cn) <- context.Cause(r.Context())
	})
	s.srv = httptest.NewUnstartedServer(wrap(h))
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	s.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots, MinVersion: tls.VersionTLS12}
	s.srv.EnableHTTP2 = http2
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *streamServer) endedFor(cn string) chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended[cn] == nil {
		s.ended[cn] = make(chan error, 10)
	}
	return s.ended[cn]
}

// open starts a request with cert and returns once the handler has
// answered its first line, with the response body.
func (s *streamServer) open(t *testing.T, cert tls.Certificate) *bufio.Reader {
	t.Helper()
	tr := s.srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	t.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.srv.URL+"/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	body := bufio.NewReader(resp.Body)
	if line, err := body.ReadString('\n'); err != nil || line != "watching\n" {
		t.Fatalf("first line = %q, %v; want %q", line, err, "watching\n")
	}
	return body
}

func clientCert(t *testing.T, ca *pki.CA, cn string) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{
		CommonName: cn, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCancelOnRevoke revokes one of two clients with open long requests
// and checks that exactly its requests end, at once, as broken streams.
func TestCancelOnRevoke(t *testing.T) {
	for _, http2 := range []bool{false, true} {
		name := "HTTP/1.1"
		if http2 {
			name = "HTTP/2"
		}
		t.Run(name, func(t *testing.T) {
			ca, err := pki.NewCA("test client CA", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			node1, node2 := clientCert(t, ca, "system:node:node-1"), clientCert(t, ca, "system:node:node-2")
			client := fake.NewClientset()
			l, _ := startList(t, client)
			var handler *canceller
			s := newStreamServer(t, ca, func(h http.Handler) http.Handler {
				wrapped := l.CancelOnRevoke(h)
				handler = wrapped.(*canceller)
				return wrapped
			}, http2)

			// Two requests of node-1 (on one connection for HTTP/2) and one
			// of node-2.
			bodies := []*bufio.Reader{s.open(t, node1), s.open(t, node1)}
			s.open(t, node2)

			if err := Add(t.Context(), client, "node node-1 revoked", node1.Leaf.SerialNumber); err != nil {
				t.Fatal(err)
			}
			for i := range bodies {
				select {
				case cause := <-s.endedFor("system:node:node-1"):
					if !errors.Is(cause, ErrRevoked) {
						t.Errorf("request %d of node-1 ended with cause %v, want ErrRevoked", i, cause)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("request %d of node-1 still runs 10 s after its certificate was revoked", i)
				}
			}
			for i, body := range bodies {
				rest, err := io.ReadAll(body)
				if err == nil {
					t.Errorf("request %d of node-1: body ended cleanly after %q, want a broken stream", i, rest)
				}
			}

			// node-2 is not affected.
			select {
			case cause := <-s.endedFor("system:node:node-2"):
				t.Fatalf("node-2's request ended (cause %v) when node-1 was revoked", cause)
			case <-time.After(100 * time.Millisecond):
			}
			eventually(t, "node-1's requests to be forgotten", func() bool {
				handler.mu.Lock()
				defer handler.mu.Unlock()
				_, ok := handler.active[node1.Leaf.SerialNumber.Text(16)]
				return !ok && len(handler.active) == 1
			})

			// The list grows; node-2's request still runs.
			if err := Add(t.Context(), client, "unrelated", big.NewInt(42)); err != nil {
				t.Fatal(err)
			}
			eventually(t, "serial 42 to be revoked", func() bool { return l.Revoked(big.NewInt(42)) })
			select {
			case cause := <-s.endedFor("system:node:node-2"):
				t.Fatalf("node-2's request ended (cause %v) when serial 42 was revoked", cause)
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
}

// TestCancelOnRevokeAlreadyRevoked: a request whose certificate is revoked
// when it arrives goes to the next handler untouched, so that the
// authenticator's 401 reaches the client.
func TestCancelOnRevokeAlreadyRevoked(t *testing.T) {
	ca, err := pki.NewCA("test client CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revoked := clientCert(t, ca, "system:node:node-1")
	client := fake.NewClientset()
	l, _ := startList(t, client)
	if err := Add(t.Context(), client, "node node-1 revoked", revoked.Leaf.SerialNumber); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the serial to be revoked", func() bool { return l.Revoked(revoked.Leaf.SerialNumber) })

	h := l.CancelOnRevoke(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.Context().Err(); err != nil {
			t.Errorf("next handler got a done context: %v", err)
		}
		http.Error(w, "revoked", http.StatusUnauthorized)
	}))
	req := httptest.NewRequest(http.MethodGet, "/api", nil)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{revoked.Leaf}}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req) // must not panic
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("status = %d, want 401 from the next handler", rec.Code)
	}
}

// TestCancelOnRevokeRace: when the informer has handed the new list to the
// canceller but the list's own snapshot is older, a new request of the
// revoked certificate is cut off before it starts.
func TestCancelOnRevokeRace(t *testing.T) {
	ca, err := pki.NewCA("test client CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := clientCert(t, ca, "system:node:node-1")
	l, _ := startList(t, fake.NewClientset())
	c := l.CancelOnRevoke(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		if !errors.Is(context.Cause(r.Context()), ErrRevoked) {
			t.Errorf("cause = %v, want ErrRevoked", context.Cause(r.Context()))
		}
	})).(*canceller)
	c.update(map[string]struct{}{cert.Leaf.SerialNumber.Text(16): {}})

	req := httptest.NewRequest(http.MethodGet, "/api", nil)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}}
	defer func() {
		if r := recover(); r != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", r)
		}
		if len(c.active) != 0 {
			t.Errorf("%d serials still tracked after the request", len(c.active))
		}
	}()
	c.ServeHTTP(httptest.NewRecorder(), req)
}

func TestCancelOnRevokePassesOtherRequests(t *testing.T) {
	l, _ := startList(t, fake.NewClientset())
	called := false
	h := l.CancelOnRevoke(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if !called {
		t.Error("a request without TLS did not reach the next handler")
	}
}
