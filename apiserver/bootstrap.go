package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"tether/apiserver/peers"
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

// ensureKubernetesService creates, or corrects, the Service default/kubernetes
// (cluster IP ip, port 443 named https) and starts keeping its Endpoints and
// EndpointSlice: they list every API server whose lease is fresh (package
// peers), this one at its advertise address and secure port among them.
// Pods find the API server through them (KUBERNETES_SERVICE_HOST and the
// service proxy). The first write happens before it returns; the keeping
// runs in a goroutine until ctx ends. A loopback advertise address (tests)
// is never listed: validation refuses it.
func ensureKubernetesService(ctx context.Context, client kubernetes.Interface, ip, advertise net.IP, port int, log *slog.Logger) error {
	meta := metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault,
		Labels: map[string]string{"component": "apiserver", "provider": "kubernetes"}}
	want := &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
		Type:            corev1.ServiceTypeClusterIP,
		ClusterIP:       ip.String(),
		ClusterIPs:      []string{ip.String()},
		SessionAffinity: corev1.ServiceAffinityNone,
		Ports: []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443,
			TargetPort: intstr.FromInt32(int32(port))}},
	}}
	endpoints, err := peers.New(peers.Config{Client: client, Address: advertise, Port: port, Logger: log})
	if err != nil {
		return fmt.Errorf("apiserver: kubernetes service endpoints: %w", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := ensureService(ctx, client, want); err != nil {
			log.Debug("creating the kubernetes service", "component", "apiserver", "err", err)
			return false, nil
		}
		if err := endpoints.Sync(ctx); err != nil {
			log.Debug("writing the kubernetes endpoints", "component", "apiserver", "err", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	go func() { _ = endpoints.Run(ctx) }() // returns when the server stops
	return nil
}

func ensureService(ctx context.Context, client kubernetes.Interface, want *corev1.Service) error {
	svcs := client.CoreV1().Services(want.Namespace)
	cur, err := svcs.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = svcs.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if cur.Spec.ClusterIP != want.Spec.ClusterIP {
		// The cluster IP cannot change in place.
		if err := svcs.Delete(ctx, want.Name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		_, err = svcs.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if equality.Semantic.DeepEqual(cur.Spec.Ports, want.Spec.Ports) {
		return nil
	}
	cur.Spec.Ports = want.Spec.Ports
	_, err = svcs.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}
