// Package bootstrap authenticates bootstrap tokens: the short-lived
// "<id>.<secret>" bearer tokens a joining node presents before it has a
// client certificate (path P0). A token is valid while the Secret
// kube-system/bootstrap-token-<id> of type bootstrap.kubernetes.io/token
// holds the same secret, allows authentication and has not expired; its
// user is system:bootstrap:<id> in the group system:bootstrappers plus the
// Secret's extra groups.
//
// The package also provides Getter, the lister-backed object reader the
// token authenticators share.
package bootstrap

import (
	"context"
	"crypto/subtle"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	bootstrapsecrets "k8s.io/cluster-bootstrap/util/secrets"
)

// SecretGetter reads a Secret. It returns an error for which
// apierrors.IsNotFound is true when the Secret does not exist.
type SecretGetter interface {
	GetSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
}

type tokenAuthenticator struct {
	secrets SecretGetter
	now     func() time.Time
}

var _ authenticator.Token = (*tokenAuthenticator)(nil)

// New returns an authenticator of bootstrap tokens read through secrets.
//
// Strings that are not of the form [a-z0-9]{6}.[a-z0-9]{16} are not
// handled (nil, false, nil), so other authenticators can try them. A
// well-formed token that is not valid is rejected with an error that names
// the token ID (public) but never the secret.
func New(secrets SecretGetter) authenticator.Token {
	return &tokenAuthenticator{secrets: secrets, now: time.Now}
}

// AuthenticateToken implements authenticator.Token.
func (a *tokenAuthenticator) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	if !bootstraputil.IsValidBootstrapToken(token) {
		return nil, false, nil
	}
	id, secret, _ := strings.Cut(token, ".")
	name := bootstraputil.BootstrapTokenSecretName(id)

	s, err := a.secrets.GetSecret(ctx, metav1.NamespaceSystem, name)
	if apierrors.IsNotFound(err) {
		return nil, false, fmt.Errorf("bootstrap token %s: no such token", id)
	}
	if err != nil {
		return nil, false, fmt.Errorf("bootstrap token %s: read secret: %w", id, err)
	}
	if s.DeletionTimestamp != nil {
		return nil, false, fmt.Errorf("bootstrap token %s: secret is being deleted", id)
	}
	if s.Type != bootstrapapi.SecretTypeBootstrapToken {
		return nil, false, fmt.Errorf("bootstrap token %s: secret has type %q, want %q", id, s.Type, bootstrapapi.SecretTypeBootstrapToken)
	}
	want := s.Data[bootstrapapi.BootstrapTokenSecretKey]
	if subtle.ConstantTimeCompare(want, []byte(secret)) != 1 {
		return nil, false, fmt.Errorf("bootstrap token %s: wrong secret", id)
	}
	if got := bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenIDKey); got != id {
		return nil, false, fmt.Errorf("bootstrap token %s: secret holds token id %q", id, got)
	}
	if bootstrapsecrets.HasExpired(s, a.now()) {
		return nil, false, fmt.Errorf("bootstrap token %s: expired or unparseable %s", id, bootstrapapi.BootstrapTokenExpirationKey)
	}
	if bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenUsageAuthentication) != "true" {
		return nil, false, fmt.Errorf("bootstrap token %s: not allowed for authentication (%s is not \"true\")", id, bootstrapapi.BootstrapTokenUsageAuthentication)
	}
	groups, err := bootstrapsecrets.GetGroups(s)
	if err != nil {
		return nil, false, fmt.Errorf("bootstrap token %s: %w", id, err)
	}
	return &authenticator.Response{User: &user.DefaultInfo{
		Name:   bootstrapapi.BootstrapUserPrefix + id,
		Groups: groups,
	}}, true, nil
}
