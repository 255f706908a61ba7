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
// (cluster IP ip, port 443 named https) and its Endpoints, which name this
// server's advertise address and secure port. Pods find the API server
// through it (KUBERNETES_SERVICE_HOST and the service proxy). A loopback
// advertise address (tests) gets no Endpoints: validation refuses it.
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
	wantEP := &corev1.Endpoints{ObjectMeta: meta, Subsets: []corev1.EndpointSubset{{
		Addresses: []corev1.EndpointAddress{{IP: advertise.String()}},
		Ports:     []corev1.EndpointPort{{Name: "https", Port: int32(port), Protocol: corev1.ProtocolTCP}},
	}}}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := ensureService(ctx, client, want); err != nil {
			log.Debug("creating the kubernetes service", "component", "apiserver", "err", err)
			return false, nil
		}
		if advertise.IsLoopback() || advertise.IsUnspecified() {
			// Endpoints may not name loopback addresses: pods could not
			// reach them anyway. The Service exists for the environment.
			return true, nil
		}
		if err := ensureEndpoints(ctx, client, wantEP); err != nil {
			log.Debug("creating the kubernetes endpoints", "component", "apiserver", "err", err)
			return false, nil
		}
		return true, nil
	})
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

func ensureEndpoints(ctx context.Context, client kubernetes.Interface, want *corev1.Endpoints) error {
	eps := client.CoreV1().Endpoints(want.Namespace)
	cur, err := eps.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = eps.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil || equality.Semantic.DeepEqual(cur.Subsets, want.Subsets) {
		return err
	}
	cur.Subsets = want.Subsets
	_, err = eps.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}
