package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// adminClient returns a protobuf client-go clientset for s's admin
// kubeconfig with client-side rate limiting off.
func adminClient(t *testing.T, s *server) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatalf("load %s: %v", s.Kubeconfig, err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.QPS, cfg.Burst = -1, 0
	cfg.Timeout = 10 * time.Second
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	return c
}

// TestDurabilityAfterKill creates ConfigMaps from four goroutines, kills the
// server with SIGKILL while creates are in flight, restarts it on the same
// data directory and port, and checks that every create that was
// acknowledged with 201 survived.
func TestDurabilityAfterKill(t *testing.T) {
	const (
		workers  = 4
		minRun   = 2 * time.Second
		maxRun   = 10 * time.Second
		minCount = 300
	)
	s := startServer(t)
	client := adminClient(t, s)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		mu        sync.Mutex
		acked     []string
		attempted atomic.Int64
		failed    atomic.Int64
		killing   atomic.Bool
		firstErr  atomic.Value // the first error seen before the kill
		errBefore atomic.Int64
		wg        sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("dur-%d-%d", w, i)
				cm := &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: name},
					Data:       map[string]string{"worker": fmt.Sprint(w), "i": fmt.Sprint(i)},
				}
				attempted.Add(1)
				// client-go's Create returns no error only on a 2xx; the
				// API answers a create with 201 Created.
				if _, err := client.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					failed.Add(1)
					if !killing.Load() {
						errBefore.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}

	start := time.Now()
	for {
		el := time.Since(start)
		if el >= maxRun || (el >= minRun && count() >= minCount) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Kill while the workers are still sending.
	inFlight := count()
	killing.Store(true)
	s.Kill()
	killedAfter := time.Since(start)
	cancel()
	wg.Wait()
	mu.Lock()
	names := slices.Clone(acked)
	mu.Unlock()
	t.Logf("killed the server after %s: %d creates acknowledged (%d when the kill was sent), %d attempted, %d failed",
		killedAfter.Round(time.Millisecond), len(names), inFlight, attempted.Load(), failed.Load())
	if n := errBefore.Load(); n > 0 {
		t.Logf("note: %d creates failed before the kill; the first: %v", n, firstErr.Load())
	}
	if len(names) == 0 {
		t.Fatalf("no create was acknowledged before the kill")
	}
	if len(names) < minCount {
		t.Logf("note: only %d creates in %s (wanted >= %d); the check still runs", len(names), maxRun, minCount)
	}

	// A killed process leaves its unix sockets behind; the restart must
	// clean them up.
	for _, sock := range []string{"etcd.sock", "etcd-peer.sock"} {
		p := filepath.Join(s.dataDir, "etcd", sock)
		if _, err := os.Stat(p); err == nil {
			t.Logf("stale socket %s present before the restart", p)
		}
	}
	restartAt := time.Now()
	s.Restart()
	t.Logf("server ready again %s after the restart", time.Since(restartAt).Round(time.Millisecond))

	client = adminClient(t, s)
	list, err := client.CoreV1().ConfigMaps("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list configmaps after the restart: %v", err)
	}
	present := map[string]bool{}
	for _, cm := range list.Items {
		present[cm.Name] = true
	}
	var lost []string
	for _, n := range names {
		if !present[n] {
			lost = append(lost, n)
		}
	}
	t.Logf("after the restart: %d configmaps in default (%d acknowledged before the kill, %d lost)", len(list.Items), len(names), len(lost))
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged ConfigMaps are missing after kill -9 and restart, e.g. %v", len(lost), len(names), lost[:min(10, len(lost))])
	}

	// The restarted server takes writes too.
	if _, err := client.CoreV1().ConfigMaps("default").Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-restart"}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("create after the restart: %v", err)
	}
}
