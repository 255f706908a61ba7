package serviceaccount

import (
	"crypto/ecdsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func TestDiscoveryHandlers(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	keys := []*ecdsa.PublicKey{&k1.PublicKey, &k2.PublicKey, &k1.PublicKey}
	config, jwks, err := DiscoveryHandlers(testIssuer, "https://10.0.0.1:6443/", keys)
	if err != nil {
		t.Fatal(err)
	}

	get := func(h http.Handler, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s = %d, want 200", path, rec.Code)
		}
		if got := rec.Header().Get("Cache-Control"); got != "public, max-age=3600" {
			t.Errorf("GET %s Cache-Control = %q, want public, max-age=3600", path, got)
		}
		return rec
	}

	rec := get(config, OpenIDConfigPath)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("config Content-Type = %q, want application/json", ct)
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	wantDoc := map[string]any{
		"issuer":                                testIssuer,
		"jwks_uri":                              "https://10.0.0.1:6443/openid/v1/jwks",
		"response_types_supported":              []any{"id_token"},
		"subject_types_supported":               []any{"public"},
		"id_token_signing_alg_values_supported": []any{"ES256"},
	}
	if !reflect.DeepEqual(doc, wantDoc) {
		t.Errorf("config = %v\nwant %v", doc, wantDoc)
	}

	rec = get(jwks, JWKSPath)
	if ct := rec.Header().Get("Content-Type"); ct != "application/jwk-set+json" {
		t.Errorf("jwks Content-Type = %q, want application/jwk-set+json", ct)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 {
		t.Fatalf("jwks has %d keys, want 2 (duplicates dropped)", len(set.Keys))
	}
	for i, k := range []*ecdsa.PrivateKey{k1, k2} {
		got := set.Keys[i]
		kid, _ := KeyID(&k.PublicKey)
		pub, ok := got.Key.(*ecdsa.PublicKey)
		if got.KeyID != kid || got.Algorithm != "ES256" || got.Use != "sig" || !ok || !pub.Equal(&k.PublicKey) {
			t.Errorf("key %d = kid %q alg %q use %q key %T, want kid %q, ES256, sig and the public key", i, got.KeyID, got.Algorithm, got.Use, got.Key, kid)
		}
	}
	// A token verifies with the published key (as an external party would).
	tok := issue(t, newIssuer(t, k2), podClaims())
	parsed, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if keys := set.Key(parsed.Signatures[0].Header.KeyID); len(keys) != 1 {
		t.Fatalf("jwks has %d keys for the token's kid, want 1", len(keys))
	} else if _, err := parsed.Verify(keys[0].Key); err != nil {
		t.Errorf("token does not verify with the published key: %v", err)
	}

	post := httptest.NewRecorder()
	jwks.ServeHTTP(post, httptest.NewRequest(http.MethodPost, JWKSPath, nil))
	if post.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST %s = %d, want 405", JWKSPath, post.Code)
	}
}

func TestDiscoveryHandlersRejectsBadInput(t *testing.T) {
	k := newKey(t)
	keys := []*ecdsa.PublicKey{&k.PublicKey}
	tests := []struct {
		name, issuer, url string
		keys              []*ecdsa.PublicKey
	}{
		{"http issuer", "http://kubernetes.default.svc", "https://a:6443", keys},
		{"not a URL issuer", "kubernetes", "https://a:6443", keys},
		{"http external URL", testIssuer, "http://a:6443", keys},
		{"query in external URL", testIssuer, "https://a:6443?x=1", keys},
		{"no keys", testIssuer, "https://a:6443", nil},
		{"nil key", testIssuer, "https://a:6443", []*ecdsa.PublicKey{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := DiscoveryHandlers(tt.issuer, tt.url, tt.keys); err == nil {
				t.Errorf("DiscoveryHandlers(%q, %q, %d keys) succeeded, want an error", tt.issuer, tt.url, len(tt.keys))
			}
		})
	}
}
