package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func configMapVolume(name, cm string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm},
	}}}
}

func updateConfigMap(t *testing.T, f *fixture, cm *corev1.ConfigMap) {
	t.Helper()
	if _, err := f.client.CoreV1().ConfigMaps(cm.Namespace).Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update configmap: %v", err)
	}
}

func countActions(client *fake.Clientset, verb, resource string) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

func TestSetupCachedAndUnchanged(t *testing.T) {
	f := newFixture(t, configMap("cfg", map[string]string{"a": "1"}))
	pod := testPod(configMapVolume("cfg", "cfg"))
	mounts := f.setup(t, pod)
	dir := mounts["cfg"].HostPath
	first := checkLayout(t, dir)
	gets := countActions(f.client, "get", "configmaps")

	// Within ResyncPeriod: nothing is fetched.
	if _, err := f.m.Setup(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if n := countActions(f.client, "get", "configmaps"); n != gets {
		t.Errorf("Setup within the resync period made %d gets, want 0", n-gets)
	}
	// After it: fetched again, but the same content writes no new version.
	f.clock.Advance(2 * time.Minute)
	if _, err := f.m.Setup(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if n := countActions(f.client, "get", "configmaps"); n != gets+1 {
		t.Errorf("Setup after the resync period made %d gets, want 1", n-gets)
	}
	if again := checkLayout(t, dir); again != first {
		t.Errorf("..data moved from %s to %s for unchanged content", first, again)
	}
	// A changed pod (labels feed downwardAPI) is synced at once.
	pod2 := pod.DeepCopy()
	pod2.Labels["new"] = "label"
	if _, err := f.m.Setup(t.Context(), pod2); err != nil {
		t.Fatal(err)
	}
	if n := countActions(f.client, "get", "configmaps"); n != gets+2 {
		t.Errorf("Setup of a changed pod made %d gets in all, want 2", n-gets)
	}
}

func TestConfigMapUpdate(t *testing.T) {
	cm := configMap("cfg", map[string]string{"a": "1", "old": "x"})
	f := newFixture(t, cm)
	pod := testPod(configMapVolume("cfg", "cfg"))
	dir := f.setup(t, pod)["cfg"].HostPath
	first := checkLayout(t, dir)

	cm = cm.DeepCopy()
	cm.Data = map[string]string{"a": "2", "new": "y"}
	updateConfigMap(t, f, cm)
	f.clock.Advance(2 * time.Minute)
	if _, err := f.m.Setup(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	second := checkLayout(t, dir) // also: no stale hidden entries
	if second == first {
		t.Fatalf("..data still points at %s after an update", first)
	}
	if _, err := os.Lstat(filepath.Join(dir, first)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old version %s: %v, want it removed", first, err)
	}
	want := map[string]fileInfo{"a": {"2", 0o644}, "new": {"y", 0o644}}
	if d := diffFiles(readVolume(t, dir), want); d != "" {
		t.Errorf("after update:\n%s", d)
	}
}

// TestRunPicksUpUpdate: Run's resync brings a changed configMap without a
// Setup call.
func TestRunPicksUpUpdate(t *testing.T) {
	cm := configMap("cfg", map[string]string{"a": "1"})
	f := newFixture(t, cm)
	f.m.resync = 10 * time.Millisecond
	pod := testPod(configMapVolume("cfg", "cfg"))
	dir := f.setup(t, pod)["cfg"].HostPath

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	cm = cm.DeepCopy()
	cm.Data["a"] = "2"
	updateConfigMap(t, f, cm)
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(dir, "a"))
		if err == nil && string(data) == "2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a = %q (%v) 10s after the update, want 2", data, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	checkLayout(t, dir)
}

// TestUpdateIsAtomic: a reader that resolves ..data once always sees both
// keys from the same version while versions are replaced under it.
func TestUpdateIsAtomic(t *testing.T) {
	cm := configMap("pair", map[string]string{"left": "0", "right": "0"})
	f := newFixture(t, cm)
	pod := testPod(configMapVolume("pair", "pair"))
	dir := f.setup(t, pod)["pair"].HostPath

	stop := make(chan struct{})
	var reads, mixed atomic.Int64
	var wg sync.WaitGroup
	var firstMix atomic.Value
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				left, right, err := readPair(dir)
				if err != nil {
					continue // the version was removed under us; retry
				}
				reads.Add(1)
				if left != right {
					mixed.Add(1)
					firstMix.CompareAndSwap(nil, fmt.Sprintf("left=%q right=%q", left, right))
				}
			}
		})
	}

	versions := 200
	if testing.Short() {
		versions = 50
	}
	for i := 1; i <= versions; i++ {
		cm = cm.DeepCopy()
		v := fmt.Sprint(i)
		cm.Data = map[string]string{"left": v, "right": v}
		updateConfigMap(t, f, cm)
		f.clock.Advance(2 * time.Minute)
		if _, err := f.m.Setup(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if mixed.Load() != 0 {
		t.Errorf("%d of %d reads mixed versions, first: %s", mixed.Load(), reads.Load(), firstMix.Load())
	}
	if reads.Load() == 0 {
		t.Error("the readers never completed a read")
	}
	t.Logf("%d consistent reads across %d versions", reads.Load(), versions)
	checkLayout(t, dir)
	want := map[string]fileInfo{"left": {fmt.Sprint(versions), 0o644}, "right": {fmt.Sprint(versions), 0o644}}
	if d := diffFiles(readVolume(t, dir), want); d != "" {
		t.Errorf("final content:\n%s", d)
	}
}

// readPair reads both keys through one resolution of ..data, as a program
// reading its configuration at once would.
func readPair(dir string) (string, string, error) {
	target, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		return "", "", err
	}
	left, err := os.ReadFile(filepath.Join(dir, target, "left"))
	if err != nil {
		return "", "", err
	}
	right, err := os.ReadFile(filepath.Join(dir, target, "right"))
	if err != nil {
		return "", "", err
	}
	return string(left), string(right), nil
}

func tokenPod() *corev1.Pod {
	return testPod(corev1.Volume{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}},
	}}})
}

func readToken(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil {
		t.Fatalf("read token: %v", err)
	}
	return string(data)
}

// TestTokenRefreshAt80Percent drives the refresh through Setup with a fake
// clock.
func TestTokenRefreshAt80Percent(t *testing.T) {
	f := newFixture(t)
	pod := tokenPod()
	dir := f.setup(t, pod)["kube-api-access"].HostPath
	if got := readToken(t, dir); got != "token-1" {
		t.Fatalf("token = %q, want token-1", got)
	}

	// 3600 s lifetime: due at 2880 s.
	f.clock.Advance(2879 * time.Second)
	if _, err := f.m.Setup(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if got, n := readToken(t, dir), f.tokens.count(); got != "token-1" || n != 1 {
		t.Errorf("before 80%%: token = %q after %d requests, want token-1 after 1", got, n)
	}
	f.clock.Advance(2 * time.Second)
	if _, err := f.m.Setup(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if got, n := readToken(t, dir), f.tokens.count(); got != "token-2" || n != 2 {
		t.Errorf("after 80%%: token = %q after %d requests, want token-2 after 2", got, n)
	}

	// A failed refresh keeps the valid token.
	f.tokens.mu.Lock()
	f.tokens.fail = errors.New("apiserver unavailable")
	f.tokens.mu.Unlock()
	f.clock.Advance(2881 * time.Second)
	if _, err := f.m.Setup(t.Context(), pod); err != nil {
		t.Fatalf("Setup with a failing but still valid token: %v", err)
	}
	if got := readToken(t, dir); got != "token-2" {
		t.Errorf("after a failed refresh: token = %q, want token-2", got)
	}
}

// TestTokenRefreshByRun: Run refreshes a due token in the background.
func TestTokenRefreshByRun(t *testing.T) {
	f := newFixture(t)
	f.m.resync = time.Hour
	pod := tokenPod()
	dir := f.setup(t, pod)["kube-api-access"].HostPath

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// The fake clock jumps past 80 %; the kick from Setup's bookkeeping is
	// gone, so wake Run as a new token would.
	f.clock.Advance(2881 * time.Second)
	f.m.wake()
	deadline := time.Now().Add(10 * time.Second)
	for readToken(t, dir) != "token-2" {
		if time.Now().After(deadline) {
			t.Fatalf("token = %q 10s after it was due, want token-2", readToken(t, dir))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTokenTimer: in a synctest bubble, Run's timer alone (the resync is an
// hour away) replaces a 600 s token at 480 s, and again 480 s later.
func TestTokenTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		ti := &tokenIssuer{now: time.Now}
		client.PrependReactor("create", "serviceaccounts", ti.react)
		m, err := New(Config{
			Client:       client,
			PodsDir:      filepath.Join(t.TempDir(), "pods"),
			ResyncPeriod: time.Hour,
			DisableTmpfs: tmpfsAvailable(t) != nil,
		})
		if err != nil {
			t.Fatal(err)
		}
		pod := tokenPod()
		pod.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken.ExpirationSeconds = ptr[int64](600)
		mounts, err := m.Setup(t.Context(), pod)
		if err != nil {
			t.Fatal(err)
		}
		dir := mounts["kube-api-access"].HostPath

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()

		time.Sleep(479 * time.Second)
		synctest.Wait()
		if got := readToken(t, dir); got != "token-1" {
			t.Errorf("at 479 s: token = %q, want token-1", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := readToken(t, dir); got != "token-2" {
			t.Errorf("at 481 s: token = %q, want token-2", got)
		}
		time.Sleep(480 * time.Second)
		synctest.Wait()
		if got := readToken(t, dir); got != "token-3" {
			t.Errorf("at 961 s: token = %q, want token-3", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := m.Teardown(context.Background(), pod.UID); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	})
}
