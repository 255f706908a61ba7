package bootstrap

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/util/flowcontrol"

	"tether/apiserver/authn/serviceaccount"
)

// Live reads that miss the informer caches are limited to liveQPS per
// second (bursts of liveBurst), so that a flood of tokens naming objects
// that do not exist cannot turn into a flood of reads from etcd.
const (
	liveQPS   = 20
	liveBurst = 50
)

// Getter reads Secrets, ServiceAccounts, Pods and Nodes from the shared
// informer caches. When a cache does not have an object (the informer may
// not have seen a just-created one yet), it reads it live through the
// client. Objects it returns are shared with the caches and must not be
// modified. It is safe for concurrent use.
type Getter struct {
	secrets         corelisters.SecretLister
	serviceAccounts corelisters.ServiceAccountLister
	pods            corelisters.PodLister
	nodes           corelisters.NodeLister
	client          kubernetes.Interface
	live            flowcontrol.RateLimiter
}

var (
	_ SecretGetter                = (*Getter)(nil)
	_ serviceaccount.ObjectGetter = (*Getter)(nil)
)

// NewGetter registers the Secret, ServiceAccount, Pod and Node informers
// with f and returns a Getter reading them; the caller starts f. If client
// is nil, there are no live reads: what the caches lack is not found.
func NewGetter(f informers.SharedInformerFactory, client kubernetes.Interface) *Getter {
	core := f.Core().V1()
	return &Getter{
		secrets:         core.Secrets().Lister(),
		serviceAccounts: core.ServiceAccounts().Lister(),
		pods:            core.Pods().Lister(),
		nodes:           core.Nodes().Lister(),
		client:          client,
		live:            flowcontrol.NewTokenBucketRateLimiter(liveQPS, liveBurst),
	}
}

// get returns the cached object, or on a cache miss the live one.
func get[T any](g *Getter, resource, name string, cached, live func() (T, error)) (T, error) {
	obj, err := cached()
	if err == nil || !apierrors.IsNotFound(err) {
		return obj, err
	}
	notFound := apierrors.NewNotFound(corev1.Resource(resource), name)
	if g.client == nil || !g.live.TryAccept() {
		var zero T
		return zero, notFound
	}
	return live()
}

// GetSecret implements SecretGetter and serviceaccount.ObjectGetter.
func (g *Getter) GetSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return get(g, "secrets", name,
		func() (*corev1.Secret, error) { return g.secrets.Secrets(namespace).Get(name) },
		func() (*corev1.Secret, error) {
			return g.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		})
}

// GetServiceAccount implements serviceaccount.ObjectGetter.
func (g *Getter) GetServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error) {
	return get(g, "serviceaccounts", name,
		func() (*corev1.ServiceAccount, error) { return g.serviceAccounts.ServiceAccounts(namespace).Get(name) },
		func() (*corev1.ServiceAccount, error) {
			return g.client.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
		})
}

// GetPod implements serviceaccount.ObjectGetter.
func (g *Getter) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return get(g, "pods", name,
		func() (*corev1.Pod, error) { return g.pods.Pods(namespace).Get(name) },
		func() (*corev1.Pod, error) {
			return g.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		})
}

// GetNode implements serviceaccount.ObjectGetter.
func (g *Getter) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	return get(g, "nodes", name,
		func() (*corev1.Node, error) { return g.nodes.Get(name) },
		func() (*corev1.Node, error) {
			return g.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		})
}
