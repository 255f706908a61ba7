package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"

	"tether/controllers/bootstrapsigner"
	"tether/pki"
)

// joinLine is the last line `tether token create` prints.
var joinLine = regexp.MustCompile(`^tether agent --server (https://\S+) --token ([a-z0-9]{6})\.([a-z0-9]{16}) --ca-cert-hash (sha256:[0-9a-f]{64})$`)

// fakeAPI makes the token commands use client; it returns the kubeconfig
// paths they asked for.
func fakeAPI(t *testing.T, client kubernetes.Interface, cfg *rest.Config) *[]string {
	t.Helper()
	old := newClientForToken
	var paths []string
	newClientForToken = func(kubeconfig string) (kubernetes.Interface, *rest.Config, error) {
		paths = append(paths, kubeconfig)
		return client, cfg, nil
	}
	t.Cleanup(func() { newClientForToken = old })
	return &paths
}

// runToken runs `tether token args...` and returns what it printed.
func runToken(ctx context.Context, args ...string) (string, error) {
	var out bytes.Buffer
	root := &cobra.Command{Use: "tether", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newTokenCommand(&out))
	root.SetArgs(append([]string{"token"}, args...))
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("tether-server-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// lastLine splits output into its earlier lines and its last line.
func lastLine(t *testing.T, out string) (earlier []string, last string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return lines[:len(lines)-1], lines[len(lines)-1]
}

func getSecret(t *testing.T, client kubernetes.Interface, id string) *corev1.Secret {
	t.Helper()
	s, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), "bootstrap-token-"+id, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get the token's secret: %v", err)
	}
	return s
}

func TestTokenCreateWithSigner(t *testing.T) {
	serverCA := newCA(t)
	kubeconfigCA := newCA(t) // differs, to prove the pin comes from cluster-info
	const server = "https://192.0.2.10:6443"
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		signer, err := bootstrapsigner.New(bootstrapsigner.Config{Client: client, ServerURL: server, CACert: serverCA.CertPEM()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- signer.Run(ctx) }()
		defer func() { cancel(); <-done }()
		<-signer.Ready()
		synctest.Wait()
		fakeAPI(t, client, &rest.Config{Host: "https://127.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{CAData: kubeconfigCA.CertPEM()}})

		start := time.Now()
		out, err := runToken(t.Context(), "create", "--ttl", "2h", "--description", "rack 4")
		if err != nil {
			t.Fatalf("token create: %v\n%s", err, out)
		}
		earlier, last := lastLine(t, out)
		m := joinLine.FindStringSubmatch(last)
		if m == nil {
			t.Fatalf("last line = %q, want it to match %v\nwhole output:\n%s", last, joinLine, out)
		}
		gotServer, id, secret, pin := m[1], m[2], m[3], m[4]
		if gotServer != server {
			t.Errorf("--server %s, want %s (from cluster-info)", gotServer, server)
		}
		if want := pki.Pin(serverCA.Cert); pin != want {
			t.Errorf("--ca-cert-hash %s, want %s (the server CA)", pin, want)
		}
		for _, l := range earlier {
			if strings.Contains(l, secret) {
				t.Errorf("line %q before the last shows the token secret", l)
			}
		}

		s := getSecret(t, client, id)
		if s.Type != bootstrapapi.SecretTypeBootstrapToken {
			t.Errorf("type = %q, want %q", s.Type, bootstrapapi.SecretTypeBootstrapToken)
		}
		want := map[string]string{
			"token-id":                       id,
			"token-secret":                   secret,
			"description":                    "rack 4",
			"usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing":        "true",
			"auth-extra-groups":              "system:bootstrappers:tether:default-node-token",
		}
		for k, v := range want {
			if got := string(s.Data[k]); got != v {
				t.Errorf("data[%s] = %q, want %q", k, got, v)
			}
		}
		exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"]))
		if err != nil {
			t.Fatalf("expiration %q: %v", s.Data["expiration"], err)
		}
		if lo, hi := start.Add(2*time.Hour-time.Second), time.Now().Add(2*time.Hour); exp.Before(lo) || exp.After(hi) {
			t.Errorf("expiration = %v, want between %v and %v", exp, lo, hi)
		}

		cm, err := client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(t.Context(), "cluster-info", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !jws.DetachedTokenIsValid(cm.Data["jws-kubeconfig-"+id], cm.Data["kubeconfig"], id, secret) {
			t.Errorf("cluster-info signature for %s does not verify with the printed token", id)
		}
	})
}

func TestTokenCreateWithoutClusterInfo(t *testing.T) {
	ca := newCA(t)
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		fakeAPI(t, client, &rest.Config{Host: "https://192.0.2.20:6443", TLSClientConfig: rest.TLSClientConfig{CAData: ca.CertPEM()}})
		out, err := runToken(t.Context(), "create")
		if err != nil {
			t.Fatalf("token create: %v\n%s", err, out)
		}
		earlier, last := lastLine(t, out)
		m := joinLine.FindStringSubmatch(last)
		if m == nil {
			t.Fatalf("last line = %q, want it to match %v", last, joinLine)
		}
		if m[1] != "https://192.0.2.20:6443" || m[4] != pki.Pin(ca.Cert) {
			t.Errorf("server %s pin %s, want those of the kubeconfig", m[1], m[4])
		}
		text := strings.Join(earlier, "\n")
		for _, want := range []string{"does not exist yet", "does not exist", "not signed with token", "bootstrap-signer"} {
			if !strings.Contains(text, want) {
				t.Errorf("output before the join command does not mention %q:\n%s", want, text)
			}
		}
		// Default TTL: one hour.
		exp, _ := time.Parse(time.RFC3339, string(getSecret(t, client, m[2]).Data["expiration"]))
		if got := exp.Sub(time.Now()); got > time.Hour || got < time.Hour-clusterInfoWait-time.Second {
			t.Errorf("default token lifetime = %v, want 1h", got)
		}
	})
}

func TestTokenCreateWarnsAboutLoopback(t *testing.T) {
	ca := newCA(t)
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		fakeAPI(t, client, &rest.Config{Host: "https://127.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{CAData: ca.CertPEM()}})
		out, err := runToken(t.Context(), "create", "--usages", "authentication")
		if err != nil {
			t.Fatalf("token create: %v\n%s", err, out)
		}
		for _, want := range []string{"loopback", "--advertise-address", "lacks the signing usage"} {
			if !strings.Contains(out, want) {
				t.Errorf("output does not mention %q:\n%s", want, out)
			}
		}
		_, last := lastLine(t, out)
		m := joinLine.FindStringSubmatch(last)
		if m == nil {
			t.Fatalf("last line = %q, want it to match %v", last, joinLine)
		}
		if s := getSecret(t, client, m[2]); s.Data["usage-bootstrap-signing"] != nil {
			t.Errorf("usage-bootstrap-signing = %q, want it absent", s.Data["usage-bootstrap-signing"])
		}
	})
}

func TestTokenCreateRejectsFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--ttl", "0"}, []string{"--ttl 0s", "must expire"}},
		{[]string{"--ttl", "-1h"}, []string{"--ttl -1h0m0s", "must expire"}},
		{[]string{"--ttl", "25h"}, []string{"--ttl 25h0m0s", "24h maximum", "short-lived"}},
		{[]string{"--ttl", "500ms"}, []string{"--ttl 500ms", "shorter than 1s"}},
		{[]string{"--usages", "signing,reading"}, []string{"--usages", "reading"}},
		{[]string{"--usages", ""}, []string{"--usages is empty"}},
		{[]string{"--groups", "admins"}, []string{"--groups", `"admins"`}},
		{[]string{"--usages", "signing", "--groups", "system:bootstrappers:x"}, []string{"--groups needs the authentication usage"}},
		{[]string{"--description", "two\nlines"}, []string{"--description"}},
		{[]string{"--ttl", "0", "--groups", "admins"}, []string{"--ttl", "--groups"}}, // every problem at once
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			client := fake.NewClientset()
			paths := fakeAPI(t, client, &rest.Config{})
			out, err := runToken(t.Context(), append([]string{"create"}, tc.args...)...)
			if err == nil {
				t.Fatalf("token create %v succeeded, want an error\n%s", tc.args, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if len(*paths) != 0 || len(client.Actions()) != 0 {
				t.Errorf("the command reached the API server (%v) despite bad flags", client.Actions())
			}
		})
	}
	for _, ttl := range []string{"24h", "1s", "90m"} {
		t.Run("--ttl "+ttl, func(t *testing.T) {
			o := &tokenOptions{TTL: mustDuration(t, ttl), Usages: []string{"signing", "authentication"}, Groups: []string{defaultNodeTokenGroup}}
			if err := o.validate(); err != nil {
				t.Errorf("validate(--ttl %s) = %v, want nil", ttl, err)
			}
		})
	}
}

func mustDuration(t *testing.T, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestTokenCreateNeedsACA(t *testing.T) {
	client := fake.NewClientset()
	fakeAPI(t, client, &rest.Config{Host: "https://192.0.2.20:6443"})
	_, err := runToken(t.Context(), "create")
	if err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Fatalf("token create without any CA = %v, want an error naming --kubeconfig", err)
	}
	list, _ := client.CoreV1().Secrets(metav1.NamespaceSystem).List(t.Context(), metav1.ListOptions{})
	if len(list.Items) != 0 {
		t.Errorf("a failed create left %d secrets behind", len(list.Items))
	}
}

func tokenSecret(id, secret string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: "bootstrap-token-" + id},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		Data:       map[string][]byte{"token-id": []byte(id), "token-secret": []byte(secret)},
	}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func TestTokenList(t *testing.T) {
	const secret = "0123456789abcdef"
	now := time.Now()
	opaque := tokenSecret("opaque", secret, nil)
	opaque.Type = corev1.SecretTypeOpaque
	client := fake.NewClientset(
		tokenSecret("abcdef", secret, map[string]string{
			"expiration":                     now.Add(90 * time.Minute).UTC().Format(time.RFC3339),
			"usage-bootstrap-signing":        "true",
			"usage-bootstrap-authentication": "true",
			"description":                    "rack 4",
			"auth-extra-groups":              defaultNodeTokenGroup,
		}),
		tokenSecret("expird", secret, map[string]string{"expiration": now.Add(-time.Minute).UTC().Format(time.RFC3339)}),
		tokenSecret("nottl0", secret, map[string]string{"usage-bootstrap-signing": "true"}),
		opaque,
	)
	fakeAPI(t, client, &rest.Config{})
	out, err := runToken(t.Context(), "list")
	if err != nil {
		t.Fatalf("token list: %v", err)
	}
	if strings.Contains(out, secret) {
		t.Errorf("token list shows a secret:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("token list printed %d lines, want a header and 3 tokens:\n%s", len(lines), out)
	}
	if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA", "GROUPS"}) {
		t.Errorf("header = %q", lines[0])
	}
	for i, want := range [][]string{
		{"abcdef.****", "89m", now.Add(90 * time.Minute).UTC().Format(time.RFC3339), "authentication,signing", "rack", "4", defaultNodeTokenGroup},
		{"expird.****", "<expired>", now.Add(-time.Minute).UTC().Format(time.RFC3339), "<none>", "<none>", "<none>"},
		{"nottl0.****", "<forever>", "<never>", "signing", "<none>", "<none>"},
	} {
		got := strings.Fields(lines[i+1])
		if i == 0 && len(got) > 1 && got[1] == "90m" {
			got[1] = "89m" // not a microsecond passed since the token was made
		}
		if !slices.Equal(got, want) {
			t.Errorf("row %d = %q, want %q", i+1, got, want)
		}
	}
}

func TestTokenListEmpty(t *testing.T) {
	fakeAPI(t, fake.NewClientset(), &rest.Config{})
	out, err := runToken(t.Context(), "list")
	if err != nil || !strings.Contains(out, "No bootstrap tokens") {
		t.Errorf("token list on no tokens = %q, %v; want a message saying there are none", out, err)
	}
}

func TestTokenDelete(t *testing.T) {
	const secret = "0123456789abcdef"
	opaque := tokenSecret("opaque", secret, nil)
	opaque.Type = corev1.SecretTypeOpaque
	objs := func() []runtime.Object {
		return []runtime.Object{tokenSecret("abcdef", secret, nil), tokenSecret("ghijkl", secret, nil), opaque}
	}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr []string // substrings; nil for success
		left    []string // token secrets left afterwards
	}{
		{"by id", []string{"abcdef"}, nil, []string{"ghijkl", "opaque"}},
		{"by token", []string{"abcdef." + secret}, nil, []string{"ghijkl", "opaque"}},
		{"several", []string{"abcdef", "ghijkl." + secret}, nil, []string{"opaque"}},
		{"not found", []string{"zzzzzz"}, []string{"bootstrap token zzzzzz not found", "tether token list"}, []string{"abcdef", "ghijkl", "opaque"}},
		{"not found among others", []string{"zzzzzz", "abcdef"}, []string{"zzzzzz not found"}, []string{"ghijkl", "opaque"}},
		{"wrong secret", []string{"abcdef.ffffffffffffffff"}, []string{"does not match", "pass only its ID"}, []string{"abcdef", "ghijkl", "opaque"}},
		{"not a token", []string{"opaque"}, []string{"not a bootstrap token"}, []string{"abcdef", "ghijkl", "opaque"}},
		{"malformed", []string{"abcdef.SECRETPART"}, []string{`"abcdef.…" is neither a token ID`}, []string{"abcdef", "ghijkl", "opaque"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(objs()...)
			fakeAPI(t, client, &rest.Config{})
			out, err := runToken(t.Context(), append([]string{"delete"}, tc.args...)...)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("token delete %v: %v", tc.args, err)
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("token delete %v succeeded, want an error", tc.args)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "SECRETPART") {
					t.Errorf("error %q echoes the secret part", err)
				}
			}
			if strings.Contains(out, secret) {
				t.Errorf("output shows a secret: %s", out)
			}
			list, err := client.CoreV1().Secrets(metav1.NamespaceSystem).List(t.Context(), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, s := range list.Items {
				left = append(left, strings.TrimPrefix(s.Name, "bootstrap-token-"))
			}
			slices.Sort(left)
			if !slices.Equal(left, tc.left) {
				t.Errorf("tokens left = %v, want %v", left, tc.left)
			}
		})
	}
}

func TestTokenKubeconfigChoice(t *testing.T) {
	for _, tc := range []struct {
		name, flag, env, want string
	}{
		{"flag wins", "/etc/tether/a.kubeconfig", "/tmp/b", "/etc/tether/a.kubeconfig"},
		{"then KUBECONFIG", "", "/tmp/b", "/tmp/b"},
		{"then the server's admin kubeconfig", "", "", "/var/lib/tether/server/admin.kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tc.env)
			paths := fakeAPI(t, fake.NewClientset(), &rest.Config{})
			args := []string{"list"}
			if tc.flag != "" {
				args = append(args, "--kubeconfig", tc.flag)
			}
			if _, err := runToken(t.Context(), args...); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(*paths, []string{tc.want}) {
				t.Errorf("kubeconfig used = %v, want %q", *paths, tc.want)
			}
		})
	}
}

func TestTokenKubeconfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.kubeconfig")
	_, err := runToken(t.Context(), "list", "--kubeconfig", missing)
	if err == nil {
		t.Fatal("token list with a missing kubeconfig succeeded")
	}
	for _, want := range []string{missing, "--kubeconfig"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestLoadTokenClient(t *testing.T) {
	ca := newCA(t)
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{CommonName: "admin", Organization: []string{"system:masters"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := pki.WriteKubeconfig(path, "https://192.0.2.30:6443", ca.CertPEM(), certPEM, keyPEM, "admin"); err != nil {
		t.Fatal(err)
	}
	_, cfg, err := loadTokenClient(path)
	if err != nil {
		t.Fatalf("loadTokenClient: %v", err)
	}
	if cfg.Host != "https://192.0.2.30:6443" || !bytes.Equal(cfg.CAData, ca.CertPEM()) || cfg.Timeout == 0 {
		t.Errorf("config = host %q, CA %d bytes, timeout %v; want the kubeconfig's server and CA and a timeout", cfg.Host, len(cfg.CAData), cfg.Timeout)
	}
}
