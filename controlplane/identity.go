package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"k8s.io/client-go/rest"

	"tether/pki"
)

// identity is the client certificate of an in-process component (the
// controllers, the scheduler): a pki.Identity, issued by the client CA,
// kept only in memory and renewed before it expires.
type identity struct {
	*pki.Identity
}

func newIdentity(ca *pki.CA, user string, groups ...string) (*identity, error) {
	id, err := pki.NewIdentity(ca, 0, user, groups...)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return &identity{id}, nil
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
			GetClientCertificate: i.GetClientCertificate,
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 25,
		IdleConnTimeout:     90 * time.Second,
	}
	return &rest.Config{Host: host, Transport: tr, QPS: 100, Burst: 200, UserAgent: "tether/" + i.User(),
		// The controllers use v1 Endpoints on purpose (they keep them for
		// older clients); the deprecation warning would only be noise.
		WarningHandler: rest.NoWarnings{}}, nil
}
