package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Names and lifetimes of the server's certificates.
const (
	serverCAName = "tether-server-ca"
	clientCAName = "tether-client-ca"
	// adminUser and adminGroup are the subject of the admin client
	// certificate; members of system:masters may do everything.
	adminUser  = "admin"
	adminGroup = "system:masters"
	// servingCommonName is the CN of the apiserver serving certificate.
	servingCommonName = "kube-apiserver"

	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// renewBefore is how long before expiry a leaf certificate is reissued.
	renewBefore = 30 * 24 * time.Hour
)

// File names inside Dir/pki.
const (
	fileServerCACert = "server-ca.crt"
	fileServerCAKey  = "server-ca.key"
	fileClientCACert = "client-ca.crt"
	fileClientCAKey  = "client-ca.key"
	fileServingCert  = "apiserver.crt"
	fileServingKey   = "apiserver.key"
	fileAdminCert    = "admin.crt"
	fileAdminKey     = "admin.key"
	fileSAKey        = "sa.key"
	fileSAPub        = "sa.pub"
)

// restoreHint ends errors about files that cannot be recreated without
// starting a new cluster.
const restoreHint = "restore it or remove the data directory to start a new cluster"

// ServerOptions configures LoadOrCreateServer.
type ServerOptions struct {
	// Dir is the data directory; the files live in Dir/pki. Required.
	Dir string
	// AdvertiseAddress is the address clients and nodes use to reach the
	// apiserver; it is a SAN of the serving certificate. Required.
	AdvertiseAddress net.IP
	// ServiceIP is the first IP of the service range, the ClusterIP of the
	// kubernetes Service; it is a SAN of the serving certificate. Required.
	ServiceIP net.IP
	// ExtraSANs are further DNS names or IP addresses for the serving
	// certificate. May be empty.
	ExtraSANs []string
}

// ServerPKI is the server's key material, as found or created by
// LoadOrCreateServer. File fields are absolute or relative as Dir was.
type ServerPKI struct {
	// ServerCA signs serving certificates (apiserver, kubelets); ClientCA
	// signs every client certificate.
	ServerCA, ClientCA *CA
	// ServingCertFile and ServingKeyFile are the apiserver serving pair,
	// given by path so that the server can reload them when they change.
	ServingCertFile, ServingKeyFile string
	// AdminCertFile and AdminKeyFile are a client pair for user "admin" in
	// group "system:masters", signed by ClientCA.
	AdminCertFile, AdminKeyFile string
	// ServiceAccountKey signs service-account tokens.
	ServiceAccountKey *ecdsa.PrivateKey
	// ServiceAccountKeyFile holds ServiceAccountKey; ServiceAccountPubFile
	// its PKIX public key, for verifying tokens.
	ServiceAccountKeyFile, ServiceAccountPubFile string
	// ServerCAFile and ClientCAFile are the CA certificates (the CA keys
	// are next to them, but are only available through ServerCA.Key and
	// ClientCA.Key).
	ServerCAFile, ClientCAFile string
}

// LoadOrCreateServer loads the server's PKI from opts.Dir/pki, creating
// what is missing:
//
//   - server-ca.crt/.key and client-ca.crt/.key: CAs "tether-server-ca"
//     and "tether-client-ca", valid ten years. They are created only when
//     the directory holds none of the files below; a missing CA file next
//     to existing files is an error, never a new CA.
//   - sa.key/sa.pub: the service-account signing key (ECDSA P-256) and its
//     PKIX public key. If both are missing a new key is made (tokens signed
//     by a lost key stop working); a missing sa.pub is rewritten from
//     sa.key.
//   - apiserver.crt/.key: the serving certificate (CN kube-apiserver,
//     server auth), valid one year, with SANs for the advertise address,
//     127.0.0.1, the service IP, localhost, the kubernetes Service names
//     and opts.ExtraSANs.
//   - admin.crt/.key: a client certificate for "admin" in
//     "system:masters", valid one year, signed by the client CA.
//
// Existing files are reused. The serving certificate is reissued (with its
// existing key, so only apiserver.crt changes) when it lacks a SAN now
// required, expires within 30 days, or is not signed by the server CA; the
// admin certificate likewise. A leaf pair with both files missing is
// reissued; with one file missing, or any file that cannot be read or
// parsed, LoadOrCreateServer returns an error that names the file and says
// what to do.
//
// It is not safe to call concurrently for the same Dir.
func LoadOrCreateServer(opts ServerOptions) (*ServerPKI, error) {
	serving, err := opts.servingRequest()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(opts.Dir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create %s: %w", dir, err)
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	p := &ServerPKI{
		ServerCAFile:          path(fileServerCACert),
		ClientCAFile:          path(fileClientCACert),
		ServingCertFile:       path(fileServingCert),
		ServingKeyFile:        path(fileServingKey),
		AdminCertFile:         path(fileAdminCert),
		AdminKeyFile:          path(fileAdminKey),
		ServiceAccountKeyFile: path(fileSAKey),
		ServiceAccountPubFile: path(fileSAPub),
	}

	if p.ServerCA, p.ClientCA, err = loadOrCreateCAs(dir); err != nil {
		return nil, err
	}
	if p.ServiceAccountKey, err = loadOrCreateSAKey(p.ServiceAccountKeyFile, p.ServiceAccountPubFile); err != nil {
		return nil, err
	}
	if err := ensureLeaf(p.ServerCA, p.ServingCertFile, p.ServingKeyFile, serving); err != nil {
		return nil, err
	}
	admin := CertRequest{
		CommonName:   adminUser,
		Organization: []string{adminGroup},
		Usages:       []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Validity:     leafValidity,
	}
	if err := ensureLeaf(p.ClientCA, p.AdminCertFile, p.AdminKeyFile, admin); err != nil {
		return nil, err
	}
	return p, nil
}

// servingRequest validates o and returns the request for the apiserver
// serving certificate.
func (o ServerOptions) servingRequest() (CertRequest, error) {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("pki: server options: Dir is empty"))
	}
	for _, f := range []struct {
		name string
		ip   net.IP
	}{{"AdvertiseAddress", o.AdvertiseAddress}, {"ServiceIP", o.ServiceIP}} {
		switch {
		case f.ip == nil:
			errs = append(errs, fmt.Errorf("pki: server options: %s is not set", f.name))
		case f.ip.IsUnspecified():
			errs = append(errs, fmt.Errorf("pki: server options: %s %s is the unspecified address", f.name, f.ip))
		}
	}
	req := CertRequest{
		CommonName: servingCommonName,
		DNSNames: []string{
			"localhost",
			"kubernetes",
			"kubernetes.default",
			"kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		Usages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		Validity: leafValidity,
	}
	addIP := func(ip net.IP) {
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !slices.ContainsFunc(req.IPAddresses, ip.Equal) {
			req.IPAddresses = append(req.IPAddresses, ip)
		}
	}
	addIP(o.AdvertiseAddress)
	addIP(net.IPv4(127, 0, 0, 1))
	addIP(o.ServiceIP)
	for _, san := range o.ExtraSANs {
		if ip := net.ParseIP(san); ip != nil {
			addIP(ip)
			continue
		}
		name := strings.ToLower(san)
		if len(validation.IsDNS1123Subdomain(name)) > 0 && len(validation.IsWildcardDNS1123Subdomain(name)) > 0 {
			errs = append(errs, fmt.Errorf("pki: server options: extra SAN %q is neither an IP address nor a DNS name", san))
			continue
		}
		if !slices.Contains(req.DNSNames, name) {
			req.DNSNames = append(req.DNSNames, name)
		}
	}
	return req, errors.Join(errs...)
}

// loadOrCreateCAs loads the server and client CAs from dir, or creates them
// if dir holds none of the server's files.
func loadOrCreateCAs(dir string) (server, client *CA, err error) {
	caFiles := []string{fileServerCACert, fileServerCAKey, fileClientCACert, fileClientCAKey}
	otherFiles := []string{fileServingCert, fileServingKey, fileAdminCert, fileAdminKey, fileSAKey, fileSAPub}
	anyCA := false
	for _, name := range caFiles {
		ok, err := exists(filepath.Join(dir, name))
		if err != nil {
			return nil, nil, err
		}
		anyCA = anyCA || ok
	}
	if anyCA {
		if server, err = LoadCA(filepath.Join(dir, fileServerCACert), filepath.Join(dir, fileServerCAKey)); err != nil {
			return nil, nil, fmt.Errorf("%w; %s", err, restoreHint)
		}
		if client, err = LoadCA(filepath.Join(dir, fileClientCACert), filepath.Join(dir, fileClientCAKey)); err != nil {
			return nil, nil, fmt.Errorf("%w; %s", err, restoreHint)
		}
		return server, client, nil
	}
	for _, name := range otherFiles {
		ok, err := exists(filepath.Join(dir, name))
		if err != nil {
			return nil, nil, err
		}
		if ok {
			return nil, nil, fmt.Errorf("pki: %s: missing, but %s exists; restore the CA files or remove the data directory to start a new cluster",
				filepath.Join(dir, fileServerCACert), filepath.Join(dir, name))
		}
	}
	if server, err = createCA(serverCAName, filepath.Join(dir, fileServerCACert), filepath.Join(dir, fileServerCAKey)); err != nil {
		return nil, nil, err
	}
	if client, err = createCA(clientCAName, filepath.Join(dir, fileClientCACert), filepath.Join(dir, fileClientCAKey)); err != nil {
		return nil, nil, err
	}
	return server, client, nil
}

// createCA creates a CA and writes its key and certificate.
func createCA(name, certFile, keyFile string) (*CA, error) {
	ca, err := NewCA(name, caValidity)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := WriteFile(keyFile, keyPEM); err != nil {
		return nil, err
	}
	if err := WriteFile(certFile, ca.CertPEM()); err != nil {
		return nil, err
	}
	return ca, nil
}

// loadOrCreateSAKey loads the service-account signing key, creating it
// if both files are missing and rewriting the public key file if it is
// missing.
func loadOrCreateSAKey(keyFile, pubFile string) (*ecdsa.PrivateKey, error) {
	keyOK, err := exists(keyFile)
	if err != nil {
		return nil, err
	}
	pubOK, err := exists(pubFile)
	if err != nil {
		return nil, err
	}
	var key *ecdsa.PrivateKey
	switch {
	case !keyOK && pubOK:
		return nil, fmt.Errorf("pki: %s: missing, but %s exists; restore it, or remove %s to create a new signing key (existing service-account tokens stop working)",
			keyFile, pubFile, pubFile)
	case !keyOK:
		if key, err = newKey(); err != nil {
			return nil, fmt.Errorf("pki: %s: %w", keyFile, err)
		}
		keyPEM, err := EncodeKey(key)
		if err != nil {
			return nil, err
		}
		if err := WriteFile(keyFile, keyPEM); err != nil {
			return nil, err
		}
	default:
		if key, err = loadECDSAKeyFile(keyFile); err != nil {
			return nil, fmt.Errorf("%w; %s", err, restoreHint)
		}
	}
	if pubOK && keyOK {
		pub, err := loadPublicKeyFile(pubFile)
		if err != nil {
			return nil, fmt.Errorf("%w; remove it to rewrite it from %s", err, keyFile)
		}
		if !key.PublicKey.Equal(pub) {
			return nil, fmt.Errorf("pki: %s: public key does not match %s; remove it to rewrite it from %s", pubFile, keyFile, keyFile)
		}
		return key, nil
	}
	pubPEM, err := encodePublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", pubFile, err)
	}
	if err := WriteFile(pubFile, pubPEM); err != nil {
		return nil, err
	}
	return key, nil
}

// ensureLeaf makes certFile and keyFile hold a current certificate from ca
// for req: it issues a new pair if both are missing and reissues the
// certificate for the existing key if it is stale.
func ensureLeaf(ca *CA, certFile, keyFile string, req CertRequest) error {
	certOK, err := exists(certFile)
	if err != nil {
		return err
	}
	keyOK, err := exists(keyFile)
	if err != nil {
		return err
	}
	switch {
	case !certOK && !keyOK:
		certPEM, keyPEM, err := ca.NewKeyAndCert(req)
		if err != nil {
			return err
		}
		if err := WriteFile(keyFile, keyPEM); err != nil {
			return err
		}
		return WriteFile(certFile, certPEM)
	case !certOK:
		return fmt.Errorf("pki: %s: missing, but %s exists; restore it, or remove %s to issue a new pair", certFile, keyFile, keyFile)
	case !keyOK:
		return fmt.Errorf("pki: %s: missing, but %s exists; restore it, or remove %s to issue a new pair", keyFile, certFile, certFile)
	}
	pair, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("%w; remove %s and %s to issue a new pair", err, certFile, keyFile)
	}
	if !stale(pair.Leaf, ca, req, time.Now()) {
		return nil
	}
	cert, err := ca.Issue(req, pair.PrivateKey.(crypto.Signer).Public())
	if err != nil {
		return err
	}
	return WriteFile(certFile, EncodeCert(cert))
}

// stale reports whether cert must be reissued to satisfy req at now: it is
// not signed by ca, expires within renewBefore, or lacks a subject field,
// usage or SAN that req asks for.
func stale(cert *x509.Certificate, ca *CA, req CertRequest, now time.Time) bool {
	if cert.CheckSignatureFrom(ca.Cert) != nil {
		return true
	}
	if !now.Add(renewBefore).Before(cert.NotAfter) {
		return true
	}
	if cert.Subject.CommonName != req.CommonName || !slices.Equal(cert.Subject.Organization, req.Organization) {
		return true
	}
	for _, u := range req.Usages {
		if !slices.Contains(cert.ExtKeyUsage, u) {
			return true
		}
	}
	for _, name := range req.DNSNames {
		if !slices.ContainsFunc(cert.DNSNames, func(s string) bool { return strings.EqualFold(s, name) }) {
			return true
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return true
		}
	}
	return false
}

// exists reports whether path exists; errors other than "does not exist"
// are returned naming the file.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fileError(path, err)
	}
}
