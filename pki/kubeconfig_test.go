package pki_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"tether/pki"
)

func TestWriteKubeconfig(t *testing.T) {
	ca := newCA(t, "test-ca")
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{
		CommonName: "alice",
		Usages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Validity:   time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "alice.kubeconfig")
	const server = "https://192.0.2.10:6443"
	if err := pki.WriteKubeconfig(path, server, ca.CertPEM(), certPEM, keyPEM, "alice"); err != nil {
		t.Fatalf("WriteKubeconfig = %v", err)
	}
	assertMode(t, path, 0o600)
	assertMode(t, filepath.Dir(path), 0o700|os.ModeDir)

	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatalf("clientcmd.LoadFromFile = %v", err)
	}
	if cfg.CurrentContext != "tether" {
		t.Errorf("current context = %q, want tether", cfg.CurrentContext)
	}
	ctx := cfg.Contexts["tether"]
	if ctx == nil || ctx.Cluster != "tether" || ctx.AuthInfo != "alice" {
		t.Fatalf("context tether = %+v, want cluster tether and user alice", ctx)
	}
	cluster := cfg.Clusters["tether"]
	if cluster == nil {
		t.Fatal("no cluster tether")
	}
	if cluster.Server != server {
		t.Errorf("server = %q, want %q", cluster.Server, server)
	}
	if !bytes.Equal(cluster.CertificateAuthorityData, ca.CertPEM()) {
		t.Error("certificate-authority-data is not the CA certificate")
	}
	user := cfg.AuthInfos["alice"]
	if user == nil || !bytes.Equal(user.ClientCertificateData, certPEM) || !bytes.Equal(user.ClientKeyData, keyPEM) {
		t.Error("user alice does not hold the client certificate and key")
	}

	// client-go turns it into a usable rest.Config.
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("BuildConfigFromFlags = %v", err)
	}
	if rc.Host != server || !bytes.Equal(rc.CAData, ca.CertPEM()) {
		t.Errorf("rest.Config host %q, CA %q; want %q and the CA", rc.Host, rc.CAData, server)
	}
}

func TestWriteKubeconfigErrors(t *testing.T) {
	data := []byte("x")
	for _, tc := range []struct {
		name       string
		server     string
		ca, c, k   []byte
		user, want string
	}{
		{"no server", "", data, data, data, "u", "server URL"},
		{"no user", "https://a", data, data, data, "", "user"},
		{"no CA", "https://a", nil, data, data, "u", "CA"},
		{"no key", "https://a", data, data, nil, "u", "key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kubeconfig")
			err := pki.WriteKubeconfig(path, tc.server, tc.ca, tc.c, tc.k, tc.user)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("WriteKubeconfig = %v, want an error naming %s and %q", err, path, tc.want)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("kubeconfig written despite the error (stat: %v)", err)
			}
		})
	}
}

// TestServerTLS serves HTTPS with the server PKI on loopback and connects
// with the admin credentials, through ClientConfig and through a kubeconfig.
func TestServerTLS(t *testing.T) {
	opts := testServerOptions(t)
	p := loadServer(t, opts)
	serving, err := pki.LoadKeyPair(p.ServingCertFile, p.ServingKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.TLS.PeerCertificates[0]
		fmt.Fprintf(w, "%s %s", c.Subject.CommonName, strings.Join(c.Subject.Organization, ","))
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{serving},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool(p.ClientCA),
		MinVersion:   tls.VersionTLS12,
	}
	srv.StartTLS()
	defer srv.Close()

	adminCert, err := os.ReadFile(p.AdminCertFile)
	if err != nil {
		t.Fatal(err)
	}
	adminKey, err := os.ReadFile(p.AdminKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(opts.Dir, "admin.kubeconfig")
	if err := pki.WriteKubeconfig(kubeconfig, srv.URL, p.ServerCA.CertPEM(), adminCert, adminKey, "admin"); err != nil {
		t.Fatal(err)
	}
	fromFile, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		cfg     *rest.Config
		wantErr bool
	}{
		{"ClientConfig", pki.ClientConfig(srv.URL, p.ServerCA.CertPEM(), adminCert, adminKey), false},
		{"kubeconfig", fromFile, false},
		{"trusting the client CA", pki.ClientConfig(srv.URL, p.ClientCA.CertPEM(), adminCert, adminKey), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := rest.HTTPClientFor(tc.cfg)
			if err != nil {
				t.Fatalf("HTTPClientFor = %v", err)
			}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if tc.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatal("GET succeeded, want a certificate error")
				}
				return
			}
			if err != nil {
				t.Fatalf("GET = %v", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(body), "admin system:masters"; got != want {
				t.Errorf("server saw client %q, want %q", got, want)
			}
		})
	}
}
