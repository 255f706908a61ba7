package integration

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"tether/test/framework"
)

// eventTimeout bounds the wait for one watch event.
const eventTimeout = 10 * time.Second

func TestWatch(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)
	client := fastClient(t, c)

	t.Run("Order", func(t *testing.T) {
		for _, ct := range contentTypes {
			t.Run(ct.name, func(t *testing.T) {
				testWatchOrder(t, newClient(t, c, ct.contentType, ct.accept))
			})
		}
	})

	t.Run("Resume", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "resume")
		cms := client.CoreV1().ConfigMaps(ns)
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm"}, Data: map[string]string{"n": "0"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(cm) = %v", err)
		}
		from := cm.ResourceVersion
		var want []string
		for i := 1; i <= 3; i++ {
			cm.Data["n"] = strconv.Itoa(i)
			if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("Update(cm, n=%d) = %v", i, err)
			}
			want = append(want, "MODIFIED n="+strconv.Itoa(i)+" rv="+cm.ResourceVersion)
		}
		if err := cms.Delete(ctx, "cm", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("Delete(cm) = %v", err)
		}
		want = append(want, "DELETED n=3")

		// Watching from the create's resourceVersion replays what came after.
		w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: from})
		if err != nil {
			t.Fatalf("Watch(resourceVersion %s) = %v", from, err)
		}
		defer w.Stop()
		var got []string
		for range want {
			ev := nextEventIgnoringRootCA(t, w, eventTimeout)
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok {
				t.Fatalf("Watch(resourceVersion %s) event %s %T, want a ConfigMap: %v", from, ev.Type, ev.Object, ev.Object)
			}
			s := string(ev.Type) + " n=" + cm.Data["n"]
			if ev.Type == watch.Modified {
				s += " rv=" + cm.ResourceVersion
			}
			got = append(got, s)
		}
		if !slices.Equal(got, want) {
			t.Errorf("Watch(resourceVersion %s) events = %q, want %q", from, got, want)
		}
	})

	t.Run("Selectors", func(t *testing.T) {
		testWatchSelectors(t, client)
	})

	t.Run("Bookmarks", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "bookmarks")
		cms := client.CoreV1().ConfigMaps(ns)
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(cm) = %v", err)
		}
		// The watch cache sends a bookmark shortly before a watch's
		// deadline (and otherwise about once a minute): a short timeout
		// makes it come within seconds.
		timeout := int64(5)
		w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: cm.ResourceVersion, AllowWatchBookmarks: true, TimeoutSeconds: &timeout})
		if err != nil {
			t.Fatalf("Watch(allowWatchBookmarks) = %v", err)
		}
		defer w.Stop()
		// A bookmark carries the watch cache's revision, and is sent only
		// once that is past the watch's start: a change elsewhere (here,
		// in another namespace, which this watch does not see) moves it.
		other := createNamespace(t, client, "bookmarks-other")
		moved, err := client.CoreV1().ConfigMaps(other).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(%s/elsewhere) = %v", other, err)
		}
		want, _ := strconv.ParseInt(moved.ResourceVersion, 10, 64)
		deadline := time.After(2 * time.Duration(timeout) * time.Second)
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatalf("Watch(allowWatchBookmarks, timeoutSeconds %d) ended without a BOOKMARK event", timeout)
				}
				if ev.Type != watch.Bookmark && isRootCA(ev.Object) {
					continue // the controller's, not this test's
				}
				if ev.Type != watch.Bookmark {
					t.Fatalf("Watch(allowWatchBookmarks) event %s %v, want only BOOKMARK", ev.Type, ev.Object)
				}
				b, ok := ev.Object.(*corev1.ConfigMap)
				if !ok {
					t.Fatalf("BOOKMARK object is %T, want *ConfigMap", ev.Object)
				}
				if rv, _ := strconv.ParseInt(b.ResourceVersion, 10, 64); rv < want {
					t.Errorf("BOOKMARK resourceVersion = %q, want at least %d", b.ResourceVersion, want)
				}
				return
			case <-deadline:
				t.Fatalf("no BOOKMARK within %ds of a watch with timeoutSeconds %d", 2*timeout, timeout)
			}
		}
	})

	t.Run("WatchList", func(t *testing.T) {
		// The streaming list informers use by default in client-go 0.37:
		// the current objects as ADDED events, then a bookmark marking the
		// end of the initial events.
		ctx := t.Context()
		ns := createNamespace(t, client, "watchlist")
		cms := client.CoreV1().ConfigMaps(ns)
		for _, name := range []string{"a", "b", "c"} {
			if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
				t.Fatalf("Create(%s) = %v", name, err)
			}
		}
		w, err := cms.Watch(ctx, metav1.ListOptions{
			SendInitialEvents:    ptrTo(true),
			ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
			AllowWatchBookmarks:  true,
		})
		if err != nil {
			t.Fatalf("Watch(sendInitialEvents) = %v", err)
		}
		defer w.Stop()
		var added []string
		for {
			ev := nextEvent(t, w, eventTimeout)
			if ev.Type == watch.Added {
				added = append(added, ev.Object.(*corev1.ConfigMap).Name)
				continue
			}
			if ev.Type != watch.Bookmark {
				t.Fatalf("Watch(sendInitialEvents) event %s %v, want ADDED or BOOKMARK", ev.Type, ev.Object)
			}
			b := ev.Object.(*corev1.ConfigMap)
			if b.Annotations[metav1.InitialEventsAnnotationKey] == "true" {
				break
			}
		}
		slices.Sort(added)
		if got, want := withoutRootCA(added), []string{"a", "b", "c"}; !slices.Equal(got, want) {
			t.Errorf("Watch(sendInitialEvents) initial ADDED = %v (without %s), want %v", got, rootCAConfigMap, want)
		}
	})

	t.Run("Expired", func(t *testing.T) {
		testWatchExpired(t, c)
	})
}

// testWatchOrder lists, then watches from the list's resourceVersion and
// checks that a create, an update and a delete arrive in order.
func testWatchOrder(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	ns := createNamespace(t, client, "order")
	cms := client.CoreV1().ConfigMaps(ns)
	list, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("List() = %v", err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatalf("Watch(resourceVersion %s) = %v", list.ResourceVersion, err)
	}
	defer w.Stop()

	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm"}, Data: map[string]string{"k": "v1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("Create(cm) = %v", err)
	}
	cm.Data["k"] = "v2"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("Update(cm) = %v", err)
	}
	if err := cms.Delete(ctx, "cm", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("Delete(cm) = %v", err)
	}

	want := []struct {
		typ  watch.EventType
		data string
	}{{watch.Added, "v1"}, {watch.Modified, "v2"}, {watch.Deleted, "v2"}}
	var last int64
	for i, w0 := range want {
		ev := nextEventIgnoringRootCA(t, w, eventTimeout)
		got, ok := ev.Object.(*corev1.ConfigMap)
		if !ok {
			t.Fatalf("event %d = %s %T %v, want %s of a ConfigMap", i, ev.Type, ev.Object, ev.Object, w0.typ)
		}
		if ev.Type != w0.typ || got.Name != "cm" || got.Data["k"] != w0.data {
			t.Errorf("event %d = %s %s k=%s, want %s cm k=%s", i, ev.Type, got.Name, got.Data["k"], w0.typ, w0.data)
		}
		rv, err := strconv.ParseInt(got.ResourceVersion, 10, 64)
		if err != nil || rv <= last {
			t.Errorf("event %d resourceVersion = %q, want a number above %d", i, got.ResourceVersion, last)
		}
		last = rv
	}
}

// testWatchExpired compacts etcd past a resourceVersion and checks that a
// watch from it fails with 410 Gone.
//
// The watch cache serves watches from its own window of events, which etcd
// compaction does not shorten: a watch from a compacted revision that is
// still in that window is served, as upstream. The window of a freshly
// started server begins at its start, so the test compacts, restarts the
// control plane on the same data, and then watches from the old revision.
func testWatchExpired(t *testing.T, c *framework.Cluster) {
	ctx := t.Context()
	client := fastClient(t, c)
	ns := createNamespace(t, client, "expired")
	cms := client.CoreV1().ConfigMaps(ns)
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm"}, Data: map[string]string{"n": "0"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("Create(cm) = %v", err)
	}
	old := cm.ResourceVersion
	for i := 1; i <= 3; i++ {
		cm.Data["n"] = strconv.Itoa(i)
		if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update(cm) = %v", err)
		}
	}
	rev, err := strconv.ParseInt(cm.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q is not a revision: %v", cm.ResourceVersion, err)
	}
	compactEtcd(t, c, rev)

	c.Stop(t)
	c2 := framework.StartCluster(t, framework.WithDataDir(c.DataDir))
	cms = fastClient(t, c2).CoreV1().ConfigMaps(ns)

	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: old})
	if err != nil {
		if statusCode(err) != http.StatusGone {
			t.Fatalf("Watch(resourceVersion %s, compacted at %d) = %v (code %d), want 410 Gone", old, rev, err, statusCode(err))
		}
		return
	}
	defer w.Stop()
	ev := nextEvent(t, w, eventTimeout)
	if ev.Type != watch.Error {
		t.Fatalf("Watch(resourceVersion %s, compacted at %d) first event = %s %v, want ERROR 410", old, rev, ev.Type, ev.Object)
	}
	err = apierrors.FromObject(ev.Object)
	if statusCode(err) != http.StatusGone || !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Errorf("Watch(resourceVersion %s, compacted at %d) ERROR = %v (code %d), want 410 Expired or Gone", old, rev, err, statusCode(err))
	}
}

// compactEtcd compacts the cluster's etcd at rev and waits for it.
func compactEtcd(t *testing.T, c *framework.Cluster, rev int64) {
	t.Helper()
	etcd, err := clientv3.New(clientv3.Config{Endpoints: c.ControlPlane.EtcdServers(), DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("clientv3.New(%v) = %v", c.ControlPlane.EtcdServers(), err)
	}
	defer etcd.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := etcd.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("etcd Compact(%d) = %v", rev, err)
	}
}

// testWatchSelectors checks watches narrowed by label and field selectors,
// as controllers (labels) and the kubelet (spec.nodeName, metadata.name)
// use them. An object that stops matching is reported as DELETED and one
// that starts matching as ADDED.
func testWatchSelectors(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	ns := createNamespace(t, client, "selectors")

	t.Run("Label", func(t *testing.T) {
		cms := client.CoreV1().ConfigMaps(ns)
		w, err := cms.Watch(ctx, metav1.ListOptions{LabelSelector: "app=watched"})
		if err != nil {
			t.Fatalf("Watch(labelSelector app=watched) = %v", err)
		}
		defer w.Stop()
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "moving", Labels: map[string]string{"app": "watched"}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(moving) = %v", err)
		}
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "unwatched", Labels: map[string]string{"app": "other"}}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(unwatched) = %v", err)
		}
		cm.Labels["app"] = "other"
		if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update(moving, app=other) = %v", err)
		}
		cm.Labels["app"] = "watched"
		if _, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update(moving, app=watched) = %v", err)
		}
		want := []string{"ADDED moving", "DELETED moving", "ADDED moving"}
		var got []string
		for range want {
			ev := nextEvent(t, w, eventTimeout)
			got = append(got, string(ev.Type)+" "+objectName(ev.Object))
		}
		if !slices.Equal(got, want) {
			t.Errorf("Watch(labelSelector app=watched) events = %q, want %q", got, want)
		}
	})

	t.Run("NodeName", func(t *testing.T) {
		pods := client.CoreV1().Pods(metav1.NamespaceAll)
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=watched-node"})
		if err != nil {
			t.Fatalf("Watch(all namespaces, fieldSelector spec.nodeName=watched-node) = %v", err)
		}
		defer w.Stop()
		for _, p := range []struct{ name, node string }{{"elsewhere", "other-node"}, {"unscheduled", ""}, {"here", "watched-node"}} {
			obj := newPod(p.name, "busybox:1.36")
			obj.Spec.NodeName = p.node
			if _, err := client.CoreV1().Pods(ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
				t.Fatalf("Create(pod %s) = %v", p.name, err)
			}
		}
		ev := nextEvent(t, w, eventTimeout)
		if got := string(ev.Type) + " " + objectName(ev.Object); got != "ADDED here" {
			t.Errorf("Watch(fieldSelector spec.nodeName=watched-node) first event = %q, want %q", got, "ADDED here")
		}
	})

	t.Run("Name", func(t *testing.T) {
		cms := client.CoreV1().ConfigMaps(ns)
		w, err := cms.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=only-me"})
		if err != nil {
			t.Fatalf("Watch(fieldSelector metadata.name=only-me) = %v", err)
		}
		defer w.Stop()
		for _, name := range []string{"not-me", "only-me"} {
			if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
				t.Fatalf("Create(%s) = %v", name, err)
			}
		}
		ev := nextEvent(t, w, eventTimeout)
		if got := string(ev.Type) + " " + objectName(ev.Object); got != "ADDED only-me" {
			t.Errorf("Watch(fieldSelector metadata.name=only-me) first event = %q, want %q", got, "ADDED only-me")
		}
	})
}

// objectName returns the name of a watch event's object, or its type if it
// has none (an ERROR's Status).
func objectName(obj runtime.Object) string {
	if m, err := meta.Accessor(obj); err == nil {
		return m.GetName()
	}
	return fmt.Sprintf("%T", obj)
}
