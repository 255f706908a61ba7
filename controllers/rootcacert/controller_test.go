package rootcacert

import (
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
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"tether/pki"
)

// testCA is the server CA of every test, made once.
var testCA = sync.OnceValue(func() []byte {
	ca, err := pki.NewCA("tether-server-ca", time.Hour)
	if err != nil {
		panic(err)
	}
	return ca.CertPEM()
})

func namespace(name string, phase corev1.NamespacePhase) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NamespaceStatus{Phase: phase}}
}

func configMap(ns, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

// start runs a controller on client until the test ends and waits until it
// has nothing left to do. It must be called inside a synctest bubble.
func start(t *testing.T, client *fake.Clientset) *Controller {
	t.Helper()
	c, err := New(Config{Client: client, CACert: testCA(), Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
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
	})
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run() returned %v before Ready", err)
	}
	synctest.Wait()
	return c
}

// published returns the namespaces that hold kube-root-ca.crt, sorted, and
// checks the content of each.
func published(t *testing.T, client *fake.Clientset) []string {
	t.Helper()
	list, err := client.CoreV1().ConfigMaps("").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list configmaps: %v", err)
	}
	var out []string
	for _, cm := range list.Items {
		if cm.Name != ConfigMapName {
			continue
		}
		out = append(out, cm.Namespace)
		if want := map[string]string{Key: string(testCA())}; !maps.Equal(cm.Data, want) {
			t.Errorf("%s/%s data = %v, want the CA bundle under %s", cm.Namespace, cm.Name, cm.Data, Key)
		}
		if len(cm.BinaryData) != 0 {
			t.Errorf("%s/%s binaryData = %v, want none", cm.Namespace, cm.Name, cm.BinaryData)
		}
		if got := cm.Annotations[DescriptionAnnotation]; got != Description {
			t.Errorf("%s/%s annotation %s = %q, want %q", cm.Namespace, cm.Name, DescriptionAnnotation, got, Description)
		}
	}
	slices.Sort(out)
	return out
}

func TestPublishesInActiveNamespaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(
			namespace("a", corev1.NamespaceActive),
			namespace("b", ""),
			namespace("gone", corev1.NamespaceTerminating),
			configMap("a", "other", map[string]string{"x": "y"}),
		)
		start(t, client)
		if got, want := published(t, client), []string{"a", "b"}; !slices.Equal(got, want) {
			t.Errorf("published in %v, want %v", got, want)
		}
		other, err := client.CoreV1().ConfigMaps("a").Get(t.Context(), "other", metav1.GetOptions{})
		if err != nil || !maps.Equal(other.Data, map[string]string{"x": "y"}) {
			t.Errorf("a/other = %v, %v; want it untouched", other, err)
		}
	})
}

func TestNewNamespaceGetsBundle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		start(t, client)
		if _, err := client.CoreV1().Namespaces().Create(t.Context(), namespace("late", corev1.NamespaceActive), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := published(t, client), []string{"late"}; !slices.Equal(got, want) {
			t.Errorf("published in %v, want %v", got, want)
		}
	})
}

func TestRecreatesDeleted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(namespace("a", corev1.NamespaceActive))
		start(t, client)
		if err := client.CoreV1().ConfigMaps("a").Delete(t.Context(), ConfigMapName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := published(t, client), []string{"a"}; !slices.Equal(got, want) {
			t.Errorf("after deletion: published in %v, want %v", got, want)
		}
	})
}

func TestRestoresEditedContent(t *testing.T) {
	edits := map[string]func(cm *corev1.ConfigMap){
		"other bundle":       func(cm *corev1.ConfigMap) { cm.Data[Key] = "not the CA" },
		"extra key":          func(cm *corev1.ConfigMap) { cm.Data["extra"] = "x" },
		"key removed":        func(cm *corev1.ConfigMap) { cm.Data = nil },
		"binary data":        func(cm *corev1.ConfigMap) { cm.BinaryData = map[string][]byte{"bin": {1}} },
		"annotation removed": func(cm *corev1.ConfigMap) { cm.Annotations = nil },
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// One namespace starts edited, one is edited while running.
				before := configMap("a", ConfigMapName, map[string]string{Key: string(testCA())})
				before.Annotations = map[string]string{DescriptionAnnotation: Description, "owner": "me"}
				edit(before)
				client := fake.NewClientset(namespace("a", corev1.NamespaceActive), namespace("b", corev1.NamespaceActive), before)
				start(t, client)
				cm, err := client.CoreV1().ConfigMaps("b").Get(t.Context(), ConfigMapName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				edit(cm)
				if _, err := client.CoreV1().ConfigMaps("b").Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if got, want := published(t, client), []string{"a", "b"}; !slices.Equal(got, want) {
					t.Errorf("published in %v, want %v", got, want)
				}
				a, err := client.CoreV1().ConfigMaps("a").Get(t.Context(), ConfigMapName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if a.Annotations["owner"] != "me" && name != "annotation removed" {
					t.Errorf("other annotations were dropped: %v", a.Annotations)
				}
			})
		})
	}
}

func TestUpToDateIsNotWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cm := configMap("a", ConfigMapName, map[string]string{Key: string(testCA())})
		cm.Annotations = map[string]string{DescriptionAnnotation: Description}
		client := fake.NewClientset(namespace("a", corev1.NamespaceActive), cm)
		start(t, client)
		for _, a := range client.Actions() {
			if a.GetVerb() != "list" && a.GetVerb() != "watch" {
				t.Errorf("unexpected action %s %s", a.GetVerb(), a.GetResource().Resource)
			}
		}
	})
}

func TestRetriesFailedWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(namespace("a", corev1.NamespaceActive))
		var attempts atomic.Int32
		client.PrependReactor("create", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
			if attempts.Add(1) <= 3 {
				return true, nil, apierrors.NewServiceUnavailable("etcd is resting")
			}
			return false, nil, nil
		})
		start(t, client)
		time.Sleep(time.Second) // longer than three back-offs from 50 ms
		synctest.Wait()
		if got, want := published(t, client), []string{"a"}; !slices.Equal(got, want) {
			t.Errorf("published in %v, want %v", got, want)
		}
		if got := attempts.Load(); got != 4 {
			t.Errorf("create attempts = %d, want 4", got)
		}
	})
}

func TestNewValidates(t *testing.T) {
	client := fake.NewClientset()
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"empty", Config{}, []string{"Config.Client is required", "Config.CACert is required"}},
		{"not PEM", Config{Client: client, CACert: []byte("not a certificate")}, []string{"Config.CACert"}},
		{"negative resync", Config{Client: client, CACert: testCA(), ResyncPeriod: -time.Second}, []string{"Config.ResyncPeriod"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil {
				t.Fatal("New() = nil error, want one")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("New() error %q does not mention %q", err, want)
				}
			}
		})
	}
	if _, err := New(Config{Client: client, CACert: testCA()}); err != nil {
		t.Errorf("New(valid) = %v", err)
	}
}
