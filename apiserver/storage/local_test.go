package storage_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	apistorage "k8s.io/apiserver/pkg/storage"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"

	"tether/apiserver/storage"
	"tether/apiserver/storage/storagetest"
)

// configMaps builds the configmaps storage the registry would, on b.
func configMaps(t *testing.T, b storage.Backend, cached bool) apistorage.Interface {
	t.Helper()
	ro, err := storage.RESTOptions{Backend: b, DisableWatchCache: !cached}.GetRESTOptions(schema.GroupResource{Resource: "configmaps"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	attrs := func(obj runtime.Object) (labels.Set, fields.Set, error) {
		cm := obj.(*corev1.ConfigMap)
		return cm.Labels, fields.Set{"metadata.name": cm.Name, "metadata.namespace": cm.Namespace}, nil
	}
	keyFunc := func(obj runtime.Object) (string, error) {
		cm := obj.(*corev1.ConfigMap)
		return "/" + ro.ResourcePrefix + "/" + cm.Namespace + "/" + cm.Name, nil
	}
	s, destroy, err := ro.Decorator(ro.StorageConfig, "/"+ro.ResourcePrefix, keyFunc,
		func() runtime.Object { return &corev1.ConfigMap{} }, func() runtime.Object { return &corev1.ConfigMapList{} },
		attrs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(destroy)
	return s
}

// TestLocalStorage checks the API server's storage on the in-process
// client: writes, reads, watches, consistent lists from the watch cache, and
// a read past its deadline.
func TestLocalStorage(t *testing.T) {
	e := storagetest.Start(t)
	b := e.Backend()
	if b.Local != e || len(b.Servers) != 1 {
		t.Fatalf("Backend() = %+v, want the member as Local and its socket as the one server", b)
	}

	// The storage layer learns that this member answers progress
	// requests; without that the watch cache would send every consistent
	// LIST to etcd.
	deadline := time.Now().Add(10 * time.Second)
	for !etcdfeature.DefaultFeatureSupportChecker.Supports(apistorage.RequestWatchProgress) {
		if time.Now().After(deadline) {
			t.Fatal("RequestWatchProgress not known as supported 10s after the member started")
		}
		time.Sleep(20 * time.Millisecond)
	}

	for _, cached := range []bool{false, true} {
		name := map[bool]string{false: "etcd", true: "cached"}[cached]
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			s := configMaps(t, b, cached)
			dir := "/configmaps/" + name + "/"
			key := dir + name
			for ready := time.Now().Add(10 * time.Second); s.ReadinessCheck() != nil; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(ready) {
					t.Fatalf("storage not ready after 10s: %v", s.ReadinessCheck())
				}
			}
			w, err := s.Watch(ctx, dir, apistorage.ListOptions{ResourceVersion: "0", Predicate: apistorage.Everything, Recursive: true})
			if err != nil {
				t.Fatalf("Watch = %v", err)
			}
			defer w.Stop()

			in := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name}, Data: map[string]string{"k": "v"}}
			out := &corev1.ConfigMap{}
			if err := s.Create(ctx, key, in, out, 0); err != nil {
				t.Fatalf("Create = %v", err)
			}
			if out.ResourceVersion == "" {
				t.Fatal("Create: no resourceVersion")
			}
			got := &corev1.ConfigMap{}
			if err := s.Get(ctx, key, apistorage.GetOptions{}, got); err != nil || got.Data["k"] != "v" || got.ResourceVersion != out.ResourceVersion {
				t.Fatalf("Get = %+v, %v; want data k=v at resourceVersion %s", got, err, out.ResourceVersion)
			}
			list := &corev1.ConfigMapList{}
			if err := s.GetList(ctx, dir, apistorage.ListOptions{Predicate: apistorage.Everything, Recursive: true}, list); err != nil {
				t.Fatalf("GetList = %v", err)
			}
			if len(list.Items) != 1 || list.ResourceVersion == "" {
				t.Fatalf("GetList = %d items at resourceVersion %q, want the one new object and a resourceVersion", len(list.Items), list.ResourceVersion)
			}
			select {
			case ev := <-w.ResultChan():
				m, err := meta.Accessor(ev.Object)
				if err != nil || ev.Type != watch.Added || m.GetName() != name {
					t.Fatalf("watch event = %s %v, want ADDED %s", ev.Type, ev.Object, name)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no watch event 10s after the create")
			}

			expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
			defer cancel()
			err = s.Get(expired, key, apistorage.GetOptions{}, &corev1.ConfigMap{})
			if !apierrors.IsTimeout(err) {
				t.Fatalf("Get past the deadline = %v, want a Timeout status", err)
			}
			// A write whose request has already timed out is not made.
			late := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: name}}
			if err := s.Create(expired, dir+"late", late, &corev1.ConfigMap{}, 0); err == nil {
				t.Fatal("Create past the deadline: no error")
			}
			if err := s.Get(ctx, dir+"late", apistorage.GetOptions{}, &corev1.ConfigMap{}); !apistorage.IsNotFound(err) {
				t.Fatalf("Get(late) after a create past its deadline = %v, want not found", err)
			}
			if err := s.Get(ctx, dir+"missing", apistorage.GetOptions{}, &corev1.ConfigMap{}); !apistorage.IsNotFound(err) {
				t.Fatalf("Get(missing) = %v, want a not-found storage error", err)
			}
		})
	}
}

// TestLocalNotRunning checks that storage on a member that has not started
// fails with an error naming it rather than a nil client.
func TestLocalNotRunning(t *testing.T) {
	e, err := storage.NewEmbedded(storage.EmbeddedConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := storage.RESTOptions{Backend: e.Backend()}.GetRESTOptions(schema.GroupResource{Resource: "configmaps"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ro.Decorator(ro.StorageConfig, "/configmaps", nil, nil, nil, nil, nil, nil)
	if err == nil {
		t.Fatal("storage on a member that is not running: no error")
	}
}
