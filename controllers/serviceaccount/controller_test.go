package serviceaccount

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
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

func namespace(name string, phase corev1.NamespacePhase) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NamespaceStatus{Phase: phase}}
}

func account(ns, name string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// start runs a controller on client until the test ends and waits until it
// has nothing left to do. It must be called inside a synctest bubble.
func start(t *testing.T, client *fake.Clientset) *Controller {
	t.Helper()
	c, err := New(Config{Client: client, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
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

// accounts returns "namespace/name" of every ServiceAccount, sorted.
func accounts(t *testing.T, client *fake.Clientset) []string {
	t.Helper()
	list, err := client.CoreV1().ServiceAccounts("").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list service accounts: %v", err)
	}
	var out []string
	for _, sa := range list.Items {
		out = append(out, sa.Namespace+"/"+sa.Name)
	}
	slices.Sort(out)
	return out
}

func TestCreatesDefaultInActiveNamespaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(
			namespace("a", corev1.NamespaceActive),
			namespace("b", ""), // phase not yet set: still active
			namespace("gone", corev1.NamespaceTerminating),
			account("a", "builder"),
		)
		start(t, client)
		want := []string{"a/builder", "a/default", "b/default"}
		if got := accounts(t, client); !slices.Equal(got, want) {
			t.Errorf("service accounts = %v, want %v", got, want)
		}
	})
}

func TestNewNamespaceGetsDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		start(t, client)
		if _, err := client.CoreV1().Namespaces().Create(t.Context(), namespace("late", corev1.NamespaceActive), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := accounts(t, client), []string{"late/default"}; !slices.Equal(got, want) {
			t.Errorf("service accounts = %v, want %v", got, want)
		}
	})
}

func TestRecreatesDeletedDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(namespace("a", corev1.NamespaceActive))
		start(t, client)
		if err := client.CoreV1().ServiceAccounts("a").Delete(t.Context(), DefaultName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := accounts(t, client), []string{"a/default"}; !slices.Equal(got, want) {
			t.Errorf("after deletion: service accounts = %v, want %v", got, want)
		}

		// Deleting another account does nothing; neither does deleting
		// default in a namespace that is terminating.
		if _, err := client.CoreV1().Namespaces().Update(t.Context(), namespace("a", corev1.NamespaceTerminating), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := client.CoreV1().ServiceAccounts("a").Delete(t.Context(), DefaultName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := accounts(t, client); len(got) != 0 {
			t.Errorf("in a terminating namespace: service accounts = %v, want none", got)
		}
	})
}

func TestLeavesExistingDefaultAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		no := false
		sa := account("a", DefaultName)
		sa.AutomountServiceAccountToken = &no
		sa.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "registry"}}
		client := fake.NewClientset(namespace("a", corev1.NamespaceActive), sa)
		start(t, client)
		for _, a := range client.Actions() {
			if a.GetVerb() != "list" && a.GetVerb() != "watch" {
				t.Errorf("unexpected action %s %s", a.GetVerb(), a.GetResource().Resource)
			}
		}
		got, err := client.CoreV1().ServiceAccounts("a").Get(t.Context(), DefaultName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.AutomountServiceAccountToken == nil || *got.AutomountServiceAccountToken || len(got.ImagePullSecrets) != 1 {
			t.Errorf("default account changed: %+v", got)
		}
	})
}

func TestRetriesFailedCreate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(namespace("a", corev1.NamespaceActive))
		var attempts atomic.Int32
		client.PrependReactor("create", "serviceaccounts", func(clienttesting.Action) (bool, runtime.Object, error) {
			if attempts.Add(1) <= 3 {
				return true, nil, apierrors.NewServiceUnavailable("etcd is resting")
			}
			return false, nil, nil
		})
		start(t, client)
		time.Sleep(time.Second) // longer than three back-offs from 50 ms
		synctest.Wait()
		if got, want := accounts(t, client), []string{"a/default"}; !slices.Equal(got, want) {
			t.Errorf("service accounts = %v, want %v", got, want)
		}
		if got := attempts.Load(); got != 4 {
			t.Errorf("create attempts = %d, want 4", got)
		}
	})
}

func TestTerminatingRefusalIsNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(namespace("a", corev1.NamespaceActive))
		var attempts atomic.Int32
		client.PrependReactor("create", "serviceaccounts", func(clienttesting.Action) (bool, runtime.Object, error) {
			attempts.Add(1)
			err := apierrors.NewForbidden(corev1.Resource("serviceaccounts"), DefaultName, nil)
			err.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: corev1.NamespaceTerminatingCause, Field: "a"}}
			return true, nil, err
		})
		start(t, client)
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := attempts.Load(); got != 1 {
			t.Errorf("create attempts = %d, want 1", got)
		}
	})
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{ResyncPeriod: -time.Second})
	if err == nil {
		t.Fatal("New(Config{}) = nil error, want one")
	}
	for _, want := range []string{"Config.Client is required", "Config.ResyncPeriod"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New() error %q does not mention %q", err, want)
		}
	}
}
