// Package pki holds the control plane's certificate authorities and key
// material: it creates and loads CAs, issues certificates, reads and writes
// PEM files, computes CA pins, writes kubeconfig files, and bootstraps the
// server's PKI directory (see LoadOrCreateServer).
//
// Every key it generates is ECDSA P-256. Every file it writes has mode 0600
// (directories 0700) and is written atomically with a temporary file and a
// rename, so a reader sees either the old or the new content. Errors name
// the file they concern.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// clockSkew is how far NotBefore is set in the past, so that a certificate
// is valid at once on machines whose clocks lag a little.
const clockSkew = time.Minute

// A CA is a certificate authority: a CA certificate and its private key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CertRequest describes a certificate for CA.Issue.
type CertRequest struct {
	// CommonName is the subject's CN; for client certificates it is the
	// Kubernetes user name.
	CommonName string
	// Organization is the subject's O; for client certificates these are
	// the Kubernetes groups.
	Organization []string
	// DNSNames and IPAddresses are the subject alternative names.
	DNSNames    []string
	IPAddresses []net.IP
	// Usages are the extended key usages; at least one is required.
	Usages []x509.ExtKeyUsage
	// Validity is how long the certificate is valid from now; it must be
	// positive. The certificate never outlives its CA: NotAfter is capped
	// at the CA's NotAfter.
	Validity time.Duration
}

// NewCA creates a self-signed CA with a new ECDSA P-256 key, valid from now
// for validity.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("pki: new CA: empty common name")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("pki: new CA %q: validity %v is not positive", commonName, validity)
	}
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("pki: new CA %q: %w", commonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: new CA %q: %w", commonName, err)
	}
	skid, err := keyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("pki: new CA %q: %w", commonName, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA %q: create certificate: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA %q: parse certificate: %w", commonName, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertPEM returns the CA certificate PEM-encoded, as clients need it in a
// CA bundle or a kubeconfig.
func (ca *CA) CertPEM() []byte {
	return EncodeCert(ca.Cert)
}

// Issue signs a certificate for pub as described by req. NotBefore is one
// minute in the past; NotAfter is now+req.Validity, capped at the CA's
// NotAfter. The serial number is random (128 bits) and the authority key
// identifier is the CA's subject key identifier.
func (ca *CA) Issue(req CertRequest, pub crypto.PublicKey) (*x509.Certificate, error) {
	name := req.CommonName
	if name == "" && len(req.DNSNames) > 0 {
		name = req.DNSNames[0]
	}
	if req.CommonName == "" && len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return nil, errors.New("pki: issue: request has no common name and no subject alternative names")
	}
	if req.Validity <= 0 {
		return nil, fmt.Errorf("pki: issue %q: validity %v is not positive", name, req.Validity)
	}
	if len(req.Usages) == 0 {
		return nil, fmt.Errorf("pki: issue %q: no extended key usages", name)
	}
	if pub == nil {
		return nil, fmt.Errorf("pki: issue %q: nil public key", name)
	}
	now := time.Now()
	notAfter := now.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("pki: issue %q: CA %q expired at %s", name, ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: issue %q: %w", name, err)
	}
	skid, err := keyID(pub)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %q: %w", name, err)
	}
	akid := ca.Cert.SubjectKeyId
	if len(akid) == 0 {
		if akid, err = keyID(ca.Cert.PublicKey); err != nil {
			return nil, fmt.Errorf("pki: issue %q: CA key: %w", name, err)
		}
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   req.CommonName,
			Organization: req.Organization,
		},
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           req.Usages,
		BasicConstraintsValid: true,
		SubjectKeyId:          skid,
		AuthorityKeyId:        akid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %q: create certificate: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %q: parse certificate: %w", name, err)
	}
	return cert, nil
}

// NewKeyAndCert generates a new ECDSA P-256 key and issues a certificate for
// it, returning both PEM-encoded.
func (ca *CA) NewKeyAndCert(req CertRequest) (certPEM, keyPEM []byte, err error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %q: %w", req.CommonName, err)
	}
	cert, err := ca.Issue(req, key.Public())
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return EncodeCert(cert), keyPEM, nil
}

// LoadCA reads a CA certificate and its private key from PEM files. The
// error names the file and says what is wrong with it: missing, not PEM,
// not a (CA) certificate, or a key that does not match the certificate.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cert, err := loadCertFile(certFile)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: %s: certificate %q is not a CA certificate", certFile, cert.Subject.CommonName)
	}
	key, err := loadKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("pki: %s: key does not match certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Pin returns the CA pin of cert in the kubeadm format: "sha256:" followed
// by the lowercase hex SHA-256 of the certificate's DER-encoded
// SubjectPublicKeyInfo. A joining node compares it with the CA the server
// presents.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// newKey returns a new ECDSA P-256 private key.
func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

// serialLimit bounds serial numbers to 128 bits.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// keyID computes a key identifier for pub following RFC 7093 section 2
// method 1: the leftmost 160 bits of the SHA-256 hash of the
// subjectPublicKey BIT STRING.
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("unmarshal public key: %w", err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// publicKeysEqual reports whether a and b are the same public key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}
