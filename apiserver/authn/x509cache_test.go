package authn

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"

	"tether/pki"
)

func TestCachedX509(t *testing.T) {
	ca, err := pki.NewCA("test-client-ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.NewKeyAndCert(pki.CertRequest{CommonName: "alice", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	verify := func() (x509.VerifyOptions, bool) { return x509.VerifyOptions{Roots: roots}, true }
	calls := 0
	inner := authenticator.RequestFunc(func(*http.Request) (*authenticator.Response, bool, error) {
		calls++
		return &authenticator.Response{User: &user.DefaultInfo{Name: "alice"}}, true, nil
	})
	c := newCachedX509(verify, inner)
	now := time.Now()
	c.now = func() time.Time { return now }
	req := &http.Request{TLS: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}}

	for i := range 3 {
		resp, ok, err := c.AuthenticateRequest(req)
		if !ok || err != nil || resp.User.GetName() != "alice" {
			t.Fatalf("request %d: AuthenticateRequest = %v, %v, %v; want alice", i, resp, ok, err)
		}
	}
	if calls != 1 {
		t.Errorf("inner authenticator called %d times for 3 requests with one certificate, want 1", calls)
	}

	// A new CA pool (the client CA file changed) verifies again.
	roots = x509.NewCertPool()
	roots.AddCert(ca.Cert)
	c.AuthenticateRequest(req)
	if calls != 2 {
		t.Errorf("inner calls after the CA pool changed = %d, want 2", calls)
	}

	// Past the certificate's NotAfter the cached answer is not used.
	now = leaf.NotAfter.Add(time.Second)
	c.AuthenticateRequest(req)
	if calls != 3 {
		t.Errorf("inner calls after the certificate expired = %d, want 3", calls)
	}

	// Requests without a certificate are not this authenticator's.
	if _, ok, _ := c.AuthenticateRequest(&http.Request{}); ok {
		t.Errorf("request without TLS authenticated")
	}
}
