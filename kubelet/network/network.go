// Package network wires the pods of one node into the cluster network.
//
// Each pod gets a named network namespace under /var/run/netns and an
// address from the node's pod CIDR, handed out by the standard CNI plugins
// (bridge + host-local + loopback) through libcni. Every pod's host-side
// veth joins one Linux bridge in the agent's own network namespace; the
// bridge holds the gateway (first) address of the pod CIDR. Traffic to the
// pod CIDRs of other nodes is routed host-gw style: SyncRoutes installs one
// route per remote node, marked with a private route protocol so that only
// tether's routes are ever changed.
//
// The kubelet calls SetupPod before it starts a pod's containers (their OCI
// spec points at the returned netns path) and TeardownPod after they are
// gone. Both are idempotent, and SetupPod re-adopts a pod whose namespace and
// CNI result survived an agent restart.
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Defaults used when the corresponding Config field is empty.
const (
	DefaultBridge      = "tether0"
	DefaultNetNSPrefix = "tether-"
	DefaultCNIBinDir   = "/usr/lib/cni"
)

const (
	// networkName is the CNI network name; it keys libcni's result cache and
	// host-local's allocation directory (both live under Config.DataDir).
	networkName = "tether"
	cniVersion  = "1.0.0"
	// podIfName is the interface name of the pod's end of the veth pair.
	podIfName = "eth0"
)

// requiredPlugins are the CNI plugin binaries the conflist uses.
var requiredPlugins = []string{"bridge", "host-local", "loopback"}

// Config configures a Network. It is not changed after it is passed to New.
type Config struct {
	// PodCIDR is the node's spec.podCIDR, e.g. "10.244.1.0/24". Required.
	// Its first address is the gateway (bridge) address; pods get addresses
	// from the rest of it.
	PodCIDR string

	// ClusterCIDR is the CIDR all pod CIDRs are taken from, e.g.
	// "10.244.0.0/16". Optional; if set it must contain PodCIDR.
	ClusterCIDR string

	// Bridge is the name of the Linux bridge the pods attach to, at most 15
	// characters. If empty, DefaultBridge ("tether0") is used.
	Bridge string

	// NetNSPrefix prefixes the names of the pod network namespaces under
	// /var/run/netns; the full name is the prefix followed by the pod UID.
	// Agents sharing a machine need prefixes of which neither is a prefix of
	// the other. If empty, DefaultNetNSPrefix ("tether-") is used.
	NetNSPrefix string

	// CNIBinDir is the directory holding the CNI plugins. If empty,
	// DefaultCNIBinDir ("/usr/lib/cni") is used.
	CNIBinDir string

	// DataDir holds host-local's address allocations (DataDir/ipam) and
	// libcni's result cache (DataDir/cache). Required; it must survive agent
	// restarts for pods to be re-adopted.
	DataDir string

	// MTU is the MTU of the bridge and the pod interfaces. If zero, the
	// plugin's default is used.
	MTU int

	// Logger receives the package's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Network is the pod network of one node. Its methods are safe for
// concurrent use; calls for the same pod are serialised.
type Network struct {
	podNet      *net.IPNet
	gateway     net.IP
	clusterNet  *net.IPNet
	bridge      string
	prefix      string
	dataDir     string
	log         *slog.Logger
	cni         *libcni.CNIConfig
	confList    *libcni.NetworkConfigList
	locks       podLocks
	warnMountNS sync.Once

	mu  sync.Mutex
	ips map[string]net.IP // pod UID -> IP, for pods set up or adopted by this instance
}

// New validates cfg and returns a Network. It changes nothing on the
// machine.
func New(cfg Config) (*Network, error) {
	var errs []error
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if cfg.NetNSPrefix == "" {
		cfg.NetNSPrefix = DefaultNetNSPrefix
	}
	if cfg.CNIBinDir == "" {
		cfg.CNIBinDir = DefaultCNIBinDir
	}

	n := &Network{
		bridge:  cfg.Bridge,
		prefix:  cfg.NetNSPrefix,
		dataDir: cfg.DataDir,
		log:     cfg.Logger,
		ips:     make(map[string]net.IP),
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.log = n.log.With("component", "network")

	if cfg.PodCIDR == "" {
		errs = append(errs, errors.New("network: PodCIDR is required"))
	} else if ip, ipnet, err := net.ParseCIDR(cfg.PodCIDR); err != nil {
		errs = append(errs, fmt.Errorf("network: PodCIDR: %w", err))
	} else if !ip.Equal(ipnet.IP) {
		errs = append(errs, fmt.Errorf("network: PodCIDR %q has host bits set (did you mean %s?)", cfg.PodCIDR, ipnet))
	} else if ones, bits := ipnet.Mask.Size(); bits-ones < 2 {
		errs = append(errs, fmt.Errorf("network: PodCIDR %q is too small for a gateway and pods", cfg.PodCIDR))
	} else {
		n.podNet = ipnet
		n.gateway = firstIP(ipnet)
	}
	if cfg.ClusterCIDR != "" {
		_, cn, err := net.ParseCIDR(cfg.ClusterCIDR)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("network: ClusterCIDR: %w", err))
		case n.podNet != nil && !contains(cn, n.podNet):
			errs = append(errs, fmt.Errorf("network: PodCIDR %s is not inside ClusterCIDR %s", n.podNet, cn))
		default:
			n.clusterNet = cn
		}
	}
	if err := validIfName(cfg.Bridge); err != nil {
		errs = append(errs, fmt.Errorf("network: Bridge: %w", err))
	}
	if err := validNetNSPrefix(cfg.NetNSPrefix); err != nil {
		errs = append(errs, fmt.Errorf("network: NetNSPrefix: %w", err))
	}
	if cfg.DataDir == "" {
		errs = append(errs, errors.New("network: DataDir is required"))
	} else if !filepath.IsAbs(cfg.DataDir) {
		errs = append(errs, fmt.Errorf("network: DataDir %q must be an absolute path", cfg.DataDir))
	}
	if cfg.MTU < 0 || (cfg.MTU > 0 && cfg.MTU < 576) || cfg.MTU > 65535 {
		errs = append(errs, fmt.Errorf("network: MTU %d is out of range (0 or 576..65535)", cfg.MTU))
	}
	for _, p := range requiredPlugins {
		if _, err := os.Stat(filepath.Join(cfg.CNIBinDir, p)); err != nil {
			errs = append(errs, fmt.Errorf("network: CNI plugin %q not found in %s: %w", p, cfg.CNIBinDir, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	raw, err := conflist(cfg.Bridge, n.podNet, n.gateway, cfg.MTU, filepath.Join(cfg.DataDir, "ipam"))
	if err != nil {
		return nil, fmt.Errorf("network: build CNI config: %w", err)
	}
	n.confList, err = libcni.ConfListFromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("network: parse CNI config: %w", err)
	}
	// An explicit Exec: libcni otherwise fills one in lazily, which races
	// when pods are set up concurrently.
	exec := &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: pluginStderr{n.log}},
		PluginDecoder: version.PluginDecoder{},
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{cfg.CNIBinDir}, filepath.Join(cfg.DataDir, "cache"), exec)
	return n, nil
}

// Gateway returns the first address of the pod CIDR, which the bridge holds
// and the pods use as their default gateway.
func (n *Network) Gateway() net.IP { return dup(n.gateway) }

// PodCIDR returns the node's pod CIDR.
func (n *Network) PodCIDR() *net.IPNet {
	return &net.IPNet{IP: dup(n.podNet.IP), Mask: append(net.IPMask(nil), n.podNet.Mask...)}
}

// NetNSPath returns the path the pod's network namespace has (or would
// have) under /var/run/netns.
func (n *Network) NetNSPath(podUID string) string {
	return filepath.Join(netnsDir, n.netnsName(podUID))
}

// SetupPod gives the pod a network namespace with an address from the pod
// CIDR and returns the namespace's path and the address.
//
// If the namespace already exists and libcni has a cached result for it,
// SetupPod returns the cached address without running any plugin; this is
// how pods are re-adopted after an agent restart. Otherwise it clears any
// half-made state, creates the namespace and runs CNI ADD. If ADD fails,
// SetupPod releases the address and removes the namespace it created.
func (n *Network) SetupPod(ctx context.Context, podUID, namespace, name string) (netnsPath string, ip net.IP, err error) {
	if err := validPodUID(podUID); err != nil {
		return "", nil, err
	}
	unlock := n.locks.lock(podUID)
	defer unlock()
	start := time.Now()
	log := n.log.With("namespace", namespace, "name", name, "pod", podUID)

	nsName := n.netnsName(podUID)
	path := filepath.Join(netnsDir, nsName)
	exists := isNetNS(path)
	rt := n.runtimeConf(podUID, namespace, name, path)

	cached, cacheErr := n.cachedIP(rt)
	if cacheErr != nil {
		log.Warn("ignoring unreadable cached CNI result", "err", cacheErr)
	}
	if exists && cached != nil {
		n.remember(podUID, cached)
		log.Debug("adopted pod network", "netns", path, "ip", cached)
		return path, cached, nil
	}

	// Leftovers of an earlier attempt (a namespace without a result, or a
	// result without a namespace) are released before a fresh ADD, so the
	// pod never holds two addresses. Without either there is nothing to
	// release: the namespace is made before ADD and removed after DEL.
	if exists || cached != nil || cacheErr != nil {
		if err := n.del(ctx, podUID, namespace, name, path, exists); err != nil {
			return "", nil, fmt.Errorf("network: setup pod %s: clear earlier state: %w", podUID, err)
		}
	}

	if !exists {
		n.warnMountNS.Do(n.checkMountPropagation)
		// An empty file left where a namespace was mounted (its mount
		// namespace is gone) would make creation fail.
		if err := deleteNetNS(path); err != nil {
			return "", nil, fmt.Errorf("network: setup pod %s: %w", podUID, err)
		}
		if err := createNetNS(ctx, nsName); err != nil {
			return "", nil, fmt.Errorf("network: setup pod %s: %w", podUID, err)
		}
		if nsName != n.prefix+podUID {
			if err := n.writeNameMapping(nsName, podUID); err != nil {
				_ = deleteNetNS(path)
				return "", nil, fmt.Errorf("network: setup pod %s: %w", podUID, err)
			}
		}
	}

	ip, err = n.add(ctx, rt)
	if err != nil {
		// Undo with a fresh context: the caller's may be what failed.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := n.cni.DelNetworkList(cctx, n.confList, rt); derr != nil {
			log.Warn("cleanup after failed CNI ADD", "err", derr)
		}
		if !exists {
			if derr := deleteNetNS(path); derr != nil {
				log.Warn("cleanup after failed CNI ADD", "err", derr)
			}
			n.removeNameMapping(nsName)
		}
		return "", nil, fmt.Errorf("network: setup pod %s: %w", podUID, err)
	}
	n.remember(podUID, ip)
	log.Info("pod network ready", "netns", path, "ip", ip, "took", time.Since(start).Round(time.Millisecond))
	return path, ip, nil
}

// TeardownPod runs CNI DEL for the pod (releasing its address) and deletes
// its network namespace. It is idempotent and works without libcni's cached
// result: host-local then releases by container ID.
func (n *Network) TeardownPod(ctx context.Context, podUID string) error {
	if err := validPodUID(podUID); err != nil {
		return err
	}
	unlock := n.locks.lock(podUID)
	defer unlock()

	nsName := n.netnsName(podUID)
	path := filepath.Join(netnsDir, nsName)
	if err := n.del(ctx, podUID, "", "", path, isNetNS(path)); err != nil {
		return fmt.Errorf("network: teardown pod %s: %w", podUID, err)
	}
	if err := deleteNetNS(path); err != nil {
		return fmt.Errorf("network: teardown pod %s: %w", podUID, err)
	}
	n.removeNameMapping(nsName)
	n.mu.Lock()
	delete(n.ips, podUID)
	n.mu.Unlock()
	n.log.Info("pod network removed", "pod", podUID)
	return nil
}

// PodIP returns the address of a pod whose network is set up: one set up
// by this Network, or one whose namespace and cached CNI result exist.
func (n *Network) PodIP(podUID string) (net.IP, bool) {
	if validPodUID(podUID) != nil {
		return nil, false
	}
	n.mu.Lock()
	ip, ok := n.ips[podUID]
	n.mu.Unlock()
	if ok {
		return dup(ip), true
	}
	path := n.NetNSPath(podUID)
	if !isNetNS(path) {
		return nil, false
	}
	ip, err := n.cachedIP(n.runtimeConf(podUID, "", "", path))
	if err != nil || ip == nil {
		return nil, false
	}
	n.remember(podUID, ip)
	return dup(ip), true
}

// Pods returns the UIDs of the pods that have a network namespace with this
// Network's prefix, including namespaces left half-made by a crash. The
// kubelet tears down those that belong to no pod it knows.
func (n *Network) Pods() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("network: list pods: %w", err)
	}
	var uids []string
	for _, e := range entries {
		uid, ok := n.podUIDOf(e.Name())
		if ok {
			uids = append(uids, uid)
		}
	}
	return uids, nil
}

// add runs CNI ADD and returns the pod's address from the result.
func (n *Network) add(ctx context.Context, rt *libcni.RuntimeConf) (net.IP, error) {
	res, err := n.cni.AddNetworkList(ctx, n.confList, rt)
	if err != nil {
		return nil, fmt.Errorf("cni add: %w", err)
	}
	ip, err := n.podIPFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("cni add: %w", err)
	}
	return ip, nil
}

// del runs CNI DEL. When the namespace is gone the plugins are told so
// (empty CNI_NETNS) and only release the address.
func (n *Network) del(ctx context.Context, podUID, namespace, name, path string, nsExists bool) error {
	if !nsExists {
		path = ""
	}
	if err := n.cni.DelNetworkList(ctx, n.confList, n.runtimeConf(podUID, namespace, name, path)); err != nil {
		return fmt.Errorf("cni del: %w", err)
	}
	return nil
}

func (n *Network) runtimeConf(podUID, namespace, name, netnsPath string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: podUID,
		NetNS:       netnsPath,
		IfName:      podIfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", namespace},
			{"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", podUID},
			{"K8S_POD_UID", podUID},
		},
	}
}

// cachedIP returns the pod address from libcni's cached result, or nil if
// there is none.
func (n *Network) cachedIP(rt *libcni.RuntimeConf) (net.IP, error) {
	res, err := n.cni.GetNetworkListCachedResult(n.confList, rt)
	if err != nil || res == nil {
		return nil, err
	}
	return n.podIPFromResult(res)
}

func (n *Network) podIPFromResult(res cnitypes.Result) (net.IP, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("convert result: %w", err)
	}
	for _, ipc := range r.IPs {
		if n.podNet.Contains(ipc.Address.IP) {
			return dup(ipc.Address.IP), nil
		}
	}
	return nil, fmt.Errorf("result has no address in %s: %v", n.podNet, r.IPs)
}

func (n *Network) remember(podUID string, ip net.IP) {
	n.mu.Lock()
	n.ips[podUID] = dup(ip)
	n.mu.Unlock()
}

// podLocks serialises work on one pod without serialising all pods.
type podLocks struct {
	mu sync.Mutex
	m  map[string]*podLock
}

type podLock struct {
	mu   sync.Mutex
	refs int
}

func (l *podLocks) lock(uid string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*podLock)
	}
	pl := l.m[uid]
	if pl == nil {
		pl = &podLock{}
		l.m[uid] = pl
	}
	pl.refs++
	l.mu.Unlock()

	pl.mu.Lock()
	return func() {
		pl.mu.Unlock()
		l.mu.Lock()
		pl.refs--
		if pl.refs == 0 {
			delete(l.m, uid)
		}
		l.mu.Unlock()
	}
}

// pluginStderr logs what CNI plugins write to stderr.
type pluginStderr struct{ log *slog.Logger }

func (w pluginStderr) Write(p []byte) (int, error) {
	if msg := strings.TrimSpace(string(p)); msg != "" {
		w.log.Warn("cni plugin stderr", "output", msg)
	}
	return len(p), nil
}

func firstIP(n *net.IPNet) net.IP {
	ip := dup(n.IP.Mask(n.Mask))
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	for i := len(ip) - 1; i >= 0; i-- {
		ip[i]++
		if ip[i] != 0 {
			break
		}
	}
	return ip
}

// contains reports whether outer contains all of inner.
func contains(outer, inner *net.IPNet) bool {
	oOnes, oBits := outer.Mask.Size()
	iOnes, iBits := inner.Mask.Size()
	return oBits == iBits && oOnes <= iOnes && outer.Contains(inner.IP)
}

// overlaps reports whether a and b share any address.
func overlaps(a, b *net.IPNet) bool {
	return a.Contains(b.IP) || b.Contains(a.IP)
}

func dup(ip net.IP) net.IP {
	if ip == nil {
		return nil
	}
	return append(net.IP(nil), ip...)
}
