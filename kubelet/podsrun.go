package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"tether/internal/informer"
	"tether/kubelet/images"
	"tether/kubelet/network"
	"tether/kubelet/pods"
	"tether/kubelet/runtime"
	"tether/kubelet/volume"
	"tether/proxy"
)

// runPods runs the node's pods until ctx ends: it waits for the Node's pod
// CIDR, builds the network, image store, runtime and volume manager, keeps
// the routes to other nodes' pod CIDRs current, and runs the pod workers.
func (a *Agent) runPods(ctx context.Context, client kubernetes.Interface, nodeIP net.IP) error {
	cfg := a.cfg
	podCIDR, clusterCIDR, err := a.waitForPodCIDR(ctx, client)
	if err != nil || ctx.Err() != nil {
		return err
	}
	fmt.Fprintf(cfg.Progress, "pods: node %s has pod CIDR %s\n", cfg.NodeName, podCIDR)

	podNet, err := network.New(network.Config{
		PodCIDR:     podCIDR,
		ClusterCIDR: clusterCIDR,
		Bridge:      cfg.Bridge,
		DataDir:     filepath.Join(cfg.DataDir, "cni"),
		Logger:      cfg.Logger,
	})
	if err != nil {
		return err
	}
	a.podNet.Store(podNet)
	store, err := images.New(images.Config{Root: filepath.Join(cfg.DataDir, "images"), InsecureRegistries: cfg.InsecureRegistries, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	shim := cfg.ShimCommand
	if len(shim) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("kubelet: find the tether binary for the container shim: %w", err)
		}
		shim = []string{exe, "shim"}
	}
	rt, err := runtime.New(runtime.Config{StateDir: filepath.Join(cfg.DataDir, "containers"), ShimCommand: shim, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	vols, err := volume.New(volume.Config{Client: client, PodsDir: filepath.Join(cfg.DataDir, "pods"), Logger: cfg.Logger})
	if err != nil {
		return err
	}
	mgr, err := pods.New(pods.Config{
		Client:       client,
		NodeName:     cfg.NodeName,
		NodeIP:       nodeIP,
		Runtime:      rt,
		Images:       store,
		Network:      podNet,
		Volumes:      vols,
		PodsDir:      filepath.Join(cfg.DataDir, "pods"),
		LogDir:       cfg.LogDir,
		CgroupParent: cfg.CgroupParent,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return err
	}
	a.containers.m.Store(mgr)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return vols.Run(gctx) })
	g.Go(func() error { return mgr.Run(gctx) })
	g.Go(func() error { return a.syncRoutes(gctx, client, podNet) })
	g.Go(func() error {
		select {
		case <-mgr.Ready():
			a.log.Info("pod workers ready")
		case <-gctx.Done():
		}
		return nil
	})
	return g.Wait()
}

// waitForPodCIDR returns the Node's spec.podCIDR once the node IPAM
// controller has set it.
func (a *Agent) waitForPodCIDR(ctx context.Context, client kubernetes.Interface) (podCIDR, clusterCIDR string, err error) {
	printed := false
	err = wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		node, err := client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{ResourceVersion: "0"})
		if err != nil {
			return false, nil
		}
		if node.Spec.PodCIDR != "" {
			podCIDR = node.Spec.PodCIDR
			return true, nil
		}
		if !printed {
			fmt.Fprintf(a.cfg.Progress, "pods: waiting for node %s to get a pod CIDR\n", a.cfg.NodeName)
			printed = true
		}
		return false, nil
	})
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return podCIDR, clusterCIDR, err
}

// syncRoutes keeps a route to every other node's pod CIDR through its
// InternalIP (host-gw), following the Nodes.
func (a *Agent) syncRoutes(ctx context.Context, client kubernetes.Interface, n *network.Network) error {
	factory := informer.NewFactory(client, 0)
	nodes := factory.Core().V1().Nodes()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke,
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-t.C:
		}
		list, err := nodes.Lister().List(labels.Everything())
		if err != nil {
			continue
		}
		var routes []network.Route
		for _, node := range list {
			if node.Name == a.cfg.NodeName || node.Spec.PodCIDR == "" {
				continue
			}
			_, dst, err := net.ParseCIDR(node.Spec.PodCIDR)
			if err != nil {
				continue
			}
			for _, addr := range node.Status.Addresses {
				if addr.Type == corev1.NodeInternalIP {
					if ip := net.ParseIP(addr.Address); ip != nil {
						routes = append(routes, network.Route{Dst: dst, Via: ip})
					}
					break
				}
			}
		}
		if err := n.SyncRoutes(routes); err != nil {
			a.log.Warn("sync routes to other nodes' pods", "err", err)
		}
	}
}

// runProxy runs the service proxy once the cluster's ranges are known.
func (a *Agent) runProxy(ctx context.Context, client kubernetes.Interface, nodeIP net.IP) error {
	serviceCIDR, clusterCIDR, ok := a.clientCA.ranges(ctx)
	if !ok {
		return nil
	}
	p, err := proxy.New(proxy.Config{
		Client:      client,
		NodeName:    a.cfg.NodeName,
		NodeIPs:     []net.IP{nodeIP},
		ServiceCIDR: serviceCIDR,
		ClusterCIDR: clusterCIDR,
		TableName:   a.cfg.ProxyTable,
		Logger:      a.cfg.Logger.With("component", "proxy"),
	})
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-p.Ready():
			fmt.Fprintf(a.cfg.Progress, "proxy: services programmed in nftables table %s (service range %s)\n", a.cfg.ProxyTable, serviceCIDR)
		case <-ctx.Done():
		}
	}()
	return p.Run(ctx)
}
