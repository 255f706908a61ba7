package volume

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// tokenIssuer answers TokenRequests on a fake clientset with "token-<n>",
// expiring after the requested lifetime by the clock now.
type tokenIssuer struct {
	mu       sync.Mutex
	now      func() time.Time
	requests []issued
	fail     error
}

type issued struct {
	namespace, serviceAccount string
	spec                      authenticationv1.TokenRequestSpec
}

func (ti *tokenIssuer) react(a k8stesting.Action) (bool, runtime.Object, error) {
	ca, ok := a.(k8stesting.CreateActionImpl)
	if !ok || a.GetSubresource() != "token" {
		return false, nil, nil
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if ti.fail != nil {
		return true, nil, ti.fail
	}
	req := ca.GetObject().(*authenticationv1.TokenRequest)
	ti.requests = append(ti.requests, issued{namespace: a.GetNamespace(), serviceAccount: ca.Name, spec: req.Spec})
	resp := req.DeepCopy()
	resp.Status = authenticationv1.TokenRequestStatus{
		Token:               fmt.Sprintf("token-%d", len(ti.requests)),
		ExpirationTimestamp: metav1.NewTime(ti.now().Add(time.Duration(*req.Spec.ExpirationSeconds) * time.Second)),
	}
	return true, resp, nil
}

func (ti *tokenIssuer) count() int {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return len(ti.requests)
}

func (ti *tokenIssuer) last() issued {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.requests[len(ti.requests)-1]
}

type fixture struct {
	m      *Manager
	client *fake.Clientset
	clock  *fakeClock
	tokens *tokenIssuer
	tmpfs  bool
}

// newFixture returns a Manager over a fake clientset holding objs. It uses
// tmpfs when the test can mount.
func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	clock := newFakeClock()
	client := fake.NewClientset(objs...)
	ti := &tokenIssuer{now: clock.Now}
	client.PrependReactor("create", "serviceaccounts", ti.react)
	tmpfs := tmpfsAvailable(t) == nil
	m, err := New(Config{
		Client:       client,
		PodsDir:      filepath.Join(t.TempDir(), "pods"),
		Now:          clock.Now,
		ResyncPeriod: time.Minute,
		DisableTmpfs: !tmpfs,
		Allocatable: func() corev1.ResourceList {
			return corev1.ResourceList{
				corev1.ResourceCPU:    mustQuantity("4"),
				corev1.ResourceMemory: mustQuantity("8Gi"),
			}
		},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &fixture{m: m, client: client, clock: clock, tokens: ti, tmpfs: tmpfs}
}

// setup calls Setup and registers a Teardown for the end of the test.
func (f *fixture) setup(t *testing.T, pod *corev1.Pod) map[string]Mount {
	t.Helper()
	t.Cleanup(func() {
		if err := f.m.Teardown(context.Background(), pod.UID); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	})
	mounts, err := f.m.Setup(t.Context(), pod)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	return mounts
}

func testPod(volumes ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web", Namespace: "ns", UID: types.UID("0f6e7a52-2b1c-4d0e-9a33-5e1b4c7d9a10"),
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"note": `say "hi"`},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "builder",
			Containers: []corev1.Container{{
				Name: "main",
				Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceCPU: mustQuantity("1500m")},
					Requests: corev1.ResourceList{corev1.ResourceCPU: mustQuantity("250m"), corev1.ResourceMemory: mustQuantity("64Mi")},
				},
			}},
			Volumes: volumes,
		},
	}
}

// fileInfo is what a test checks about one user-visible file.
type fileInfo struct {
	content string
	mode    fs.FileMode
}

// readVolume returns every regular file reachable through the volume's
// user-visible names, by relative path.
func readVolume(t *testing.T, dir string) map[string]fileInfo {
	t.Helper()
	got := map[string]fileInfo{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		root := filepath.Join(dir, e.Name())
		// Walk through the top-level symlink.
		err := filepath.WalkDir(root+"/", func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Stat(path)
			if err != nil {
				return err
			}
			if fi.IsDir() {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, filepath.Clean(path))
			got[filepath.ToSlash(rel)] = fileInfo{string(data), fi.Mode().Perm()}
			return nil
		})
		if err != nil {
			// A file: WalkDir of "name/" fails with ENOTDIR.
			fi, serr := os.Stat(root)
			if serr != nil || fi.IsDir() {
				t.Fatalf("walk %s: %v", root, err)
			}
			data, rerr := os.ReadFile(root)
			if rerr != nil {
				t.Fatalf("read %s: %v", root, rerr)
			}
			got[e.Name()] = fileInfo{string(data), fi.Mode().Perm()}
		}
	}
	return got
}

func diffFiles(got, want map[string]fileInfo) string {
	var lines []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			lines = append(lines, fmt.Sprintf("missing %s", k))
		case g != w:
			lines = append(lines, fmt.Sprintf("%s = {%q %v}, want {%q %v}", k, g.content, g.mode, w.content, w.mode))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			lines = append(lines, fmt.Sprintf("unexpected %s", k))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func ptr[T any](v T) *T { return &v }
