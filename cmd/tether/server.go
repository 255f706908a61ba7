package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/validation"

	"tether/apiserver/kubeletclient"
	"tether/controlplane"
	"tether/internal/memlimit"
	"tether/internal/version"
	"tether/kubelet"
)

// serverOptions are the flags of `tether server`.
type serverOptions struct {
	DataDir                string
	BindAddress            string
	SecurePort             int
	AdvertiseAddress       string
	EtcdServers            []string
	EtcdCAFile             string
	EtcdCertFile           string
	EtcdKeyFile            string
	ServiceClusterIPRange  string
	ServiceNodePortRange   string
	ClusterCIDR            string
	DisableAgent           bool
	NodeName               string
	KubeletPort            int
	AuditLogPath           string
	ClusterSigningDuration time.Duration
	ServiceAccountIssuer   string
	APIAudiences           []string
	Verbose                bool
	Pods                   podOptions

	KubeletPreferredAddressTypes []string
	KubeletInsecureSkipTLSVerify bool
	Profiling                    bool
}

func newServerCommand(stdout, stderr io.Writer) *cobra.Command {
	o := &serverOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control plane: API server on etcd, controllers and scheduler",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config()
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if o.Verbose {
				level = slog.LevelDebug
			}
			cfg.Logger = newLogger(stderr, level)
			if cfg.KubeletInsecureSkipTLSVerify {
				fmt.Fprintln(stderr, "WARNING: --kubelet-insecure-skip-tls-verify is set: the API server will NOT verify kubelet serving certificates; anyone who can intercept its traffic to a node can read logs and run commands as that node's kubelet")
				cfg.Logger.Warn("kubelet serving certificates are not verified (--kubelet-insecure-skip-tls-verify)", "component", "server")
			}
			// A soft memory limit that follows the live heap
			// (internal/memlimit); GOMEMLIMIT still wins if set.
			if os.Getenv("GOMEMLIMIT") == "" {
				go memlimit.Run(cmd.Context(), memlimit.Floor)
			}
			cp, err := controlplane.New(cfg)
			if err != nil {
				return err
			}
			// The control plane and the local agent stop together: the
			// first to fail stops the other.
			g, ctx := errgroup.WithContext(cmd.Context())
			g.Go(func() error { return cp.Run(ctx) })
			g.Go(func() error {
				select {
				case <-cp.Ready():
				case <-ctx.Done():
					return nil
				}
				fmt.Fprintf(stdout, "tether server is ready at %s\n", cp.URL())
				fmt.Fprintf(stdout, "To use it with kubectl:\n  export KUBECONFIG=%s\n  kubectl get namespaces\n", cp.AdminKubeconfig())
				if o.DisableAgent {
					return nil
				}
				return runLocalAgent(ctx, cp, o.DataDir, o.NodeName, o.KubeletPort, o.Pods, cfg.Logger.With("component", "local-agent"), stdout)
			})
			return g.Wait()
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", "/var/lib/tether/server", "directory for the PKI, etcd data and admin.kubeconfig")
	f.StringVar(&o.BindAddress, "bind-address", "0.0.0.0", "address the API server listens on")
	f.IntVar(&o.SecurePort, "secure-port", 6443, "HTTPS port of the API server")
	f.StringVar(&o.AdvertiseAddress, "advertise-address", "", "address nodes and clients use to reach the API server (default: the bind address, or 127.0.0.1)")
	f.StringSliceVar(&o.EtcdServers, "etcd-servers", nil, "external etcd client URLs (default: run an embedded etcd member)")
	f.StringVar(&o.EtcdCAFile, "etcd-cafile", "", "CA bundle that verifies the external etcd servers")
	f.StringVar(&o.EtcdCertFile, "etcd-certfile", "", "client certificate for the external etcd servers")
	f.StringVar(&o.EtcdKeyFile, "etcd-keyfile", "", "client key for the external etcd servers")
	f.StringVar(&o.ServiceClusterIPRange, "service-cluster-ip-range", "10.96.0.0/12", "CIDR of Service cluster IPs")
	f.StringVar(&o.ServiceNodePortRange, "service-node-port-range", "30000-32767", "port range of Service node ports, inclusive")
	f.StringVar(&o.ClusterCIDR, "cluster-cidr", "10.244.0.0/16", "CIDR of the pod network")
	f.StringVar(&o.AuditLogPath, "audit-log-path", "", "JSON-lines audit log, rotated by size (default <data-dir>/audit.log)")
	f.StringVar(&o.ServiceAccountIssuer, "service-account-issuer", "https://kubernetes.default.svc.cluster.local", "issuer (iss) of service-account tokens; an https URL")
	f.StringSliceVar(&o.APIAudiences, "api-audiences", nil, "audiences a token must name to be accepted (default: the issuer)")
	f.DurationVar(&o.ClusterSigningDuration, "cluster-signing-duration", 24*time.Hour, "longest validity of certificates issued through the CSR API (node client and serving certificates)")
	f.BoolVar(&o.DisableAgent, "disable-agent", false, "do not run a node agent on this machine")
	o.Pods.addFlags(f)
	f.StringVar(&o.NodeName, "node-name", "", "name of the local agent's Node (default: the host name, lower-cased)")
	f.IntVar(&o.KubeletPort, "kubelet-port", kubelet.DefaultKubeletPort, "HTTPS port of the local agent's kubelet, on the advertise address")
	f.BoolVarP(&o.Verbose, "verbose", "v", false, "log debug messages")
	f.StringSliceVar(&o.KubeletPreferredAddressTypes, "kubelet-preferred-address-types", []string{"InternalIP", "Hostname"},
		"node address types the API server uses to reach kubelets, in order of preference (Hostname, InternalIP, ExternalIP, InternalDNS, ExternalDNS)")
	f.BoolVar(&o.KubeletInsecureSkipTLSVerify, "kubelet-insecure-skip-tls-verify", false,
		"INSECURE: do not verify kubelet serving certificates against the cluster server CA (every connection logs a warning)")
	f.BoolVar(&o.Profiling, "profiling", false, "serve Go profiles at /debug/pprof on the secure port (authenticated; only users authorized for the path, such as system:masters)")
	return cmd
}

// config validates the flags, reporting every problem at once, and turns
// them into a control plane Config.
func (o *serverOptions) config() (controlplane.Config, error) {
	var errs []error
	cfg := controlplane.Config{DataDir: o.DataDir, SecurePort: o.SecurePort, EtcdServers: o.EtcdServers,
		EtcdCAFile: o.EtcdCAFile, EtcdCertFile: o.EtcdCertFile, EtcdKeyFile: o.EtcdKeyFile, AuditLogPath: o.AuditLogPath, ServiceAccountIssuer: o.ServiceAccountIssuer, APIAudiences: o.APIAudiences, Version: version.Version}
	if o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if cfg.BindAddress = net.ParseIP(o.BindAddress); cfg.BindAddress == nil {
		errs = append(errs, fmt.Errorf("--bind-address %q is not an IP address", o.BindAddress))
	}
	if o.AdvertiseAddress != "" {
		if cfg.AdvertiseAddress = net.ParseIP(o.AdvertiseAddress); cfg.AdvertiseAddress == nil || cfg.AdvertiseAddress.IsUnspecified() {
			errs = append(errs, fmt.Errorf("--advertise-address %q is not a usable IP address", o.AdvertiseAddress))
		}
	}
	if o.SecurePort < 1 || o.SecurePort > 65535 {
		errs = append(errs, fmt.Errorf("--secure-port %d is not between 1 and 65535", o.SecurePort))
	}
	if o.ClusterSigningDuration <= 0 {
		errs = append(errs, fmt.Errorf("--cluster-signing-duration %s must be positive", o.ClusterSigningDuration))
	}
	cfg.ClusterSigningDuration = o.ClusterSigningDuration
	var err error
	if _, cfg.ServiceClusterIPRange, err = net.ParseCIDR(o.ServiceClusterIPRange); err != nil {
		errs = append(errs, fmt.Errorf("--service-cluster-ip-range %q is not a CIDR", o.ServiceClusterIPRange))
	}
	if pr, err := utilnet.ParsePortRange(o.ServiceNodePortRange); err != nil || pr.Size == 0 {
		errs = append(errs, fmt.Errorf("--service-node-port-range %q is not a port range like 30000-32767", o.ServiceNodePortRange))
	} else {
		cfg.ServiceNodePortRange = *pr
	}
	if _, cfg.ClusterCIDR, err = net.ParseCIDR(o.ClusterCIDR); err != nil {
		errs = append(errs, fmt.Errorf("--cluster-cidr %q is not a CIDR", o.ClusterCIDR))
	}
	if o.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(o.NodeName); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--node-name %q: %s", o.NodeName, strings.Join(msgs, "; ")))
		}
	}
	if o.KubeletPort < 1 || o.KubeletPort > 65535 {
		errs = append(errs, fmt.Errorf("--kubelet-port %d is not between 1 and 65535", o.KubeletPort))
	}
	for _, t := range o.KubeletPreferredAddressTypes {
		cfg.KubeletPreferredAddressTypes = append(cfg.KubeletPreferredAddressTypes, corev1.NodeAddressType(strings.TrimSpace(t)))
	}
	if err := kubeletclient.ValidateAddressTypes(cfg.KubeletPreferredAddressTypes); err != nil {
		errs = append(errs, fmt.Errorf("--kubelet-preferred-address-types: %w", err))
	}
	cfg.KubeletInsecureSkipTLSVerify = o.KubeletInsecureSkipTLSVerify
	cfg.Profiling = o.Profiling
	for _, s := range o.EtcdServers {
		if !strings.HasPrefix(s, "https://") && !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "unix://") {
			errs = append(errs, fmt.Errorf("--etcd-servers entry %q must be an https://, http:// or unix:// URL", s))
		}
	}
	return cfg, errors.Join(errs...)
}
