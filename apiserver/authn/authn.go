// Package authn decides who is making a request to the API server. It builds
// the chain of authenticators tried in order — client certificates (minus
// revoked serials), then bearer tokens (bootstrap tokens, service-account
// tokens); the first that recognises the request wins. Requests that no
// authenticator recognises are anonymous only on the few public paths;
// elsewhere they are refused with 401 by the handler chain.
package authn

import (
	"errors"
	"net/http"

	apiserverapi "k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/anonymous"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/request/union"
	"k8s.io/apiserver/pkg/authentication/request/websocket"
	"k8s.io/apiserver/pkg/authentication/request/x509"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"

	"tether/apiserver/authn/revocation"
	"tether/apiserver/authn/serviceaccount"
)

// ClusterInfoPath is the one object an anonymous client may read: the
// cluster-info ConfigMap that joining nodes verify against their CA pin.
const ClusterInfoPath = "/api/v1/namespaces/kube-public/configmaps/cluster-info"

// PublicPaths are the non-resource paths anyone may read, anonymous users
// included: health, version, and the OIDC documents that let others verify
// service-account tokens.
var PublicPaths = []string{
	"/livez", "/readyz", "/healthz", "/version", "/version/",
	serviceaccount.OpenIDConfigPath, serviceaccount.JWKSPath,
}

// AnonymousPaths are the only paths an anonymous request reaches.
var AnonymousPaths = append(append([]string{}, PublicPaths...), ClusterInfoPath)

// Config lists the credentials the API server accepts.
type Config struct {
	// ClientCA verifies client certificates; the certificate's CN is the
	// user name and its O entries are the groups. Required.
	ClientCA dynamiccertificates.CAContentProvider
	// Revoked refuses client certificates whose serial it lists. If nil,
	// no certificate is refused for its serial.
	Revoked *revocation.List
	// Token authenticates bearer tokens, from the Authorization header or a
	// websocket protocol. If nil, tokens are not accepted.
	Token authenticator.Token
}

// New returns the request authenticator for cfg.
func New(cfg Config) (authenticator.Request, error) {
	if cfg.ClientCA == nil {
		return nil, errors.New("authn: a client CA is required")
	}
	var certs authenticator.Request = newCachedX509(cfg.ClientCA.VerifyOptions, x509.NewDynamic(cfg.ClientCA.VerifyOptions, x509.CommonNameUserConversion))
	if cfg.Revoked != nil {
		certs = revocation.WrapX509(certs, cfg.Revoked)
	}
	chain := []authenticator.Request{certs}
	if cfg.Token != nil {
		chain = append(chain, bearertoken.New(cfg.Token), websocket.NewProtocolAuthenticator(cfg.Token))
	}
	var conds []apiserverapi.AnonymousAuthCondition
	for _, p := range AnonymousPaths {
		conds = append(conds, apiserverapi.AnonymousAuthCondition{Path: p})
	}
	// Authenticated users are also in system:authenticated; the anonymous
	// authenticator comes last, so its user gets no such group.
	return union.New(group.NewAuthenticatedGroupAdder(union.New(chain...)), readOnly(anonymous.NewAuthenticator(conds))), nil
}

// readOnly lets auth see only GET and HEAD requests: anonymous users may
// read the public paths, and any other method there is unauthenticated.
func readOnly(auth authenticator.Request) authenticator.Request {
	return authenticator.RequestFunc(func(req *http.Request) (*authenticator.Response, bool, error) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			return nil, false, nil
		}
		return auth.AuthenticateRequest(req)
	})
}
