// Package integration tests a whole tether control plane in one process:
// real embedded etcd, real TLS on loopback, driven by client-go as kubectl
// and controllers drive it. Each test function starts its own cluster and
// runs subtests on it in distinct namespaces.
package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"tether/test/framework"
)

// contentTypes are the wire formats the typed clients are run with.
// client-go's clientset sends JSON unless told otherwise; kubectl and the
// controllers ask for protobuf.
var contentTypes = []struct {
	name        string
	contentType string
	accept      string
}{
	{"protobuf", runtime.ContentTypeProtobuf, runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON},
	{"json", runtime.ContentTypeJSON, runtime.ContentTypeJSON},
}

// newClient returns an admin clientset for c that speaks contentType and
// accepts accept, without client-side rate limiting.
func newClient(t testing.TB, c *framework.Cluster, contentType, accept string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(c.Admin)
	cfg.ContentType = contentType
	cfg.AcceptContentTypes = accept
	cfg.QPS = -1
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubernetes.NewForConfig: %v", err)
	}
	return client
}

// fastClient returns a JSON admin clientset for c without rate limiting.
func fastClient(t testing.TB, c *framework.Cluster) kubernetes.Interface {
	return newClient(t, c, runtime.ContentTypeJSON, runtime.ContentTypeJSON)
}

// createNamespace creates a namespace with a generated name starting with
// prefix and returns the name.
func createNamespace(t testing.TB, client kubernetes.Interface, prefix string) string {
	t.Helper()
	ns, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s-*: %v", prefix, err)
	}
	return ns.Name
}

// statusCode returns the HTTP status code of an API error, or 0.
func statusCode(err error) int32 {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Code
	}
	return 0
}

// itemNames returns the names of the items of a list object, sorted.
func itemNames(t testing.TB, list runtime.Object) []string {
	t.Helper()
	items, err := meta.ExtractList(list)
	if err != nil {
		t.Fatalf("meta.ExtractList(%T): %v", list, err)
	}
	var out []string
	for _, it := range items {
		m, err := meta.Accessor(it)
		if err != nil {
			t.Fatalf("meta.Accessor(%T): %v", it, err)
		}
		out = append(out, m.GetName())
	}
	slices.Sort(out)
	return out
}

// nextEvent returns the next event of w, failing the test if none arrives
// within timeout or the watch ends.
func nextEvent(t testing.TB, w watch.Interface, timeout time.Duration) watch.Event {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatalf("watch ended, want an event")
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("no watch event within %s", timeout)
	}
	panic("unreachable")
}

// unscheduledName is the spec.schedulerName of the pods of newPod: no
// scheduler serves it.
const unscheduledName = "no-scheduler"

// newPod returns a pod with one container per image, named c0, c1, …. Its
// spec states the fields the server defaults, so that tests of other
// features do not depend on defaulting (TestAPI/Defaulting checks that).
// It names a scheduler that does not run (unscheduledName): the
// in-process scheduler leaves it alone, so its status writes cannot race
// a test's read-modify-write updates.
func newPod(name string, images ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways,
			DNSPolicy:     corev1.DNSClusterFirst,
			SchedulerName: unscheduledName,
		},
	}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{
			Name:                     fmt.Sprintf("c%d", i),
			Image:                    img,
			ImagePullPolicy:          corev1.PullIfNotPresent,
			TerminationMessagePath:   corev1.TerminationMessagePathDefault,
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		})
	}
	return p
}

// getStatus fetches path with client and returns the status code and body.
func getStatus(ctx context.Context, client kubernetes.Interface, path string) (int, []byte, error) {
	var code int
	body, err := client.Discovery().RESTClient().Get().AbsPath(path).Do(ctx).StatusCode(&code).Raw()
	if code == 0 && err != nil {
		return 0, nil, err
	}
	return code, body, nil
}
