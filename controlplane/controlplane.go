// Package controlplane runs a whole tether control plane in one process:
// the embedded etcd member (unless external etcd is configured), the API
// server, the controllers and the scheduler. It is what `tether server`
// runs and what the integration tests start in-process.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"tether/apiserver"
	"tether/apiserver/kubeletclient"
	"tether/apiserver/storage"
	"tether/controllers/bootstrapsigner"
	"tether/controllers/clusterroleaggregation"
	"tether/controllers/csrapproving"
	"tether/controllers/csrsigning"
	"tether/controllers/endpoints"
	"tether/controllers/endpointslice"
	"tether/controllers/namespace"
	"tether/controllers/nodeipam"
	"tether/controllers/nodelifecycle"
	"tether/controllers/rootcacert"
	"tether/controllers/serviceaccount"
	"tether/controllers/tokencleaner"
	"tether/pki"
	"tether/scheduler"
)

// Config configures a control plane. A Config is not changed after New.
type Config struct {
	// DataDir holds the PKI, the embedded etcd data and admin.kubeconfig.
	// Required.
	DataDir string
	// BindAddress is where the API server listens. If nil, all addresses.
	BindAddress net.IP
	// SecurePort is the API server's port. If 0, 6443.
	SecurePort int
	// Listener, if set, is used instead of BindAddress and SecurePort
	// (tests pass 127.0.0.1:0).
	Listener net.Listener
	// AdvertiseAddress is how clients and nodes reach the server. If nil,
	// the listener's or bind address when it is a specific one, else the
	// source address of this machine's default route, else 127.0.0.1.
	AdvertiseAddress net.IP

	// EtcdServers selects an external etcd cluster. If empty, an embedded
	// member is run under DataDir/etcd.
	EtcdServers                           []string
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string

	// ServiceClusterIPRange is the service CIDR. Its first IP is the
	// kubernetes Service's address. Required.
	ServiceClusterIPRange *net.IPNet
	// ServiceNodePortRange is where node ports are allocated. If zero,
	// 30000-32767.
	ServiceNodePortRange utilnet.PortRange
	// ClusterCIDR is the pod network. Required.
	ClusterCIDR *net.IPNet

	// ServiceAccountIssuer is the iss of service-account tokens. If empty,
	// https://kubernetes.default.svc.cluster.local.
	ServiceAccountIssuer string
	// APIAudiences are the audiences tokens must name. If empty, the issuer.
	APIAudiences []string

	// ClusterSigningDuration is the longest validity of certificates issued
	// through the CSR API. If 0, 24 hours.
	ClusterSigningDuration time.Duration

	// KubeletPreferredAddressTypes orders the node address types the API
	// server uses to reach kubelets. If empty, InternalIP, then Hostname.
	KubeletPreferredAddressTypes []corev1.NodeAddressType
	// KubeletInsecureSkipTLSVerify stops the API server from verifying
	// kubelet serving certificates. Every use logs a warning.
	KubeletInsecureSkipTLSVerify bool
	// Profiling serves /debug/pprof to users authorized for it (the
	// admin's system:masters).
	Profiling bool

	// AuditLogPath is the audit log file. If empty, DataDir/audit.log.
	AuditLogPath string

	// Version is tether's version. If empty, "dev".
	Version string
	// Logger receives messages from every component. If nil, discarded.
	Logger *slog.Logger
}

// ControlPlane is a running (or runnable) control plane.
type ControlPlane struct {
	cfg     Config
	pki     *pki.ServerPKI
	etcd    *storage.Embedded
	api     *apiserver.Server
	ready   chan struct{}
	url     string
	backend storage.Backend
}

// New validates cfg and loads or creates the PKI under DataDir. It opens no
// socket and starts no goroutine.
func New(cfg Config) (*ControlPlane, error) {
	var errs []error
	if cfg.DataDir == "" {
		errs = append(errs, errors.New("controlplane: --data-dir is required"))
	}
	if cfg.ServiceClusterIPRange == nil {
		errs = append(errs, errors.New("controlplane: --service-cluster-ip-range is required"))
	}
	if cfg.ClusterCIDR == nil {
		errs = append(errs, errors.New("controlplane: --cluster-cidr is required"))
	}
	if len(cfg.EtcdServers) == 0 && (cfg.EtcdCAFile != "" || cfg.EtcdCertFile != "" || cfg.EtcdKeyFile != "") {
		errs = append(errs, errors.New("controlplane: --etcd-cafile, --etcd-certfile and --etcd-keyfile need --etcd-servers"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AdvertiseAddress == nil {
		cfg.AdvertiseAddress = defaultAdvertiseAddress(cfg)
	}
	if cfg.AuditLogPath == "" {
		cfg.AuditLogPath = filepath.Join(cfg.DataDir, "audit.log")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: create data dir: %w", err)
	}
	p, err := pki.LoadOrCreateServer(pki.ServerOptions{
		Dir:              cfg.DataDir,
		AdvertiseAddress: cfg.AdvertiseAddress,
		ServiceIP:        FirstIP(cfg.ServiceClusterIPRange),
	})
	if err != nil {
		return nil, err
	}
	c := &ControlPlane{cfg: cfg, pki: p, ready: make(chan struct{})}

	backend := storage.Backend{Servers: cfg.EtcdServers, CAFile: cfg.EtcdCAFile, CertFile: cfg.EtcdCertFile, KeyFile: cfg.EtcdKeyFile}
	if len(cfg.EtcdServers) == 0 {
		c.etcd, err = storage.NewEmbedded(storage.EmbeddedConfig{Dir: filepath.Join(cfg.DataDir, "etcd"), Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		backend = c.etcd.Backend()
	}
	c.backend = backend
	// The API server reaches kubelets with a certificate of its own,
	// issued in memory from the client CA and renewed before it expires.
	kubeletIdentity, err := pki.NewIdentity(p.ClientCA, 0, kubeletclient.User)
	if err != nil {
		return nil, err
	}
	c.api, err = apiserver.New(apiserver.Config{
		ServiceIP:             FirstIP(cfg.ServiceClusterIPRange),
		ServiceClusterIPRange: cfg.ServiceClusterIPRange,
		ServiceNodePortRange:  cfg.ServiceNodePortRange,
		BindAddress:           cfg.BindAddress,
		SecurePort:            cfg.SecurePort,
		AdvertiseAddress:      cfg.AdvertiseAddress,
		ServingCertFile:       p.ServingCertFile,
		ServingKeyFile:        p.ServingKeyFile,
		ClientCAFile:          p.ClientCAFile,
		ServerCAFile:          p.ServerCAFile,
		ServiceAccountKeyFile: p.ServiceAccountKeyFile,
		ServiceAccountIssuer:  cfg.ServiceAccountIssuer,
		APIAudiences:          cfg.APIAudiences,
		Storage:               backend,
		Audit:                 apiserver.AuditConfig{Path: cfg.AuditLogPath},
		Version:               cfg.Version,
		Logger:                cfg.Logger,

		KubeletClientCertificate:     kubeletIdentity.GetClientCertificate,
		KubeletPreferredAddressTypes: cfg.KubeletPreferredAddressTypes,
		KubeletInsecureSkipTLSVerify: cfg.KubeletInsecureSkipTLSVerify,
		Profiling:                    cfg.Profiling,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AdminKubeconfig is the path of the admin kubeconfig, written by Run.
func (c *ControlPlane) AdminKubeconfig() string {
	return filepath.Join(c.cfg.DataDir, "admin.kubeconfig")
}

// EtcdServers returns the etcd client URLs the API server uses (a unix
// socket for the embedded member).
func (c *ControlPlane) EtcdServers() []string { return c.backend.Servers }

// PKI returns the control plane's certificates and keys.
func (c *ControlPlane) PKI() *pki.ServerPKI { return c.pki }

// URL is the API server's address; valid once Ready is closed.
func (c *ControlPlane) URL() string { return c.url }

// Ready is closed once the API server serves, the system namespaces exist,
// and admin.kubeconfig is written.
func (c *ControlPlane) Ready() <-chan struct{} { return c.ready }

// Run runs every component until ctx ends or one of them fails; it then
// stops the controllers, the API server and etcd, in that order.
func (c *ControlPlane) Run(ctx context.Context) error {
	ln := c.cfg.Listener
	if ln == nil {
		bind := "0.0.0.0"
		if c.cfg.BindAddress != nil {
			bind = c.cfg.BindAddress.String()
		}
		port := c.cfg.SecurePort
		if port == 0 {
			port = 6443
		}
		addr := net.JoinHostPort(bind, strconv.Itoa(port))
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("controlplane: listen on %s (--bind-address, --secure-port): %w", addr, err)
		}
	}
	port := ln.Addr().(*net.TCPAddr).Port
	c.url = "https://" + net.JoinHostPort(c.cfg.AdvertiseAddress.String(), strconv.Itoa(port))

	// etcd outlives the API server: it gets its own context, cancelled
	// only after the API server has returned.
	etcdCtx, stopEtcd := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEtcd()
	etcdDone := make(chan error, 1)
	if c.etcd != nil {
		go func() { etcdDone <- c.etcd.Run(etcdCtx) }()
		select {
		case <-c.etcd.Ready():
		case err := <-etcdDone:
			ln.Close()
			if err == nil {
				err = errors.New("controlplane: embedded etcd stopped before it was ready")
			}
			return err
		case <-ctx.Done():
			ln.Close()
			stopEtcd()
			return <-etcdDone
		}
	} else {
		etcdDone <- nil
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.api.Serve(gctx, ln) })
	g.Go(func() error {
		select {
		case <-c.api.Ready():
		case <-gctx.Done():
			return nil
		}
		if err := c.writeAdminKubeconfig(); err != nil {
			return err
		}
		// The controllers reach the API server like any client: over its
		// secure port, with their own identity, under RBAC (path P4).
		id, err := newIdentity(c.pki.ClientCA, "system:kube-controller-manager")
		if err != nil {
			return err
		}
		cfg, err := id.restConfig(c.api.LoopbackConfig().Host, c.pki.ServerCA.CertPEM())
		if err != nil {
			return err
		}
		return c.runControllers(gctx, cfg)
	})
	g.Go(func() error {
		select {
		case <-c.api.Ready():
		case <-gctx.Done():
			return nil
		}
		return c.runScheduler(gctx)
	})
	err := g.Wait()
	stopEtcd()
	if eerr := <-etcdDone; err == nil {
		err = eerr
	}
	return err
}

func (c *ControlPlane) writeAdminKubeconfig() error {
	certPEM, err := os.ReadFile(c.pki.AdminCertFile)
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	keyPEM, err := os.ReadFile(c.pki.AdminKeyFile)
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	return pki.WriteKubeconfig(c.AdminKubeconfig(), c.url, c.pki.ServerCA.CertPEM(), certPEM, keyPEM, "admin")
}

// runControllers runs the controllers until ctx ends.
func (c *ControlPlane) runControllers(ctx context.Context, cfg *rest.Config) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("controlplane: controller client: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("controlplane: controller client: %w", err)
	}
	ns, err := namespace.New(namespace.Config{Client: client, Metadata: meta, Discovery: client.Discovery(), Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	agg, err := clusterroleaggregation.New(clusterroleaggregation.Config{Client: client, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	clusterInfo, err := bootstrapsigner.New(bootstrapsigner.Config{Client: client, ServerURL: c.url, CACert: c.pki.ServerCA.CertPEM(), ClientCACert: c.pki.ClientCA.CertPEM(),
		Extra: map[string]string{
			bootstrapsigner.ServiceCIDRKey: c.cfg.ServiceClusterIPRange.String(),
			bootstrapsigner.ClusterCIDRKey: c.cfg.ClusterCIDR.String(),
		}, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	tokens, err := tokencleaner.New(tokencleaner.Config{Client: client, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	approver, err := csrapproving.New(csrapproving.Config{Client: client, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	signer, err := csrsigning.New(csrsigning.Config{Client: client, ClientCA: c.pki.ClientCA, ServerCA: c.pki.ServerCA,
		MaxDuration: c.cfg.ClusterSigningDuration, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	ipam, err := nodeipam.New(nodeipam.Config{Client: client, ClusterCIDR: c.cfg.ClusterCIDR,
		ServiceCIDR: c.cfg.ServiceClusterIPRange, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	lifecycle, err := nodelifecycle.New(nodelifecycle.Config{Client: client, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	accounts, err := serviceaccount.New(serviceaccount.Config{Client: client, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	rootCA, err := rootcacert.New(rootcacert.Config{Client: client, CACert: c.pki.ServerCA.CertPEM(), Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	eps, err := endpoints.New(endpoints.Config{Client: client, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	epSlices, err := endpointslice.New(endpointslice.Config{Client: client, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return accounts.Run(gctx) })
	g.Go(func() error { return rootCA.Run(gctx) })
	g.Go(func() error { return eps.Run(gctx) })
	g.Go(func() error { return epSlices.Run(gctx) })
	g.Go(func() error { return ipam.Run(gctx) })
	g.Go(func() error { return lifecycle.Run(gctx) })
	g.Go(func() error { return ns.Run(gctx) })
	g.Go(func() error { return agg.Run(gctx) })
	g.Go(func() error { return clusterInfo.Run(gctx) })
	g.Go(func() error { return tokens.Run(gctx) })
	g.Go(func() error { return approver.Run(gctx) })
	g.Go(func() error { return signer.Run(gctx) })
	g.Go(func() error {
		for _, ready := range []<-chan struct{}{ns.Ready(), agg.Ready(), clusterInfo.Ready(), tokens.Ready(), approver.Ready(), signer.Ready(), ipam.Ready(), lifecycle.Ready(), accounts.Ready(), rootCA.Ready(), eps.Ready(), epSlices.Ready()} {
			select {
			case <-ready:
			case <-gctx.Done():
				return nil
			}
		}
		close(c.ready)
		return nil
	})
	return g.Wait()
}

// runScheduler runs the scheduler until ctx ends. Like the controllers it
// reaches the API server over the secure port with an identity of its own,
// system:kube-scheduler, under RBAC (path P4). Its client may send more
// requests than the controllers': a bind, a status patch and an event per
// pod.
func (c *ControlPlane) runScheduler(ctx context.Context) error {
	id, err := newIdentity(c.pki.ClientCA, "system:kube-scheduler")
	if err != nil {
		return err
	}
	cfg, err := id.restConfig(c.api.LoopbackConfig().Host, c.pki.ServerCA.CertPEM())
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 200, 400
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("controlplane: scheduler client: %w", err)
	}
	s, err := scheduler.New(scheduler.Config{Client: client, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// FirstIP returns the first usable address of a network (network + 1).
func FirstIP(n *net.IPNet) net.IP {
	ip := make(net.IP, len(n.IP))
	copy(ip, n.IP.Mask(n.Mask))
	for i := len(ip) - 1; i >= 0; i-- {
		ip[i]++
		if ip[i] != 0 {
			break
		}
	}
	return ip
}

// defaultAdvertiseAddress picks the address nodes should use to reach a
// server that was not told one.
func defaultAdvertiseAddress(cfg Config) net.IP {
	if cfg.Listener != nil {
		if a, ok := cfg.Listener.Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
			return a.IP
		}
	}
	if cfg.BindAddress != nil && !cfg.BindAddress.IsUnspecified() {
		return cfg.BindAddress
	}
	if ip := defaultRouteIP(); ip != nil {
		return ip
	}
	return net.IPv4(127, 0, 0, 1)
}

// defaultRouteIP returns the source address the kernel would use for
// traffic leaving through the default route. Connecting a UDP socket only
// looks up the route; no packet is sent.
func defaultRouteIP() net.IP {
	conn, err := net.Dial("udp4", "192.0.2.1:9") // TEST-NET-1: never contacted
	if err != nil {
		return nil
	}
	defer conn.Close()
	a, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok || a.IP.IsLoopback() || a.IP.IsUnspecified() {
		return nil
	}
	return a.IP
}
