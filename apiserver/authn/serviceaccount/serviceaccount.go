// Package serviceaccount issues and checks bound service-account tokens: the
// ES256-signed JWTs that pods present to the API server (path P3) and that
// the TokenRequest API (serviceaccounts/token) hands out. A token names its
// service account and, optionally, the pod, secret or node it is bound to;
// it stops working when it expires or when one of those objects is gone or
// has been replaced by another with the same name.
//
// The package also serves the OIDC discovery documents
// (/.well-known/openid-configuration and /openid/v1/jwks) that let other
// parties verify the tokens with the public keys alone.
//
// The token format and the checks follow upstream Kubernetes, so that
// client libraries and external verifiers that understand Kubernetes
// tokens understand tether's. Legacy (secret-based, non-expiring) tokens
// are not supported.
package serviceaccount

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Leeway is the clock skew tolerated when checking a token's exp, nbf and
// iat claims. An object a token is bound to stays acceptable for Leeway
// after its deletionTimestamp, as upstream.
const Leeway = time.Minute

// ObjectGetter reads the objects a token may be bound to. Implementations
// return an error for which k8s.io/apimachinery/pkg/api/errors.IsNotFound
// is true when the object does not exist.
type ObjectGetter interface {
	GetServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error)
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	GetSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	GetNode(ctx context.Context, name string) (*corev1.Node, error)
}

// ObjectRef names an object a token is bound to.
type ObjectRef struct {
	Name string
	UID  types.UID
}

// Claims describes a token to issue.
type Claims struct {
	// Namespace, ServiceAccountName and ServiceAccountUID name the service
	// account; all are required.
	Namespace          string
	ServiceAccountName string
	ServiceAccountUID  types.UID
	// Audiences are the token's aud claim; at least one is required.
	Audiences []string
	// Expiration is how long the token is valid from Now; it must be
	// positive. Limits on it are the caller's policy.
	Expiration time.Duration

	// Pod binds the token to a pod; Node may then name the node the pod
	// runs on, for information only (its UID may be empty).
	Pod *ObjectRef
	// Secret binds the token to a secret; it cannot be combined with Pod
	// or Node.
	Secret *ObjectRef
	// Node without Pod binds the token to a node; the UID is then
	// required.
	Node *ObjectRef

	// ID is the jti claim. If empty, a random UUID is used.
	ID string
	// Now is the issue time. If zero, time.Now() is used.
	Now time.Time
}

func (c *Claims) validate() error {
	var errs []error
	if c.Namespace == "" {
		errs = append(errs, errors.New("namespace is required"))
	}
	if c.ServiceAccountName == "" {
		errs = append(errs, errors.New("service account name is required"))
	}
	if c.ServiceAccountUID == "" {
		errs = append(errs, errors.New("service account uid is required"))
	}
	if len(c.Audiences) == 0 {
		errs = append(errs, errors.New("at least one audience is required"))
	}
	for _, a := range c.Audiences {
		if a == "" {
			errs = append(errs, errors.New("audiences may not be empty strings"))
			break
		}
	}
	if c.Expiration <= 0 {
		errs = append(errs, fmt.Errorf("expiration %v is not positive", c.Expiration))
	}
	if c.Secret != nil && (c.Pod != nil || c.Node != nil) {
		errs = append(errs, errors.New("a token bound to a secret cannot also be bound to a pod or node"))
	}
	for _, r := range []struct {
		kind       string
		ref        *ObjectRef
		requireUID bool
	}{
		{"pod", c.Pod, true},
		{"secret", c.Secret, true},
		{"node", c.Node, c.Pod == nil},
	} {
		if r.ref == nil {
			continue
		}
		if r.ref.Name == "" {
			errs = append(errs, fmt.Errorf("bound %s name is required", r.kind))
		}
		if r.requireUID && r.ref.UID == "" {
			errs = append(errs, fmt.Errorf("bound %s uid is required", r.kind))
		}
	}
	return errors.Join(errs...)
}

// KeyID returns the key ID of a public key as upstream computes it: the
// unpadded base64url encoding of the SHA-256 of its DER (PKIX) form. Tokens
// carry it in the kid header and the JWKS document lists it.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	if pub == nil {
		return "", errors.New("serviceaccount: nil public key")
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("serviceaccount: key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// checkCurve reports whether pub is a P-256 key, the only curve ES256 uses.
func checkCurve(pub *ecdsa.PublicKey) error {
	if pub == nil {
		return errors.New("nil key")
	}
	if pub.Curve != elliptic.P256() {
		return fmt.Errorf("key is on curve %s, want P-256 for ES256", pub.Curve.Params().Name)
	}
	return nil
}

// privateClaims is the kubernetes.io claim, as upstream serializes it.
type privateClaims struct {
	Kubernetes *kubernetesClaims `json:"kubernetes.io,omitempty"`
}

type kubernetesClaims struct {
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount ref    `json:"serviceaccount"`
	Pod            *ref   `json:"pod,omitempty"`
	Secret         *ref   `json:"secret,omitempty"`
	Node           *ref   `json:"node,omitempty"`
}

type ref struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

func toRef(r *ObjectRef) *ref {
	if r == nil {
		return nil
	}
	return &ref{Name: r.Name, UID: string(r.UID)}
}
