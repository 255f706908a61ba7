package bootstrapsigner

import (
	"fmt"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	bootstrapsecrets "k8s.io/cluster-bootstrap/util/secrets"
)

// kubeconfig returns the kubeconfig published in cluster-info: one cluster
// with the server URL and the CA bundle, no users, no contexts. The cluster
// has the empty name, as kubeadm writes it, so that kubeadm-style clients
// that look for the unnamed cluster find it.
func kubeconfig(serverURL string, caPEM []byte) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[""] = &clientcmdapi.Cluster{
		Server:                   serverURL,
		CertificateAuthorityData: caPEM,
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return "", fmt.Errorf("encode cluster-info kubeconfig: %w", err)
	}
	return string(data), nil
}

// signingToken is a bootstrap token that may sign cluster-info.
type signingToken struct {
	id, secret string
	// expires is when the token stops being valid; zero if never.
	expires time.Time
}

// signingTokenFrom returns the token in s and whether it may sign
// cluster-info now: s is a bootstrap token Secret (by type and by its
// bootstrap-token-<id> name), not being deleted, its token-id matches the
// name, its id and secret are well formed, usage-bootstrap-signing is
// "true" and it has not expired (an unparseable expiration counts as
// expired). These are the checks upstream's signer makes, plus the format
// and deletion checks the token authenticator makes too.
func signingTokenFrom(s *corev1.Secret, now time.Time) (signingToken, bool) {
	if s.Type != bootstrapapi.SecretTypeBootstrapToken || s.DeletionTimestamp != nil {
		return signingToken{}, false
	}
	id, ok := bootstrapsecrets.ParseName(s.Name)
	if !ok || bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenIDKey) != id {
		return signingToken{}, false
	}
	secret := bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenSecretKey)
	if !bootstraputil.IsValidBootstrapToken(bootstraputil.TokenFromIDAndSecret(id, secret)) {
		return signingToken{}, false
	}
	if bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenUsageSigningKey) != "true" {
		return signingToken{}, false
	}
	remaining, expired := bootstrapsecrets.GetExpiration(s, now)
	if expired {
		return signingToken{}, false
	}
	t := signingToken{id: id, secret: secret}
	if remaining > 0 {
		t.expires = now.Add(remaining)
	}
	return t, true
}

// desiredData returns the data cluster-info should hold: the keys of
// current that are neither the kubeconfig nor a signature (kept as they
// are), the kubeconfig content, and one detached JWS of content per token.
func desiredData(current map[string]string, content string, tokens []signingToken) (map[string]string, error) {
	out := make(map[string]string, len(tokens)+1)
	for k, v := range maps.All(current) {
		if k != bootstrapapi.KubeConfigKey && !strings.HasPrefix(k, bootstrapapi.JWSSignatureKeyPrefix) {
			out[k] = v
		}
	}
	out[bootstrapapi.KubeConfigKey] = content
	for _, t := range tokens {
		sig, err := jws.ComputeDetachedSignature(content, t.id, t.secret)
		if err != nil {
			// Names the token ID (public), never the secret.
			return nil, fmt.Errorf("sign cluster-info with bootstrap token %s: %w", t.id, err)
		}
		out[bootstrapapi.JWSSignatureKeyPrefix+t.id] = sig
	}
	return out, nil
}
