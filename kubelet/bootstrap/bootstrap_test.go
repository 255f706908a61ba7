package bootstrap

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"

	"tether/kubelet/certificate"
	"tether/pki"
)

const (
	tokenID     = "abcdef"
	tokenSecret = "0123456789abcdef"
	token       = tokenID + "." + tokenSecret
)

func newCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name, time.Hour)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

// clusterInfo returns a cluster-info ConfigMap naming server and the CA
// bundle caPEM, signed for the tokens given as id → secret.
func clusterInfo(t *testing.T, server string, caPEM []byte, tokens map[string]string) *corev1.ConfigMap {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters[""] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	data, err := clientcmd.Write(*kc)
	if err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.ConfigMapClusterInfo, Namespace: metav1.NamespacePublic},
		Data:       map[string]string{bootstrapapi.KubeConfigKey: string(data)},
	}
	for id, secret := range tokens {
		sig, err := jws.ComputeDetachedSignature(string(data), id, secret)
		if err != nil {
			t.Fatalf("ComputeDetachedSignature: %v", err)
		}
		cm.Data[bootstrapapi.JWSSignatureKeyPrefix+id] = sig
	}
	return cm
}

func TestVerifyClusterInfo(t *testing.T) {
	ca := newCA(t, "server-ca")
	other := newCA(t, "other-ca")
	pin, otherPin := pki.Pin(ca.Cert), pki.Pin(other.Cert)
	signed := clusterInfo(t, "https://10.0.0.1:6443", ca.CertPEM(), map[string]string{tokenID: tokenSecret})
	bundle := clusterInfo(t, "https://10.0.0.1:6443", append(other.CertPEM(), ca.CertPEM()...), map[string]string{tokenID: tokenSecret})
	otherToken := clusterInfo(t, "https://10.0.0.1:6443", ca.CertPEM(), map[string]string{"zzzzzz": tokenSecret})
	tampered := signed.DeepCopy()
	tampered.Data[bootstrapapi.KubeConfigKey] = strings.Replace(tampered.Data[bootstrapapi.KubeConfigKey], "10.0.0.1", "10.6.6.6", 1)

	tests := []struct {
		name       string
		cm         *corev1.ConfigMap
		secret     string
		pins       []string
		skip       bool
		wantPin    string
		wantPinned bool
		wantCerts  int
		wantErr    error
		wantMsg    []string
	}{
		{name: "good", cm: signed, secret: tokenSecret, pins: []string{pin}, wantPin: pin, wantPinned: true, wantCerts: 1},
		{name: "one of several pins", cm: signed, secret: tokenSecret, pins: []string{otherPin, pin}, wantPin: pin, wantPinned: true, wantCerts: 1},
		{name: "bundle trusts only the pinned CA", cm: bundle, secret: tokenSecret, pins: []string{pin}, wantPin: pin, wantPinned: true, wantCerts: 1},
		{
			name: "wrong pin", cm: signed, secret: tokenSecret, pins: []string{otherPin},
			wantErr: ErrCAPinMismatch, wantMsg: []string{"the CA pin does not match", pin, otherPin},
		},
		{
			name: "missing signature", cm: otherToken, secret: tokenSecret, pins: []string{pin},
			wantErr: ErrTokenInvalid, wantMsg: []string{"the token is not valid for signing cluster-info: unknown or expired token", tokenID},
		},
		{
			name: "wrong secret", cm: signed, secret: "ffffffffffffffff", pins: []string{pin},
			wantErr: ErrTokenInvalid, wantMsg: []string{"does not verify"},
		},
		{
			name: "tampered kubeconfig", cm: tampered, secret: tokenSecret, pins: []string{pin},
			wantErr: ErrTokenInvalid, wantMsg: []string{"does not verify"},
		},
		{name: "insecure skip", cm: bundle, secret: tokenSecret, skip: true, wantPin: otherPin, wantPinned: false, wantCerts: 2},
		{name: "pins win over skip", cm: signed, secret: tokenSecret, pins: []string{otherPin}, skip: true, wantErr: ErrCAPinMismatch},
		{name: "no pin without skip", cm: signed, secret: tokenSecret, wantMsg: []string{"no --ca-cert-hash"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := verifyClusterInfo(tt.cm, tokenID, tt.secret, tt.pins, tt.skip)
			if tt.wantErr != nil || tt.wantMsg != nil {
				if err == nil {
					t.Fatalf("verifyClusterInfo = %+v, want an error", got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("verifyClusterInfo error %q is not %v", err, tt.wantErr)
				}
				for _, m := range tt.wantMsg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("verifyClusterInfo error %q does not contain %q", err, m)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("verifyClusterInfo: %v", err)
			}
			if got.Pin != tt.wantPin || got.Pinned != tt.wantPinned || len(got.Certs) != tt.wantCerts {
				t.Errorf("verifyClusterInfo = pin %s pinned %v with %d certs, want %s %v %d", got.Pin, got.Pinned, len(got.Certs), tt.wantPin, tt.wantPinned, tt.wantCerts)
			}
			if tt.wantPinned && !bytes.Equal(got.PEM, ca.CertPEM()) {
				t.Errorf("verifyClusterInfo trusts %s, want only the pinned CA", got.PEM)
			}
		})
	}
}

func TestNormalizePin(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		in, want string
		ok       bool
	}{
		{good, good, true},
		{strings.ToUpper(good[:7]) + strings.Repeat("AB", 32), "", false},
		{"sha256:" + strings.Repeat("AB", 32), good, true},
		{strings.Repeat("ab", 32), "", false},
		{"sha256:" + strings.Repeat("ab", 31), "", false},
		{"sha256:" + strings.Repeat("zz", 32), "", false},
		{"md5:" + strings.Repeat("ab", 16), "", false},
	}
	for _, tt := range tests {
		got, err := NormalizePin(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("NormalizePin(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// fakeServer serves cluster-info over TLS and records every request path.
type fakeServer struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
}

func newFakeServer(t *testing.T, cm func(url string) *corev1.ConfigMap) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.paths = append(f.paths, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		if r.URL.Path != ClusterInfoPath {
			http.Error(w, "unexpected request", http.StatusTeapot)
			return
		}
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "cluster-info is read without credentials", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(cm(f.URL))
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.paths...)
}

func TestJoinWrongPinSendsNothing(t *testing.T) {
	// The httptest server's CA is not the one cluster-info names: the pin
	// check is about cluster-info's CA, and fails before any other request.
	ca, other := newCA(t, "server-ca"), newCA(t, "other-ca")
	srv := newFakeServer(t, func(url string) *corev1.ConfigMap {
		return clusterInfo(t, url, ca.CertPEM(), map[string]string{tokenID: tokenSecret})
	})
	var progress bytes.Buffer
	_, err := Join(t.Context(), Config{
		Server: srv.URL, Token: token, CACertHashes: []string{pki.Pin(other.Cert)},
		NodeName: "node-1", DataDir: t.TempDir(), Progress: &progress,
	})
	if !errors.Is(err, ErrCAPinMismatch) {
		t.Fatalf("Join with a wrong pin = %v, want ErrCAPinMismatch", err)
	}
	for _, want := range []string{pki.Pin(ca.Cert), pki.Pin(other.Cert), srv.URL} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Join error %q does not name %s", err, want)
		}
	}
	if got, want := srv.requests(), []string{"GET " + ClusterInfoPath}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("requests = %q, want only %q", got, want)
	}
}

func TestJoinInsecureSkipWarns(t *testing.T) {
	ca := newCA(t, "server-ca")
	srv := newFakeServer(t, func(url string) *corev1.ConfigMap {
		return clusterInfo(t, url, ca.CertPEM(), map[string]string{tokenID: tokenSecret})
	})
	var progress bytes.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The httptest server is not signed by ca, so the request after the
	// trusted discovery fails TLS verification: that failure shows the CA
	// from cluster-info is used from then on.
	_, err := Join(ctx, Config{
		Server: srv.URL, Token: token, InsecureSkipCAPin: true,
		NodeName: "node-1", DataDir: t.TempDir(), Progress: &progress,
	})
	if !strings.Contains(progress.String(), "WARNING: --insecure-skip-ca-pin") || !strings.Contains(progress.String(), pki.Pin(ca.Cert)) {
		t.Errorf("progress = %q, want a WARNING naming the trusted CA's pin", progress.String())
	}
	if err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("Join against a server not signed by cluster-info's CA = %v, want a verification error", err)
	}
	if got := srv.requests(); len(got) != 1 {
		t.Errorf("requests = %q, want only the cluster-info read (the CSR must not reach an unverified server)", got)
	}
}

func TestJoinMissingSignatureWaitsThenFails(t *testing.T) {
	ca := newCA(t, "server-ca")
	srv := newFakeServer(t, func(url string) *corev1.ConfigMap {
		return clusterInfo(t, url, ca.CertPEM(), nil)
	})
	var progress bytes.Buffer
	start := time.Now()
	_, err := Join(t.Context(), Config{
		Server: srv.URL, Token: token, CACertHashes: []string{pki.Pin(ca.Cert)},
		NodeName: "node-1", DataDir: t.TempDir(), Progress: &progress, SignatureWait: 600 * time.Millisecond,
	})
	if !errors.Is(err, ErrTokenInvalid) || !strings.Contains(err.Error(), "unknown or expired token") {
		t.Fatalf("Join with an unsigned cluster-info = %v, want the unknown or expired token error", err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("Join gave up after %s, want it to wait SignatureWait", d)
	}
	if n := len(srv.requests()); n < 2 {
		t.Errorf("cluster-info read %d times, want retries while waiting", n)
	}
	if !strings.Contains(progress.String(), "waiting for") {
		t.Errorf("progress = %q, want a line saying it waits for the signature", progress.String())
	}
}

// writeTestCredentials stores a client certificate for node that expires
// at now+validity (validity may be negative) in dir, as a finished join
// would.
func writeTestCredentials(t *testing.T, dir, server, node string, validity time.Duration) *x509.Certificate {
	t.Helper()
	serverCA, clientCA := newCA(t, "server-ca"), newCA(t, "client-ca")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	notAfter := time.Now().Add(validity)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: certificate.UserPrefix + node, Organization: []string{certificate.NodesGroup}},
		NotBefore:    notAfter.Add(-2 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, clientCA.Cert, key.Public(), clientCA.Key)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeCredentials(dir, server, serverCA.CertPEM(), pki.EncodeCert(cert), keyPEM, node, nil); err != nil {
		t.Fatalf("writeCredentials: %v", err)
	}
	return cert
}

func TestJoinReusesCredentials(t *testing.T) {
	dir := t.TempDir()
	cert := writeTestCredentials(t, dir, "https://10.0.0.1:6443", "node-1", time.Hour)
	for _, mode := range []os.FileMode{fileMode(t, filepath.Join(dir, KubeconfigFile)), fileMode(t, certificate.CurrentPath(filepath.Join(dir, PKIDir), certificate.ClientPairPrefix))} {
		if mode != 0o600 {
			t.Errorf("credential file mode = %o, want 600", mode)
		}
	}
	var progress bytes.Buffer
	res, err := Join(t.Context(), Config{NodeName: "node-1", DataDir: dir, Progress: &progress})
	if err != nil {
		t.Fatalf("Join with stored credentials: %v", err)
	}
	if res.Joined || res.Server != "https://10.0.0.1:6443" || res.Certificate.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		t.Errorf("Join = joined %v, server %s, serial %v; want the stored credentials", res.Joined, res.Server, res.Certificate.SerialNumber)
	}
	if !strings.Contains(progress.String(), "using existing credentials in "+dir) {
		t.Errorf("progress = %q, want it to say it uses the existing credentials", progress.String())
	}

	t.Run("other node name", func(t *testing.T) {
		_, err := Join(t.Context(), Config{NodeName: "node-2", DataDir: dir})
		if err == nil || !strings.Contains(err.Error(), `for node "node-1"`) {
			t.Errorf("Join as another node = %v, want an error naming the stored node", err)
		}
	})
	t.Run("other server", func(t *testing.T) {
		_, err := Join(t.Context(), Config{Server: "https://10.9.9.9:6443", NodeName: "node-1", DataDir: dir})
		if err == nil || !strings.Contains(err.Error(), "https://10.0.0.1:6443") {
			t.Errorf("Join with another server = %v, want an error naming the stored server", err)
		}
	})
}

func TestJoinExpiredCertificate(t *testing.T) {
	dir := t.TempDir()
	cert := writeTestCredentials(t, dir, "https://10.0.0.1:6443", "node-1", -time.Minute)
	_, err := Join(t.Context(), Config{NodeName: "node-1", DataDir: dir})
	if !errors.Is(err, ErrCertificateExpired) {
		t.Fatalf("Join with an expired certificate = %v, want ErrCertificateExpired", err)
	}
	for _, want := range []string{"expired at " + cert.NotAfter.UTC().Format(time.RFC3339), "while the agent was down", "tether token create", "--token", dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Join error %q does not contain %q", err, want)
		}
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return fi.Mode().Perm()
}
