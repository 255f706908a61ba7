package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/kubernetes"
)

// The delegated decisions are cached like the upstream kubelet's defaults.
// apiserver's DelegatingAuthenticatorConfig and DelegatingAuthorizerConfig
// would do the same, but they talk through the typed clients' RESTClient
// (nil in client-go's fake clientset) and cache negative token answers as
// long as positive ones, so the two small caches here replace them.
const (
	tokenSuccessTTL = 2 * time.Minute
	tokenFailureTTL = 30 * time.Second
	allowTTL        = 5 * time.Minute
	denyTTL         = 30 * time.Second
	// reviewTimeout bounds one TokenReview or SubjectAccessReview call.
	reviewTimeout = 10 * time.Second
	cacheSize     = 4096
)

// errNoCredentials is returned for a request that carries neither a
// verifiable client certificate nor a bearer token.
var errNoCredentials = errors.New("kubelet server: no credentials")

// userInfo is an authenticated user.
type userInfo struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

const groupAuthenticated = "system:authenticated"

// authenticator authenticates requests by client certificate, then by
// bearer token through TokenReview.
type authenticator struct {
	client kubernetes.Interface
	tokens *cache.LRUExpireCache // sha256(token) → *userInfo, or nil for a rejected token
	flight singleflight.Group
}

func newAuthenticator(client kubernetes.Interface) *authenticator {
	return &authenticator{client: client, tokens: cache.NewLRUExpireCache(cacheSize)}
}

// authenticate returns the request's user. pool is the current client CA
// (nil: certificates are not accepted).
func (a *authenticator) authenticate(r *http.Request, pool *x509.CertPool) (*userInfo, error) {
	var errs []error
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && pool != nil {
		u, err := verifyClientCert(r.TLS.PeerCertificates, pool)
		if err == nil {
			return u, nil
		}
		errs = append(errs, err)
	}
	if token, ok := bearerToken(r); ok {
		u, err := a.authenticateToken(r.Context(), token)
		if err == nil {
			return u, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, errNoCredentials
	}
	return nil, errors.Join(errs...)
}

// verifyClientCert verifies the peer's chain against pool for client use
// and maps it to a user: CN is the name, O the groups.
func verifyClientCert(chain []*x509.Certificate, pool *x509.CertPool) (*userInfo, error) {
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("kubelet server: verify client certificate %q: %w", leaf.Subject.CommonName, err)
	}
	if leaf.Subject.CommonName == "" {
		return nil, errors.New("kubelet server: client certificate has no common name")
	}
	return &userInfo{
		Name:   leaf.Subject.CommonName,
		Groups: withAuthenticated(slices.Clone(leaf.Subject.Organization)),
	}, nil
}

func withAuthenticated(groups []string) []string {
	if slices.Contains(groups, groupAuthenticated) {
		return groups
	}
	return append(groups, groupAuthenticated)
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// authenticateToken asks the API server about token with a TokenReview;
// answers are cached by the token's hash, errors are not. Concurrent
// requests with the same token share one review.
func (a *authenticator) authenticateToken(ctx context.Context, token string) (*userInfo, error) {
	if a.client == nil {
		return nil, errors.New("kubelet server: bearer tokens are not accepted (no API client)")
	}
	sum := sha256.Sum256([]byte(token))
	key := hex.EncodeToString(sum[:])
	if v, ok := a.tokens.Get(key); ok {
		return tokenResult(v.(*userInfo))
	}
	v, err, _ := a.flight.Do(key, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
		defer cancel()
		tr, err := a.client.AuthenticationV1().TokenReviews().Create(rctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: token},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("kubelet server: token review: %w", err)
		}
		if !tr.Status.Authenticated || tr.Status.User.Username == "" {
			a.tokens.Add(key, (*userInfo)(nil), tokenFailureTTL)
			return (*userInfo)(nil), nil
		}
		u := &userInfo{
			Name:   tr.Status.User.Username,
			UID:    tr.Status.User.UID,
			Groups: withAuthenticated(slices.Clone(tr.Status.User.Groups)),
		}
		if len(tr.Status.User.Extra) > 0 {
			u.Extra = make(map[string][]string, len(tr.Status.User.Extra))
			for k, v := range tr.Status.User.Extra {
				u.Extra[k] = slices.Clone(v)
			}
		}
		a.tokens.Add(key, u, tokenSuccessTTL)
		return u, nil
	})
	if err != nil {
		return nil, err
	}
	return tokenResult(v.(*userInfo))
}

func tokenResult(u *userInfo) (*userInfo, error) {
	if u == nil {
		return nil, errors.New("kubelet server: token rejected by the API server")
	}
	return u, nil
}

// requestAttributes is what a request asks to do to this node: verb on
// nodes/<subresource>, where any one of subresources suffices.
type requestAttributes struct {
	verb         string
	name         string
	subresources []string
}

// attributesFor maps a request to its authorization attributes. It
// returns false for an HTTP method with no verb.
//
// The subresource comes from the path's first segment, as in the upstream
// kubelet with fine-grained authorization: healthz and pods fall back on
// proxy; metrics, stats and logs are their own; everything else (exec,
// attach, portForward, run, containerLogs, unknown paths) is proxy. exec,
// attach, portForward and run always need create: a WebSocket upgrade is a
// GET, and get rights on nodes/proxy must not open a shell.
func attributesFor(r *http.Request, node string) (requestAttributes, bool) {
	var verb string
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		verb = "get"
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
	default:
		return requestAttributes{}, false
	}
	attrs := requestAttributes{verb: verb, name: node}
	root, _ := splitPath(r.URL.Path)
	switch root {
	case "healthz":
		attrs.subresources = []string{"healthz", "proxy"}
	case "pods", "runningpods":
		attrs.subresources = []string{"pods", "proxy"}
	case "configz":
		attrs.subresources = []string{"configz", "proxy"}
	case "metrics":
		attrs.subresources = []string{"metrics"}
	case "stats":
		attrs.subresources = []string{"stats"}
	case "logs":
		attrs.subresources = []string{"log"}
	case "exec", "attach", "portForward", "run":
		attrs.verb = "create"
		attrs.subresources = []string{"proxy"}
	default:
		attrs.subresources = []string{"proxy"}
	}
	return attrs, true
}

// authorizer decides with SubjectAccessReviews, caching the answers.
type authorizer struct {
	client   kubernetes.Interface
	verdicts *cache.LRUExpireCache // JSON of the review's spec → bool
	flight   singleflight.Group
}

func newAuthorizer(client kubernetes.Interface) *authorizer {
	return &authorizer{client: client, verdicts: cache.NewLRUExpireCache(cacheSize)}
}

// authorize reports whether u may do attrs: whether any of its
// subresources is allowed, asked in order. Without an API client nothing
// is allowed.
func (a *authorizer) authorize(ctx context.Context, u *userInfo, attrs requestAttributes) (bool, error) {
	if a.client == nil {
		return false, nil
	}
	for _, sub := range attrs.subresources {
		spec := authorizationv1.SubjectAccessReviewSpec{
			User:   u.Name,
			UID:    u.UID,
			Groups: u.Groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb:        attrs.verb,
				Version:     "v1",
				Resource:    "nodes",
				Subresource: sub,
				Name:        attrs.name,
			},
		}
		if len(u.Extra) > 0 {
			spec.Extra = make(map[string]authorizationv1.ExtraValue, len(u.Extra))
			for k, v := range u.Extra {
				spec.Extra[k] = v
			}
		}
		ok, err := a.review(ctx, spec)
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

func (a *authorizer) review(ctx context.Context, spec authorizationv1.SubjectAccessReviewSpec) (bool, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return false, err
	}
	key := string(b)
	if v, ok := a.verdicts.Get(key); ok {
		return v.(bool), nil
	}
	v, err, _ := a.flight.Do(key, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
		defer cancel()
		sar, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(rctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			return false, fmt.Errorf("kubelet server: subject access review: %w", err)
		}
		allowed := sar.Status.Allowed && !sar.Status.Denied
		ttl := denyTTL
		if allowed {
			ttl = allowTTL
		}
		a.verdicts.Add(key, allowed, ttl)
		return allowed, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}
