package pki_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tether/pki"
)

func TestParseKeyPEM(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := pki.EncodeKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	sec1DER, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER})
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})

	for _, tc := range []struct {
		name    string
		data    []byte
		want    any // public key, or nil for an error
		wantErr string
	}{
		{"pkcs8", pkcs8, &ec.PublicKey, ""},
		{"sec1", sec1, &ec.PublicKey, ""},
		{"pkcs1", pkcs1, &rsaKey.PublicKey, ""},
		{"after another block", append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), pkcs8...), &ec.PublicKey, ""},
		{"empty", nil, nil, "not a PEM private key"},
		{"garbage", []byte("hello"), nil, "not a PEM private key"},
		{"wrong type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), nil, "not a private key"},
		{"corrupt", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), nil, "invalid private key"},
		{"encrypted", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), nil, "encrypted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := pki.ParseKeyPEM(tc.data)
			if tc.want == nil {
				if err == nil || !strings.HasPrefix(err.Error(), "pki: ") || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("ParseKeyPEM(%q) = %v, want an error containing %q", tc.data, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKeyPEM = %v", err)
			}
			if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(tc.want) {
				t.Errorf("ParseKeyPEM returned a different key")
			}
		})
	}
}

func TestParseCertPEM(t *testing.T) {
	ca := newCA(t, "test-ca")
	keyPEM, err := pki.EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"cert", ca.CertPEM(), ""},
		{"key then cert", append(append([]byte{}, keyPEM...), ca.CertPEM()...), ""},
		{"empty", nil, "not a PEM certificate"},
		{"garbage", []byte("-----BEGIN nothing"), "not a PEM certificate"},
		{"key only", keyPEM, "not a certificate"},
		{"corrupt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}), "invalid certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := pki.ParseCertPEM(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("ParseCertPEM = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCertPEM = %v", err)
			}
			if !cert.Equal(ca.Cert) {
				t.Error("ParseCertPEM returned a different certificate")
			}
		})
	}
}

func TestLoadKeyPair(t *testing.T) {
	ca := newCA(t, "test-ca")
	req := pki.CertRequest{CommonName: "x", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour}
	certPEM, keyPEM, err := ca.NewKeyAndCert(req)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKeyPEM, err := ca.NewKeyAndCert(req)
	if err != nil {
		t.Fatal(err)
	}
	chain := append(append([]byte{}, certPEM...), ca.CertPEM()...)

	for _, tc := range []struct {
		name      string
		cert, key []byte // nil: the file is missing
		wantLen   int    // certificates in the chain
		errFile   string // "cert" or "key"
		wantErr   string
	}{
		{name: "ok", cert: certPEM, key: keyPEM, wantLen: 1},
		{name: "chain", cert: chain, key: keyPEM, wantLen: 2},
		{name: "missing cert", key: keyPEM, errFile: "cert", wantErr: "missing"},
		{name: "missing key", cert: certPEM, errFile: "key", wantErr: "missing"},
		{name: "bad cert", cert: []byte("x"), key: keyPEM, errFile: "cert", wantErr: "not a PEM certificate"},
		{name: "bad key", cert: certPEM, key: []byte("x"), errFile: "key", wantErr: "not a PEM private key"},
		{name: "mismatch", cert: certPEM, key: otherKeyPEM, errFile: "key", wantErr: "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "x.crt"), filepath.Join(dir, "x.key")
			if tc.cert != nil {
				write(t, certFile, tc.cert)
			}
			if tc.key != nil {
				write(t, keyFile, tc.key)
			}
			pair, err := pki.LoadKeyPair(certFile, keyFile)
			if tc.errFile != "" {
				file := certFile
				if tc.errFile == "key" {
					file = keyFile
				}
				if err == nil || !strings.HasPrefix(err.Error(), "pki: "+file+": ") || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("LoadKeyPair = %v, want an error naming %s containing %q", err, file, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadKeyPair = %v", err)
			}
			if len(pair.Certificate) != tc.wantLen || pair.Leaf == nil || pair.Leaf.Subject.CommonName != "x" {
				t.Errorf("LoadKeyPair: %d certificates, leaf %v; want %d and CN x", len(pair.Certificate), pair.Leaf, tc.wantLen)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "secret")
	for i, data := range []string{"one", "two, longer than one"} {
		if err := pki.WriteFile(path, []byte(data)); err != nil {
			t.Fatalf("WriteFile #%d = %v", i, err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != data {
			t.Errorf("after WriteFile #%d: read %q, %v; want %q", i, got, err, data)
		}
		assertMode(t, path, 0o600)
	}
	// An existing file with a wider mode is replaced by a 0600 one.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(path, []byte("three")); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	assertMode(t, dir, 0o700|os.ModeDir)
	assertMode(t, filepath.Dir(dir), 0o700|os.ModeDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only the file (no temporary files left)", names)
	}
}

// assertMode checks that path has exactly mode want (type bits included).
func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode(); got != want {
		t.Errorf("mode of %s = %v, want %v", path, got, want)
	}
}
