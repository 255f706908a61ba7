package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// CreateToken creates a bootstrap token valid for ttl, usable for
// authentication and for signing cluster-info, and returns it as
// "<id>.<secret>". client must be allowed to create Secrets in kube-system
// (an administrator). The token's user is system:bootstrap:<id> in group
// system:bootstrappers, which may submit node client CSRs and nothing else.
func CreateToken(ctx context.Context, client kubernetes.Interface, ttl time.Duration, description string) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("bootstrap: create token: ttl %s is not positive", ttl)
	}
	token, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return "", fmt.Errorf("bootstrap: create token: %w", err)
	}
	id, secret, ok := strings.Cut(token, ".")
	if !ok {
		return "", errors.New("bootstrap: create token: generated token has no '.'")
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstraputil.BootstrapTokenSecretName(id), Namespace: metav1.NamespaceSystem},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			bootstrapapi.BootstrapTokenIDKey:               []byte(id),
			bootstrapapi.BootstrapTokenSecretKey:           []byte(secret),
			bootstrapapi.BootstrapTokenExpirationKey:       []byte(time.Now().Add(ttl).UTC().Format(time.RFC3339)),
			bootstrapapi.BootstrapTokenUsageAuthentication: []byte("true"),
			bootstrapapi.BootstrapTokenUsageSigningKey:     []byte("true"),
			bootstrapapi.BootstrapTokenDescriptionKey:      []byte(description),
		},
	}
	if _, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("bootstrap: create token %s: %w", id, err)
	}
	return token, nil
}
