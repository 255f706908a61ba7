package bootstrapsigner

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"

	"tether/pki"
)

const serverURL = "https://192.0.2.10:6443"

// testCA is the server CA of every test, made once: key generation is the
// slow part.
var testCA = sync.OnceValue(func() []byte {
	ca, err := pki.NewCA("tether-server-ca", time.Hour)
	if err != nil {
		panic(err)
	}
	return ca.CertPEM()
})

// token returns a valid signing bootstrap token Secret; mods change it.
func token(id, secret string, mods ...func(*corev1.Secret)) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: bootstrapapi.BootstrapTokenSecretPrefix + id},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			bootstrapapi.BootstrapTokenIDKey:               []byte(id),
			bootstrapapi.BootstrapTokenSecretKey:           []byte(secret),
			bootstrapapi.BootstrapTokenUsageSigningKey:     []byte("true"),
			bootstrapapi.BootstrapTokenUsageAuthentication: []byte("true"),
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func expiresIn(d time.Duration) func(*corev1.Secret) {
	return func(s *corev1.Secret) {
		s.Data[bootstrapapi.BootstrapTokenExpirationKey] = []byte(time.Now().Add(d).UTC().Format(time.RFC3339))
	}
}

func setData(key, value string) func(*corev1.Secret) {
	return func(s *corev1.Secret) { s.Data[key] = []byte(value) }
}

type fixture struct {
	c      *Controller
	client *fake.Clientset
}

// start runs a controller on objs until the test ends and waits until it
// has nothing left to do. It must be called inside a synctest bubble.
func start(t *testing.T, shared bool, objs ...runtime.Object) *fixture {
	t.Helper()
	client := fake.NewClientset(objs...)
	cfg := Config{
		Client:    client,
		ServerURL: serverURL,
		CACert:    testCA(),
		Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if shared {
		cfg.Informers = informers.NewSharedInformerFactory(client, 0)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		if shared {
			cfg.Informers.Shutdown()
		}
	})
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run() returned %v before Ready", err)
	}
	synctest.Wait()
	return &fixture{c: c, client: client}
}

// clusterInfo returns the data of cluster-info as the fake server holds it.
func (f *fixture) clusterInfo(t *testing.T) map[string]string {
	t.Helper()
	cm, err := f.client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(t.Context(), bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get cluster-info: %v", err)
	}
	return cm.Data
}

// signatures returns the token IDs cluster-info holds a signature for,
// sorted, after checking each signature against the content and its token.
func (f *fixture) signatures(t *testing.T, secrets map[string]string) []string {
	t.Helper()
	data := f.clusterInfo(t)
	var ids []string
	for k, sig := range data {
		id, ok := strings.CutPrefix(k, bootstrapapi.JWSSignatureKeyPrefix)
		if !ok {
			continue
		}
		ids = append(ids, id)
		if secret, known := secrets[id]; known && !jws.DetachedTokenIsValid(sig, data[bootstrapapi.KubeConfigKey], id, secret) {
			t.Errorf("signature %s = %q does not verify with token %s over the kubeconfig", k, sig, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// writes counts the creates and updates of ConfigMaps sent to the server.
func (f *fixture) writes() int {
	n := 0
	for _, a := range f.client.Actions() {
		if a.GetResource().Resource == "configmaps" && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			n++
		}
	}
	return n
}

// each runs test once with the controller's own informers and once with a
// shared factory.
func each(t *testing.T, test func(t *testing.T, shared bool)) {
	for _, shared := range []bool{false, true} {
		name := "own informers"
		if shared {
			name = "shared informers"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { test(t, shared) })
		})
	}
}

func TestPublishesClusterInfo(t *testing.T) {
	each(t, func(t *testing.T, shared bool) {
		f := start(t, shared)
		data := f.clusterInfo(t)
		if len(data) != 1 {
			t.Errorf("cluster-info has keys %v, want only %q", slices.Sorted(maps.Keys(data)), bootstrapapi.KubeConfigKey)
		}
		cfg, err := clientcmd.Load([]byte(data[bootstrapapi.KubeConfigKey]))
		if err != nil {
			t.Fatalf("parse cluster-info kubeconfig: %v", err)
		}
		if len(cfg.Clusters) != 1 || cfg.Clusters[""] == nil {
			t.Fatalf("kubeconfig clusters = %v, want one unnamed cluster", cfg.Clusters)
		}
		if got := cfg.Clusters[""].Server; got != serverURL {
			t.Errorf("kubeconfig server = %q, want %q", got, serverURL)
		}
		if got := cfg.Clusters[""].CertificateAuthorityData; !bytes.Equal(got, testCA()) {
			t.Errorf("kubeconfig certificate-authority-data = %q, want the server CA", got)
		}
		if len(cfg.AuthInfos) != 0 || len(cfg.Contexts) != 0 {
			t.Errorf("kubeconfig has users %v and contexts %v, want none", cfg.AuthInfos, cfg.Contexts)
		}
	})
}

func TestSignsOnlyValidSigningTokens(t *testing.T) {
	const secret = "0123456789abcdef"
	each(t, func(t *testing.T, shared bool) {
		// Built inside the bubble: expirations are relative to its clock.
		valid := token("valid0", secret, expiresIn(time.Hour))
		forever := token("nottl0", secret) // no expiration: valid, like the authenticator
		wrongNS := token("wrongn", secret)
		wrongNS.Namespace = metav1.NamespaceDefault
		wrongType := token("wrongt", secret)
		wrongType.Type = corev1.SecretTypeOpaque
		deleting := token("delete", secret)
		deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		deleting.Finalizers = []string{"example.com/hold"}
		badName := token("badnam", secret)
		badName.Name = "token-badnam"
		objs := []runtime.Object{
			valid, forever, wrongNS, wrongType, deleting, badName,
			token("expird", secret, expiresIn(-time.Minute)),
			token("badexp", secret, setData(bootstrapapi.BootstrapTokenExpirationKey, "tomorrow")),
			token("nosign", secret, setData(bootstrapapi.BootstrapTokenUsageSigningKey, "false")),
			token("idmism", secret, setData(bootstrapapi.BootstrapTokenIDKey, "other0")),
			token("short0", "0123456789"),
			token("upper0", "0123456789ABCDEF"),
		}
		f := start(t, shared, objs...)
		got := f.signatures(t, map[string]string{"valid0": secret, "nottl0": secret})
		if want := []string{"nottl0", "valid0"}; !slices.Equal(got, want) {
			t.Errorf("signed token IDs = %v, want %v", got, want)
		}
	})
}

func TestSignaturesFollowTokenChanges(t *testing.T) {
	const s1, s2 = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
	secrets := map[string]string{"token1": s1, "token2": s2}
	each(t, func(t *testing.T, shared bool) {
		f := start(t, shared, token("token1", s1, expiresIn(time.Hour)))
		if got, want := f.signatures(t, secrets), []string{"token1"}; !slices.Equal(got, want) {
			t.Fatalf("at start: signed token IDs = %v, want %v", got, want)
		}
		ctx := t.Context()
		secretsClient := f.client.CoreV1().Secrets(metav1.NamespaceSystem)

		if _, err := secretsClient.Create(ctx, token("token2", s2, expiresIn(time.Hour)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := f.signatures(t, secrets), []string{"token1", "token2"}; !slices.Equal(got, want) {
			t.Errorf("after adding token2: signed token IDs = %v, want %v", got, want)
		}

		if _, err := secretsClient.Update(ctx, token("token1", s1, expiresIn(time.Hour), setData(bootstrapapi.BootstrapTokenUsageSigningKey, "false")), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := f.signatures(t, secrets), []string{"token2"}; !slices.Equal(got, want) {
			t.Errorf("after token1 stopped signing: signed token IDs = %v, want %v", got, want)
		}

		if err := secretsClient.Delete(ctx, bootstrapapi.BootstrapTokenSecretPrefix+"token2", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := f.signatures(t, secrets); len(got) != 0 {
			t.Errorf("after deleting token2: signed token IDs = %v, want none", got)
		}
	})
}

func TestSignatureRemovedAtExpiry(t *testing.T) {
	const secret = "0123456789abcdef"
	each(t, func(t *testing.T, shared bool) {
		f := start(t, shared,
			token("short0", secret, expiresIn(30*time.Minute)),
			token("long00", secret, expiresIn(2*time.Hour)))
		secrets := map[string]string{"short0": secret, "long00": secret}
		if got, want := f.signatures(t, secrets), []string{"long00", "short0"}; !slices.Equal(got, want) {
			t.Fatalf("at start: signed token IDs = %v, want %v", got, want)
		}
		time.Sleep(30*time.Minute - time.Second)
		synctest.Wait()
		if got, want := f.signatures(t, secrets), []string{"long00", "short0"}; !slices.Equal(got, want) {
			t.Errorf("just before expiry: signed token IDs = %v, want %v", got, want)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got, want := f.signatures(t, secrets), []string{"long00"}; !slices.Equal(got, want) {
			t.Errorf("at expiry of short0: signed token IDs = %v, want %v", got, want)
		}
		time.Sleep(90 * time.Minute)
		synctest.Wait()
		if got := f.signatures(t, secrets); len(got) != 0 {
			t.Errorf("after every token expired: signed token IDs = %v, want none", got)
		}
	})
}

func TestRewritesStaleClusterInfo(t *testing.T) {
	const secret = "0123456789abcdef"
	old, err := kubeconfig("https://198.51.100.1:6443", testCA())
	if err != nil {
		t.Fatal(err)
	}
	stale := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespacePublic, Name: bootstrapapi.ConfigMapClusterInfo},
		Data: map[string]string{
			bootstrapapi.KubeConfigKey:                    old,
			bootstrapapi.JWSSignatureKeyPrefix + "gone00": "forged..signature",
			bootstrapapi.JWSSignatureKeyPrefix + "valid0": "stale..signature",
			"extra": "kept",
		},
	}
	each(t, func(t *testing.T, shared bool) {
		f := start(t, shared, stale, token("valid0", secret, expiresIn(time.Hour)))
		data := f.clusterInfo(t)
		want, err := kubeconfig(serverURL, testCA())
		if err != nil {
			t.Fatal(err)
		}
		if data[bootstrapapi.KubeConfigKey] != want {
			t.Errorf("kubeconfig = %q, want %q", data[bootstrapapi.KubeConfigKey], want)
		}
		if data["extra"] != "kept" {
			t.Errorf("extra = %q, want the unrelated key kept", data["extra"])
		}
		if got, want := f.signatures(t, map[string]string{"valid0": secret}), []string{"valid0"}; !slices.Equal(got, want) {
			t.Errorf("signed token IDs = %v, want %v", got, want)
		}
	})
}

func TestRecreatesDeletedClusterInfo(t *testing.T) {
	const secret = "0123456789abcdef"
	each(t, func(t *testing.T, shared bool) {
		f := start(t, shared, token("valid0", secret, expiresIn(time.Hour)))
		if err := f.client.CoreV1().ConfigMaps(metav1.NamespacePublic).Delete(t.Context(), bootstrapapi.ConfigMapClusterInfo, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := f.signatures(t, map[string]string{"valid0": secret}), []string{"valid0"}; !slices.Equal(got, want) {
			t.Errorf("signed token IDs = %v, want %v", got, want)
		}
	})
}

func TestWritesOnlyOnChange(t *testing.T) {
	const secret = "0123456789abcdef"
	each(t, func(t *testing.T, shared bool) {
		f := start(t, shared, token("valid0", secret, expiresIn(48*time.Hour)))
		if got := f.writes(); got != 1 {
			t.Errorf("writes after start = %d, want 1 (the create)", got)
		}
		// A change that does not touch the signature, other ConfigMaps and
		// Secrets, and several resyncs.
		ctx := t.Context()
		if _, err := f.client.CoreV1().Secrets(metav1.NamespaceSystem).Update(ctx,
			token("valid0", secret, expiresIn(48*time.Hour), setData(bootstrapapi.BootstrapTokenDescriptionKey, "rack 4")),
			metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespacePublic, Name: "other"}}
		if _, err := f.client.CoreV1().ConfigMaps(metav1.NamespacePublic).Create(ctx, other, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * DefaultResyncPeriod)
		synctest.Wait()
		if got := f.writes(); got != 2 { // the create above is the second
			t.Errorf("writes = %d, want 2 (create of cluster-info, create of other)", got)
			for _, a := range f.client.Actions() {
				if w, ok := a.(clienttesting.UpdateAction); ok {
					t.Logf("update %s %s", w.GetResource().Resource, w.GetNamespace())
				}
			}
		}
	})
}

func TestNewValidates(t *testing.T) {
	client := fake.NewClientset()
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; nil means no error
	}{
		{"valid", Config{Client: client, ServerURL: serverURL, CACert: testCA()}, nil},
		{"empty", Config{}, []string{"Client is required", "ServerURL is required", "CACert is required"}},
		{"http", Config{Client: client, ServerURL: "http://192.0.2.10:6443", CACert: testCA()}, []string{"want https://"}},
		{"no host", Config{Client: client, ServerURL: "https://", CACert: testCA()}, []string{"want https://"}},
		{"not PEM", Config{Client: client, ServerURL: serverURL, CACert: []byte("not a certificate")}, []string{"Config.CACert"}},
		{"negative resync", Config{Client: client, ServerURL: serverURL, CACert: testCA(), ResyncPeriod: -time.Second}, []string{"ResyncPeriod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("New() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New() = nil, want an error mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestReadyAfterFirstPublish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		var failures atomic.Int32
		client.PrependReactor("create", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
			if failures.Add(1) <= 2 {
				return true, nil, apierrors.NewServiceUnavailable("etcd is resting")
			}
			return false, nil, nil
		})
		c, err := New(Config{Client: client, ServerURL: serverURL, CACert: testCA()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		defer func() { cancel(); <-done }()

		synctest.Wait() // the first attempt failed; the retry waits for its back-off
		select {
		case <-c.Ready():
			t.Fatal("Ready is closed before cluster-info was written")
		default:
		}
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case <-c.Ready():
		default:
			t.Fatalf("Ready is not closed after %d attempts to write cluster-info", failures.Load())
		}
		if _, err := client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(t.Context(), bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{}); err != nil {
			t.Errorf("get cluster-info: %v", err)
		}
	})
}
