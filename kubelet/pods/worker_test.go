package pods

import (
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A new worker holds its pod before its goroutine runs: a worker whose
// first sync finds no pod removes it (CI once saw a pod created on a busy
// node removed 30 ms later and never started).
func TestNewWorkerHoldsItsPod(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "u1"}}
	w := newWorker(&Manager{log: slog.New(slog.DiscardHandler)}, pod)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pod != pod || w.uid != pod.UID {
		t.Fatalf("new worker holds pod %v uid %q, want %s/%s %q", w.pod, w.uid, pod.Namespace, pod.Name, pod.UID)
	}
}
