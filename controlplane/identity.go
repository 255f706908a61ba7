package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"tether/pki"
)

// identity is a client certificate for an in-process component (the
// controllers, the scheduler), issued by the client CA and kept only in
// memory. It is renewed when 70 % of its lifetime has passed, so a
// long-running server never presents an expired certificate.
type identity struct {
	ca       *pki.CA
	req      pki.CertRequest
	now      func() time.Time
	mu       sync.Mutex
	cert     *tls.Certificate
	renewAt  time.Time
	lifetime time.Duration
}

func newIdentity(ca *pki.CA, user string, groups ...string) *identity {
	const lifetime = 24 * time.Hour
	return &identity{
		ca:       ca,
		req:      pki.CertRequest{CommonName: user, Organization: groups, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: lifetime},
		now:      time.Now,
		lifetime: lifetime,
	}
}

// certificate returns the current certificate, issuing a new one when due.
func (i *identity) certificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.cert != nil && i.now().Before(i.renewAt) {
		return i.cert, nil
	}
	certPEM, keyPEM, err := i.ca.NewKeyAndCert(i.req)
	if err != nil {
		return nil, fmt.Errorf("controlplane: issue certificate for %s: %w", i.req.CommonName, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("controlplane: certificate for %s: %w", i.req.CommonName, err)
	}
	i.cert = &c
	i.renewAt = i.now().Add(i.lifetime * 7 / 10)
	return i.cert, nil
}

// restConfig returns a client configuration that reaches the API server at
// host over its secure port, verifies it with serverCA under the name
// "localhost", and presents this identity.
func (i *identity) restConfig(host string, serverCA []byte) (*rest.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(serverCA) {
		return nil, errors.New("controlplane: server CA has no certificate")
	}
	tr := &http.Transport{
		Proxy: nil,
		TLSClientConfig: &tls.Config{
			MinVersion:           tls.VersionTLS12,
			RootCAs:              pool,
			ServerName:           "localhost",
			GetClientCertificate: i.certificate,
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 25,
		IdleConnTimeout:     90 * time.Second,
	}
	return &rest.Config{Host: host, Transport: tr, QPS: 100, Burst: 200, UserAgent: "tether/" + i.req.CommonName,
		// The controllers use v1 Endpoints on purpose (they keep them for
		// older clients); the deprecation warning would only be noise.
		WarningHandler: rest.NoWarnings{}}, nil
}
