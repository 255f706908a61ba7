package pki_test

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tether/pki"
)

// serverFiles are the files LoadOrCreateServer keeps in Dir/pki.
var serverFiles = []string{
	"server-ca.crt", "server-ca.key",
	"client-ca.crt", "client-ca.key",
	"apiserver.crt", "apiserver.key",
	"admin.crt", "admin.key",
	"sa.key", "sa.pub",
}

func testServerOptions(t *testing.T) pki.ServerOptions {
	return pki.ServerOptions{
		Dir:              t.TempDir(),
		AdvertiseAddress: net.ParseIP("192.0.2.10"),
		ServiceIP:        net.ParseIP("10.96.0.1"),
		ExtraSANs:        []string{"api.example.com", "203.0.113.5"},
	}
}

func loadServer(t *testing.T, opts pki.ServerOptions) *pki.ServerPKI {
	t.Helper()
	p, err := pki.LoadOrCreateServer(opts)
	if err != nil {
		t.Fatalf("LoadOrCreateServer = %v", err)
	}
	return p
}

// snapshot returns the contents of the server files in dir/pki; missing
// files are absent from the map.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := make(map[string][]byte)
	for _, name := range serverFiles {
		data, err := os.ReadFile(filepath.Join(dir, "pki", name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}
	return files
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCertPEM(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cert
}

func pool(cas ...*pki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

// checkServing checks the serving certificate of p against opts. If exact,
// the certificate must have no SANs beyond those opts requires.
func checkServing(t *testing.T, p *pki.ServerPKI, opts pki.ServerOptions, exact bool) {
	t.Helper()
	cert := loadCert(t, p.ServingCertFile)
	if cert.Subject.CommonName != "kube-apiserver" {
		t.Errorf("serving CN = %q, want kube-apiserver", cert.Subject.CommonName)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("serving ExtKeyUsage = %v, want [ServerAuth]", cert.ExtKeyUsage)
	}
	if d := time.Until(cert.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("serving certificate expires in %v, want about a year", d)
	}
	wantDNS := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	wantIPs := []string{opts.AdvertiseAddress.String(), "127.0.0.1", opts.ServiceIP.String()}
	for _, san := range opts.ExtraSANs {
		if net.ParseIP(san) != nil {
			wantIPs = append(wantIPs, san)
		} else {
			wantDNS = append(wantDNS, strings.ToLower(san))
		}
	}
	var gotIPs []string
	for _, ip := range cert.IPAddresses {
		gotIPs = append(gotIPs, ip.String())
	}
	slices.Sort(wantDNS)
	slices.Sort(wantIPs)
	gotDNS := slices.Sorted(slices.Values(cert.DNSNames))
	slices.Sort(gotIPs)
	if exact && !slices.Equal(gotDNS, wantDNS) {
		t.Errorf("serving DNS SANs = %q, want %q", gotDNS, wantDNS)
	}
	if exact && !slices.Equal(gotIPs, wantIPs) {
		t.Errorf("serving IP SANs = %q, want %q", gotIPs, wantIPs)
	}
	for _, host := range append(wantDNS, wantIPs...) {
		opts := x509.VerifyOptions{Roots: pool(p.ServerCA), DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		if _, err := cert.Verify(opts); err != nil {
			t.Errorf("serving certificate does not verify for %q with the server CA: %v", host, err)
		}
		opts.Roots = pool(p.ClientCA)
		if _, err := cert.Verify(opts); err == nil {
			t.Errorf("serving certificate verifies for %q with the client CA, want an error", host)
		}
	}
	if _, err := pki.LoadKeyPair(p.ServingCertFile, p.ServingKeyFile); err != nil {
		t.Errorf("LoadKeyPair(serving) = %v", err)
	}
}

// checkAdmin checks the admin client certificate of p.
func checkAdmin(t *testing.T, p *pki.ServerPKI) {
	t.Helper()
	cert := loadCert(t, p.AdminCertFile)
	if cert.Subject.CommonName != "admin" || !slices.Equal(cert.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("admin subject = %v, want CN=admin,O=system:masters", cert.Subject)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("admin ExtKeyUsage = %v, want [ClientAuth]", cert.ExtKeyUsage)
	}
	if d := time.Until(cert.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("admin certificate expires in %v, want about a year", d)
	}
	opts := x509.VerifyOptions{Roots: pool(p.ClientCA), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := cert.Verify(opts); err != nil {
		t.Errorf("admin certificate does not verify with the client CA: %v", err)
	}
	opts.Roots = pool(p.ServerCA)
	if _, err := cert.Verify(opts); err == nil {
		t.Error("admin certificate verifies with the server CA, want an error")
	}
	if _, err := pki.LoadKeyPair(p.AdminCertFile, p.AdminKeyFile); err != nil {
		t.Errorf("LoadKeyPair(admin) = %v", err)
	}
}

func TestLoadOrCreateServerFresh(t *testing.T) {
	opts := testServerOptions(t)
	p := loadServer(t, opts)
	dir := filepath.Join(opts.Dir, "pki")

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := slices.Sorted(slices.Values(serverFiles)); !slices.Equal(names, want) {
		t.Errorf("%s holds %q, want %q", dir, names, want)
	}
	assertMode(t, dir, 0o700|os.ModeDir)
	for _, name := range serverFiles {
		assertMode(t, filepath.Join(dir, name), 0o600)
	}

	paths := map[string]string{
		"ServerCAFile":          p.ServerCAFile,
		"ClientCAFile":          p.ClientCAFile,
		"ServingCertFile":       p.ServingCertFile,
		"ServingKeyFile":        p.ServingKeyFile,
		"AdminCertFile":         p.AdminCertFile,
		"AdminKeyFile":          p.AdminKeyFile,
		"ServiceAccountKeyFile": p.ServiceAccountKeyFile,
		"ServiceAccountPubFile": p.ServiceAccountPubFile,
	}
	wantPaths := map[string]string{
		"ServerCAFile":          "server-ca.crt",
		"ClientCAFile":          "client-ca.crt",
		"ServingCertFile":       "apiserver.crt",
		"ServingKeyFile":        "apiserver.key",
		"AdminCertFile":         "admin.crt",
		"AdminKeyFile":          "admin.key",
		"ServiceAccountKeyFile": "sa.key",
		"ServiceAccountPubFile": "sa.pub",
	}
	for field, got := range paths {
		if want := filepath.Join(dir, wantPaths[field]); got != want {
			t.Errorf("%s = %q, want %q", field, got, want)
		}
	}

	for _, tc := range []struct {
		name string
		ca   *pki.CA
		file string
		cn   string
	}{
		{"server CA", p.ServerCA, p.ServerCAFile, "tether-server-ca"},
		{"client CA", p.ClientCA, p.ClientCAFile, "tether-client-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ca == nil {
				t.Fatal("CA is nil")
			}
			if tc.ca.Cert.Subject.CommonName != tc.cn || !tc.ca.Cert.IsCA {
				t.Errorf("CA subject %v, IsCA %v; want CN=%s, true", tc.ca.Cert.Subject, tc.ca.Cert.IsCA, tc.cn)
			}
			if d := time.Until(tc.ca.Cert.NotAfter); d < 3649*24*time.Hour || d > 3651*24*time.Hour {
				t.Errorf("CA expires in %v, want about ten years", d)
			}
			if onDisk := loadCert(t, tc.file); !onDisk.Equal(tc.ca.Cert) {
				t.Errorf("%s differs from the returned CA", tc.file)
			}
		})
	}
	if p.ServerCA.Cert.Equal(p.ClientCA.Cert) {
		t.Error("server and client CA are the same")
	}

	t.Run("serving", func(t *testing.T) { checkServing(t, p, opts, true) })
	t.Run("admin", func(t *testing.T) { checkAdmin(t, p) })

	t.Run("service account key", func(t *testing.T) {
		if p.ServiceAccountKey == nil || p.ServiceAccountKey.Curve != elliptic.P256() {
			t.Fatalf("ServiceAccountKey = %v, want an ECDSA P-256 key", p.ServiceAccountKey)
		}
		data, err := os.ReadFile(p.ServiceAccountKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		key, err := pki.ParseKeyPEM(data)
		if err != nil {
			t.Fatalf("sa.key: %v", err)
		}
		if !p.ServiceAccountKey.Equal(key) {
			t.Error("sa.key differs from ServiceAccountKey")
		}
		data, err = os.ReadFile(p.ServiceAccountPubFile)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte("-----BEGIN PUBLIC KEY-----")) {
			t.Fatalf("sa.pub = %q, want a PUBLIC KEY block", data)
		}
		block, _ := pem.Decode(data)
		if block == nil {
			t.Fatalf("sa.pub = %q, want PEM", data)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatalf("sa.pub: %v", err)
		}
		if !p.ServiceAccountKey.PublicKey.Equal(pub) {
			t.Error("sa.pub does not match sa.key")
		}
	})
}

func TestLoadOrCreateServerReuse(t *testing.T) {
	opts := testServerOptions(t)
	first := loadServer(t, opts)
	before := snapshot(t, opts.Dir)
	second := loadServer(t, opts)
	after := snapshot(t, opts.Dir)

	for _, name := range serverFiles {
		if !bytes.Equal(before[name], after[name]) {
			t.Errorf("%s changed on the second call", name)
		}
	}
	for _, tc := range []struct {
		name string
		a, b *x509.Certificate
	}{
		{"server CA", first.ServerCA.Cert, second.ServerCA.Cert},
		{"client CA", first.ClientCA.Cert, second.ClientCA.Cert},
		{"serving", loadCert(t, first.ServingCertFile), loadCert(t, second.ServingCertFile)},
		{"admin", loadCert(t, first.AdminCertFile), loadCert(t, second.AdminCertFile)},
	} {
		if tc.a.SerialNumber.Cmp(tc.b.SerialNumber) != 0 {
			t.Errorf("%s serial changed from %v to %v", tc.name, tc.a.SerialNumber, tc.b.SerialNumber)
		}
	}
	if !first.ServiceAccountKey.Equal(second.ServiceAccountKey) {
		t.Error("service account key changed on the second call")
	}
}

func TestLoadOrCreateServerReissue(t *testing.T) {
	// issueFor replaces the certificate in certFile with one from ca for the
	// key in keyFile, valid for validity.
	issueFor := func(t *testing.T, ca *pki.CA, certFile, keyFile string, req pki.CertRequest) {
		t.Helper()
		pair, err := pki.LoadKeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue(req, pair.Leaf.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteFile(certFile, pki.EncodeCert(cert)); err != nil {
			t.Fatal(err)
		}
	}
	shortServing := func(t *testing.T, p *pki.ServerPKI) pki.CertRequest {
		old := loadCert(t, p.ServingCertFile)
		return pki.CertRequest{
			CommonName:  old.Subject.CommonName,
			DNSNames:    old.DNSNames,
			IPAddresses: old.IPAddresses,
			Usages:      old.ExtKeyUsage,
			Validity:    10 * 24 * time.Hour,
		}
	}

	tests := []struct {
		name string
		// change edits the options of the second call.
		change func(o *pki.ServerOptions)
		// damage changes files after the first call.
		damage func(t *testing.T, p *pki.ServerPKI)
		// changed lists the files whose content must change; all others
		// must stay as they were after the first call.
		changed []string
	}{
		{
			name:    "advertise address changed",
			change:  func(o *pki.ServerOptions) { o.AdvertiseAddress = net.ParseIP("192.0.2.20") },
			changed: []string{"apiserver.crt"},
		},
		{
			name:    "service IP changed",
			change:  func(o *pki.ServerOptions) { o.ServiceIP = net.ParseIP("10.43.0.1") },
			changed: []string{"apiserver.crt"},
		},
		{
			name:    "extra SAN added",
			change:  func(o *pki.ServerOptions) { o.ExtraSANs = append(o.ExtraSANs, "new.example.com") },
			changed: []string{"apiserver.crt"},
		},
		{
			name:   "extra SAN removed",
			change: func(o *pki.ServerOptions) { o.ExtraSANs = o.ExtraSANs[:1] },
		},
		{
			name:   "extra SAN differs only in case",
			change: func(o *pki.ServerOptions) { o.ExtraSANs = []string{"API.example.com", "203.0.113.5"} },
		},
		{
			name: "serving certificate expires soon",
			damage: func(t *testing.T, p *pki.ServerPKI) {
				issueFor(t, p.ServerCA, p.ServingCertFile, p.ServingKeyFile, shortServing(t, p))
			},
			changed: []string{"apiserver.crt"},
		},
		{
			name: "serving certificate from another CA",
			damage: func(t *testing.T, p *pki.ServerPKI) {
				req := shortServing(t, p)
				req.Validity = 365 * 24 * time.Hour
				intruder, err := pki.NewCA("tether-server-ca", 10*365*24*time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				issueFor(t, intruder, p.ServingCertFile, p.ServingKeyFile, req)
			},
			changed: []string{"apiserver.crt"},
		},
		{
			name: "admin certificate expires soon",
			damage: func(t *testing.T, p *pki.ServerPKI) {
				issueFor(t, p.ClientCA, p.AdminCertFile, p.AdminKeyFile, pki.CertRequest{
					CommonName:   "admin",
					Organization: []string{"system:masters"},
					Usages:       []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
					Validity:     29 * 24 * time.Hour,
				})
			},
			changed: []string{"admin.crt"},
		},
		{
			name: "serving pair removed",
			damage: func(t *testing.T, p *pki.ServerPKI) {
				remove(t, p.ServingCertFile)
				remove(t, p.ServingKeyFile)
			},
			changed: []string{"apiserver.crt", "apiserver.key"},
		},
		{
			name: "admin pair removed",
			damage: func(t *testing.T, p *pki.ServerPKI) {
				remove(t, p.AdminCertFile)
				remove(t, p.AdminKeyFile)
			},
			changed: []string{"admin.crt", "admin.key"},
		},
		{
			name:   "sa.pub removed",
			damage: func(t *testing.T, p *pki.ServerPKI) { remove(t, p.ServiceAccountPubFile) },
			// Rewritten from sa.key with the same content.
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := testServerOptions(t)
			first := loadServer(t, opts)
			before := snapshot(t, opts.Dir)
			if tc.damage != nil {
				tc.damage(t, first)
			}
			if tc.change != nil {
				tc.change(&opts)
			}
			second := loadServer(t, opts)
			after := snapshot(t, opts.Dir)
			for _, name := range serverFiles {
				if after[name] == nil {
					t.Errorf("%s is missing after the second call", name)
					continue
				}
				changed := !bytes.Equal(before[name], after[name])
				if want := slices.Contains(tc.changed, name); changed != want {
					t.Errorf("%s changed = %v, want %v", name, changed, want)
				}
				assertMode(t, filepath.Join(opts.Dir, "pki", name), 0o600)
			}
			if !second.ServerCA.Cert.Equal(first.ServerCA.Cert) || !second.ClientCA.Cert.Equal(first.ClientCA.Cert) {
				t.Error("a CA changed")
			}
			checkServing(t, second, opts, false)
			checkAdmin(t, second)

			// The result is stable: a third call changes nothing.
			loadServer(t, opts)
			third := snapshot(t, opts.Dir)
			for _, name := range serverFiles {
				if !bytes.Equal(after[name], third[name]) {
					t.Errorf("%s changed on the third call", name)
				}
			}
		})
	}
}

func TestLoadOrCreateServerErrors(t *testing.T) {
	otherCA := newCA(t, "other-ca")
	otherKey, err := pki.EncodeKey(otherCA.Key)
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte("this is not PEM\n")

	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		// file is the file the error must name; want are further phrases.
		file string
		want []string
	}{
		{
			name:   "server CA key not PEM",
			damage: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "server-ca.key"), garbage) },
			file:   "server-ca.key",
			want:   []string{"not a PEM private key", "restore it or remove the data directory to start a new cluster"},
		},
		{
			name:   "server CA cert not PEM",
			damage: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "server-ca.crt"), garbage) },
			file:   "server-ca.crt",
			want:   []string{"not a PEM certificate", "remove the data directory"},
		},
		{
			name: "client CA cert holds a key",
			damage: func(t *testing.T, dir string) {
				copyFile(t, filepath.Join(dir, "client-ca.key"), filepath.Join(dir, "client-ca.crt"))
			},
			file: "client-ca.crt",
			want: []string{"not a certificate", "remove the data directory"},
		},
		{
			name:   "client CA key from another CA",
			damage: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "client-ca.key"), otherKey) },
			file:   "client-ca.key",
			want:   []string{"does not match", "remove the data directory"},
		},
		{
			name:   "client CA key missing",
			damage: func(t *testing.T, dir string) { remove(t, filepath.Join(dir, "client-ca.key")) },
			file:   "client-ca.key",
			want:   []string{"missing", "restore it"},
		},
		{
			name: "server CA missing",
			damage: func(t *testing.T, dir string) {
				remove(t, filepath.Join(dir, "server-ca.crt"))
				remove(t, filepath.Join(dir, "server-ca.key"))
			},
			file: "server-ca.crt",
			want: []string{"missing", "restore it"},
		},
		{
			name: "all CA files missing",
			damage: func(t *testing.T, dir string) {
				for _, name := range []string{"server-ca.crt", "server-ca.key", "client-ca.crt", "client-ca.key"} {
					remove(t, filepath.Join(dir, name))
				}
			},
			file: "server-ca.crt",
			want: []string{"missing", "exists", "restore the CA files or remove the data directory"},
		},
		{
			name: "only sa.key left",
			damage: func(t *testing.T, dir string) {
				for _, name := range serverFiles {
					if name != "sa.key" {
						remove(t, filepath.Join(dir, name))
					}
				}
			},
			file: "server-ca.crt",
			want: []string{"missing", "sa.key exists"},
		},
		{
			name:   "serving key missing",
			damage: func(t *testing.T, dir string) { remove(t, filepath.Join(dir, "apiserver.key")) },
			file:   "apiserver.key",
			want:   []string{"missing", "apiserver.crt exists", "issue a new pair"},
		},
		{
			name:   "serving cert missing",
			damage: func(t *testing.T, dir string) { remove(t, filepath.Join(dir, "apiserver.crt")) },
			file:   "apiserver.crt",
			want:   []string{"missing", "apiserver.key exists"},
		},
		{
			name:   "serving key from another pair",
			damage: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "apiserver.key"), otherKey) },
			file:   "apiserver.key",
			want:   []string{"does not match", "to issue a new pair"},
		},
		{
			name:   "admin cert not PEM",
			damage: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "admin.crt"), garbage) },
			file:   "admin.crt",
			want:   []string{"not a PEM certificate", "admin.key to issue a new pair"},
		},
		{
			name:   "sa.key not PEM",
			damage: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "sa.key"), garbage) },
			file:   "sa.key",
			want:   []string{"not a PEM private key", "remove the data directory"},
		},
		{
			name:   "sa.key missing",
			damage: func(t *testing.T, dir string) { remove(t, filepath.Join(dir, "sa.key")) },
			file:   "sa.key",
			want:   []string{"missing", "sa.pub exists"},
		},
		{
			name: "sa.pub does not match",
			damage: func(t *testing.T, dir string) {
				pub, err := x509.MarshalPKIXPublicKey(otherCA.Key.Public())
				if err != nil {
					t.Fatal(err)
				}
				write(t, filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
			},
			file: "sa.pub",
			want: []string{"does not match", "rewrite it from"},
		},
		{
			name:   "sa.pub not PEM",
			damage: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "sa.pub"), garbage) },
			file:   "sa.pub",
			want:   []string{"not a PEM public key"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := testServerOptions(t)
			loadServer(t, opts)
			dir := filepath.Join(opts.Dir, "pki")
			tc.damage(t, dir)
			before := snapshot(t, opts.Dir)

			_, err := pki.LoadOrCreateServer(opts)
			if err == nil {
				t.Fatal("LoadOrCreateServer = nil error, want an error")
			}
			prefix := "pki: " + filepath.Join(dir, tc.file) + ": "
			if msg := err.Error(); !strings.HasPrefix(msg, prefix) {
				t.Errorf("error = %q, want prefix %q", msg, prefix)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error = %q, want it to contain %q", err, want)
				}
			}
			// Nothing is created or replaced after an error.
			after := snapshot(t, opts.Dir)
			if len(after) != len(before) {
				t.Errorf("files after the error: %d, before: %d", len(after), len(before))
			}
			for name, data := range before {
				if !bytes.Equal(data, after[name]) {
					t.Errorf("%s changed although LoadOrCreateServer failed", name)
				}
			}
		})
	}

	t.Run("exact message", func(t *testing.T) {
		opts := testServerOptions(t)
		loadServer(t, opts)
		path := filepath.Join(opts.Dir, "pki", "server-ca.key")
		write(t, path, garbage)
		_, err := pki.LoadOrCreateServer(opts)
		want := "pki: " + path + ": not a PEM private key; restore it or remove the data directory to start a new cluster"
		if err == nil || err.Error() != want {
			t.Errorf("error = %v, want %q", err, want)
		}
	})
}

func TestServerOptionsValidation(t *testing.T) {
	valid := func(t *testing.T) pki.ServerOptions {
		o := testServerOptions(t)
		o.ExtraSANs = []string{"*.example.com", "API.Example.com", "2001:db8::1"}
		return o
	}
	if _, err := pki.LoadOrCreateServer(valid(t)); err != nil {
		t.Fatalf("LoadOrCreateServer(valid) = %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(o *pki.ServerOptions)
		want   []string
	}{
		{"empty dir", func(o *pki.ServerOptions) { o.Dir = "" }, []string{"Dir"}},
		{"no advertise address", func(o *pki.ServerOptions) { o.AdvertiseAddress = nil }, []string{"AdvertiseAddress"}},
		{"unspecified advertise address", func(o *pki.ServerOptions) { o.AdvertiseAddress = net.IPv4zero }, []string{"AdvertiseAddress"}},
		{"no service IP", func(o *pki.ServerOptions) { o.ServiceIP = nil }, []string{"ServiceIP"}},
		{"bad extra SAN", func(o *pki.ServerOptions) { o.ExtraSANs = []string{"not a name"} }, []string{`"not a name"`}},
		{"empty extra SAN", func(o *pki.ServerOptions) { o.ExtraSANs = []string{""} }, []string{"extra SAN"}},
		{"everything wrong", func(o *pki.ServerOptions) { *o = pki.ServerOptions{} }, []string{"Dir", "AdvertiseAddress", "ServiceIP"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := valid(t)
			tc.change(&opts)
			_, err := pki.LoadOrCreateServer(opts)
			if err == nil {
				t.Fatalf("LoadOrCreateServer(%+v) = nil error, want an error", opts)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error = %q, want it to mention %q", err, want)
				}
			}
			if opts.Dir != "" {
				if _, err := os.Stat(filepath.Join(opts.Dir, "pki")); !os.IsNotExist(err) {
					t.Errorf("pki directory created despite invalid options (stat: %v)", err)
				}
			}
		})
	}
}
