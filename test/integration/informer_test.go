package integration

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"tether/test/framework"
)

// requestLog records the requests a client sends.
type requestLog struct {
	mu   sync.Mutex
	reqs []*http.Request
	next http.RoundTripper
}

func (l *requestLog) RoundTrip(r *http.Request) (*http.Response, error) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r.Clone(r.Context()))
	l.mu.Unlock()
	return l.next.RoundTrip(r)
}

// configMapRequests returns the GETs sent for configmaps: the plain lists
// and the watches (with their query).
func (l *requestLog) configMapRequests() (lists, watches []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.reqs {
		if r.Method != http.MethodGet || path.Base(r.URL.Path) != "configmaps" {
			continue
		}
		if r.URL.Query().Get("watch") == "true" {
			watches = append(watches, r.URL.RawQuery)
		} else {
			lists = append(lists, r.URL.RawQuery)
		}
	}
	return lists, watches
}

func TestInformer(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)
	ctx := t.Context()

	if !clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
		t.Fatalf("client-go feature WatchListClient is off; this test means to exercise the client-go 0.37 default (on)")
	}

	log := &requestLog{}
	cfg := rest.CopyConfig(c.Admin)
	cfg.QPS = -1
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { log.next = rt; return log })
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubernetes.NewForConfig: %v", err)
	}

	ns := createNamespace(t, client, "informer")
	cms := client.CoreV1().ConfigMaps(ns)
	for _, name := range []string{"pre-a", "pre-b"} {
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(%s) = %v", name, err)
		}
	}

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	cmInformer := factory.Core().V1().ConfigMaps()
	// The handlers report the test's ConfigMaps, not the namespace's
	// kube-root-ca.crt, which the controller creates at a time of its own.
	events := make(chan string, 100)
	if _, err := cmInformer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
		FilterFunc: func(obj any) bool {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			return obj.(*corev1.ConfigMap).Name != rootCAConfigMap
		},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { events <- "add " + obj.(*corev1.ConfigMap).Name },
			UpdateFunc: func(_, obj any) {
				cm := obj.(*corev1.ConfigMap)
				events <- "update " + cm.Name + " k=" + cm.Data["k"]
			},
			DeleteFunc: func(obj any) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				events <- "delete " + obj.(*corev1.ConfigMap).Name
			},
		},
	}); err != nil {
		t.Fatalf("AddEventHandler: %v", err)
	}
	stop := make(chan struct{})
	defer func() { close(stop); factory.Shutdown() }()
	factory.Start(stop)

	syncCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for typ, ok := range factory.WaitForCacheSync(syncCtx.Done()) {
		if !ok {
			t.Fatalf("WaitForCacheSync: %v not synced within 10s", typ)
		}
	}

	t.Run("InitialList", func(t *testing.T) {
		got, err := cmInformer.Lister().ConfigMaps(ns).List(labels.Everything())
		if err != nil {
			t.Fatalf("Lister().List() = %v", err)
		}
		var n []string
		for _, cm := range got {
			n = append(n, cm.Name)
		}
		slices.Sort(n)
		if got, want := withoutRootCA(n), []string{"pre-a", "pre-b"}; !slices.Equal(got, want) {
			t.Errorf("Lister().List() after sync = %v (without %s), want %v", got, rootCAConfigMap, want)
		}
		lists, watches := log.configMapRequests()
		if len(lists) != 0 {
			t.Errorf("informer sent LIST requests %q, want a watch-list stream only (the server refused sendInitialEvents?)", lists)
		}
		if !slices.ContainsFunc(watches, func(q string) bool {
			v, err := url.ParseQuery(q)
			return err == nil && v.Get("sendInitialEvents") == "true"
		}) {
			t.Errorf("informer watches = %q, want one with sendInitialEvents=true", watches)
		}
	})

	t.Run("Changes", func(t *testing.T) {
		want := []string{"add pre-a", "add pre-b"}
		got := collectEvents(t, events, len(want))
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("initial handler events = %q, want %q", got, want)
		}

		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "live"}, Data: map[string]string{"k": "1"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(live) = %v", err)
		}
		cm.Data["k"] = "2"
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update(live) = %v", err)
		}
		if err := cms.Delete(ctx, "live", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("Delete(live) = %v", err)
		}
		want = []string{"add live", "update live k=2", "delete live"}
		if got := collectEvents(t, events, len(want)); !slices.Equal(got, want) {
			t.Errorf("handler events = %q, want %q", got, want)
		}
	})
}

// collectEvents reads n strings from ch, failing the test after 10s.
func collectEvents(t *testing.T, ch <-chan string, n int) []string {
	t.Helper()
	var out []string
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case s := <-ch:
			out = append(out, s)
		case <-timeout:
			t.Fatalf("got events %q within 10s, want %d", out, n)
		}
	}
	return out
}
