package integration

import (
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"tether/test/framework"
)

func TestRestart(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)
	client := fastClient(t, c)
	ctx := t.Context()

	ns := createNamespace(t, client, "persist")
	cm, err := client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cm", Labels: map[string]string{"a": "b"}},
		Data:       map[string]string{"k": "v"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("Create(cm) = %v", err)
	}
	secret, err := client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "secret"},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"password": []byte("hunter2")},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("Create(secret) = %v", err)
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "persisted-node"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("Create(node) = %v", err)
	}
	// The pod CIDR allocator writes the node once; compare against that.
	var node *corev1.Node
	framework.Eventually(t, 10*time.Second, func() (bool, error) {
		var err error
		node, err = client.CoreV1().Nodes().Get(ctx, "persisted-node", metav1.GetOptions{})
		return err == nil && node.Spec.PodCIDR != "", err
	})
	nsObj, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Get(namespace %s) = %v", ns, err)
	}
	kubeSystem, err := client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Get(namespace kube-system) = %v", err)
	}

	c.Stop(t)
	c2 := framework.StartCluster(t, framework.WithDataDir(c.DataDir))
	client = fastClient(t, c2)

	tests := []struct {
		name    string
		get     func() (metav1.Object, error)
		wantUID types.UID
		wantRV  string
	}{
		{"namespace", func() (metav1.Object, error) { return client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}) }, nsObj.UID, nsObj.ResourceVersion},
		{"kube-system", func() (metav1.Object, error) {
			return client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
		}, kubeSystem.UID, kubeSystem.ResourceVersion},
		{"configmap", func() (metav1.Object, error) {
			return client.CoreV1().ConfigMaps(ns).Get(ctx, "cm", metav1.GetOptions{})
		}, cm.UID, cm.ResourceVersion},
		{"secret", func() (metav1.Object, error) {
			return client.CoreV1().Secrets(ns).Get(ctx, "secret", metav1.GetOptions{})
		}, secret.UID, secret.ResourceVersion},
		{"node", func() (metav1.Object, error) {
			return client.CoreV1().Nodes().Get(ctx, "persisted-node", metav1.GetOptions{})
		}, node.UID, node.ResourceVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get()
			if err != nil {
				t.Fatalf("Get(%s) after restart = %v", tc.name, err)
			}
			if got.GetUID() != tc.wantUID {
				t.Errorf("Get(%s).UID after restart = %q, want %q", tc.name, got.GetUID(), tc.wantUID)
			}
			if got.GetResourceVersion() != tc.wantRV {
				t.Errorf("Get(%s).ResourceVersion after restart = %s, want %s (unchanged)", tc.name, got.GetResourceVersion(), tc.wantRV)
			}
		})
	}

	t.Run("Content", func(t *testing.T) {
		got, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "cm", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(cm) = %v", err)
		}
		if got.Data["k"] != "v" || got.Labels["a"] != "b" {
			t.Errorf("Get(cm) after restart: data %v, labels %v, want k=v, a=b", got.Data, got.Labels)
		}
		s, err := client.CoreV1().Secrets(ns).Get(ctx, "secret", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Get(secret) = %v", err)
		}
		if string(s.Data["password"]) != "hunter2" {
			t.Errorf("Get(secret).data[password] after restart = %q, want hunter2", s.Data["password"])
		}
	})

	t.Run("Writes", func(t *testing.T) {
		// Revisions keep growing across the restart.
		got, err := client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(after) after restart = %v", err)
		}
		before, _ := strconv.ParseInt(node.ResourceVersion, 10, 64)
		if after, _ := strconv.ParseInt(got.ResourceVersion, 10, 64); after <= before {
			t.Errorf("Create(after).ResourceVersion = %d, want above %d (written before the restart)", after, before)
		}
	})
}
