package serviceaccount

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	apiserversa "k8s.io/apiserver/pkg/authentication/serviceaccount"
)

// Issuer signs service-account tokens with one ES256 key. It is safe for
// concurrent use.
type Issuer struct {
	issuer string
	keyID  string
	signer jose.Signer
}

// NewIssuer returns an Issuer that signs with key (which must be on P-256)
// and puts issuer in the iss claim.
func NewIssuer(key *ecdsa.PrivateKey, issuer string) (*Issuer, error) {
	if issuer == "" {
		return nil, errors.New("serviceaccount: new issuer: empty issuer")
	}
	if key == nil {
		return nil, errors.New("serviceaccount: new issuer: nil key")
	}
	if err := checkCurve(&key.PublicKey); err != nil {
		return nil, fmt.Errorf("serviceaccount: new issuer: %w", err)
	}
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), kid),
	)
	if err != nil {
		return nil, fmt.Errorf("serviceaccount: new issuer: %w", err)
	}
	return &Issuer{issuer: issuer, keyID: kid, signer: signer}, nil
}

// Name returns the iss claim the Issuer writes.
func (i *Issuer) Name() string { return i.issuer }

// KeyID returns the kid header the Issuer writes.
func (i *Issuer) KeyID() string { return i.keyID }

// Issue returns a signed token for c. The token's iat and nbf are c.Now and
// its exp is c.Now+c.Expiration, all truncated to whole seconds.
func (i *Issuer) Issue(c Claims) (string, error) {
	if err := c.validate(); err != nil {
		return "", fmt.Errorf("serviceaccount: issue token: %w", err)
	}
	now := c.Now
	if now.IsZero() {
		now = time.Now()
	}
	jti := c.ID
	if jti == "" {
		jti = uuid.NewString()
	}
	public := jwt.Claims{
		Issuer:    i.issuer,
		Subject:   apiserversa.MakeUsername(c.Namespace, c.ServiceAccountName),
		Audience:  jwt.Audience(c.Audiences),
		Expiry:    jwt.NewNumericDate(now.Add(c.Expiration)),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        jti,
	}
	private := privateClaims{Kubernetes: &kubernetesClaims{
		Namespace:      c.Namespace,
		ServiceAccount: ref{Name: c.ServiceAccountName, UID: string(c.ServiceAccountUID)},
		Pod:            toRef(c.Pod),
		Secret:         toRef(c.Secret),
		Node:           toRef(c.Node),
	}}
	tok, err := jwt.Signed(i.signer).Claims(public).Claims(private).Serialize()
	if err != nil {
		return "", fmt.Errorf("serviceaccount: issue token: sign: %w", err)
	}
	return tok, nil
}
