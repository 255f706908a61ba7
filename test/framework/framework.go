// Package framework starts tether control planes for tests: in-process with
// real embedded etcd and real TLS on loopback (integration tests), and gives
// them admin clients and kubeconfigs.
package framework

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"tether/controlplane"
)

// Cluster is a control plane started for one test.
type Cluster struct {
	// DataDir is the control plane's data directory.
	DataDir string
	// Kubeconfig is the path of the admin kubeconfig.
	Kubeconfig string
	// URL is the API server's https URL.
	URL string
	// Admin is a system:masters client configuration.
	Admin *rest.Config
	// Client is a typed client for Admin.
	Client kubernetes.Interface
	// ControlPlane is the running control plane.
	ControlPlane *controlplane.ControlPlane

	stop func()
	done chan error
}

// Option changes how StartCluster builds its control plane.
type Option func(*controlplane.Config)

// WithDataDir reuses a data directory (for restart tests).
func WithDataDir(dir string) Option { return func(c *controlplane.Config) { c.DataDir = dir } }

// StartCluster starts a control plane on 127.0.0.1:0 with a temporary data
// directory and embedded etcd, waits until it is ready, and stops it when
// the test ends.
func StartCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	_, svc, _ := net.ParseCIDR("10.96.0.0/12")
	_, pods, _ := net.ParseCIDR("10.244.0.0/16")
	cfg := controlplane.Config{
		DataDir:               shortTempDir(t),
		ServiceClusterIPRange: svc,
		ClusterCIDR:           pods,
		Logger:                testLogger(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg.Listener = ln
	cp, err := controlplane.New(cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("controlplane.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{DataDir: cfg.DataDir, ControlPlane: cp, stop: cancel, done: make(chan error, 1)}
	go func() { c.done <- cp.Run(ctx) }()
	select {
	case <-cp.Ready():
	case err := <-c.done:
		cancel()
		t.Fatalf("control plane stopped before it was ready: %v", err)
	case <-time.After(90 * time.Second):
		cancel()
		t.Fatalf("control plane not ready after 90s")
	}
	t.Cleanup(func() { c.Stop(t) })
	c.Kubeconfig = cp.AdminKubeconfig()
	c.URL = cp.URL()
	c.Admin, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatalf("load admin kubeconfig: %v", err)
	}
	c.Client = kubernetes.NewForConfigOrDie(c.Admin)
	return c
}

// Stop stops the control plane and waits for it; later calls do nothing.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if c.stop == nil {
		return
	}
	c.stop()
	c.stop = nil
	select {
	case err := <-c.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("control plane stopped with: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("control plane did not stop within 60s")
	}
}

// shortTempDir returns a temporary directory with a path short enough for
// etcd's unix sockets.
func shortTempDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "tether-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "d")
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TETHER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
