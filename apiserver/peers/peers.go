// Package peers keeps the endpoints of the Service default/kubernetes (path
// P3: pods reach the API server through it) listing every API server that
// is alive, so that a cluster with several servers spreads its pods over
// them and a stopped server drops out.
//
// Each server holds a coordination.k8s.io/v1 Lease in kube-system, named
// apiserver-<hash of its advertise address and port>, labelled
// apiserver.kubernetes.io/identity=kube-apiserver like upstream's identity
// leases, and annotated with the address and port it serves on. It renews
// the lease every RenewInterval. Whenever it renews, and whenever a peer's
// lease appears, disappears or comes back to life, it writes the Endpoints
// default/kubernetes and the EndpointSlice default/kubernetes with the
// addresses of the servers whose leases are fresh (renewed within their
// leaseDurationSeconds) and which serve on the same port and IP family as
// itself, as upstream's lease endpoint reconciler does. Both objects are
// written only when they would change, and look like upstream's: the
// Endpoints carry endpointslice.kubernetes.io/skip-mirror=true, the slice
// only kubernetes.io/service-name=kubernetes (no managed-by label, so the
// endpointslice controller leaves it alone), and each endpoint is ready.
//
// Loopback, link-local and unspecified addresses are never published:
// Endpoints validation refuses them and pods could not reach them. A
// server advertising such an address still holds its lease, so the objects
// exist (without addresses) and peers see it.
//
// Freshness is judged on the reader's clock: servers' clocks must agree to
// well within a lease duration. When its context ends, a Reconciler
// deletes its lease and removes its address at once, if the API server
// still answers; otherwise its lease expires and its peers remove it.
package peers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"tether/internal/informer"
)

// Names of the objects the Reconciler keeps.
const (
	// ServiceName and ServiceNamespace name the kubernetes Service, its
	// Endpoints and its EndpointSlice.
	ServiceName      = "kubernetes"
	ServiceNamespace = metav1.NamespaceDefault
	// LeaseNamespace holds the servers' leases.
	LeaseNamespace = metav1.NamespaceSystem
	// IdentityLabel, set to IdentityValue, marks the servers' leases.
	IdentityLabel = "apiserver.kubernetes.io/identity"
	IdentityValue = "kube-apiserver"
	// EndpointAnnotation holds the address:port a lease's server serves on.
	EndpointAnnotation = "tether.dev/advertise-endpoint"
	// PortName is the name of the port in the Endpoints and the slice.
	PortName = "https"
)

// Defaults of Config.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewInterval = 10 * time.Second
)

// cleanupTimeout bounds the requests a stopping Reconciler still makes.
const cleanupTimeout = 2 * time.Second

// collectAfter is how many lease durations after its expiry a dead
// server's lease is deleted.
const collectAfter = 10

// conflictRetry is how soon a sync that lost a race with a peer's write is
// tried again.
const conflictRetry = 100 * time.Millisecond

// Config configures a Reconciler. A Config is not changed after it is
// passed to New.
type Config struct {
	// Client writes the lease, the Endpoints and the slice. Required.
	Client kubernetes.Interface
	// Address is the address this server advertises. Required.
	Address net.IP
	// Port is the port this server serves on. Required.
	Port int
	// LeaseDuration is how long a lease stays fresh after its renewal. If
	// 0, DefaultLeaseDuration.
	LeaseDuration time.Duration
	// RenewInterval is how often the lease is renewed and the endpoints
	// rechecked. If 0, DefaultRenewInterval. It must be shorter than the
	// lease duration.
	RenewInterval time.Duration
	// Logger receives the reconciler's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Reconciler holds one server's lease and keeps the kubernetes Service's
// endpoints. Create it with New; call Sync or Run.
type Reconciler struct {
	client    kubernetes.Interface
	addr      net.IP
	port      int
	leaseName string
	duration  time.Duration
	interval  time.Duration
	log       *slog.Logger

	mu      sync.Mutex // serialises Sync
	renewed time.Time  // when the lease was last written
}

// New validates cfg and returns a Reconciler. It starts nothing.
func New(cfg Config) (*Reconciler, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("peers: Config.Client is required"))
	}
	if cfg.Address == nil {
		errs = append(errs, errors.New("peers: Config.Address is required"))
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		errs = append(errs, fmt.Errorf("peers: Config.Port is %d, want 1 to 65535", cfg.Port))
	}
	duration, interval := cfg.LeaseDuration, cfg.RenewInterval
	if duration == 0 {
		duration = DefaultLeaseDuration
	}
	if interval == 0 {
		interval = DefaultRenewInterval
	}
	if duration < time.Second || interval <= 0 || interval >= duration {
		errs = append(errs, fmt.Errorf("peers: renew interval %v must be positive and shorter than the lease duration %v (at least 1s)", interval, duration))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reconciler{
		client:   cfg.Client,
		addr:     cfg.Address,
		port:     cfg.Port,
		duration: duration,
		interval: interval,
		log:      log.With("component", "apiserver-endpoints"),
	}
	r.leaseName = LeaseName(r.endpoint())
	return r, nil
}

// LeaseName returns the name of the lease of the server at endpoint
// (address:port).
func LeaseName(endpoint string) string {
	sum := sha256.Sum256([]byte(endpoint))
	return "apiserver-" + hex.EncodeToString(sum[:8])
}

func (r *Reconciler) endpoint() string {
	return net.JoinHostPort(r.addr.String(), strconv.Itoa(r.port))
}

// Sync renews this server's lease if it is due and writes the Endpoints
// and the slice if they are not what the fresh leases say.
func (r *Reconciler) Sync(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.renew(ctx); err != nil {
		return err
	}
	leases, err := r.client.CoordinationV1().Leases(LeaseNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{IdentityLabel: IdentityValue}).String(),
	})
	if err != nil {
		return fmt.Errorf("peers: list leases: %w", err)
	}
	r.collect(ctx, leases.Items)
	return r.write(ctx, r.addresses(leases.Items, true))
}

// collect deletes the leases of servers that have been gone for
// collectAfter lease durations; a write in between keeps a lease.
func (r *Reconciler) collect(ctx context.Context, leases []coordinationv1.Lease) {
	cutoff := time.Now().Add(-collectAfter * r.duration)
	for i := range leases {
		l := &leases[i]
		if l.Name == r.leaseName || fresh(l, cutoff) {
			continue
		}
		err := r.client.CoordinationV1().Leases(LeaseNamespace).Delete(ctx, l.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{ResourceVersion: &l.ResourceVersion},
		})
		if err == nil {
			r.log.Info("deleted the lease of a server gone long ago", "name", l.Name, "endpoint", l.Annotations[EndpointAnnotation])
		}
	}
}

// Run renews the lease and keeps the endpoints until ctx ends, then
// removes this server (best effort). It returns nil when ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	factory := informer.NewFactory(r.client, 0,
		informers.WithNamespace(LeaseNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.SelectorFromSet(labels.Set{IdentityLabel: IdentityValue}).String()
		}))
	defer factory.Shutdown()
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	inf := factory.Coordination().V1().Leases().Informer()
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*coordinationv1.Lease)
			n, ok2 := newObj.(*coordinationv1.Lease)
			now := time.Now()
			// Renewals of live peers change nothing; a peer coming back
			// to life or moving does.
			if !ok1 || !ok2 || fresh(o, now) != fresh(n, now) || o.Annotations[EndpointAnnotation] != n.Annotations[EndpointAnnotation] {
				poke()
			}
		},
		DeleteFunc: func(any) { poke() },
	})
	if err != nil {
		return fmt.Errorf("peers: watch leases: %w", err)
	}
	defer func() { _ = inf.RemoveEventHandler(reg) }()
	factory.Start(ctx.Done())

	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	for {
		var retry <-chan time.Time
		switch err := r.Sync(ctx); {
		case err == nil, ctx.Err() != nil:
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			// A peer wrote the same object at the same time.
			r.log.Debug("sync the kubernetes service's endpoints: conflict, retrying", "err", err)
			retry = time.After(conflictRetry)
		default:
			r.log.Error("sync the kubernetes service's endpoints", "err", err)
		}
		select {
		case <-ctx.Done():
			r.remove()
			return nil
		case <-ticker.C:
		case <-changed:
		case <-retry:
		}
	}
}

// renew creates or renews this server's lease when half an interval has
// passed since the last write, or the lease is missing.
func (r *Reconciler) renew(ctx context.Context) error {
	now := time.Now()
	if !r.renewed.IsZero() && now.Sub(r.renewed) < r.interval/2 {
		return nil
	}
	leases := r.client.CoordinationV1().Leases(LeaseNamespace)
	seconds := int32((r.duration + time.Second - 1) / time.Second)
	want := func(l *coordinationv1.Lease) {
		if l.Labels == nil {
			l.Labels = map[string]string{}
		}
		l.Labels[IdentityLabel] = IdentityValue
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[EndpointAnnotation] = r.endpoint()
		holder := IdentityValue + "@" + r.endpoint()
		l.Spec.HolderIdentity = &holder
		l.Spec.LeaseDurationSeconds = &seconds
		l.Spec.RenewTime = &metav1.MicroTime{Time: now}
	}
	cur, err := leases.Get(ctx, r.leaseName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: LeaseNamespace, Name: r.leaseName}}
		want(l)
		l.Spec.AcquireTime = &metav1.MicroTime{Time: now}
		if _, err := leases.Create(ctx, l, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("peers: create lease %s: %w", r.leaseName, err)
		}
		r.log.Info("created lease", "namespace", LeaseNamespace, "name", r.leaseName, "endpoint", r.endpoint())
	case err != nil:
		return fmt.Errorf("peers: get lease %s: %w", r.leaseName, err)
	default:
		want(cur)
		if _, err := leases.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("peers: renew lease %s: %w", r.leaseName, err)
		}
	}
	r.renewed = now
	return nil
}

// fresh reports whether a lease was renewed within its duration.
func fresh(l *coordinationv1.Lease, now time.Time) bool {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return false
	}
	return now.Before(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

// addresses returns, sorted, the publishable addresses of the servers with
// fresh leases that serve on this server's port and IP family; self says
// whether this server counts even if its lease is not among leases.
func (r *Reconciler) addresses(leases []coordinationv1.Lease, self bool) []string {
	set := map[string]bool{}
	if self && publishable(r.addr) {
		set[r.addr.String()] = true
	}
	now := time.Now()
	for i := range leases {
		l := &leases[i]
		if !fresh(l, now) {
			continue
		}
		if l.Name == r.leaseName && !self {
			continue
		}
		host, port, err := net.SplitHostPort(l.Annotations[EndpointAnnotation])
		ip := net.ParseIP(host)
		if err != nil || ip == nil || port != strconv.Itoa(r.port) || (ip.To4() != nil) != (r.addr.To4() != nil) || !publishable(ip) {
			continue
		}
		set[ip.String()] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// publishable reports whether Endpoints may name ip.
func publishable(ip net.IP) bool {
	return !ip.IsLoopback() && !ip.IsUnspecified() && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast()
}

// write makes the Endpoints and the slice list ips.
func (r *Reconciler) write(ctx context.Context, ips []string) error {
	port := int32(r.port)
	tcp := corev1.ProtocolTCP
	meta := metav1.ObjectMeta{Namespace: ServiceNamespace, Name: ServiceName}

	ep := &corev1.Endpoints{ObjectMeta: meta}
	ep.Labels = map[string]string{discoveryv1.LabelSkipMirror: "true"}
	if len(ips) > 0 {
		ss := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: PortName, Port: port, Protocol: tcp}}}
		for _, ip := range ips {
			ss.Addresses = append(ss.Addresses, corev1.EndpointAddress{IP: ip})
		}
		ep.Subsets = []corev1.EndpointSubset{ss}
	}
	if err := r.writeEndpoints(ctx, ep); err != nil {
		return err
	}

	name := PortName
	slice := &discoveryv1.EndpointSlice{ObjectMeta: meta, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &tcp}}}
	if r.addr.To4() == nil {
		slice.AddressType = discoveryv1.AddressTypeIPv6
	}
	slice.Labels = map[string]string{discoveryv1.LabelServiceName: ServiceName}
	ready := true
	for _, ip := range ips {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return r.writeSlice(ctx, slice)
}

func (r *Reconciler) writeEndpoints(ctx context.Context, want *corev1.Endpoints) error {
	eps := r.client.CoreV1().Endpoints(ServiceNamespace)
	cur, err := eps.Get(ctx, ServiceName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, err := eps.Create(ctx, want, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("peers: create endpoints: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("peers: get endpoints: %w", err)
	}
	if equality.Semantic.DeepEqual(cur.Subsets, want.Subsets) && maps.Equal(cur.Labels, want.Labels) {
		return nil
	}
	cur.Subsets, cur.Labels = want.Subsets, want.Labels
	if _, err := eps.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("peers: update endpoints: %w", err)
	}
	r.log.Info("updated the kubernetes endpoints", "addresses", addressesOf(want))
	return nil
}

func (r *Reconciler) writeSlice(ctx context.Context, want *discoveryv1.EndpointSlice) error {
	sl := r.client.DiscoveryV1().EndpointSlices(ServiceNamespace)
	cur, err := sl.Get(ctx, ServiceName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, err := sl.Create(ctx, want, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("peers: create endpoint slice: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("peers: get endpoint slice: %w", err)
	}
	if cur.AddressType != want.AddressType {
		// The address type cannot change in place.
		if err := sl.Delete(ctx, ServiceName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("peers: replace endpoint slice: %w", err)
		}
		if _, err := sl.Create(ctx, want, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("peers: create endpoint slice: %w", err)
		}
		return nil
	}
	if equality.Semantic.DeepEqual(cur.Endpoints, want.Endpoints) && equality.Semantic.DeepEqual(cur.Ports, want.Ports) &&
		maps.Equal(cur.Labels, want.Labels) {
		return nil
	}
	cur.Endpoints, cur.Ports, cur.Labels = want.Endpoints, want.Ports, want.Labels
	if _, err := sl.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("peers: update endpoint slice: %w", err)
	}
	return nil
}

func addressesOf(ep *corev1.Endpoints) []string {
	var out []string
	for _, ss := range ep.Subsets {
		for _, a := range ss.Addresses {
			out = append(out, a.IP)
		}
	}
	return out
}

// remove deletes this server's lease and writes the endpoints without it,
// within cleanupTimeout. Errors are only logged: the lease expires anyway.
func (r *Reconciler) remove() {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	err := r.client.CoordinationV1().Leases(LeaseNamespace).Delete(ctx, r.leaseName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		r.log.Debug("delete lease on stop", "name", r.leaseName, "err", err)
		return
	}
	leases, err := r.client.CoordinationV1().Leases(LeaseNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{IdentityLabel: IdentityValue}).String(),
	})
	if err != nil {
		r.log.Debug("list leases on stop", "err", err)
		return
	}
	if err := r.write(ctx, r.addresses(leases.Items, false)); err != nil {
		r.log.Debug("remove this server from the endpoints", "err", err)
		return
	}
	r.log.Info("removed this server from the kubernetes endpoints", "endpoint", r.endpoint())
}
