package tokencleaner

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

// token returns a bootstrap token Secret named after id; expiration is
// written as given ("" for none).
func token(id, expiration string, mods ...func(*corev1.Secret)) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: bootstrapapi.BootstrapTokenSecretPrefix + id, UID: types.UID("uid-" + id)},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			bootstrapapi.BootstrapTokenIDKey:     []byte(id),
			bootstrapapi.BootstrapTokenSecretKey: []byte("0123456789abcdef"),
		},
	}
	if expiration != "" {
		s.Data[bootstrapapi.BootstrapTokenExpirationKey] = []byte(expiration)
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

// in returns the RFC 3339 time d from now (the bubble's clock in tests).
func in(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }

type fixture struct {
	c      *Controller
	client *fake.Clientset
}

// start runs a controller on objs until the test ends and waits until it
// has nothing left to do. It must be called inside a synctest bubble.
func start(t *testing.T, shared bool, client *fake.Clientset) *fixture {
	t.Helper()
	cfg := Config{Client: client, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))}
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

// secrets returns the names of the Secrets left in namespace ns, sorted.
func (f *fixture) secrets(t *testing.T, ns string) []string {
	t.Helper()
	list, err := f.client.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list secrets: %v", err)
	}
	var names []string
	for _, s := range list.Items {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return names
}

// each runs test once with the controller's own informer and once with a
// shared factory, each in a synctest bubble.
func each(t *testing.T, test func(t *testing.T, shared bool)) {
	for _, shared := range []bool{false, true} {
		name := "own informer"
		if shared {
			name = "shared informers"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { test(t, shared) })
		})
	}
}

func TestDeletesExpiredTokensAtStart(t *testing.T) {
	each(t, func(t *testing.T, shared bool) {
		opaque := token("opaque", in(-time.Hour))
		opaque.Type = corev1.SecretTypeOpaque
		elsewhere := token("elsewh", in(-time.Hour))
		elsewhere.Namespace = metav1.NamespaceDefault
		f := start(t, shared, fake.NewClientset(
			token("expird", in(-time.Minute)),
			token("badexp", "next tuesday"),
			token("valid0", in(time.Hour)),
			token("nottl0", ""),
			opaque, elsewhere,
		))
		want := []string{"bootstrap-token-nottl0", "bootstrap-token-opaque", "bootstrap-token-valid0"}
		if got := f.secrets(t, metav1.NamespaceSystem); !slices.Equal(got, want) {
			t.Errorf("secrets left in kube-system = %v, want %v", got, want)
		}
		if got, want := f.secrets(t, metav1.NamespaceDefault), []string{"bootstrap-token-elsewh"}; !slices.Equal(got, want) {
			t.Errorf("secrets left in default = %v, want %v", got, want)
		}
	})
}

func TestDeletesTokenAtItsExpiry(t *testing.T) {
	each(t, func(t *testing.T, shared bool) {
		f := start(t, shared, fake.NewClientset(token("first0", in(time.Hour))))
		// A token added later, with an earlier expiry.
		if _, err := f.client.CoreV1().Secrets(metav1.NamespaceSystem).Create(t.Context(), token("second", in(10*time.Minute)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()

		time.Sleep(10*time.Minute - time.Second)
		synctest.Wait()
		if got, want := f.secrets(t, metav1.NamespaceSystem), []string{"bootstrap-token-first0", "bootstrap-token-second"}; !slices.Equal(got, want) {
			t.Errorf("a second before the first expiry: secrets = %v, want %v", got, want)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got, want := f.secrets(t, metav1.NamespaceSystem), []string{"bootstrap-token-first0"}; !slices.Equal(got, want) {
			t.Errorf("at the expiry of second: secrets = %v, want %v", got, want)
		}
		time.Sleep(50 * time.Minute)
		synctest.Wait()
		if got := f.secrets(t, metav1.NamespaceSystem); len(got) != 0 {
			t.Errorf("at the expiry of first0: secrets = %v, want none", got)
		}
	})
}

func TestExtendedTokenIsKept(t *testing.T) {
	each(t, func(t *testing.T, shared bool) {
		f := start(t, shared, fake.NewClientset(token("extend", in(10*time.Minute))))
		if _, err := f.client.CoreV1().Secrets(metav1.NamespaceSystem).Update(t.Context(), token("extend", in(time.Hour)), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		if got, want := f.secrets(t, metav1.NamespaceSystem), []string{"bootstrap-token-extend"}; !slices.Equal(got, want) {
			t.Errorf("after the old expiry: secrets = %v, want %v", got, want)
		}
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		if got := f.secrets(t, metav1.NamespaceSystem); len(got) != 0 {
			t.Errorf("after the new expiry: secrets = %v, want none", got)
		}
	})
}

func TestRetriesFailedDeletion(t *testing.T) {
	each(t, func(t *testing.T, shared bool) {
		client := fake.NewClientset(token("expird", in(-time.Minute)))
		var failures atomic.Int32
		client.PrependReactor("delete", "secrets", func(clienttesting.Action) (bool, runtime.Object, error) {
			if failures.Add(1) <= 3 {
				return true, nil, apierrors.NewServiceUnavailable("etcd is resting")
			}
			return false, nil, nil
		})
		f := start(t, shared, client)
		time.Sleep(time.Second) // longer than three back-offs from 50 ms
		synctest.Wait()
		if got := f.secrets(t, metav1.NamespaceSystem); len(got) != 0 {
			t.Errorf("secrets = %v, want none after retries", got)
		}
		if got := failures.Load(); got != 4 {
			t.Errorf("delete attempts = %d, want 4", got)
		}
	})
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{ResyncPeriod: -time.Second})
	if err == nil {
		t.Fatal("New(Config{ResyncPeriod: -1s}) = nil, want an error")
	}
	for _, want := range []string{"Client is required", "ResyncPeriod"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New() = %q, want it to mention %q", err, want)
		}
	}
	if _, err := New(Config{Client: fake.NewClientset()}); err != nil {
		t.Errorf("New(valid) = %v, want nil", err)
	}
}
