package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"tether/pki"
)

func TestServe(t *testing.T) {
	ca, err := pki.NewCA("server-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(cn string) *tls.Certificate {
		certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{CommonName: cn, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	var cur atomic.Pointer[tls.Certificate]
	s, err := New(Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c := cur.Load(); c != nil {
			return c, nil
		}
		return nil, errors.New("no certificate yet")
	}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	url := "https://" + ln.Addr().String()

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := func(cfg *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	}
	verified := client(&tls.Config{RootCAs: pool})

	if _, err := verified.Get(url + "/healthz"); err == nil {
		t.Errorf("GET /healthz without a serving certificate succeeded, want a failed handshake")
	}
	cur.Store(issue("first"))
	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/healthz", http.StatusOK, "ok"},
		{"/pods", http.StatusNotFound, ""},
		{"/", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		resp, err := verified.Get(url + tt.path)
		if err != nil {
			t.Errorf("GET %s: %v", tt.path, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode || (tt.wantBody != "" && string(body) != tt.wantBody) {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, resp.StatusCode, body, tt.wantCode, tt.wantBody)
		}
	}

	// A rotated certificate is used for the next handshake.
	cur.Store(issue("second"))
	resp, err := client(&tls.Config{RootCAs: pool}).Get(url + "/healthz")
	if err != nil {
		t.Fatalf("GET after rotation: %v", err)
	}
	resp.Body.Close()
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Errorf("certificate after rotation = %q, want second", cn)
	}

	if _, err := client(&tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}).Get(url + "/healthz"); err == nil {
		t.Errorf("TLS 1.1 handshake succeeded, want TLS >= 1.2 only")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func TestNewNeedsCertificate(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without GetCertificate succeeded, want an error")
	}
}
