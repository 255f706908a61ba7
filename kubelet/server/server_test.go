package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"tether/pki"
)

func TestServeRotatesCertificate(t *testing.T) {
	ca, err := pki.NewCA("server-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
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
	if _, err := client(&tls.Config{RootCAs: pool}).Get(url + "/healthz"); err == nil {
		t.Errorf("GET /healthz without a serving certificate succeeded, want a failed handshake")
	}
	for _, cn := range []string{"first", "second"} {
		cur.Store(issueTLS(t, ca, pki.CertRequest{CommonName: cn, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
		resp, err := client(&tls.Config{RootCAs: pool}).Get(url + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz with certificate %s: %v", cn, err)
		}
		resp.Body.Close()
		// No authenticator is configured: everything is 401.
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous GET /healthz = %d, want 401", resp.StatusCode)
		}
		if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != cn {
			t.Errorf("serving certificate = %q, want %q", got, cn)
		}
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

func TestAuthnAuthz(t *testing.T) {
	e := startEnv(t)
	otherCA := newCA(t, "other-ca")
	tests := []struct {
		name     string
		cert     *tls.Certificate // client certificate, or nil
		token    string           // bearer token, or ""
		method   string
		path     string
		wantCode int
		wantBody string // substring
	}{
		{name: "anonymous healthz", path: "/healthz", wantCode: 401, wantBody: "Unauthorized"},
		{name: "anonymous pods", path: "/pods", wantCode: 401, wantBody: "Unauthorized"},
		{name: "anonymous unknown path", path: "/nope", wantCode: 401},
		{name: "unknown token", token: "nope", path: "/healthz", wantCode: 401},
		{name: "certificate healthz", cert: e.clientCert(t, "admin"), path: "/healthz", wantCode: 200, wantBody: "ok"},
		{name: "certificate healthz/ping", cert: e.clientCert(t, "admin"), path: "/healthz/ping", wantCode: 200, wantBody: "ok"},
		{name: "token healthz", token: "admin-token", path: "/healthz", wantCode: 200, wantBody: "ok"},
		{name: "healthz via the healthz subresource", token: "viewer-token", path: "/healthz", wantCode: 200},
		{name: "healthz via the proxy fallback", token: "getter-token", path: "/healthz", wantCode: 200},
		{name: "metrics denied", token: "viewer-token", path: "/metrics", wantCode: 403,
			wantBody: "Forbidden (user=viewer, verb=get, resource=nodes, subresource(s)=[metrics])"},
		{name: "pods denied lists both subresources", cert: e.clientCert(t, "nobody"), path: "/pods", wantCode: 403,
			wantBody: "Forbidden (user=nobody, verb=get, resource=nodes, subresource(s)=[pods proxy])"},
		{name: "exec as POST needs create", token: "getter-token", method: "POST", path: "/exec/default/web/app?command=echo&output=1", wantCode: 403,
			wantBody: "Forbidden (user=getter, verb=create, resource=nodes, subresource(s)=[proxy])"},
		{name: "SAR failure", token: "sar-error-token", path: "/healthz", wantCode: 500, wantBody: "Authorization error"},
		{name: "metrics", token: "admin-token", path: "/metrics", wantCode: 200, wantBody: "tether_test_total 0"},
		{name: "unknown path", token: "admin-token", path: "/nope", wantCode: 404},
		{name: "stats not served", token: "admin-token", path: "/stats/summary", wantCode: 404},
		{name: "wrong method", token: "admin-token", method: "DELETE", path: "/healthz", wantCode: 405},
		{name: "unmapped method", token: "admin-token", method: "OPTIONS", path: "/healthz", wantCode: 405},
		{name: "run is POST only", token: "admin-token", path: "/run/default/web/app?cmd=echo", wantCode: 405},
		{name: "logs of unknown container", token: "admin-token", path: "/containerLogs/default/web/nope", wantCode: 404},
		{name: "exec in unknown pod", token: "admin-token", method: "POST", path: "/exec/default/nope/app?command=echo&output=1", wantCode: 404},
		{name: "exec with wrong uid", token: "admin-token", method: "POST", path: "/exec/default/web/other-uid/app?command=echo&output=1", wantCode: 404},
		{name: "port-forward to unknown pod", token: "admin-token", method: "POST", path: "/portForward/default/nope", wantCode: 404},
		{name: "exec without streams", token: "admin-token", method: "POST", path: "/exec/default/web/app?command=echo", wantCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequest(method, e.url+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := e.httpClient(tt.cert).Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, tt.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("%s %s = %d %q, want %d containing %q", method, tt.path, resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
		})
	}

	t.Run("certificate from another CA", func(t *testing.T) {
		cert := issueTLS(t, otherCA, pki.CertRequest{CommonName: "admin", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		resp, err := e.httpClient(cert).Get(e.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET /healthz with a foreign certificate = %d, want a failed handshake or 401", resp.StatusCode)
			}
		}
	})

	t.Run("SAR attributes", func(t *testing.T) {
		e.mu.Lock()
		e.sars = nil
		e.mu.Unlock()
		req, _ := http.NewRequest(http.MethodGet, e.url+"/metrics", nil)
		resp, err := e.httpClient(e.clientCert(t, "attrs-user")).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		sars := e.lastSARs()
		if len(sars) != 1 {
			t.Fatalf("SubjectAccessReviews = %d, want 1", len(sars))
		}
		got := sars[0]
		ra := got.ResourceAttributes
		if got.User != "attrs-user" || strings.Join(got.Groups, ",") != "testers,system:authenticated" ||
			ra == nil || ra.Verb != "get" || ra.Resource != "nodes" || ra.Subresource != "metrics" || ra.Name != testNode || ra.Version != "v1" {
			t.Errorf("SubjectAccessReview spec = %+v (resource %+v), want attrs-user [testers system:authenticated] get nodes/metrics %s", got, ra, testNode)
		}
	})
}

func TestTokenReviewsAreCached(t *testing.T) {
	e := startEnv(t)
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, e.url+"/healthz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := e.httpClient(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 3 {
		if code := get("admin-token"); code != 200 {
			t.Fatalf("GET /healthz with admin-token = %d, want 200", code)
		}
		if code := get("bad-token"); code != 401 {
			t.Fatalf("GET /healthz with bad-token = %d, want 401", code)
		}
	}
	if n := e.tokenReviews.Load(); n != 2 {
		t.Errorf("TokenReviews = %d after 3 requests with each of 2 tokens, want 2 (cached)", n)
	}
	sars := len(e.lastSARs())
	get("admin-token")
	if n := len(e.lastSARs()); n != sars {
		t.Errorf("a repeated allowed request made %d more SubjectAccessReviews, want 0 (cached)", n-sars)
	}
}

func TestPods(t *testing.T) {
	e := startEnv(t)
	req, _ := http.NewRequest(http.MethodGet, e.url+"/pods", nil)
	req.Header.Set("Authorization", "Bearer viewer-token")
	resp, err := e.httpClient(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list corev1.PodList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatalf("decode /pods: %v", err)
	}
	if list.Kind != "PodList" || list.APIVersion != "v1" || len(list.Items) != 1 || list.Items[0].Name != "web" || list.Items[0].Kind != "Pod" {
		t.Errorf("/pods = %+v, want a v1 PodList with pod web", list)
	}
}

func TestNoContainers(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Containers = nil })
	for _, p := range []string{"/pods", "/containerLogs/default/web/app"} {
		req, _ := http.NewRequest(http.MethodGet, e.url+p, nil)
		req.Header.Set("Authorization", "Bearer admin-token")
		resp, err := e.httpClient(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET %s without Containers = %d, want 503", p, resp.StatusCode)
		}
	}
}

func TestNoClientDeniesEverything(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Client = nil })
	resp, err := e.httpClient(e.clientCert(t, "admin")).Get(e.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET /healthz with a certificate but no API client = %d, want 403", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/healthz", nil)
	req.Header.Set("Authorization", "Bearer admin-token")
	resp, err = e.httpClient(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /healthz with a token but no API client = %d, want 401", resp.StatusCode)
	}
}
