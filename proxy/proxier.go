// Package proxy is the node's service proxy: it makes Service virtual IPs
// and NodePorts work on one node by programming nftables, the way
// kube-proxy's nftables mode does, from the Services, EndpointSlices and
// Nodes it watches through client-go.
//
// Everything lives in one table of the ip family that tether owns (default
// "tether"). Its shape:
//
//   - nat-prerouting (pods, other hosts) and nat-output (this node) jump to
//     "services", which looks up daddr . proto . dport in the service-ips
//     verdict map (ClusterIPs, external IPs, load-balancer IPs) and, for any
//     local address outside 127/8 and the service range, proto . dport in
//     service-nodeports. Both lead to a per-service-port chain that picks an
//     endpoint chain at random (numgen) and the endpoint chain DNATs.
//   - filter-input, -forward and -output refuse new connections to Services
//     without endpoints (the sets no-endpoint-services and
//     no-endpoint-nodeports) and, when the service range is known, any new
//     connection to an address in it that was not DNATed: a TCP reset, or
//     for other protocols ICMP port unreachable, so clients fail at once.
//     (ICMP alone is not enough for TCP: the kernel rate-limits ICMP
//     errors, and under a burst of connections some would time out.)
//   - nat-postrouting masquerades the first packet of connections marked
//     for it: traffic to a VIP from outside the pod network (this node, other
//     hosts), everything arriving on a NodePort, and hairpin traffic (a pod
//     reaching itself through its Service). It also masquerades pods'
//     traffic leaving the pod network for anything but a node address, since
//     the pod network's bridge does not (ipMasq is off).
//
// Besides the table, the proxier keeps one route: the service range as a
// "local" route (table local, protocol 0x75). A connection to a VIP then
// never follows the default route out of the machine; it is DNATed, or
// delivered locally and refused by filter-input. An "unreachable" or
// "blackhole" route would not do: a local socket's connect() to a VIP would
// fail at route lookup before the output chain could DNAT it (checked on
// kernel 6.18). One consequence of the local route: the node's own
// connections to a VIP take the VIP as their source address; they are
// masqueraded like any traffic from outside the pod network.
//
// Pod traffic to a VIP keeps the pod's address when the endpoint is a
// pod or a node: the nodes route the pod CIDRs (host-gw), so the reply
// comes back. In particular the "kubernetes" Service from a pod reaches the
// apiserver's node address unmasqueraded if that address belongs to a
// Node, and masqueraded (so it still works) if it does not.
//
// The first sync after start replaces the whole table in one nft
// transaction; later syncs write only the chains and elements that changed.
// When Run ends the rules stay, so a restarting agent keeps traffic
// flowing; Cleanup removes them.
//
// Not supported: IPv6, externalTrafficPolicy and internalTrafficPolicy
// Local (treated as Cluster), loadBalancerSourceRanges, and clearing stale
// UDP conntrack entries when endpoints go away.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"tether/internal/informer"
)

// Defaults used when the corresponding Config field is empty.
const (
	DefaultTableName       = "tether"
	DefaultMinSyncInterval = 50 * time.Millisecond
)

const (
	// fullSyncPeriod is how often the whole table is rewritten even when
	// nothing changed, repairing anything done to it behind our back.
	fullSyncPeriod = 10 * time.Minute
	// Retry delays after a failed sync.
	minRetry = 500 * time.Millisecond
	maxRetry = 30 * time.Second
)

// Config configures a Proxier. It is not changed after it is passed to New.
type Config struct {
	// Client reads Services, EndpointSlices (discovery.k8s.io/v1) and
	// Nodes; the node's own credentials are enough. Required.
	Client kubernetes.Interface

	// NodeName is this node's name, for logs. Required.
	NodeName string

	// NodeIPs are this node's addresses. NodePorts answer on every local
	// address (these included) except loopback ones; pod traffic to them,
	// and to the addresses of every other Node, is never masqueraded.
	// Optional.
	NodeIPs []net.IP

	// ServiceCIDR is the range ClusterIPs come from, e.g. 10.96.0.0/12.
	// If set, it is routed locally (see the package comment) and any new
	// connection to an address in it that no Service claims is rejected.
	// If nil, no route is added and only the VIPs of Services without
	// endpoints are rejected; un-DNATed traffic to others follows the
	// node's routes.
	ServiceCIDR *net.IPNet

	// ClusterCIDR is the pod network, e.g. 10.244.0.0/16. If set, Service
	// traffic from pods keeps its source address and pod traffic leaving
	// the pod network is masqueraded; if nil, all Service traffic is
	// masqueraded and pod egress is left alone.
	ClusterCIDR *net.IPNet

	// TableName is the nftables table (family ip) the proxier owns. If
	// empty, DefaultTableName ("tether") is used.
	TableName string

	// NFTables, if set, is used instead of the nft binary; it must manage
	// the ip-family table TableName (knftables.NewFake in tests).
	NFTables knftables.Interface

	// Logger receives the proxier's logs. If nil, logs are discarded.
	Logger *slog.Logger

	// Registerer gets the proxier's metrics: tether_proxy_sync_duration_seconds,
	// tether_proxy_rules, tether_proxy_last_sync_timestamp_seconds and
	// tether_proxy_sync_errors_total. If nil, they are not registered.
	Registerer prometheus.Registerer

	// MinSyncInterval is the least time between two syncs: a change after
	// a quiet period is applied at once, and a burst of changes is
	// coalesced into one sync per interval. If zero,
	// DefaultMinSyncInterval (50ms) is used.
	MinSyncInterval time.Duration
}

// Proxier programs one node's service rules. Create it with New and start
// it with Run.
type Proxier struct {
	cfg     Config
	log     *slog.Logger
	nft     knftables.Interface
	metrics *metrics
	ready   chan struct{}
	once    sync.Once

	// serviceRoute installs the local route for the service range; tests
	// replace it.
	serviceRoute func(ctx context.Context, cidr *net.IPNet) error

	mu      sync.Mutex
	applied *Ruleset // what the kernel holds; nil when unknown
}

// New validates cfg and builds a Proxier. Unless cfg.NFTables is set it
// checks that the nft binary works (it runs `nft --check`); it starts
// nothing.
func New(cfg Config) (*Proxier, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("proxy: Client is required"))
	}
	if cfg.NodeName == "" {
		errs = append(errs, errors.New("proxy: NodeName is required"))
	}
	if cfg.ServiceCIDR != nil && cfg.ServiceCIDR.IP.To4() == nil {
		errs = append(errs, fmt.Errorf("proxy: ServiceCIDR %s is not IPv4", cfg.ServiceCIDR))
	}
	if cfg.ClusterCIDR != nil && cfg.ClusterCIDR.IP.To4() == nil {
		errs = append(errs, fmt.Errorf("proxy: ClusterCIDR %s is not IPv4", cfg.ClusterCIDR))
	}
	if cfg.MinSyncInterval < 0 {
		errs = append(errs, fmt.Errorf("proxy: MinSyncInterval %v is negative", cfg.MinSyncInterval))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.TableName == "" {
		cfg.TableName = DefaultTableName
	}
	if cfg.MinSyncInterval == 0 {
		cfg.MinSyncInterval = DefaultMinSyncInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "proxy", "node", cfg.NodeName)

	nft := cfg.NFTables
	if nft == nil {
		var err error
		nft, err = knftables.New(knftables.IPv4Family, cfg.TableName)
		if err != nil {
			return nil, fmt.Errorf("proxy: nftables: %w", err)
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Proxier{
		cfg:          cfg,
		log:          log,
		nft:          nft,
		metrics:      m,
		ready:        make(chan struct{}),
		serviceRoute: ensureServiceRoute,
	}, nil
}

// Ready is closed after the first successful sync.
func (p *Proxier) Ready() <-chan struct{} { return p.ready }

// Run watches Services, EndpointSlices and Nodes and keeps the table in
// step with them until ctx ends. The first sync rebuilds the whole table;
// later ones write what changed. A failed sync is logged and retried with
// backoff (as a full rebuild). Run returns nil when ctx ends, after its
// informers have stopped, and leaves the rules in place.
func (p *Proxier) Run(ctx context.Context) error {
	factory := informer.NewFactory(p.cfg.Client, 0)
	services := factory.Core().V1().Services()
	slicesInf := factory.Discovery().V1().EndpointSlices()
	nodes := factory.Core().V1().Nodes()

	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	onAny := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	var errs []error
	for _, inf := range []cache.SharedIndexInformer{services.Informer(), slicesInf.Informer()} {
		if _, err := inf.AddEventHandler(onAny); err != nil {
			errs = append(errs, err)
		}
	}
	// Nodes change every heartbeat; only their addresses matter here.
	_, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			if !ok1 || !ok2 || !slices.Equal(o.Status.Addresses, n.Status.Addresses) {
				poke()
			}
		},
		DeleteFunc: func(any) { poke() },
	})
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("proxy: informers: %w", errors.Join(errs...))
	}

	factory.Start(ctx.Done())
	defer factory.Shutdown()
	p.log.Info("waiting for Services, EndpointSlices and Nodes")
	if !cache.WaitForCacheSync(ctx.Done(), services.Informer().HasSynced, slicesInf.Informer().HasSynced, nodes.Informer().HasSynced) {
		return nil // ctx ended
	}

	lister := func() (Input, error) {
		svcs, err := services.Lister().List(labels.Everything())
		if err != nil {
			return Input{}, err
		}
		eps, err := slicesInf.Lister().List(labels.Everything())
		if err != nil {
			return Input{}, err
		}
		ns, err := nodes.Lister().List(labels.Everything())
		if err != nil {
			return Input{}, err
		}
		in := Input{Services: svcs, EndpointSlices: eps}
		for _, n := range ns {
			for _, a := range n.Status.Addresses {
				if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
					continue
				}
				if ip := net.ParseIP(a.Address); ip != nil {
					in.NodeIPs = append(in.NodeIPs, ip)
				}
			}
		}
		return in, nil
	}

	timer := time.NewTimer(0) // the first sync, at once
	defer timer.Stop()
	fullSync := time.NewTicker(fullSyncPeriod)
	defer fullSync.Stop()
	var (
		lastSync time.Time
		retry    time.Duration // >0 while failing
		armed    = true        // timer is set for a sync
	)
	// schedule arms the timer for at, unless a sync is already due: a
	// change after a quiet period syncs at once, a burst of them once per
	// MinSyncInterval.
	schedule := func(at time.Time) {
		if !armed {
			timer.Reset(max(time.Until(at), 0))
			armed = true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
			if retry == 0 {
				schedule(lastSync.Add(p.cfg.MinSyncInterval))
			}
		case <-fullSync.C:
			p.forget()
			schedule(lastSync.Add(p.cfg.MinSyncInterval))
		case <-timer.C:
			armed = false
			lastSync = time.Now()
			in, err := lister()
			if err == nil {
				err = p.Sync(ctx, in)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				retry = min(max(2*retry, minRetry), maxRetry)
				p.log.Error("sync failed; retrying", "err", err, "retry_in", retry)
				timer.Reset(retry)
				armed = true
				continue
			}
			retry = 0
		}
	}
}

// forget drops what the proxier knows of the kernel's table, so that the
// next sync rebuilds it whole.
func (p *Proxier) forget() {
	p.mu.Lock()
	p.applied = nil
	p.mu.Unlock()
}

// Sync brings the table in line with in: a full rebuild the first time or
// after a failure, otherwise only the difference from the previous Sync.
// The CIDRs of in are replaced by the Config's, and the Config's NodeIPs
// are added to in's. Run calls Sync; it is exported for benchmarks and
// tests that drive the proxier without an API server. Calls are
// serialized; do not mix them with a running Run.
func (p *Proxier) Sync(ctx context.Context, in Input) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	in.ServiceCIDR, in.ClusterCIDR = p.cfg.ServiceCIDR, p.cfg.ClusterCIDR
	in.NodeIPs = append(slices.Clone(p.cfg.NodeIPs), in.NodeIPs...)
	rs := BuildRules(in)
	prev := p.applied
	mode := "partial"
	if prev == nil || prev.skeleton != rs.skeleton {
		mode = "full"
		prev = nil
		if p.cfg.ServiceCIDR != nil {
			if err := p.serviceRoute(ctx, p.cfg.ServiceCIDR); err != nil {
				p.metrics.errors.Inc()
				return err
			}
		}
	}
	tx := p.nft.NewTransaction()
	rs.Apply(tx, prev)
	ops := tx.NumOperations()
	if ops > 0 {
		if err := p.nft.Run(ctx, tx); err != nil {
			p.applied = nil
			p.metrics.errors.Inc()
			return fmt.Errorf("proxy: %s sync (%d operations): %w", mode, ops, err)
		}
	}
	p.applied = rs
	took := time.Since(start)
	p.metrics.duration.WithLabelValues(mode).Observe(took.Seconds())
	p.metrics.rules.Set(float64(rs.Rules()))
	p.metrics.lastSync.SetToCurrentTime()
	p.log.Debug("synced", "mode", mode, "operations", ops, "services", len(in.Services), "rules", rs.Rules(), "took", took)
	p.once.Do(func() {
		p.log.Info("service rules in place", "table", p.cfg.TableName, "rules", rs.Rules(), "took", took)
		close(p.ready)
	})
	return nil
}

// metrics are the proxier's Prometheus metrics.
type metrics struct {
	duration *prometheus.HistogramVec
	rules    prometheus.Gauge
	lastSync prometheus.Gauge
	errors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_proxy_sync_duration_seconds",
			Help:    "Time to compute and apply the service rules, by mode (full: the whole table; partial: only what changed).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"mode"}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_proxy_rules",
			Help: "Number of rules and set or map elements in the proxy's nftables table after the last sync.",
		}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_proxy_last_sync_timestamp_seconds",
			Help: "Unix time of the last successful sync of the service rules.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_proxy_sync_errors_total",
			Help: "Number of failed syncs of the service rules.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.duration, m.rules, m.lastSync, m.errors} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("proxy: register metrics: %w", errors.Join(errs...))
	}
	return m, nil
}
