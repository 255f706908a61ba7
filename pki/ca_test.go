package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"tether/pki"
)

// newCA returns a CA valid for a day, failing t on error.
func newCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name, 24*time.Hour)
	if err != nil {
		t.Fatalf("NewCA(%q) = %v", name, err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	before := time.Now()
	ca, err := pki.NewCA("test-ca", 48*time.Hour)
	if err != nil {
		t.Fatalf("NewCA = %v", err)
	}
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v, want true, true", c.IsCA, c.BasicConstraintsValid)
	}
	if c.Subject.CommonName != "test-ca" {
		t.Errorf("CommonName = %q, want %q", c.Subject.CommonName, "test-ca")
	}
	wantUsage := x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	if c.KeyUsage != wantUsage {
		t.Errorf("KeyUsage = %v, want %v", c.KeyUsage, wantUsage)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key = %T, want ECDSA P-256", c.PublicKey)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA certificate is not self-signed: %v", err)
	}
	if got := c.NotAfter.Sub(before); got < 47*time.Hour || got > 49*time.Hour {
		t.Errorf("NotAfter - now = %v, want about 48h", got)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v is not a positive 128-bit number", c.SerialNumber)
	}
	if len(c.SubjectKeyId) == 0 {
		t.Error("SubjectKeyId is empty")
	}
	block := ca.CertPEM()
	if !bytes.HasPrefix(block, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Errorf("CertPEM() = %q, want a CERTIFICATE block", block)
	}

	for _, tc := range []struct {
		name     string
		cn       string
		validity time.Duration
	}{
		{"empty name", "", time.Hour},
		{"zero validity", "x", 0},
		{"negative validity", "x", -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pki.NewCA(tc.cn, tc.validity); err == nil {
				t.Errorf("NewCA(%q, %v) = nil error, want an error", tc.cn, tc.validity)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	ca := newCA(t, "test-ca")
	other := newCA(t, "other-ca")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		req       pki.CertRequest
		verifyDNS string
		usage     x509.ExtKeyUsage
		// wantAfter is how long after now the certificate should expire.
		wantAfter time.Duration
	}{
		{
			name: "server",
			req: pki.CertRequest{
				CommonName:  "kube-apiserver",
				DNSNames:    []string{"kubernetes", "localhost"},
				IPAddresses: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("127.0.0.1")},
				Usages:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				Validity:    time.Hour,
			},
			verifyDNS: "kubernetes",
			usage:     x509.ExtKeyUsageServerAuth,
			wantAfter: time.Hour,
		},
		{
			name: "client",
			req: pki.CertRequest{
				CommonName:   "alice",
				Organization: []string{"team-a", "team-b"},
				Usages:       []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				Validity:     2 * time.Hour,
			},
			usage:     x509.ExtKeyUsageClientAuth,
			wantAfter: 2 * time.Hour,
		},
		{
			name: "capped at CA expiry",
			req: pki.CertRequest{
				CommonName: "long",
				Usages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				Validity:   365 * 24 * time.Hour,
			},
			usage:     x509.ExtKeyUsageClientAuth,
			wantAfter: 24 * time.Hour,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			cert, err := ca.Issue(tc.req, key.Public())
			if err != nil {
				t.Fatalf("Issue = %v", err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			opts := x509.VerifyOptions{Roots: roots, DNSName: tc.verifyDNS, KeyUsages: []x509.ExtKeyUsage{tc.usage}}
			if _, err := cert.Verify(opts); err != nil {
				t.Errorf("Verify with the issuing CA = %v, want nil", err)
			}
			otherRoots := x509.NewCertPool()
			otherRoots.AddCert(other.Cert)
			opts.Roots = otherRoots
			if _, err := cert.Verify(opts); err == nil {
				t.Error("Verify with another CA = nil, want an error")
			}
			if cert.Subject.CommonName != tc.req.CommonName {
				t.Errorf("CommonName = %q, want %q", cert.Subject.CommonName, tc.req.CommonName)
			}
			if strings.Join(cert.Subject.Organization, ",") != strings.Join(tc.req.Organization, ",") {
				t.Errorf("Organization = %q, want %q", cert.Subject.Organization, tc.req.Organization)
			}
			if cert.IsCA {
				t.Error("IsCA = true, want false")
			}
			if !bytes.Equal(cert.AuthorityKeyId, ca.Cert.SubjectKeyId) || len(cert.AuthorityKeyId) == 0 {
				t.Errorf("AuthorityKeyId = %x, want the CA's SubjectKeyId %x", cert.AuthorityKeyId, ca.Cert.SubjectKeyId)
			}
			if d := now.Add(-time.Minute).Sub(cert.NotBefore); d < -2*time.Second || d > 2*time.Second {
				t.Errorf("NotBefore = %v, want about now-1m (%v)", cert.NotBefore, now.Add(-time.Minute))
			}
			if cert.NotAfter.After(ca.Cert.NotAfter) {
				t.Errorf("NotAfter = %v, after the CA's %v", cert.NotAfter, ca.Cert.NotAfter)
			}
			if d := cert.NotAfter.Sub(now.Add(tc.wantAfter)); d < -2*time.Second || d > 2*time.Second {
				t.Errorf("NotAfter = %v, want about %v", cert.NotAfter, now.Add(tc.wantAfter))
			}
			if cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v is not a positive 128-bit number", cert.SerialNumber)
			}
		})
	}

	t.Run("serials differ", func(t *testing.T) {
		req := tests[1].req
		a, err := ca.Issue(req, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		b, err := ca.Issue(req, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		if a.SerialNumber.Cmp(b.SerialNumber) == 0 {
			t.Errorf("two certificates share serial %v", a.SerialNumber)
		}
	})
}

func TestIssueErrors(t *testing.T) {
	ca := newCA(t, "test-ca")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	for _, tc := range []struct {
		name string
		req  pki.CertRequest
	}{
		{"no name", pki.CertRequest{Usages: client, Validity: time.Hour}},
		{"no validity", pki.CertRequest{CommonName: "a", Usages: client}},
		{"negative validity", pki.CertRequest{CommonName: "a", Usages: client, Validity: -time.Hour}},
		{"no usages", pki.CertRequest{CommonName: "a", Validity: time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if cert, err := ca.Issue(tc.req, key.Public()); err == nil {
				t.Errorf("Issue(%+v) = %v, nil; want an error", tc.req, cert.Subject)
			}
		})
	}
}

func TestNewKeyAndCert(t *testing.T) {
	ca := newCA(t, "test-ca")
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{
		CommonName: "bob",
		Usages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Validity:   time.Hour,
	})
	if err != nil {
		t.Fatalf("NewKeyAndCert = %v", err)
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatalf("ParseCertPEM = %v", err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatalf("ParseKeyPEM = %v", err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		t.Fatalf("key is %T, want ECDSA P-256", key)
	}
	if !ec.PublicKey.Equal(cert.PublicKey) {
		t.Error("key does not match certificate")
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("certificate not signed by CA: %v", err)
	}
}

// writeCA writes ca's certificate and key to dir and returns their paths.
func writeCA(t *testing.T, dir string, ca *pki.CA) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(dir, "ca.crt")
	keyFile = filepath.Join(dir, "ca.key")
	keyPEM, err := pki.EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(certFile, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(keyFile, keyPEM); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestLoadCA(t *testing.T) {
	ca := newCA(t, "test-ca")
	other := newCA(t, "other-ca")
	otherKey, err := pki.EncodeKey(other.Key)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, _, err := ca.NewKeyAndCert(pki.CertRequest{
		CommonName: "leaf",
		Usages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Validity:   time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ok", func(t *testing.T) {
		certFile, keyFile := writeCA(t, t.TempDir(), ca)
		got, err := pki.LoadCA(certFile, keyFile)
		if err != nil {
			t.Fatalf("LoadCA = %v", err)
		}
		if !got.Cert.Equal(ca.Cert) {
			t.Error("loaded certificate differs from the written one")
		}
		// The loaded CA can issue.
		if _, _, err := got.NewKeyAndCert(pki.CertRequest{CommonName: "x", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour}); err != nil {
			t.Errorf("issue with loaded CA = %v", err)
		}
	})

	tests := []struct {
		name string
		// damage changes the files; it gets their paths.
		damage func(t *testing.T, certFile, keyFile string)
		// file is "cert" or "key": the file the error must name.
		file string
		want string
	}{
		{"missing cert", func(t *testing.T, c, k string) { remove(t, c) }, "cert", "missing"},
		{"missing key", func(t *testing.T, c, k string) { remove(t, k) }, "key", "missing"},
		{"cert not PEM", func(t *testing.T, c, k string) { write(t, c, []byte("garbage")) }, "cert", "not a PEM certificate"},
		{"key not PEM", func(t *testing.T, c, k string) { write(t, k, []byte("garbage")) }, "key", "not a PEM private key"},
		{"key in cert file", func(t *testing.T, c, k string) { copyFile(t, k, c) }, "cert", "not a certificate"},
		{"cert in key file", func(t *testing.T, c, k string) { copyFile(t, c, k) }, "key", "not a private key"},
		{"key does not match", func(t *testing.T, c, k string) { write(t, k, otherKey) }, "key", "does not match"},
		{"not a CA", func(t *testing.T, c, k string) { write(t, c, leafPEM) }, "cert", "not a CA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			certFile, keyFile := writeCA(t, t.TempDir(), ca)
			tc.damage(t, certFile, keyFile)
			_, err := pki.LoadCA(certFile, keyFile)
			if err == nil {
				t.Fatal("LoadCA = nil error, want an error")
			}
			file := certFile
			if tc.file == "key" {
				file = keyFile
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "pki: "+file+": ") || !strings.Contains(msg, tc.want) {
				t.Errorf("LoadCA error = %q, want it to start with %q and contain %q", msg, "pki: "+file+": ", tc.want)
			}
		})
	}
}

func TestPin(t *testing.T) {
	ca := newCA(t, "test-ca")
	got := pki.Pin(ca.Cert)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(got) {
		t.Errorf("Pin = %q, want sha256: and 64 lowercase hex digits", got)
	}
	// Compute it independently from the public key.
	spki, err := x509.MarshalPKIXPublicKey(ca.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)
	if want := "sha256:" + hex.EncodeToString(sum[:]); got != want {
		t.Errorf("Pin = %q, want %q", got, want)
	}
	if other := pki.Pin(newCA(t, "other-ca").Cert); other == got {
		t.Errorf("two CAs have the same pin %q", got)
	}
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	write(t, to, data)
}
