package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// SystemNamespaces exist in every cluster and are created at every start.
var SystemNamespaces = []string{"default", "kube-system", "kube-public", "kube-node-lease"}

// createSystemNamespaces creates the objects every cluster has. It retries until the
// server answers or ctx ends.
func createSystemNamespaces(ctx context.Context, client kubernetes.Interface, log *slog.Logger) error {
	for _, name := range SystemNamespaces {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			if err == nil || apierrors.IsAlreadyExists(err) {
				return true, nil
			}
			log.Debug("creating namespace", "component", "apiserver", "name", name, "err", err)
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("apiserver: create namespace %s: %w", name, err)
		}
	}
	return nil
}
