// Package authn decides who is making a request to the API server. It builds
// the chain of authenticators tried in order (client certificates first);
// the first that recognises the request wins. Requests that no
// authenticator recognises are anonymous only on the few public paths;
// elsewhere they are refused with 401 by the handler chain.
package authn

import (
	"errors"

	apiserverapi "k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/anonymous"
	"k8s.io/apiserver/pkg/authentication/request/union"
	"k8s.io/apiserver/pkg/authentication/request/x509"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
)

// PublicPaths are the only paths an anonymous request may reach.
var PublicPaths = []string{"/livez", "/readyz", "/healthz", "/version", "/version/"}

// Config lists the credentials the API server accepts.
type Config struct {
	// ClientCA verifies client certificates; the certificate's CN is the
	// user name and its O entries are the groups. Required.
	ClientCA dynamiccertificates.CAContentProvider
	// Tokens are tried, in order, for bearer tokens. May be empty.
	Tokens []authenticator.Request
}

// New returns the request authenticator for cfg.
func New(cfg Config) (authenticator.Request, error) {
	if cfg.ClientCA == nil {
		return nil, errors.New("authn: a client CA is required")
	}
	chain := []authenticator.Request{x509.NewDynamic(cfg.ClientCA.VerifyOptions, x509.CommonNameUserConversion)}
	chain = append(chain, cfg.Tokens...)
	var conds []apiserverapi.AnonymousAuthCondition
	for _, p := range PublicPaths {
		conds = append(conds, apiserverapi.AnonymousAuthCondition{Path: p})
	}
	// Authenticated users are also in system:authenticated; the anonymous
	// authenticator comes last, so its user gets no such group.
	return union.New(group.NewAuthenticatedGroupAdder(union.New(chain...)), anonymous.NewAuthenticator(conds)), nil
}
