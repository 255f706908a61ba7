package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"tether/controlplane"
	"tether/kubelet"
	"tether/kubelet/bootstrap"
	"tether/pki"
)

// agentOptions are the flags of `tether agent`.
type agentOptions struct {
	Server            string
	Token             string
	CACertHashes      []string
	InsecureSkipCAPin bool
	Rejoin            bool
	DataDir           string
	NodeName          string
	NodeIP            string
	KubeletPort       int
	Tunnel            bool
	Verbose           bool
	Cleanup           bool
	Pods              podOptions
}

// podOptions are the flags for running pods, shared by `tether agent` and
// the local agent of `tether server`.
type podOptions struct {
	Disable            bool
	DisableProxy       bool
	ProxyTable         string
	Bridge             string
	CgroupParent       string
	LogDir             string
	InsecureRegistries []string
}

func (p *podOptions) addFlags(f *pflag.FlagSet) {
	f.BoolVar(&p.Disable, "disable-pods", false, "do not run pods on this node (it still registers and heartbeats)")
	f.BoolVar(&p.DisableProxy, "disable-proxy", false, "do not run the service proxy (nftables rules for Service IPs and NodePorts)")
	f.StringVar(&p.ProxyTable, "proxy-table", "tether", "name of the service proxy's nftables table")
	f.StringVar(&p.Bridge, "pod-bridge", "tether0", "name of the pod network's bridge")
	f.StringVar(&p.CgroupParent, "cgroup-parent", "", "cgroupfs parent of the pods' cgroups (default /tether/<node name>)")
	f.StringVar(&p.LogDir, "pod-log-dir", "/var/log/pods", "directory for container logs")
	f.StringSliceVar(&p.InsecureRegistries, "insecure-registry", nil, "registry host[:port] that may be reached over plain HTTP (loopback registries always may); repeatable")
}

// apply sets the pod fields of an agent configuration.
func (p *podOptions) apply(cfg *kubelet.Config) {
	cfg.RunPods = !p.Disable
	cfg.RunProxy = !p.DisableProxy
	cfg.ProxyTable = p.ProxyTable
	cfg.Bridge = p.Bridge
	cfg.CgroupParent = p.CgroupParent
	cfg.LogDir = p.LogDir
	cfg.InsecureRegistries = p.InsecureRegistries
}

func newAgentCommand(stdout, stderr io.Writer) *cobra.Command {
	return agentCommand(stdout, stderr, newLogger)
}

// agentCommand is newAgentCommand with the logger constructor as a
// parameter: newLogger also routes klog, which is process-global, and
// tests that run a control plane in the same process must not touch it.
func agentCommand(stdout, stderr io.Writer, logger func(io.Writer, slog.Level) *slog.Logger) *cobra.Command {
	o := &agentOptions{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a node: join the cluster, register the Node and keep it alive",
		Long: `Run a node agent.

The first run joins the cluster with the command ` + "`tether token create`" + ` prints on the
server: it checks the server's CA against --ca-cert-hash, obtains a client
certificate for system:node:<name> with the bootstrap token, and stores it
under --data-dir. Later runs reuse those credentials and need no token.`,
		Example: `  tether agent --server https://10.0.0.1:6443 --token abcdef.0123456789abcdef \
    --ca-cert-hash sha256:<64 hex digits>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Cleanup {
				if err := proxyCleanup(cmd.Context(), o.Pods.ProxyTable); err != nil {
					return fmt.Errorf("--cleanup: %w", err)
				}
				fmt.Fprintf(stdout, "removed the service proxy's nftables table %s and its service-range route\n", o.Pods.ProxyTable)
				return nil
			}
			cfg, err := o.config()
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if o.Verbose {
				level = slog.LevelDebug
			}
			cfg.Logger = logger(stderr, level)
			cfg.Progress = stdout
			a, err := kubelet.New(cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Server, "server", "", "https URL of the API server (needed to join; later runs use the stored one)")
	f.StringVar(&o.Token, "token", "", "bootstrap token <id>.<secret> from `tether token create` (needed to join)")
	f.StringSliceVar(&o.CACertHashes, "ca-cert-hash", nil, "pin of the cluster's server CA, sha256:<hex of the SHA-256 of its SubjectPublicKeyInfo>; repeatable, one must match")
	f.BoolVar(&o.InsecureSkipCAPin, "insecure-skip-ca-pin", false, "join without --ca-cert-hash, trusting whatever CA the server names (anyone on the network path can impersonate the cluster)")
	f.BoolVar(&o.Rejoin, "rejoin", false, "discard the credentials in --data-dir and join again with --token (after the node was revoked)")
	f.StringVar(&o.DataDir, "data-dir", kubelet.DefaultDataDir, "directory for the node's kubeconfig, keys and certificates")
	f.StringVar(&o.NodeName, "node-name", "", "name of the Node (default: the host name, lower-cased)")
	f.StringVar(&o.NodeIP, "node-ip", "", "the node's InternalIP, where the kubelet port listens (default: the source address of the route to the server)")
	f.IntVar(&o.KubeletPort, "kubelet-port", kubelet.DefaultKubeletPort, "HTTPS port of the kubelet")
	f.BoolVar(&o.Tunnel, "tunnel", false, "keep a tunnel open to the API server for its connections to this node (logs, exec, proxy), for a node the API server cannot connect to (behind NAT, no inbound port)")
	f.BoolVarP(&o.Verbose, "verbose", "v", false, "log debug messages")
	o.Pods.addFlags(f)
	f.BoolVar(&o.Cleanup, "cleanup", false, "remove the service proxy's nftables rules and route from this machine, then exit")
	return cmd
}

// Validate checks the flags and reports every problem at once.
func (o *agentOptions) Validate() error {
	var errs []error
	if o.Server != "" {
		if err := kubelet.CheckServerURL(o.Server); err != nil {
			errs = append(errs, fmt.Errorf("--server: %w", err))
		}
	}
	if o.Token != "" {
		if !bootstraputil.IsValidBootstrapToken(o.Token) {
			errs = append(errs, errors.New("--token must be <id>.<secret>: 6 and 16 characters from [a-z0-9], as `tether token create` prints it"))
		}
		if o.Server == "" {
			errs = append(errs, errors.New("--server is required with --token"))
		}
		if len(o.CACertHashes) == 0 && !o.InsecureSkipCAPin {
			errs = append(errs, errors.New("--ca-cert-hash is required to join: pass the one `tether token create` printed (or --insecure-skip-ca-pin, which trusts the server blindly)"))
		}
	}
	for _, h := range o.CACertHashes {
		if _, err := bootstrap.NormalizePin(h); err != nil {
			errs = append(errs, fmt.Errorf("--ca-cert-hash: %w", err))
		}
	}
	if o.Rejoin && o.Token == "" {
		errs = append(errs, errors.New("--rejoin needs --token: run `tether token create` on the server for a fresh one"))
	}
	if o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if o.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(o.NodeName); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--node-name %q: %s", o.NodeName, strings.Join(msgs, "; ")))
		}
	}
	if o.NodeIP != "" {
		if ip := net.ParseIP(o.NodeIP); ip == nil || ip.IsUnspecified() {
			errs = append(errs, fmt.Errorf("--node-ip %q is not a usable IP address", o.NodeIP))
		}
	}
	if o.KubeletPort < 1 || o.KubeletPort > 65535 {
		errs = append(errs, fmt.Errorf("--kubelet-port %d is not between 1 and 65535", o.KubeletPort))
	}
	return errors.Join(errs...)
}

// config validates the flags and turns them into an agent Config.
func (o *agentOptions) config() (kubelet.Config, error) {
	if err := o.Validate(); err != nil {
		return kubelet.Config{}, err
	}
	cfg := kubelet.Config{
		Server:            o.Server,
		Token:             o.Token,
		CACertHashes:      o.CACertHashes,
		InsecureSkipCAPin: o.InsecureSkipCAPin,
		Rejoin:            o.Rejoin,
		DataDir:           o.DataDir,
		NodeName:          o.NodeName,
		NodeIP:            net.ParseIP(o.NodeIP),
		KubeletPort:       o.KubeletPort,
		Tunnel:            o.Tunnel,
	}
	o.Pods.apply(&cfg)
	return cfg, nil
}

// localAgentTokenTTL is how long the bootstrap token of the server's local
// agent is valid; it is used within seconds.
const localAgentTokenTTL = 10 * time.Minute

// runLocalAgent runs the node agent of `tether server` for its own machine,
// through the same join as any node: a bootstrap token (created with the
// admin credentials, only when the agent has no credentials yet), the CA
// pin, CSRs, approval and rotation. It returns when ctx ends or the agent
// fails.
func runLocalAgent(ctx context.Context, cp *controlplane.ControlPlane, dataDir, nodeName string, port int, podOpts podOptions, logger *slog.Logger, progress io.Writer) error {
	u, err := url.Parse(cp.URL())
	if err != nil {
		return fmt.Errorf("local agent: server URL %q: %w", cp.URL(), err)
	}
	nodeIP := net.ParseIP(u.Hostname())
	admin, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig())
	if err != nil {
		return fmt.Errorf("local agent: %w", err)
	}
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return fmt.Errorf("local agent: %w", err)
	}
	agentDir := filepath.Join(dataDir, "agent")
	// The server's URL changes with --advertise-address or --secure-port;
	// the local agent then joins again rather than failing.
	creds, err := bootstrap.LoadCredentials(agentDir)
	rejoin := err != nil || (creds != nil && strings.TrimSuffix(creds.Server, "/") != strings.TrimSuffix(cp.URL(), "/"))
	cfg := kubelet.Config{
		Server: cp.URL(),
		GetToken: func(ctx context.Context) (string, error) {
			return bootstrap.CreateToken(ctx, client, localAgentTokenTTL, "local agent of tether server")
		},
		CACertHashes: []string{pki.Pin(cp.PKI().ServerCA.Cert)},
		Rejoin:       rejoin,
		DataDir:      agentDir,
		NodeName:     nodeName,
		NodeIP:       nodeIP,
		KubeletPort:  port,
		Progress:     progress,
		Logger:       logger,
	}
	podOpts.apply(&cfg)
	a, err := kubelet.New(cfg)
	if err != nil {
		return fmt.Errorf("local agent: %w", err)
	}
	if err := a.Run(ctx); err != nil {
		return fmt.Errorf("local agent (set its port with --kubelet-port and its name with --node-name, or turn it off with --disable-agent): %w", err)
	}
	return nil
}
