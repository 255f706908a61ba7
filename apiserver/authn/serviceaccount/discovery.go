package serviceaccount

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// Discovery paths, served to anonymous clients.
const (
	OpenIDConfigPath = "/.well-known/openid-configuration"
	JWKSPath         = "/openid/v1/jwks"
)

const (
	discoveryCacheControl = "public, max-age=3600"
	jwksContentType       = "application/jwk-set+json"
)

// openIDConfig is the subset of OpenID Provider Metadata that upstream
// serves: enough for a relying party to find the keys of the issuer.
type openIDConfig struct {
	Issuer        string   `json:"issuer"`
	JWKSURI       string   `json:"jwks_uri"`
	ResponseTypes []string `json:"response_types_supported"`
	SubjectTypes  []string `json:"subject_types_supported"`
	SigningAlgs   []string `json:"id_token_signing_alg_values_supported"`
}

// DiscoveryHandlers returns the handlers of OIDC discovery for tokens of
// issuer: openIDConfig serves the provider configuration at
// OpenIDConfigPath and jwks serves the public keys at JWKSPath. Both
// issuer and apiServerExternalURL (the https URL clients reach the API
// server at; the jwks_uri is built from it) must be https URLs without a
// query or fragment. Duplicate keys are listed once.
func DiscoveryHandlers(issuer string, apiServerExternalURL string, keys []*ecdsa.PublicKey) (openIDConfigHandler http.Handler, jwksHandler http.Handler, err error) {
	var errs []error
	if err := checkHTTPSURL(issuer); err != nil {
		errs = append(errs, fmt.Errorf("issuer: %w", err))
	}
	if err := checkHTTPSURL(apiServerExternalURL); err != nil {
		errs = append(errs, fmt.Errorf("external URL: %w", err))
	}
	if len(keys) == 0 {
		errs = append(errs, errors.New("no public keys"))
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	seen := map[string]bool{}
	for i, k := range keys {
		if err := checkCurve(k); err != nil {
			errs = append(errs, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		kid, err := KeyID(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		if seen[kid] {
			continue
		}
		seen[kid] = true
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("serviceaccount: discovery: %w", err)
	}

	config, err := json.Marshal(openIDConfig{
		Issuer:        issuer,
		JWKSURI:       strings.TrimSuffix(apiServerExternalURL, "/") + JWKSPath,
		ResponseTypes: []string{"id_token"},
		SubjectTypes:  []string{"public"},
		SigningAlgs:   []string{string(jose.ES256)},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("serviceaccount: discovery: %w", err)
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, nil, fmt.Errorf("serviceaccount: discovery: %w", err)
	}
	return staticJSON(config, "application/json"), staticJSON(jwks, jwksContentType), nil
}

func checkHTTPSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	switch {
	case u.Scheme != "https":
		return fmt.Errorf("%q is not an https URL", s)
	case u.Host == "":
		return fmt.Errorf("%q has no host", s)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("%q has a query or fragment", s)
	case u.User != nil:
		return fmt.Errorf("%q has user information", s)
	}
	return nil
}

// staticJSON serves body on GET and HEAD.
func staticJSON(body []byte, contentType string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", discoveryCacheControl)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	})
}
