package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// fakeInformer is an informer whose cache syncs when the test says so.
type fakeInformer struct {
	started atomic.Bool
	synced  atomic.Bool
}

func (f *fakeInformer) Start(<-chan struct{}) { f.started.Store(true) }
func (f *fakeInformer) HasSynced() bool       { return f.started.Load() && f.synced.Load() }

var _ Starter = (*fakeInformer)(nil)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestRunWaitsForSyncThenRetriesFailedKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		q := New[string]("test", 10*time.Millisecond, time.Second)
		inf := &fakeInformer{}
		ready := make(chan struct{})

		var mu sync.Mutex
		calls := map[string]int{}
		var failures []string
		var started atomic.Bool
		cfg := Config[string]{
			Queue:     q,
			Informers: []Starter{inf, nil},
			Synced:    []cache.InformerSynced{inf.HasSynced},
			Ready:     ready,
			Workers:   2,
			Start: func(context.Context) error {
				started.Store(true)
				return nil
			},
			Sync: func(_ context.Context, key string) error {
				mu.Lock()
				defer mu.Unlock()
				calls[key]++
				if key == "flaky" && calls[key] == 1 {
					return errors.New("first try fails")
				}
				return nil
			},
			Failed: func(key string, err error) {
				mu.Lock()
				defer mu.Unlock()
				failures = append(failures, key)
			},
		}
		done := make(chan error, 1)
		go func() { done <- Run(ctx, cfg) }()
		q.Add("flaky")
		q.Add("steady")

		time.Sleep(time.Second)
		synctest.Wait()
		if !inf.started.Load() {
			t.Fatal("informer not started")
		}
		if started.Load() || closed(ready) {
			t.Fatalf("before the cache synced: Start called %v, Ready closed %v; want neither", started.Load(), closed(ready))
		}
		mu.Lock()
		if len(calls) != 0 {
			t.Errorf("Sync calls before the cache synced = %v, want none", calls)
		}
		mu.Unlock()

		inf.synced.Store(true)
		time.Sleep(time.Second) // past the poll period and the back-off
		synctest.Wait()
		if !started.Load() || !closed(ready) {
			t.Fatalf("after the cache synced: Start called %v, Ready closed %v; want both", started.Load(), closed(ready))
		}
		mu.Lock()
		if calls["flaky"] != 2 || calls["steady"] != 1 {
			t.Errorf("Sync calls = %v, want flaky twice and steady once", calls)
		}
		if len(failures) != 1 || failures[0] != "flaky" {
			t.Errorf("Failed calls = %v, want [flaky]", failures)
		}
		mu.Unlock()
		if n := q.NumRequeues("flaky"); n != 0 {
			t.Errorf("NumRequeues(flaky) after success = %d, want 0 (forgotten)", n)
		}

		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		if !q.ShuttingDown() {
			t.Error("queue not shut down after Run returned")
		}
	})
}

func TestRunStopsWorkersWhenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		q := New[int]("test", time.Millisecond, time.Second)
		const workers = 3
		var inside, finished atomic.Int32
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config[int]{
				Queue:   q,
				Workers: workers,
				Sync: func(ctx context.Context, _ int) error {
					inside.Add(1)
					<-ctx.Done() // a long sync that honours ctx
					finished.Add(1)
					return ctx.Err()
				},
			})
		}()
		for i := range workers + 2 {
			q.Add(i)
		}
		synctest.Wait()
		if n := inside.Load(); n != workers {
			t.Fatalf("keys being synced at once = %d, want %d", n, workers)
		}

		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		// Keys still queued at shutdown may be handed out, and their sync
		// sees the ended ctx; every sync that began has ended.
		if in, out := inside.Load(), finished.Load(); out != in {
			t.Errorf("syncs finished when Run returned = %d, want all %d begun", out, in)
		}
		for i := range workers + 2 {
			if n := q.NumRequeues(i); n != 0 {
				t.Errorf("NumRequeues(%d) after a shutdown error = %d, want 0", i, n)
			}
		}
		// synctest.Test fails if a goroutine started by Run is still
		// around when this function returns.
	})
}

func TestRunEndsBeforeSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		ready := make(chan struct{})
		inf := &fakeInformer{} // never syncs
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config[string]{
				Queue:  New[string]("test", time.Millisecond, time.Second),
				Synced: []cache.InformerSynced{inf.HasSynced},
				Ready:  ready,
				Start: func(context.Context) error {
					t.Error("Start called before the cache synced")
					return nil
				},
				Sync: func(context.Context, string) error { return nil },
			})
		}()
		time.Sleep(time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		if closed(ready) {
			t.Error("Ready closed although the cache never synced")
		}
	})
}

func TestRunReturnsStartError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ready := make(chan struct{})
		want := errors.New("start failed")
		q := New[string]("test", time.Millisecond, time.Second)
		err := Run(t.Context(), Config[string]{
			Queue: q,
			Ready: ready,
			Start: func(context.Context) error { return want },
			Sync: func(context.Context, string) error {
				t.Error("Sync called after Start failed")
				return nil
			},
		})
		if !errors.Is(err, want) {
			t.Errorf("Run() = %v, want %v", err, want)
		}
		if closed(ready) {
			t.Error("Ready closed although Start failed")
		}
		if !q.ShuttingDown() {
			t.Error("queue not shut down after Run returned")
		}
	})
}

func TestRunLeavesClosedReadyAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		ready := make(chan struct{})
		close(ready)
		// A second close would panic.
		if err := Run(ctx, Config[string]{
			Queue: New[string]("test", time.Millisecond, time.Second),
			Ready: ready,
			Start: func(context.Context) error {
				cancel() // Run stops right after the start
				return nil
			},
			Sync: func(context.Context, string) error { return nil },
		}); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
}

func TestRunRegistersHandlersForItsDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		configMap := func(name string) *corev1.ConfigMap {
			return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}}
		}
		client := fake.NewClientset(configMap("one"))
		// The informer outlives Run, so that a handler left behind would
		// still be called.
		factory := informers.NewSharedInformerFactory(client, 0)
		stop := make(chan struct{})
		defer factory.Shutdown()
		defer close(stop)
		informer := factory.Core().V1().ConfigMaps().Informer()
		factory.Start(stop)

		ctx, cancel := context.WithCancel(t.Context())
		q := New[string]("test", time.Millisecond, time.Second)
		var handled, synced atomic.Int32
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config[string]{
				Queue: q,
				Handlers: []Handler{{
					Informer: informer,
					Handler: cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
						handled.Add(1)
						q.Add(obj.(*corev1.ConfigMap).Name)
					}},
				}},
				Informers: []Starter{factory},
				Start: func(context.Context) error {
					if n := q.Len(); n != 1 {
						t.Errorf("keys queued at Start = %d, want 1: the initial list", n)
					}
					return nil
				},
				Sync: func(context.Context, string) error {
					synced.Add(1)
					return nil
				},
			})
		}()
		time.Sleep(time.Second) // past the cache sync poll period
		synctest.Wait()
		if n := synced.Load(); n != 1 {
			t.Fatalf("syncs = %d, want 1", n)
		}

		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		if _, err := client.CoreV1().ConfigMaps("ns").Create(t.Context(), configMap("two"), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create configmap: %v", err)
		}
		synctest.Wait()
		if n := handled.Load(); n != 1 {
			t.Errorf("handler calls = %d, want 1: none after Run returned", n)
		}
	})
}
