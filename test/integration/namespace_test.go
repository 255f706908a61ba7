package integration

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"tether/test/framework"
)

// namespaceGone bounds how long deleting a namespace and its contents may
// take.
const namespaceGone = 30 * time.Second

func TestNamespaceDeletion(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)
	client := fastClient(t, c)

	t.Run("Terminating", func(t *testing.T) {
		ctx := t.Context()
		// A finalizer of our own keeps the namespace Terminating after the
		// namespace controller has emptied it, so that the test can look.
		const hold = corev1.FinalizerName("tether.test/hold")
		ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "held-"},
			Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{hold}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(namespace held-*) = %v", err)
		}
		if want := []corev1.FinalizerName{hold, corev1.FinalizerKubernetes}; !slices.Equal(ns.Spec.Finalizers, want) {
			t.Errorf("Create(namespace %s).spec.finalizers = %v, want %v", ns.Name, ns.Spec.Finalizers, want)
		}
		fillNamespace(t, client, ns.Name)

		if err := client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("Delete(namespace %s) = %v", ns.Name, err)
		}
		got, err := client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(namespace %s) right after Delete = %v", ns.Name, err)
		}
		if got.Status.Phase != corev1.NamespaceTerminating || got.DeletionTimestamp == nil {
			t.Errorf("Get(namespace %s) right after Delete: phase %q, deletionTimestamp %v, want Terminating and set", ns.Name, got.Status.Phase, got.DeletionTimestamp)
		}

		_, err = client.CoreV1().ConfigMaps(ns.Name).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "late"}}, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || statusCode(err) != http.StatusForbidden {
			t.Errorf("Create(configmap late) in terminating namespace = %v (code %d), want 403 Forbidden", err, statusCode(err))
		} else if !strings.Contains(err.Error(), "because it is being terminated") {
			t.Errorf("Create(configmap late) in terminating namespace = %q, want it to say the namespace is being terminated", err)
		}

		// The controller empties the namespace and removes only its own
		// finalizer.
		framework.Eventually(t, namespaceGone, func() (bool, error) {
			if err := namespaceEmpty(t, client, ns.Name); err != nil {
				return false, err
			}
			got, err := client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if !slices.Equal(got.Spec.Finalizers, []corev1.FinalizerName{hold}) {
				return false, fmt.Errorf("spec.finalizers = %v, want [%s]", got.Spec.Finalizers, hold)
			}
			return true, nil
		})

		// Removing the last finalizer removes the namespace.
		got, err = client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(namespace %s) = %v", ns.Name, err)
		}
		if got.Status.Phase != corev1.NamespaceTerminating {
			t.Errorf("Get(namespace %s).status.phase while held = %q, want Terminating", ns.Name, got.Status.Phase)
		}
		got.Spec.Finalizers = nil
		if _, err := client.CoreV1().Namespaces().Finalize(ctx, got, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("Finalize(namespace %s, no finalizers) = %v", ns.Name, err)
		}
		waitNamespaceGone(t, client, ns.Name)
	})

	t.Run("Gone", func(t *testing.T) {
		ctx := t.Context()
		name := createNamespace(t, client, "gone")
		fillNamespace(t, client, name)
		if err := client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("Delete(namespace %s) = %v", name, err)
		}
		waitNamespaceGone(t, client, name)

		// A namespace of the same name starts empty: nothing of the old one
		// is left. (The controller gives it a kube-root-ca.crt of its own,
		// sooner or later: the old one's is gone, as waitNamespaceGone saw.)
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(namespace %s) again = %v", name, err)
		}
		if err := namespaceHolds(t, client, name, rootCAConfigMap); err != nil {
			t.Errorf("re-created namespace %s: %v", name, err)
		}
	})

	t.Run("SystemNamespaceDeleteForbidden", func(t *testing.T) {
		err := client.CoreV1().Namespaces().Delete(t.Context(), "kube-system", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		if !apierrors.IsForbidden(err) {
			t.Errorf("Delete(namespace kube-system, dryRun) = %v, want 403 Forbidden", err)
		}
	})
}

// fillNamespace creates a configmap, a secret and a pod in ns.
func fillNamespace(t *testing.T, client kubernetes.Interface, ns string) {
	t.Helper()
	ctx := t.Context()
	if _, err := client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("Create(%s/cm) = %v", ns, err)
	}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "secret"}, Type: corev1.SecretTypeOpaque}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("Create(%s/secret) = %v", ns, err)
	}
	if _, err := client.CoreV1().Pods(ns).Create(ctx, newPod("web", "nginx:1.27"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("Create(%s/pod web) = %v", ns, err)
	}
}

// namespaceEmpty returns an error naming what is left in ns of the kinds
// of objects fillNamespace creates: configmaps (the controller-created
// kube-root-ca.crt included), secrets and pods.
func namespaceEmpty(t *testing.T, client kubernetes.Interface, ns string) error {
	return namespaceHolds(t, client, ns)
}

// namespaceHolds is namespaceEmpty, except that ns may have the configmaps
// named allowed.
func namespaceHolds(t *testing.T, client kubernetes.Interface, ns string, allowed ...string) error {
	ctx := t.Context()
	cms, err := client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	secrets, err := client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	cmNames := slices.DeleteFunc(itemNames(t, cms), func(n string) bool { return slices.Contains(allowed, n) })
	if len(cmNames)+len(secrets.Items)+len(pods.Items) > 0 {
		return fmt.Errorf("namespace %s still has configmaps %v, secrets %v, pods %v", ns, cmNames, itemNames(t, secrets), itemNames(t, pods))
	}
	return nil
}

// waitNamespaceGone waits until ns and its contents are gone.
func waitNamespaceGone(t *testing.T, client kubernetes.Interface, ns string) {
	t.Helper()
	framework.Eventually(t, namespaceGone, func() (bool, error) {
		got, err := client.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return false, err
		default:
			return false, fmt.Errorf("namespace %s still exists: phase %s, spec.finalizers %v, conditions %v", ns, got.Status.Phase, got.Spec.Finalizers, got.Status.Conditions)
		}
		return true, namespaceEmpty(t, client, ns)
	})
}
