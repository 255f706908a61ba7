package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultIdentityLifetime is how long each certificate of an Identity is
// valid unless NewIdentity is told otherwise.
const DefaultIdentityLifetime = 24 * time.Hour

// Identity is a client certificate issued by the cluster's client CA and
// held only in memory: its key never touches the disk. A fresh certificate
// (with a fresh key) is issued once 70 % of the current one's validity has
// passed, so a server that runs for months never presents an expired one.
// It is safe for concurrent use.
type Identity struct {
	ca       *CA
	user     string
	groups   []string
	lifetime time.Duration
	now      func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

// NewIdentity returns an identity for user in groups, issued by ca. A
// lifetime of 0 means DefaultIdentityLifetime. No certificate is issued
// before the first handshake asks for one.
func NewIdentity(ca *CA, lifetime time.Duration, user string, groups ...string) (*Identity, error) {
	var errs []error
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		errs = append(errs, errors.New("pki: identity needs a client CA with its key"))
	}
	if user == "" {
		errs = append(errs, errors.New("pki: identity needs a user name"))
	}
	if lifetime < 0 {
		errs = append(errs, fmt.Errorf("pki: identity lifetime %s is negative", lifetime))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if lifetime == 0 {
		lifetime = DefaultIdentityLifetime
	}
	return &Identity{ca: ca, user: user, groups: groups, lifetime: lifetime, now: time.Now}, nil
}

// GetClientCertificate returns the current certificate, issuing a new one
// when the current one is due for renewal. It has the signature of
// tls.Config.GetClientCertificate.
func (i *Identity) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.now()
	if i.cert != nil && now.Before(i.renewAt) {
		return i.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: key for %s: %w", i.user, err)
	}
	leaf, err := i.ca.Issue(CertRequest{
		CommonName:   i.user,
		Organization: i.groups,
		Usages:       []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Validity:     i.lifetime,
	}, key.Public())
	if err != nil {
		return nil, fmt.Errorf("pki: certificate for %s: %w", i.user, err)
	}
	i.cert = &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	// Renew at 70 % of what was actually granted: the CA may have capped
	// the validity at its own expiry.
	i.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 7 / 10)
	return i.cert, nil
}

// User is the user name (CN) of the identity's certificates.
func (i *Identity) User() string { return i.user }
