package kubelet

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"tether/kubelet/pods"
	"tether/kubelet/server"
)

// clientCAKey is where cluster-info carries the client CA bundle (written by
// the bootstrapsigner controller).
const clientCAKey = "client-ca.crt"

// clientCARefresh is how often the client CA bundle is read again, so that a
// rotated client CA reaches the kubelet port.
const clientCARefresh = 10 * time.Minute

// clientCA keeps the cluster's client CA bundle, which verifies the client
// certificates presented on the kubelet port (the API server's among them).
// It is read from the public cluster-info ConfigMap over a connection that
// verifies the server with the pinned server CA, so it is authentic.
// The same read brings the cluster's service and pod ranges, which the
// service proxy needs.
type clientCA struct {
	pool        atomic.Pointer[x509.CertPool]
	serviceCIDR atomic.Pointer[net.IPNet]
	clusterCIDR atomic.Pointer[net.IPNet]
	readOnce    sync.Once
	read        chan struct{} // closed after the first successful read
}

// ranges waits for the first read and returns the service and pod ranges
// (nil when the server does not publish them).
func (c *clientCA) ranges(ctx context.Context) (service, cluster *net.IPNet, ok bool) {
	select {
	case <-c.read:
		return c.serviceCIDR.Load(), c.clusterCIDR.Load(), true
	case <-ctx.Done():
		return nil, nil, false
	}
}

// Pool returns the current bundle, or nil before the first read.
func (c *clientCA) Pool() *x509.CertPool { return c.pool.Load() }

// run reads the bundle now (retrying until it succeeds) and then every
// clientCARefresh until ctx ends.
func (c *clientCA) run(ctx context.Context, a *Agent, server string, serverCA []byte) error {
	client, err := kubernetes.NewForConfig(&rest.Config{
		Host:            server,
		TLSClientConfig: rest.TLSClientConfig{CAData: serverCA},
		UserAgent:       "tether-agent/" + KubeletVersion,
		Timeout:         30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("kubelet: client for %s: %w", server, err)
	}
	read := func(ctx context.Context) error {
		cm, err := client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read %s/%s: %w", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo, err)
		}
		data := cm.Data[clientCAKey]
		pool := x509.NewCertPool()
		if data == "" || !pool.AppendCertsFromPEM([]byte(data)) {
			return fmt.Errorf("%s/%s has no client CA under %q", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo, clientCAKey)
		}
		c.pool.Store(pool)
		for key, dst := range map[string]*atomic.Pointer[net.IPNet]{"service-cluster-ip-range": &c.serviceCIDR, "cluster-cidr": &c.clusterCIDR} {
			if _, n, err := net.ParseCIDR(cm.Data[key]); err == nil {
				dst.Store(n)
			}
		}
		c.readOnce.Do(func() { close(c.read) })
		return nil
	}
	if err := retry(ctx, a.log, "read the cluster's client CA", read); err != nil {
		return nil // ctx ended
	}
	t := time.NewTicker(clientCARefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := read(ctx); err != nil {
				a.log.Warn("refresh the cluster's client CA", "err", err)
			}
		}
	}
}

// lazyContainers is the kubelet API's view of the pods: the pod manager once
// it runs (after the Node has a pod CIDR), "not found" before.
type lazyContainers struct {
	m atomic.Pointer[pods.Manager]
}

var errNoPods = errors.New("this node runs no pods yet")

func (l *lazyContainers) get() (*pods.Manager, error) {
	if m := l.m.Load(); m != nil {
		return m, nil
	}
	return nil, fmt.Errorf("%w: %w", errNoPods, server.ErrPodNotFound)
}

func (l *lazyContainers) Pods() []*corev1.Pod {
	if m := l.m.Load(); m != nil {
		return m.Pods()
	}
	return nil
}

func (l *lazyContainers) Container(namespace, pod, uid, container string, previous bool) (string, string, error) {
	m, err := l.get()
	if err != nil {
		return "", "", err
	}
	return m.Container(namespace, pod, uid, container, previous)
}

func (l *lazyContainers) Exec(ctx context.Context, id string, cmd []string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan server.TerminalSize) error {
	m, err := l.get()
	if err != nil {
		return err
	}
	return m.Exec(ctx, id, cmd, stdin, stdout, stderr, tty, resize)
}

func (l *lazyContainers) Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan server.TerminalSize) error {
	m, err := l.get()
	if err != nil {
		return err
	}
	return m.Attach(ctx, id, stdin, stdout, stderr, tty, resize)
}

func (l *lazyContainers) PortForward(ctx context.Context, namespace, pod string, uid types.UID, port int32, stream io.ReadWriteCloser) error {
	m, err := l.get()
	if err != nil {
		stream.Close()
		return err
	}
	return m.PortForward(ctx, namespace, pod, uid, port, stream)
}
