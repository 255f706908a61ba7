package certificate

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"tether/pki"
)

func TestServingTemplate(t *testing.T) {
	tests := []struct {
		name    string
		addrs   []corev1.NodeAddress
		wantIPs []string
		wantDNS []string
		wantNil bool
	}{
		{name: "no addresses", wantNil: true},
		{
			name: "internal IP and host name",
			addrs: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "10.0.0.5"},
				{Type: corev1.NodeHostName, Address: "node-1"},
			},
			wantIPs: []string{"10.0.0.5"}, wantDNS: []string{"node-1"},
		},
		{
			name: "external IP, IPv6 and duplicates",
			addrs: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "10.0.0.5"},
				{Type: corev1.NodeExternalIP, Address: "203.0.113.7"},
				{Type: corev1.NodeInternalIP, Address: "fd00::5"},
				{Type: corev1.NodeInternalIP, Address: "10.0.0.5"},
				{Type: corev1.NodeHostName, Address: "node-1"},
				{Type: corev1.NodeInternalDNS, Address: "node-1"},
			},
			wantIPs: []string{"10.0.0.5", "203.0.113.7", "fd00::5"}, wantDNS: []string{"node-1"},
		},
		{
			name:    "unparseable IP is skipped",
			addrs:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0"}},
			wantNil: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ServingTemplate("node-1", tt.addrs)
			if tt.wantNil {
				if got != nil {
					t.Fatalf("ServingTemplate = %+v, want nil", got)
				}
				return
			}
			var ips []string
			for _, ip := range got.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) || !slices.Equal(got.DNSNames, tt.wantDNS) {
				t.Errorf("ServingTemplate SANs = IPs %v DNS %v, want %v %v", ips, got.DNSNames, tt.wantIPs, tt.wantDNS)
			}
			if got.Subject.CommonName != "system:node:node-1" || !slices.Equal(got.Subject.Organization, []string{"system:nodes"}) {
				t.Errorf("ServingTemplate subject = %v, want CN=system:node:node-1, O=system:nodes", got.Subject)
			}
		})
	}
}

func TestClientTemplate(t *testing.T) {
	got := ClientTemplate("node-1")
	if got.Subject.CommonName != "system:node:node-1" || !slices.Equal(got.Subject.Organization, []string{"system:nodes"}) ||
		len(got.DNSNames)+len(got.IPAddresses)+len(got.EmailAddresses)+len(got.URIs) != 0 {
		t.Errorf("ClientTemplate(node-1) = %+v, want CN=system:node:node-1, O=system:nodes and no SANs", got)
	}
}

// source is a settable Source.
type source struct {
	cert atomic.Pointer[tls.Certificate]
}

func (s *source) Current() *tls.Certificate { return s.cert.Load() }

func issueClient(t *testing.T, ca *pki.CA, name string) *tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{CommonName: name, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour})
	if err != nil {
		t.Fatalf("issue %s: %v", name, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
	return &c
}

// mtlsServer answers each request with the CN of the client certificate it
// presented; /slow waits for release first, /denied answers 401.
func mtlsServer(t *testing.T, serverCA, clientCA *pki.CA, release <-chan struct{}) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			<-release
		case "/denied":
			http.Error(w, "revoked", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	certPEM, keyPEM, err := serverCA.NewKeyAndCert(pki.CertRequest{CommonName: "server", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.Cert)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, c *http.Client, url string) (string, int) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return "", 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func TestTransportSwitchesCertificateWithoutFailing(t *testing.T) {
	serverCA, _ := pki.NewCA("server-ca", time.Hour)
	clientCA, _ := pki.NewCA("client-ca", time.Hour)
	release := make(chan struct{})
	srv := mtlsServer(t, serverCA, clientCA, release)
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.Cert)

	src := &source{}
	src.cert.Store(issueClient(t, clientCA, "old"))
	var unauthorized atomic.Int32
	tr := NewTransport(roots, src, func() { unauthorized.Add(1) })
	defer tr.Close()
	client := &http.Client{Transport: tr}

	if got, _ := get(t, client, srv.URL+"/"); got != "old" {
		t.Fatalf("first request presented %q, want old", got)
	}
	// A request in flight when the certificate rotates finishes on its
	// connection.
	var wg sync.WaitGroup
	var slow string
	wg.Add(1)
	go func() {
		defer wg.Done()
		slow, _ = get(t, client, srv.URL+"/slow")
	}()
	time.Sleep(100 * time.Millisecond) // let /slow reach the handler

	src.cert.Store(issueClient(t, clientCA, "new"))
	for i := range 3 {
		if got, _ := get(t, client, srv.URL+"/"); got != "new" {
			t.Errorf("request %d after rotation presented %q, want new", i, got)
		}
	}
	close(release)
	wg.Wait()
	if slow != "old" {
		t.Errorf("request in flight during rotation = %q, want it to finish with old", slow)
	}

	if _, code := get(t, client, srv.URL+"/denied"); code != http.StatusUnauthorized || unauthorized.Load() != 1 {
		t.Errorf("401 response: code %d, onUnauthorized called %d times; want 401 and 1", code, unauthorized.Load())
	}

	tr.Close()
	if _, err := client.Get(srv.URL + "/"); err == nil {
		t.Errorf("request after Close succeeded, want ErrTransportClosed")
	}
}

func TestTransportRetiresOldConnectionsAtExpiry(t *testing.T) {
	serverCA, _ := pki.NewCA("server-ca", time.Hour)
	clientCA, _ := pki.NewCA("client-ca", time.Hour)
	srv := mtlsServer(t, serverCA, clientCA, nil)
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.Cert)
	src := &source{}
	old := issueClient(t, clientCA, "old")
	old.Leaf.NotAfter = time.Now().Add(-time.Second) // only the transport reads it
	src.cert.Store(old)
	tr := NewTransport(roots, src, nil)
	defer tr.Close()
	client := &http.Client{Transport: tr}
	get(t, client, srv.URL+"/")
	g := tr.cur
	src.cert.Store(issueClient(t, clientCA, "new"))
	get(t, client, srv.URL+"/")
	deadline := time.Now().Add(5 * time.Second)
	for {
		tr.mu.Lock()
		n := len(tr.old)
		tr.mu.Unlock()
		g.mu.Lock()
		done := g.done
		g.mu.Unlock()
		if n == 0 && done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old generation not retired after its certificate expired (old generations %d, closed %v)", n, done)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
