package serviceaccount

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
)

const testIssuer = "https://kubernetes.default.svc.cluster.local"

var (
	// issuedAt is when test tokens are issued; the authenticator's clock
	// reads checkTime unless a test says otherwise.
	issuedAt  = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	checkTime = issuedAt.Add(5 * time.Minute)
)

// fakeGetter serves objects from maps keyed by "namespace/name" (nodes by
// name). Its zero value holds nothing.
type fakeGetter struct {
	sas     map[string]*corev1.ServiceAccount
	pods    map[string]*corev1.Pod
	secrets map[string]*corev1.Secret
	nodes   map[string]*corev1.Node
}

func (g *fakeGetter) GetServiceAccount(_ context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	if o, ok := g.sas[ns+"/"+name]; ok {
		return o, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("serviceaccounts"), name)
}

func (g *fakeGetter) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	if o, ok := g.pods[ns+"/"+name]; ok {
		return o, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("pods"), name)
}

func (g *fakeGetter) GetSecret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	if o, ok := g.secrets[ns+"/"+name]; ok {
		return o, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
}

func (g *fakeGetter) GetNode(_ context.Context, name string) (*corev1.Node, error) {
	if o, ok := g.nodes[name]; ok {
		return o, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("nodes"), name)
}

func meta(ns, name, uid string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)}
}

// world returns a getter holding service account default/app, pod
// default/web on node n1, secret default/s and node n1.
func world() *fakeGetter {
	return &fakeGetter{
		sas: map[string]*corev1.ServiceAccount{
			"default/app": {ObjectMeta: meta("default", "app", "sa-uid")},
		},
		pods: map[string]*corev1.Pod{
			"default/web": {ObjectMeta: meta("default", "web", "pod-uid"), Spec: corev1.PodSpec{ServiceAccountName: "app", NodeName: "n1"}},
		},
		secrets: map[string]*corev1.Secret{
			"default/s": {ObjectMeta: meta("default", "s", "secret-uid")},
		},
		nodes: map[string]*corev1.Node{
			"n1": {ObjectMeta: meta("", "n1", "node-uid")},
		},
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newIssuer(t testing.TB, k *ecdsa.PrivateKey) *Issuer {
	t.Helper()
	iss, err := NewIssuer(k, testIssuer)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func podClaims() Claims {
	return Claims{
		Namespace:          "default",
		ServiceAccountName: "app",
		ServiceAccountUID:  "sa-uid",
		Audiences:          []string{"https://kubernetes.default.svc", "vault"},
		Expiration:         time.Hour,
		Pod:                &ObjectRef{Name: "web", UID: "pod-uid"},
		Node:               &ObjectRef{Name: "n1", UID: "node-uid"},
		ID:                 "0b4c6c8e-1f0e-4a57-9d7a-3f1f4a1c2b3d",
		Now:                issuedAt,
	}
}

func issue(t testing.TB, iss *Issuer, c Claims) string {
	t.Helper()
	tok, err := iss.Issue(c)
	if err != nil {
		t.Fatalf("Issue(%+v) = %v", c, err)
	}
	return tok
}

func newAuth(k *ecdsa.PrivateKey, g ObjectGetter, now time.Time) authenticator.Token {
	return NewAuthenticator(AuthenticatorConfig{
		Keys:      []*ecdsa.PublicKey{&k.PublicKey},
		Issuer:    testIssuer,
		Audiences: []string{"https://kubernetes.default.svc"},
		Getter:    g,
		Now:       func() time.Time { return now },
	})
}

// rawToken builds a compact JWS from a header and claims, with sig as the
// raw signature bytes.
func rawToken(header, claims map[string]any, sign func(input string) []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign(input))
}

func payloadOf(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestIssueClaims(t *testing.T) {
	k := newKey(t)
	iss := newIssuer(t, k)
	tok := issue(t, iss, podClaims())

	parts := strings.Split(tok, ".")
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var header map[string]any
	if err := json.Unmarshal(hb, &header); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	sum := sha256.Sum256(der)
	wantKID := base64.RawURLEncoding.EncodeToString(sum[:])
	if header["alg"] != "ES256" || header["kid"] != wantKID || header["typ"] != "JWT" {
		t.Errorf("header = %v, want alg ES256, typ JWT, kid %s", header, wantKID)
	}
	if iss.KeyID() != wantKID {
		t.Errorf("KeyID() = %q, want %q", iss.KeyID(), wantKID)
	}

	got := payloadOf(t, tok)
	want := map[string]any{
		"iss": testIssuer,
		"sub": "system:serviceaccount:default:app",
		"aud": []any{"https://kubernetes.default.svc", "vault"},
		"iat": float64(issuedAt.Unix()),
		"nbf": float64(issuedAt.Unix()),
		"exp": float64(issuedAt.Add(time.Hour).Unix()),
		"jti": "0b4c6c8e-1f0e-4a57-9d7a-3f1f4a1c2b3d",
		"kubernetes.io": map[string]any{
			"namespace":      "default",
			"serviceaccount": map[string]any{"name": "app", "uid": "sa-uid"},
			"pod":            map[string]any{"name": "web", "uid": "pod-uid"},
			"node":           map[string]any{"name": "n1", "uid": "node-uid"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("claims = %v\nwant %v", got, want)
	}

	// Without an ID a fresh UUID is used each time.
	c := podClaims()
	c.ID = ""
	a, b := payloadOf(t, issue(t, iss, c))["jti"], payloadOf(t, issue(t, iss, c))["jti"]
	if s, _ := a.(string); len(s) != 36 || a == b {
		t.Errorf("random jti = %v then %v, want two different UUIDs", a, b)
	}
}

func TestIssueRejectsBadClaims(t *testing.T) {
	iss := newIssuer(t, newKey(t))
	tests := []struct {
		name   string
		change func(c *Claims)
	}{
		{"no namespace", func(c *Claims) { c.Namespace = "" }},
		{"no name", func(c *Claims) { c.ServiceAccountName = "" }},
		{"no uid", func(c *Claims) { c.ServiceAccountUID = "" }},
		{"no audiences", func(c *Claims) { c.Audiences = nil }},
		{"empty audience", func(c *Claims) { c.Audiences = []string{"a", ""} }},
		{"zero expiration", func(c *Claims) { c.Expiration = 0 }},
		{"secret and pod", func(c *Claims) { c.Secret = &ObjectRef{Name: "s", UID: "u"} }},
		{"pod without uid", func(c *Claims) { c.Pod.UID = "" }},
		{"node-bound without uid", func(c *Claims) { c.Pod = nil; c.Node.UID = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := podClaims()
			tt.change(&c)
			if tok, err := iss.Issue(c); err == nil {
				t.Errorf("Issue(%+v) = %q, want an error", c, tok)
			}
		})
	}
}

func TestNewIssuerRejectsBadKeys(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewIssuer(p384, testIssuer); err == nil {
		t.Error("NewIssuer(P-384 key) succeeded, want an error")
	}
	if _, err := NewIssuer(nil, testIssuer); err == nil {
		t.Error("NewIssuer(nil) succeeded, want an error")
	}
	if _, err := NewIssuer(newKey(t), ""); err == nil {
		t.Error(`NewIssuer(key, "") succeeded, want an error`)
	}
}

func TestAuthenticateToken(t *testing.T) {
	k := newKey(t)
	iss := newIssuer(t, k)
	other := newIssuer(t, newKey(t))
	podToken := issue(t, iss, podClaims())

	claimsWith := func(change func(c *Claims)) Claims {
		c := podClaims()
		change(&c)
		return c
	}
	signedPayload := payloadOf(t, podToken)

	tests := []struct {
		name    string
		token   string
		getter  func(g *fakeGetter)
		now     time.Time
		ctxAuds authenticator.Audiences
		// handled is false when the token must be left to others.
		handled bool
		ok      bool
		user    *user.DefaultInfo
		auds    authenticator.Audiences
	}{
		{
			name:    "valid pod-bound token",
			token:   podToken,
			handled: true, ok: true,
			user: &user.DefaultInfo{
				Name:   "system:serviceaccount:default:app",
				UID:    "sa-uid",
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:default"},
				Extra: map[string][]string{
					"authentication.kubernetes.io/pod-name":      {"web"},
					"authentication.kubernetes.io/pod-uid":       {"pod-uid"},
					"authentication.kubernetes.io/node-name":     {"n1"},
					"authentication.kubernetes.io/node-uid":      {"node-uid"},
					"authentication.kubernetes.io/credential-id": {"JTI=0b4c6c8e-1f0e-4a57-9d7a-3f1f4a1c2b3d"},
				},
			},
			auds: authenticator.Audiences{"https://kubernetes.default.svc"},
		},
		{
			name: "valid service-account-only token",
			token: issue(t, iss, claimsWith(func(c *Claims) {
				c.Pod, c.Node, c.ID = nil, nil, "jti-1"
			})),
			handled: true, ok: true,
			user: &user.DefaultInfo{
				Name:   "system:serviceaccount:default:app",
				UID:    "sa-uid",
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:default"},
				Extra:  map[string][]string{"authentication.kubernetes.io/credential-id": {"JTI=jti-1"}},
			},
			auds: authenticator.Audiences{"https://kubernetes.default.svc"},
		},
		{
			name:    "request audiences from the context",
			token:   podToken,
			ctxAuds: authenticator.Audiences{"vault", "other"},
			handled: true, ok: true,
			auds: authenticator.Audiences{"vault"},
		},
		{
			name:    "wrong audience",
			token:   issue(t, iss, claimsWith(func(c *Claims) { c.Audiences = []string{"vault"} })),
			handled: true,
		},
		{
			name:    "wrong audience in the context",
			token:   podToken,
			ctxAuds: authenticator.Audiences{"other"},
			handled: true,
		},
		{
			name:    "signed by another key",
			token:   issue(t, other, podClaims()),
			handled: true,
		},
		{
			name:    "expired",
			token:   podToken,
			now:     issuedAt.Add(time.Hour + Leeway + time.Second),
			handled: true,
		},
		{
			name:    "expired within leeway",
			token:   podToken,
			now:     issuedAt.Add(time.Hour + Leeway - time.Second),
			handled: true, ok: true,
		},
		{
			name:    "not yet valid",
			token:   podToken,
			now:     issuedAt.Add(-Leeway - time.Second),
			handled: true,
		},
		{
			name:    "not yet valid within leeway",
			token:   podToken,
			now:     issuedAt.Add(-Leeway + time.Second),
			handled: true, ok: true,
		},
		{
			name:    "pod deleted",
			token:   podToken,
			getter:  func(g *fakeGetter) { delete(g.pods, "default/web") },
			handled: true,
		},
		{
			name:  "pod terminating for longer than the leeway",
			token: podToken,
			getter: func(g *fakeGetter) {
				g.pods["default/web"].DeletionTimestamp = &metav1.Time{Time: checkTime.Add(-Leeway - time.Second)}
			},
			handled: true,
		},
		{
			name:  "pod in its termination grace period",
			token: podToken,
			getter: func(g *fakeGetter) {
				g.pods["default/web"].DeletionTimestamp = &metav1.Time{Time: checkTime.Add(30 * time.Second)}
			},
			handled: true, ok: true,
		},
		{
			name:    "pod recreated with a new uid",
			token:   podToken,
			getter:  func(g *fakeGetter) { g.pods["default/web"].UID = "pod-uid-2" },
			handled: true,
		},
		{
			name:    "service account deleted",
			token:   podToken,
			getter:  func(g *fakeGetter) { delete(g.sas, "default/app") },
			handled: true,
		},
		{
			name:    "service account recreated with a new uid",
			token:   podToken,
			getter:  func(g *fakeGetter) { g.sas["default/app"].UID = "sa-uid-2" },
			handled: true,
		},
		{
			name:    "node of a pod-bound token gone: still valid",
			token:   podToken,
			getter:  func(g *fakeGetter) { delete(g.nodes, "n1") },
			handled: true, ok: true,
		},
		{
			name: "secret-bound token",
			token: issue(t, iss, claimsWith(func(c *Claims) {
				c.Pod, c.Node, c.Secret = nil, nil, &ObjectRef{Name: "s", UID: "secret-uid"}
			})),
			handled: true, ok: true,
		},
		{
			name: "secret-bound token, secret deleted",
			token: issue(t, iss, claimsWith(func(c *Claims) {
				c.Pod, c.Node, c.Secret = nil, nil, &ObjectRef{Name: "s", UID: "secret-uid"}
			})),
			getter:  func(g *fakeGetter) { delete(g.secrets, "default/s") },
			handled: true,
		},
		{
			name:    "node-bound token",
			token:   issue(t, iss, claimsWith(func(c *Claims) { c.Pod = nil })),
			handled: true, ok: true,
		},
		{
			name:    "node-bound token, node recreated",
			token:   issue(t, iss, claimsWith(func(c *Claims) { c.Pod = nil })),
			getter:  func(g *fakeGetter) { g.nodes["n1"].UID = "node-uid-2" },
			handled: true,
		},
		{
			name: "alg none",
			token: rawToken(map[string]any{"alg": "none", "typ": "JWT"}, signedPayload,
				func(string) []byte { return nil }),
			handled: true,
		},
		{
			name: "alg none with a signature",
			token: rawToken(map[string]any{"alg": "none", "typ": "JWT"}, signedPayload,
				func(string) []byte { return []byte("not empty") }),
			handled: true,
		},
		{
			name: "HS256 keyed with the public key",
			token: rawToken(map[string]any{"alg": "HS256", "typ": "JWT"}, signedPayload, func(input string) []byte {
				der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
				m := hmac.New(sha256.New, der)
				m.Write([]byte(input))
				return m.Sum(nil)
			}),
			handled: true,
		},
		{
			name:    "non-canonical base64 in the signature",
			token:   podToken + "\n",
			handled: true,
		},
		{name: "not a JWT", token: "abcdef.0123456789abcdef"},
		{name: "empty", token: ""},
		{name: "garbage with dots", token: "a.b.c"},
		{
			name:  "JWT of another issuer",
			token: newIssuerNamed(t, "https://accounts.example.com").mustIssue(t, podClaims()),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := world()
			if tt.getter != nil {
				tt.getter(g)
			}
			now := tt.now
			if now.IsZero() {
				now = checkTime
			}
			ctx := t.Context()
			if tt.ctxAuds != nil {
				ctx = authenticator.WithAudiences(ctx, tt.ctxAuds)
			}
			resp, ok, err := newAuth(k, g, now).AuthenticateToken(ctx, tt.token)
			if ok != tt.ok {
				t.Fatalf("AuthenticateToken() ok = %v (err %v), want %v", ok, err, tt.ok)
			}
			if handled := ok || err != nil; handled != tt.handled {
				t.Fatalf("AuthenticateToken() handled = %v (err %v), want %v", handled, err, tt.handled)
			}
			if err != nil && strings.Contains(err.Error(), strings.TrimSpace(tt.token)) && tt.token != "" {
				t.Errorf("error %q contains the token", err)
			}
			if !ok {
				if resp != nil {
					t.Errorf("AuthenticateToken() = %+v, want nil response when not ok", resp)
				}
				return
			}
			if tt.user != nil && !reflect.DeepEqual(resp.User, tt.user) {
				t.Errorf("user = %#v\nwant %#v", resp.User, tt.user)
			}
			if tt.auds != nil && !reflect.DeepEqual(resp.Audiences, tt.auds) {
				t.Errorf("audiences = %v, want %v", resp.Audiences, tt.auds)
			}
		})
	}
}

type namedIssuer struct{ *Issuer }

func newIssuerNamed(t testing.TB, name string) namedIssuer {
	t.Helper()
	iss, err := NewIssuer(newKey(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return namedIssuer{iss}
}

func (n namedIssuer) mustIssue(t testing.TB, c Claims) string { return issue(t, n.Issuer, c) }

func TestAuthenticateTokenKeyRotation(t *testing.T) {
	oldKey, newKey := newKey(t), newKey(t)
	tok := issue(t, newIssuer(t, oldKey), podClaims())
	a := NewAuthenticator(AuthenticatorConfig{
		Keys:      []*ecdsa.PublicKey{&newKey.PublicKey, &oldKey.PublicKey},
		Issuer:    testIssuer,
		Audiences: []string{"vault"},
		Getter:    world(),
		Now:       func() time.Time { return checkTime },
	})
	if _, ok, err := a.AuthenticateToken(t.Context(), tok); !ok {
		t.Errorf("token of the old key: ok = false (err %v), want true", err)
	}
}

func TestAuthenticateTokenErrorsAreWrapped(t *testing.T) {
	k := newKey(t)
	tok := issue(t, newIssuer(t, k), podClaims())
	g := world()
	delete(g.sas, "default/app")
	_, _, err := newAuth(k, g, checkTime).AuthenticateToken(t.Context(), tok)
	if !errors.Is(err, errInvalidated) || !apierrors.IsNotFound(err) {
		t.Errorf("err = %v, want invalidated and not found", err)
	}
}

// TestMutatedTokensRejected changes every character of a valid token, one
// at a time, and checks that no variant authenticates.
func TestMutatedTokensRejected(t *testing.T) {
	k := newKey(t)
	tok := issue(t, newIssuer(t, k), podClaims())
	a := newAuth(k, world(), checkTime)
	const alphabet = "A_-0z."
	for i := range len(tok) {
		for _, c := range []byte(alphabet) {
			if tok[i] == c {
				continue
			}
			m := tok[:i] + string(c) + tok[i+1:]
			if resp, ok, _ := a.AuthenticateToken(t.Context(), m); ok {
				t.Fatalf("token with byte %d set to %q authenticated as %v", i, c, resp.User)
			}
		}
	}
}

func FuzzAuthenticateToken(f *testing.F) {
	k := newKey(f)
	valid := issue(f, newIssuer(f, k), podClaims())
	a := newAuth(k, world(), checkTime)
	if _, ok, err := a.AuthenticateToken(context.Background(), valid); !ok {
		f.Fatalf("valid token rejected: %v", err)
	}
	f.Add("", uint(0), byte(0))
	f.Add("abcdef.0123456789abcdef", uint(0), byte(0))
	f.Add("a.b.c", uint(0), byte(0))
	f.Add(valid, uint(0), byte('x'))
	f.Add(valid, uint(len(valid)/2), byte('A'))
	f.Add(valid, uint(len(valid)-1), byte('_'))
	f.Add(strings.Split(valid, ".")[0]+"..", uint(3), byte('.'))
	f.Fuzz(func(t *testing.T, s string, pos uint, b byte) {
		check := func(tok string) {
			resp, ok, err := a.AuthenticateToken(context.Background(), tok)
			switch {
			case ok && tok != valid:
				t.Fatalf("AuthenticateToken(%q) authenticated %v", tok, resp.User)
			case ok && (resp == nil || resp.User == nil || err != nil):
				t.Fatalf("AuthenticateToken(%q) = %v, %v, %v", tok, resp, ok, err)
			case !ok && resp != nil:
				t.Fatalf("AuthenticateToken(%q) returned a response without ok", tok)
			}
		}
		check(s)
		// The valid token with one byte replaced.
		i := int(pos % uint(len(valid)))
		if valid[i] != b {
			check(valid[:i] + string([]byte{b}) + valid[i+1:])
		}
	})
}
