package bootstrap

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// FuzzBootstrapToken feeds the bearer-token parser arbitrary strings, and
// the stored token with one byte replaced, against a store that holds one
// valid token and Secrets with odd contents. It must never panic, and only
// the exact valid token may authenticate.
func FuzzBootstrapToken(f *testing.F) {
	valid := tokenSecretObj()
	odd := tokenSecretObj()
	odd.Name = "bootstrap-token-zzzzzz"
	odd.Data = map[string][]byte{
		"token-id":                       []byte("zzzzzz"),
		"token-secret":                   []byte(""),
		"usage-bootstrap-authentication": []byte("true"),
		"expiration":                     []byte("\x00not a time"),
		"auth-extra-groups":              []byte(",,system:masters,\xff"),
	}
	noData := tokenSecretObj()
	noData.Name = "bootstrap-token-000000"
	noData.Data = nil
	wrongType := tokenSecretObj()
	wrongType.Name = "bootstrap-token-111111"
	wrongType.Type = corev1.SecretTypeOpaque
	store := secretMap{}
	for _, s := range []*corev1.Secret{valid, odd, noData, wrongType} {
		store[s.Namespace+"/"+s.Name] = s
	}
	a := &tokenAuthenticator{secrets: store, now: func() time.Time { return now }}
	if _, ok, err := a.AuthenticateToken(context.Background(), token); !ok {
		f.Fatalf("valid token rejected: %v", err)
	}

	for _, s := range []string{
		"", ".", "..", token, token + ".", "." + token, token + "\n", " " + token,
		strings.ToUpper(token), tokenID + ".", "." + tokenSecret,
		tokenID + "." + tokenSecret[:15], tokenID + "." + tokenSecret + "0",
		"zzzzzz.0123456789abcdef", "zzzzzz.", "000000.0123456789abcdef", "111111.0123456789abcdef",
		"abcdef.0123456789abcdeé", "abcdef\x00.0123456789abcdef", strings.Repeat("a", 1<<12),
		"eyJhbGciOiJFUzI1NiJ9.e30.sig", "Bearer " + token,
	} {
		f.Add(s, uint(0), byte(0))
	}
	f.Add(token, uint(6), byte('-'))
	f.Add(token, uint(0), byte('A'))
	f.Add(token, uint(len(token)-1), byte(0))

	f.Fuzz(func(t *testing.T, s string, pos uint, b byte) {
		check := func(tok string) {
			resp, ok, err := a.AuthenticateToken(context.Background(), tok)
			switch {
			case ok && tok != token:
				t.Fatalf("AuthenticateToken(%q) authenticated %v", tok, resp.User)
			case ok && (resp == nil || resp.User == nil || err != nil):
				t.Fatalf("AuthenticateToken(%q) = %v, %v, %v", tok, resp, ok, err)
			case !ok && resp != nil:
				t.Fatalf("AuthenticateToken(%q) returned a response without ok", tok)
			case err != nil && strings.Contains(err.Error(), tokenSecret):
				t.Fatalf("AuthenticateToken(%q) error %q contains the token secret", tok, err)
			}
		}
		check(s)
		// The valid token with one byte replaced.
		i := int(pos % uint(len(token)))
		if token[i] != b {
			check(token[:i] + string([]byte{b}) + token[i+1:])
		}
	})
}
