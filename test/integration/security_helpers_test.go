package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"tether/pki"
	"tether/test/framework"
)

// identity is one of the clients of the security matrix: a name for the
// subtest names and the client configuration that presents its
// credentials.
type identity struct {
	name   string
	cfg    *rest.Config
	client *http.Client
}

// newIdentity builds the HTTP client of cfg once, so that every request of
// the identity reuses its connections.
func newIdentity(t testing.TB, name string, cfg *rest.Config) *identity {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatalf("identity %s: rest.HTTPClientFor: %v", name, err)
	}
	return &identity{name: name, cfg: cfg, client: hc}
}

// do sends one request as the identity and returns the status code and
// body. body, if not empty, is sent with contentType (JSON if empty).
func (id *identity) do(ctx context.Context, method, path, contentType, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(id.cfg.Host, "/")+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != "" {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := id.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// anonymousConfig trusts the cluster's server CA and presents no
// credentials.
func anonymousConfig(c *framework.Cluster) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.ControlPlane.PKI().ServerCA.CertPEM()},
		QPS:             -1,
	}
}

// tokenConfig presents a bearer token.
func tokenConfig(c *framework.Cluster, token string) *rest.Config {
	cfg := anonymousConfig(c)
	cfg.BearerToken = token
	return cfg
}

// impersonating returns a copy of base that impersonates user (and groups).
func impersonating(base *rest.Config, user string, groups ...string) *rest.Config {
	cfg := rest.CopyConfig(base)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return cfg
}

// clientCert issues a client certificate for cn in groups from ca, valid
// for an hour, and returns a configuration that presents it and the
// parsed certificate.
func clientCert(t testing.TB, c *framework.Cluster, ca *pki.CA, cn string, groups ...string) (*rest.Config, *x509.Certificate) {
	t.Helper()
	return issueCert(t, c, ca, cn, x509.ExtKeyUsageClientAuth, groups...)
}

// certWithUsage is clientCert with another extended key usage.
func certWithUsage(t testing.TB, c *framework.Cluster, ca *pki.CA, cn string, usage x509.ExtKeyUsage, groups ...string) *rest.Config {
	t.Helper()
	cfg, _ := issueCert(t, c, ca, cn, usage, groups...)
	return cfg
}

func issueCert(t testing.TB, c *framework.Cluster, ca *pki.CA, cn string, usage x509.ExtKeyUsage, groups ...string) (*rest.Config, *x509.Certificate) {
	t.Helper()
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{
		CommonName:   cn,
		Organization: groups,
		Usages:       []x509.ExtKeyUsage{usage},
		Validity:     time.Hour,
	})
	if err != nil {
		t.Fatalf("issue client certificate %q: %v", cn, err)
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatalf("parse client certificate %q: %v", cn, err)
	}
	cfg := pki.ClientConfig(c.URL, c.ControlPlane.PKI().ServerCA.CertPEM(), certPEM, keyPEM)
	cfg.QPS = -1
	return cfg, cert
}

// expiredClientCert builds, with crypto/x509 (pki refuses to), a client
// certificate for cn signed by ca that expired an hour ago.
func expiredClientCert(t testing.TB, c *framework.Cluster, ca *pki.CA, cn string) *rest.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-2 * time.Hour),
		NotAfter:              now.Add(-time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatalf("create expired certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := pki.ClientConfig(c.URL, c.ControlPlane.PKI().ServerCA.CertPEM(), pki.EncodeCert(cert), keyPEM)
	cfg.QPS = -1
	return cfg
}

// action is one request of the matrix.
type action struct {
	name        string
	method      string
	path        string
	contentType string
	body        string
}

func get(name, path string) action { return action{name: name, method: http.MethodGet, path: path} }

func del(name, path string) action { return action{name: name, method: http.MethodDelete, path: path} }

func post(t testing.TB, name, path string, obj any) action {
	return action{name: name, method: http.MethodPost, path: path, body: mustJSON(t, obj)}
}

func mergePatch(name, path, patch string) action {
	return action{name: name, method: http.MethodPatch, path: path, contentType: "application/merge-patch+json", body: patch}
}

// whoami is a SelfSubjectReview (kubectl auth whoami).
func whoami(t testing.TB) action {
	return post(t, "whoami", "/apis/authentication.k8s.io/v1/selfsubjectreviews", &authenticationv1.SelfSubjectReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "SelfSubjectReview"},
	})
}

func mustJSON(t testing.TB, obj any) string {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatalf("json.Marshal(%T): %v", obj, err)
	}
	return string(b)
}

// reviewedUser returns the user name in a SelfSubjectReview response.
func reviewedUser(body []byte) (string, error) {
	var r authenticationv1.SelfSubjectReview
	if err := json.Unmarshal(body, &r); err != nil {
		return "", fmt.Errorf("decode SelfSubjectReview: %w", err)
	}
	return r.Status.UserInfo.Username, nil
}

// brief shortens a response body for a failure message.
func brief(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 400 {
		return string(b[:400]) + "…"
	}
	return string(b)
}

// Object builders for the fixtures.

func configMapObj(ns, name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data:       map[string]string{"k": "v"},
	}
}

func secretObj(ns, name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"password": []byte("value-of-" + name)},
	}
}

// nodePod is a pod bound to node (if not empty) that runs as sa and uses
// the secret (as a volume) and the config map (through envFrom) named, if
// not empty.
func nodePod(name, node, sa, secret, configMap string) *corev1.Pod {
	p := newPod(name, "busybox:1.36")
	p.Spec.NodeName = node
	p.Spec.ServiceAccountName = sa
	if secret != "" {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{
			Name:         "secret",
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}},
		})
	}
	if configMap != "" {
		p.Spec.Containers[0].EnvFrom = append(p.Spec.Containers[0].EnvFrom, corev1.EnvFromSource{
			ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: configMap}},
		})
	}
	return p
}

func bootstrapTokenSecret(id, secret string, expiration time.Time, authUsage bool) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: "bootstrap-token-" + id},
		Type:       corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{
			"token-id":     id,
			"token-secret": secret,
			"expiration":   expiration.UTC().Format(time.RFC3339),
		},
	}
	if authUsage {
		s.StringData["usage-bootstrap-authentication"] = "true"
	} else {
		s.StringData["usage-bootstrap-signing"] = "true"
	}
	return s
}

func roleBinding(ns, name, kind, role string, subjects ...rbacv1.Subject) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role},
		Subjects:   subjects,
	}
}

func userSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
}

func saSubject(ns, name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}
}

// fixtures creates objects as admin and fails the test on the first error.
type fixtures struct {
	t      testing.TB
	client kubernetes.Interface
}

func (f fixtures) must(what string, err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatalf("fixture %s: %v", what, err)
	}
}

// tokenFor requests a token for the service account ns/name.
func (f fixtures) tokenFor(ns, name string, spec authenticationv1.TokenRequestSpec) string {
	f.t.Helper()
	tr, err := f.client.CoreV1().ServiceAccounts(ns).CreateToken(f.t.Context(), name, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	f.must("token for "+ns+"/"+name, err)
	if tr.Status.Token == "" {
		f.t.Fatalf("fixture token for %s/%s: empty token in the response", ns, name)
	}
	return tr.Status.Token
}

// expectCode waits (up to timeout) until id gets code for a; it is how the
// setup checks that the fixtures have reached the authorizers' caches and
// that a credential works before it is invalidated.
func expectCode(t testing.TB, id *identity, a action, code int, timeout time.Duration) {
	t.Helper()
	framework.Eventually(t, timeout, func() (bool, error) {
		got, body, err := id.do(t.Context(), a.method, a.path, a.contentType, a.body)
		if err != nil {
			return false, err
		}
		if got != code {
			return false, fmt.Errorf("%s %s %s = %d, want %d: %s", id.name, a.method, a.path, got, code, brief(body))
		}
		return true, nil
	})
}
