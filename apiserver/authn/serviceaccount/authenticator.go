package serviceaccount

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	apiserversa "k8s.io/apiserver/pkg/authentication/serviceaccount"
	tokenjwt "k8s.io/apiserver/pkg/authentication/token/jwt"
)

// AuthenticatorConfig configures NewAuthenticator.
type AuthenticatorConfig struct {
	// Keys verify token signatures; a token signed by any of them is
	// accepted (this allows key rotation). Keys not on P-256 are ignored.
	Keys []*ecdsa.PublicKey
	// Issuer is the iss claim of the tokens this authenticator handles;
	// tokens with another issuer are left to other authenticators. If
	// empty, no token is handled.
	Issuer string
	// Audiences are the API server's audiences, used when the request
	// context carries none (authenticator.WithAudiences). If both are
	// empty, every token is rejected.
	Audiences []string
	// Getter reads the service accounts and bound objects. Required.
	Getter ObjectGetter
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

type tokenAuthenticator struct {
	issuer    string
	audiences authenticator.Audiences
	keys      map[string]*ecdsa.PublicKey // by key ID
	getter    ObjectGetter
	now       func() time.Time
}

var _ authenticator.Token = (*tokenAuthenticator)(nil)

// NewAuthenticator returns a token authenticator for service-account tokens
// issued by cfg.Issuer. Tokens that are not JWTs with that issuer are not
// handled (nil, false, nil); tokens with that issuer that fail any check
// are rejected with an error that never contains the token.
func NewAuthenticator(cfg AuthenticatorConfig) authenticator.Token {
	a := &tokenAuthenticator{
		issuer:    cfg.Issuer,
		audiences: append(authenticator.Audiences(nil), cfg.Audiences...),
		keys:      map[string]*ecdsa.PublicKey{},
		getter:    cfg.Getter,
		now:       cfg.Now,
	}
	if a.now == nil {
		a.now = time.Now
	}
	for _, k := range cfg.Keys {
		if checkCurve(k) != nil {
			continue
		}
		if kid, err := KeyID(k); err == nil {
			a.keys[kid] = k
		}
	}
	return a
}

var (
	errMalformed        = errors.New("service account token: malformed token")
	errInvalidSignature = errors.New("service account token: invalid signature")
	errInvalidated      = errors.New("service account token has been invalidated")
)

// AuthenticateToken implements authenticator.Token.
func (a *tokenAuthenticator) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	if a.issuer == "" || !a.hasIssuer(token) {
		return nil, false, nil
	}
	// From here on the token claims to be ours: every failure is an error.
	if !canonical(token) {
		return nil, false, errMalformed
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		// Includes alg "none", HS256 and every other algorithm.
		return nil, false, errMalformed
	}
	var public jwt.Claims
	var private privateClaims
	if !a.verify(tok, &public, &private) {
		return nil, false, errInvalidSignature
	}
	now := a.now()
	if err := a.validateTimes(&public, now); err != nil {
		return nil, false, err
	}

	requested, ok := authenticator.AudiencesFrom(ctx)
	if !ok || len(requested) == 0 {
		requested = a.audiences
	}
	auds := authenticator.Audiences(public.Audience).Intersect(requested)
	if len(auds) == 0 {
		return nil, false, fmt.Errorf("service account token: audiences %q are not valid for %q", []string(public.Audience), []string(requested))
	}

	k := private.Kubernetes
	if k == nil || k.Namespace == "" || k.ServiceAccount.Name == "" || k.ServiceAccount.UID == "" {
		return nil, false, errors.New("service account token: missing kubernetes.io claims")
	}
	if public.Subject != apiserversa.MakeUsername(k.Namespace, k.ServiceAccount.Name) {
		return nil, false, errors.New("service account token: subject does not match the service account claim")
	}
	info, err := a.validateObjects(ctx, k, now)
	if err != nil {
		return nil, false, err
	}
	info.CredentialID = tokenjwt.CredentialIDForJTI(public.ID)
	return &authenticator.Response{Audiences: auds, User: info.UserInfo()}, true, nil
}

// hasIssuer reports whether token looks like a JWT whose unverified iss
// claim is the authenticator's issuer.
func (a *tokenAuthenticator) hasIssuer(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(parts[1])
	if err != nil {
		return false
	}
	var claims struct {
		Issuer string `json:"iss"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return false
	}
	return claims.Issuer == a.issuer
}

// canonical reports whether every part of a compact JWS is canonical
// unpadded base64url. The decoder used by go-jose ignores line breaks and
// non-zero trailing bits, so without this check several strings would
// verify as the same token.
func canonical(token string) bool {
	for _, part := range strings.Split(token, ".") {
		if part == "" {
			return false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
		if _, err := base64.RawURLEncoding.Strict().DecodeString(part); err != nil {
			return false
		}
	}
	return true
}

// verify checks the signature, preferring the key named by the kid header,
// and decodes the claims.
func (a *tokenAuthenticator) verify(tok *jwt.JSONWebToken, public *jwt.Claims, private *privateClaims) bool {
	if len(tok.Headers) != 1 {
		return false
	}
	if k, ok := a.keys[tok.Headers[0].KeyID]; ok {
		return tok.Claims(k, public, private) == nil
	}
	for _, k := range a.keys {
		if tok.Claims(k, public, private) == nil {
			return true
		}
	}
	return false
}

func (a *tokenAuthenticator) validateTimes(public *jwt.Claims, now time.Time) error {
	if public.Expiry == nil {
		return errors.New("service account token: no expiration")
	}
	switch err := public.ValidateWithLeeway(jwt.Expected{Issuer: a.issuer, Time: now}, Leeway); {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrExpired):
		return errors.New("service account token has expired")
	case errors.Is(err, jwt.ErrNotValidYet):
		return errors.New("service account token is not valid yet")
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return errors.New("service account token is issued in the future")
	default:
		return fmt.Errorf("service account token: %w", err)
	}
}

// validateObjects checks that the service account and every object the
// token is bound to still exist with the UIDs in the token. An object whose
// deletion started more than Leeway ago no longer counts, as upstream; so a
// pod's token keeps working during the pod's termination grace period.
func (a *tokenAuthenticator) validateObjects(ctx context.Context, k *kubernetesClaims, now time.Time) (*apiserversa.ServiceAccountInfo, error) {
	if a.getter == nil {
		return nil, errors.New("service account token: no object getter configured")
	}
	deadline := now.Add(-Leeway)
	ns, saName := k.Namespace, k.ServiceAccount.Name

	sa, err := a.getter.GetServiceAccount(ctx, ns, saName)
	if err != nil {
		return nil, fmt.Errorf("%w: service account %s/%s: %w", errInvalidated, ns, saName, err)
	}
	if string(sa.UID) != k.ServiceAccount.UID {
		return nil, fmt.Errorf("%w: service account %s/%s has uid %s, the token names %s", errInvalidated, ns, saName, sa.UID, k.ServiceAccount.UID)
	}
	if sa.DeletionTimestamp != nil && sa.DeletionTimestamp.Time.Before(deadline) {
		return nil, fmt.Errorf("%w: service account %s/%s has been deleted", errInvalidated, ns, saName)
	}

	if r := k.Secret; r != nil {
		s, err := a.getter.GetSecret(ctx, ns, r.Name)
		if err != nil {
			return nil, fmt.Errorf("%w: bound secret %s/%s: %w", errInvalidated, ns, r.Name, err)
		}
		if string(s.UID) != r.UID {
			return nil, fmt.Errorf("%w: bound secret %s/%s has uid %s, the token names %s", errInvalidated, ns, r.Name, s.UID, r.UID)
		}
		if s.DeletionTimestamp != nil && s.DeletionTimestamp.Time.Before(deadline) {
			return nil, fmt.Errorf("%w: bound secret %s/%s has been deleted", errInvalidated, ns, r.Name)
		}
	}

	info := &apiserversa.ServiceAccountInfo{Namespace: ns, Name: saName, UID: k.ServiceAccount.UID}
	if r := k.Pod; r != nil {
		p, err := a.getter.GetPod(ctx, ns, r.Name)
		if err != nil {
			return nil, fmt.Errorf("%w: bound pod %s/%s: %w", errInvalidated, ns, r.Name, err)
		}
		if string(p.UID) != r.UID {
			return nil, fmt.Errorf("%w: bound pod %s/%s has uid %s, the token names %s", errInvalidated, ns, r.Name, p.UID, r.UID)
		}
		if p.DeletionTimestamp != nil && p.DeletionTimestamp.Time.Before(deadline) {
			return nil, fmt.Errorf("%w: bound pod %s/%s has been deleted", errInvalidated, ns, r.Name)
		}
		info.PodName, info.PodUID = r.Name, r.UID
	}

	if r := k.Node; r != nil {
		if k.Pod == nil {
			// Bound to the node itself: the node must still be there.
			n, err := a.getter.GetNode(ctx, r.Name)
			if err != nil {
				return nil, fmt.Errorf("%w: bound node %s: %w", errInvalidated, r.Name, err)
			}
			if string(n.UID) != r.UID {
				return nil, fmt.Errorf("%w: bound node %s has uid %s, the token names %s", errInvalidated, r.Name, n.UID, r.UID)
			}
			if n.DeletionTimestamp != nil && n.DeletionTimestamp.Time.Before(deadline) {
				return nil, fmt.Errorf("%w: bound node %s has been deleted", errInvalidated, r.Name)
			}
		}
		// For a pod-bound token the node claim is information only.
		info.NodeName, info.NodeUID = r.Name, r.UID
	}
	return info, nil
}
