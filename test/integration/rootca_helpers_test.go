package integration

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"tether/test/framework"
)

// rootCAConfigMap is the ConfigMap the root CA controller
// (controllers/rootcacert) creates in every namespace, some time after the
// namespace appears. Tests that list or watch all the ConfigMaps of a
// namespace of their own ignore it, as upstream's tests do, or wait for it
// (waitRootCA) when they count every object.
const rootCAConfigMap = "kube-root-ca.crt"

// rootCAAppears bounds how long the controller takes to create a new
// namespace's kube-root-ca.crt.
const rootCAAppears = 30 * time.Second

// isRootCA reports whether obj is a namespace's kube-root-ca.crt.
func isRootCA(obj runtime.Object) bool {
	cm, ok := obj.(*corev1.ConfigMap)
	return ok && cm.Name == rootCAConfigMap
}

// withoutRootCA returns names without rootCAConfigMap.
func withoutRootCA(names []string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == rootCAConfigMap })
}

// configMapNames returns the sorted names of the ConfigMaps of list other
// than kube-root-ca.crt: those a test created.
func configMapNames(t testing.TB, list *corev1.ConfigMapList) []string {
	t.Helper()
	return withoutRootCA(itemNames(t, list))
}

// nextEventIgnoringRootCA returns the next event of w that is not about
// kube-root-ca.crt, failing the test if none arrives within timeout or the
// watch ends. The controller may create that ConfigMap at any time after
// the namespace appears, so a watch of a new namespace's ConfigMaps may see
// it come in among the test's own events.
func nextEventIgnoringRootCA(t testing.TB, w watch.Interface, timeout time.Duration) watch.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ev := nextEvent(t, w, time.Until(deadline))
		if isRootCA(ev.Object) {
			continue
		}
		return ev
	}
}

// waitRootCA waits until the controller has created ns's kube-root-ca.crt,
// so that from then on the namespace's ConfigMaps are it and those the test
// creates.
func waitRootCA(t testing.TB, client kubernetes.Interface, ns string) {
	t.Helper()
	framework.Eventually(t, rootCAAppears, func() (bool, error) {
		_, err := client.CoreV1().ConfigMaps(ns).Get(t.Context(), rootCAConfigMap, metav1.GetOptions{})
		return err == nil, err
	})
}
