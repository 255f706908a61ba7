package volume

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	// Bounds and default of a projected token's requested lifetime, as in
	// the API's validation and defaulting.
	defaultTokenExpiration = 3600
	minTokenExpiration     = 600
	// maxTokenAge: a token is replaced after a day even if the server
	// granted it a longer life.
	maxTokenAge = 24 * time.Hour
	// tokenRetry is how long to wait after a failed refresh while the old
	// token is still valid.
	tokenRetry = 10 * time.Second
)

// tokenKey identifies one cached token: the same pod volume asking for the
// same audience and lifetime gets the same token until it is due.
type tokenKey struct {
	pod        types.UID
	volume     string
	audience   string
	expiration int64
}

// token is a cached service-account token.
type token struct {
	value     string
	expires   time.Time
	refreshAt time.Time // 80 % of its lifetime, or maxTokenAge
	retryAt   time.Time // after a failed refresh; zero otherwise
}

// dueAt is when the token should be replaced.
func (t *token) dueAt() time.Time {
	if t.retryAt.After(t.refreshAt) {
		return t.retryAt
	}
	return t.refreshAt
}

// serviceAccountToken returns a token for the projection src of volume
// volName of pod, from the cache unless it is due.
func (m *Manager) serviceAccountToken(ctx context.Context, pod *corev1.Pod, volName string, src *corev1.ServiceAccountTokenProjection) (string, error) {
	exp := int64(defaultTokenExpiration)
	if src.ExpirationSeconds != nil {
		exp = max(*src.ExpirationSeconds, minTokenExpiration)
	}
	key := tokenKey{pod: pod.UID, volume: volName, audience: src.Audience, expiration: exp}

	now := m.now()
	m.mu.Lock()
	cached := m.tokens[key]
	// retryAt only paces the refresh timer; a sync asks again.
	if cached != nil && now.Before(cached.refreshAt) {
		m.mu.Unlock()
		return cached.value, nil
	}
	m.mu.Unlock()

	saName := pod.Spec.ServiceAccountName
	if saName == "" {
		saName = "default"
	}
	req := &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &exp,
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind:       "Pod",
				APIVersion: "v1",
				Name:       pod.Name,
				UID:        pod.UID,
			},
		},
	}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	resp, err := m.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, saName, req, metav1.CreateOptions{})
	if err == nil {
		err = checkTokenResponse(resp, now)
	}
	if err != nil {
		err = fmt.Errorf("request token for serviceaccount %q: %w", saName, err)
		if cached != nil && now.Before(cached.expires) {
			// Keep serving the valid token; try again soon.
			m.log.Warn("refresh service account token; keeping the current one",
				"namespace", pod.Namespace, "name", pod.Name, "volume", volName, "err", err)
			m.mu.Lock()
			cached.retryAt = now.Add(tokenRetry)
			m.mu.Unlock()
			m.wake()
			return cached.value, nil
		}
		return "", err
	}

	expires := resp.Status.ExpirationTimestamp.Time
	lifetime := expires.Sub(now)
	refreshAt := now.Add(lifetime * 8 / 10)
	if limit := now.Add(maxTokenAge); refreshAt.After(limit) {
		refreshAt = limit
	}
	if floor := now.Add(time.Second); refreshAt.Before(floor) {
		// A token about to expire is still no reason to spin.
		refreshAt = floor
	}
	m.mu.Lock()
	m.tokens[key] = &token{value: resp.Status.Token, expires: expires, refreshAt: refreshAt}
	m.mu.Unlock()
	m.wake()
	m.log.Debug("service account token issued", "namespace", pod.Namespace, "name", pod.Name,
		"volume", volName, "expires", expires, "refresh_at", refreshAt)
	return resp.Status.Token, nil
}

func checkTokenResponse(resp *authenticationv1.TokenRequest, now time.Time) error {
	switch {
	case resp == nil || resp.Status.Token == "":
		return fmt.Errorf("the server returned no token")
	case !resp.Status.ExpirationTimestamp.Time.After(now):
		return fmt.Errorf("the server returned a token that expires at %s, not in the future",
			resp.Status.ExpirationTimestamp.Time.Format(time.RFC3339))
	}
	return nil
}

// nextTokenDue returns the earliest time a registered pod's token is due.
func (m *Manager) nextTokenDue() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	for key, t := range m.tokens {
		if _, ok := m.pods[key.pod]; !ok {
			continue
		}
		if d := t.dueAt(); next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next, !next.IsZero()
}

// dueTokenVolumes returns, per pod, the volumes holding a token due at now,
// and marks those tokens so a failing volume is not retried at once.
func (m *Manager) dueTokenVolumes(now time.Time) map[types.UID]map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	due := make(map[types.UID]map[string]bool)
	for key, t := range m.tokens {
		if _, ok := m.pods[key.pod]; !ok || now.Before(t.dueAt()) {
			continue
		}
		t.retryAt = now.Add(tokenRetry)
		if due[key.pod] == nil {
			due[key.pod] = make(map[string]bool)
		}
		due[key.pod][key.volume] = true
	}
	return due
}

// forgetTokens drops the cached tokens of a pod.
func (m *Manager) forgetTokens(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key := range m.tokens {
		if key.pod == uid {
			delete(m.tokens, key)
		}
	}
}
