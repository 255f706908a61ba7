package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// PEM block types.
const (
	blockCert     = "CERTIFICATE"
	blockPKCS8    = "PRIVATE KEY"
	blockECKey    = "EC PRIVATE KEY"
	blockRSAKey   = "RSA PRIVATE KEY"
	blockPublic   = "PUBLIC KEY"
	blockEncPKCS8 = "ENCRYPTED PRIVATE KEY"
)

// EncodeCert returns cert as a PEM "CERTIFICATE" block.
func EncodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: blockCert, Bytes: cert.Raw})
}

// EncodeKey returns key as a PKCS#8 PEM "PRIVATE KEY" block. ParseKeyPEM
// reads it back, as well as SEC 1 "EC PRIVATE KEY" blocks written by other
// tools.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockPKCS8, Bytes: der}), nil
}

// encodePublicKey returns pub as a PKIX PEM "PUBLIC KEY" block.
func encodePublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockPublic, Bytes: der}), nil
}

// ParseCertPEM returns the first certificate in PEM data. Blocks of other
// types are skipped.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return certs[0], nil
}

// ParseKeyPEM returns the first private key in PEM data: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
// Encrypted keys are not supported.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return key, nil
}

// parseCerts returns every certificate in PEM data; there is at least one.
// Errors do not carry the package prefix so that callers can add a file
// name.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var (
		certs []*x509.Certificate
		other string
		block *pem.Block
	)
	for rest := data; ; {
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != blockCert {
			if other == "" {
				other = block.Type
			}
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("invalid certificate: %w", err)
		}
		certs = append(certs, cert)
	}
	switch {
	case len(certs) > 0:
		return certs, nil
	case other != "":
		return nil, fmt.Errorf("not a certificate: PEM block is %q", other)
	default:
		return nil, errors.New("not a PEM certificate")
	}
}

// parseKey returns the first private key in PEM data. Errors do not carry
// the package prefix so that callers can add a file name.
func parseKey(data []byte) (crypto.Signer, error) {
	var (
		other string
		block *pem.Block
	)
	for rest := data; ; {
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case blockPKCS8:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case blockECKey:
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case blockRSAKey:
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case blockEncPKCS8:
			return nil, errors.New("encrypted private keys are not supported")
		default:
			if other == "" {
				other = block.Type
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("invalid %s: %w", strings.ToLower(block.Type), err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
	if other != "" {
		return nil, fmt.Errorf("not a private key: PEM block is %q", other)
	}
	return nil, errors.New("not a PEM private key")
}

// parsePublicKey returns the first PKIX "PUBLIC KEY" in PEM data.
func parsePublicKey(data []byte) (crypto.PublicKey, error) {
	var (
		other string
		block *pem.Block
	)
	for rest := data; ; {
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != blockPublic {
			if other == "" {
				other = block.Type
			}
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("invalid public key: %w", err)
		}
		return pub, nil
	}
	if other != "" {
		return nil, fmt.Errorf("not a public key: PEM block is %q", other)
	}
	return nil, errors.New("not a PEM public key")
}

// readFile reads path. Its errors carry the package prefix and the file
// name, say "missing" for a file that does not exist, and wrap the
// underlying error (fs.ErrNotExist, fs.ErrPermission, …).
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fileError(path, err)
	}
	return data, nil
}

// fileError turns an os error about path into a pki error naming it.
func fileError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pki: %s: missing: %w", path, fs.ErrNotExist)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("pki: %s: %s: %w", path, pe.Op, pe.Err)
	}
	return fmt.Errorf("pki: %s: %w", path, err)
}

// loadCertFile reads the first certificate in the PEM file path.
func loadCertFile(path string) (*x509.Certificate, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return certs[0], nil
}

// loadKeyFile reads the first private key in the PEM file path.
func loadKeyFile(path string) (crypto.Signer, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return key, nil
}

// loadECDSAKeyFile reads an ECDSA private key from the PEM file path.
func loadECDSAKeyFile(path string) (*ecdsa.PrivateKey, error) {
	key, err := loadKeyFile(path)
	if err != nil {
		return nil, err
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("pki: %s: %T is not an ECDSA private key", path, key)
	}
	return ec, nil
}

// loadPublicKeyFile reads a PKIX public key from the PEM file path.
func loadPublicKeyFile(path string) (crypto.PublicKey, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	pub, err := parsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return pub, nil
}

// LoadKeyPair reads a certificate chain and its private key from PEM files,
// like tls.LoadX509KeyPair, but its errors name the file that is wrong.
// Leaf is set to the first certificate.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	data, err := readFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: %s: %w", certFile, err)
	}
	key, err := loadKeyFile(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !publicKeysEqual(key.Public(), certs[0].PublicKey) {
		return tls.Certificate{}, fmt.Errorf("pki: %s: key does not match certificate %s", keyFile, certFile)
	}
	pair := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		pair.Certificate = append(pair.Certificate, c.Raw)
	}
	return pair, nil
}

// WriteFile writes data to path atomically with mode 0600: it writes a
// temporary file in the same directory, syncs it and renames it over path.
// Missing parent directories are created with mode 0700.
func WriteFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	// CreateTemp already uses 0600; Chmod makes it independent of that.
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	// Make the rename durable. Not every file system supports syncing a
	// directory, and the data is already in place, so errors are ignored.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
