package bootstrap

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
)

const (
	tokenID     = "abcdef"
	tokenSecret = "0123456789abcdef"
	token       = tokenID + "." + tokenSecret
)

var now = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)

type secretMap map[string]*corev1.Secret

func (m secretMap) GetSecret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	if s, ok := m[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
}

func tokenSecretObj() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "bootstrap-token-" + tokenID},
		Type:       "bootstrap.kubernetes.io/token",
		Data: map[string][]byte{
			"token-id":                       []byte(tokenID),
			"token-secret":                   []byte(tokenSecret),
			"usage-bootstrap-authentication": []byte("true"),
			"expiration":                     []byte(now.Add(time.Hour).Format(time.RFC3339)),
		},
	}
}

func TestAuthenticateToken(t *testing.T) {
	tests := []struct {
		name    string
		token   string
		change  func(s *corev1.Secret) // nil secret: no secret stored
		handled bool
		groups  []string
	}{
		{name: "valid", token: token, change: func(*corev1.Secret) {}, handled: true, groups: []string{"system:bootstrappers"}},
		{
			name: "extra groups", token: token, handled: true,
			change: func(s *corev1.Secret) {
				s.Data["auth-extra-groups"] = []byte("system:bootstrappers:tether:nodes,system:bootstrappers:worker")
			},
			groups: []string{"system:bootstrappers", "system:bootstrappers:tether:nodes", "system:bootstrappers:worker"},
		},
		{
			name: "no expiration", token: token, handled: true,
			change: func(s *corev1.Secret) { delete(s.Data, "expiration") },
			groups: []string{"system:bootstrappers"},
		},
		{name: "wrong secret", token: tokenID + ".0123456789abcdee", change: func(*corev1.Secret) {}, handled: true},
		{name: "no such token", token: token, handled: true},
		{name: "expired", token: token, handled: true, change: func(s *corev1.Secret) {
			s.Data["expiration"] = []byte(now.Add(-time.Second).Format(time.RFC3339))
		}},
		{name: "unparseable expiration", token: token, handled: true, change: func(s *corev1.Secret) {
			s.Data["expiration"] = []byte("tomorrow")
		}},
		{name: "usage not allowed", token: token, handled: true, change: func(s *corev1.Secret) {
			delete(s.Data, "usage-bootstrap-authentication")
		}},
		{name: "usage not true", token: token, handled: true, change: func(s *corev1.Secret) {
			s.Data["usage-bootstrap-authentication"] = []byte("yes")
		}},
		{name: "being deleted", token: token, handled: true, change: func(s *corev1.Secret) {
			s.DeletionTimestamp = &metav1.Time{Time: now}
		}},
		{name: "wrong type", token: token, handled: true, change: func(s *corev1.Secret) {
			s.Type = corev1.SecretTypeOpaque
		}},
		{name: "token id mismatch", token: token, handled: true, change: func(s *corev1.Secret) {
			s.Data["token-id"] = []byte("zzzzzz")
		}},
		{name: "no token secret", token: token, handled: true, change: func(s *corev1.Secret) {
			delete(s.Data, "token-secret")
		}},
		{name: "invalid extra group", token: token, handled: true, change: func(s *corev1.Secret) {
			s.Data["auth-extra-groups"] = []byte("system:bootstrappers:ok,system:masters")
		}},
		{name: "upper case", token: "ABCDEF.0123456789ABCDEF", change: func(*corev1.Secret) {}},
		{name: "too short", token: "abcdef.0123456789abcde", change: func(*corev1.Secret) {}},
		{name: "JWT", token: "eyJh.eyJp.c2ln", change: func(*corev1.Secret) {}},
		{name: "empty", token: "", change: func(*corev1.Secret) {}},
		{name: "trailing newline", token: token + "\n", change: func(*corev1.Secret) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secrets := secretMap{}
			if tt.change != nil {
				s := tokenSecretObj()
				tt.change(s)
				secrets["kube-system/bootstrap-token-"+tokenID] = s
			}
			a := &tokenAuthenticator{secrets: secrets, now: func() time.Time { return now }}
			resp, ok, err := a.AuthenticateToken(t.Context(), tt.token)
			if wantOK := tt.groups != nil; ok != wantOK {
				t.Fatalf("AuthenticateToken(%q) ok = %v (err %v), want %v", tt.token, ok, err, wantOK)
			}
			if handled := ok || err != nil; handled != tt.handled {
				t.Fatalf("AuthenticateToken(%q) handled = %v (err %v), want %v", tt.token, handled, err, tt.handled)
			}
			if err != nil && strings.Contains(err.Error(), tokenSecret) {
				t.Errorf("error %q contains the token secret", err)
			}
			if !ok {
				return
			}
			want := &user.DefaultInfo{Name: "system:bootstrap:" + tokenID, Groups: tt.groups}
			if !reflect.DeepEqual(resp.User, want) {
				t.Errorf("user = %#v, want %#v", resp.User, want)
			}
		})
	}
}

func TestNewUsesTheClock(t *testing.T) {
	s := tokenSecretObj()
	s.Data["expiration"] = []byte(time.Now().Add(-time.Minute).Format(time.RFC3339))
	if _, ok, err := New(secretMap{"kube-system/bootstrap-token-" + tokenID: s}).AuthenticateToken(t.Context(), token); ok || err == nil {
		t.Errorf("expired token: ok = %v, err = %v; want rejected", ok, err)
	}
}
