// Package endpointslice is the EndpointSlice controller: for every Service
// with a selector it keeps discovery.k8s.io/v1 EndpointSlices listing the
// pods the selector matches, as upstream's controller of the same name
// does. The service proxy and DNS read slices rather than Endpoints.
//
// Each pod with an IP that has not finished becomes one endpoint, with the
// conditions ready (the pod is Ready and not being deleted, or the Service
// publishes not-ready addresses), serving (the pod is Ready) and
// terminating (it is being deleted), its node, a targetRef to the pod and,
// when the pod's subdomain is the Service, its hostname. An endpoint's
// ports are the Service's ports with targetPort resolved on its pod, so
// pods that resolve them differently go to different slices; a slice holds
// at most MaxEndpointsPerSlice endpoints of one address type (one per IP
// family of the Service). A Service that selects no pod gets one empty
// placeholder slice, so consumers can tell "no endpoints" from "not synced".
//
// Slices are named <service>-<random> (generateName), carry the labels
// kubernetes.io/service-name and endpointslice.kubernetes.io/managed-by:
// endpointslice-controller.k8s.io and a controller reference to their
// Service. The controller watches only slices with that managed-by label:
// slices of other writers (the API server's slice of default/kubernetes)
// are never touched. Changes keep endpoints in the slice they are in, fill
// slices with room before creating new ones, and write nothing when the
// stored slices are already right.
//
// It is driven by events on Services, Pods and its own slices, so a pod's
// readiness change reaches its slice as soon as the informers deliver it.
// Until tether has a garbage collector, the controller deletes the slices
// of a Service that is gone itself, including slices left behind while it
// was not running (it sees them when its informer lists them). Because its
// cache may not yet hold a slice it just wrote, it remembers the
// generation of every write and waits for the cache to catch up before it
// syncs that Service again, so that it never creates a slice twice.
//
// It runs in the controller manager and reaches the API server only
// through client-go; it needs to list and watch Services, Pods and
// EndpointSlices and to create, update and delete EndpointSlices.
package endpointslice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"tether/controllers/internal/backends"
	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

// ManagedBy is the value of the endpointslice.kubernetes.io/managed-by
// label on the slices this controller owns, the same as upstream's.
const ManagedBy = "endpointslice-controller.k8s.io"

// LabelHeadless marks the slices of a Service without a cluster IP.
const LabelHeadless = "service.kubernetes.io/headless"

// DefaultMaxEndpointsPerSlice is used when Config.MaxEndpointsPerSlice is 0;
// it is upstream's default.
const DefaultMaxEndpointsPerSlice = 100

// DefaultResyncPeriod is used when Config.ResyncPeriod is zero.
const DefaultResyncPeriod = 10 * time.Minute

// Back-off bounds for a failed sync.
const (
	minRetryDelay = 5 * time.Millisecond
	maxRetryDelay = time.Minute
)

// staleRetry is how soon a Service whose slices the cache has not caught
// up with is looked at again (the slice's own event usually comes first);
// expectationTTL is how long a write is waited for at most.
const (
	staleRetry     = 100 * time.Millisecond
	expectationTTL = 10 * time.Second
)

// workers is how many Services are synced at once.
const workers = 5

// Config configures a Controller. A Config is not changed after it is
// passed to New.
type Config struct {
	// Client reads Services and Pods and writes EndpointSlices. Required.
	Client kubernetes.Interface
	// MaxEndpointsPerSlice is how many endpoints one slice holds at most,
	// 1 to 1000. If 0, DefaultMaxEndpointsPerSlice.
	MaxEndpointsPerSlice int
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// ResyncPeriod is how often every Service is looked at again even
	// without an event. If 0, DefaultResyncPeriod is used.
	ResyncPeriod time.Duration
}

// Controller keeps the EndpointSlices of Services with a selector. Create
// it with New and start it with Run.
type Controller struct {
	client      kubernetes.Interface
	log         *slog.Logger
	maxPerSlice int

	factories   []informers.SharedInformerFactory // owned; shut down by Run
	svcInf      cache.SharedIndexInformer
	svcLister   corelisters.ServiceLister
	podInf      cache.SharedIndexInformer
	podLister   corelisters.PodLister
	sliceInf    cache.SharedIndexInformer
	sliceLister discoverylisters.EndpointSliceLister

	writes *expectations
	ready  chan struct{}
	queue  workqueue.TypedRateLimitingInterface[string] // set by Run; keys are namespace/name of Services
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("endpointslice: Config.Client is required"))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("endpointslice: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
	}
	if cfg.MaxEndpointsPerSlice < 0 || cfg.MaxEndpointsPerSlice > 1000 {
		errs = append(errs, fmt.Errorf("endpointslice: Config.MaxEndpointsPerSlice is %d, want 1 to 1000", cfg.MaxEndpointsPerSlice))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	resync := cfg.ResyncPeriod
	if resync == 0 {
		resync = DefaultResyncPeriod
	}
	maxPerSlice := cfg.MaxEndpointsPerSlice
	if maxPerSlice == 0 {
		maxPerSlice = DefaultMaxEndpointsPerSlice
	}
	f := informer.NewFactory(cfg.Client, resync)
	// Only the slices this controller owns are watched.
	sliceFactory := informer.NewFactory(cfg.Client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.SelectorFromSet(labels.Set{discoveryv1.LabelManagedBy: ManagedBy}).String()
		}))
	c := &Controller{
		client:      cfg.Client,
		log:         log.With("component", "endpointslice-controller"),
		maxPerSlice: maxPerSlice,
		factories:   []informers.SharedInformerFactory{f, sliceFactory},
		writes:      &expectations{m: map[string]map[string]expectation{}},
		ready:       make(chan struct{}),
	}
	svc := f.Core().V1().Services()
	c.svcInf, c.svcLister = svc.Informer(), svc.Lister()
	pod := f.Core().V1().Pods()
	c.podInf, c.podLister = pod.Informer(), pod.Lister()
	sl := sliceFactory.Discovery().V1().EndpointSlices()
	c.sliceInf, c.sliceLister = sl.Informer(), sl.Lister()
	return c, nil
}

// Ready returns a channel that is closed once the caches have synced and
// the controller is about to work.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run keeps EndpointSlices until ctx ends. It must be called at most once.
// On return its workers have finished, its event handlers are removed and
// its informers have stopped.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("endpointslice", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown()
	var starters []queue.Starter
	for _, f := range c.factories {
		defer f.Shutdown() // after ctx ends; waits for the informer goroutines
		starters = append(starters, f)
	}
	err := queue.Run(ctx, queue.Config[string]{
		Queue:   c.queue,
		Sync:    c.sync,
		Workers: workers,
		Handlers: []queue.Handler{
			{Informer: c.svcInf, Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    c.enqueueService,
				UpdateFunc: func(_, obj any) { c.enqueueService(obj) },
				DeleteFunc: c.enqueueService,
			}},
			{Informer: c.podInf, Handler: backends.PodHandler(c.svcLister, c.queue.Add, c.podLookupFailed)},
			{Informer: c.sliceInf, Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    c.sliceChanged,
				UpdateFunc: func(_, obj any) { c.sliceChanged(obj) },
				DeleteFunc: c.sliceDeleted,
			}},
		},
		Informers: starters,
		Start: func(context.Context) error {
			c.log.Info("started")
			return nil
		},
		Ready: c.ready,
		Failed: func(key string, err error) {
			if apierrors.IsConflict(err) {
				c.log.Debug("sync endpoint slices: conflict, retrying", "service", key, "err", err)
				return
			}
			c.log.Error("sync endpoint slices", "service", key, "err", err)
		},
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("endpointslice: %w", err)
	}
	return nil
}

func (c *Controller) enqueueService(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

// podLookupFailed reports a pod whose Services could not be listed.
func (c *Controller) podLookupFailed(pod *corev1.Pod, err error) {
	c.log.Error("find services of pod", "namespace", pod.Namespace, "name", pod.Name, "err", err)
}

// serviceKey returns the key of the Service a slice belongs to.
func serviceKey(s *discoveryv1.EndpointSlice) (string, bool) {
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return "", false
	}
	return s.Namespace + "/" + name, true
}

func (c *Controller) sliceChanged(obj any) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	if key, ok := serviceKey(s); ok {
		c.writes.observed(key, s.Name, s.Generation)
		c.queue.Add(key)
	}
}

func (c *Controller) sliceDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	if key, ok := serviceKey(s); ok {
		c.writes.deleted(key, s.Name)
		c.queue.Add(key)
	}
}

// sync brings the slices of the Service behind key where they should be.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // never queued by us
	}
	existing, err := c.sliceLister.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{
		discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: ManagedBy,
	}))
	if err != nil {
		return fmt.Errorf("list endpoint slices of %s from cache: %w", key, err)
	}
	if c.writes.pending(key, existing) {
		// The cache has not seen a write of ours yet; syncing now could
		// create a slice twice. The write's own event queues key again.
		c.queue.AddAfter(key, staleRetry)
		return nil
	}
	svc, err := c.svcLister.Services(ns).Get(name)
	switch {
	case apierrors.IsNotFound(err):
		return c.apply(ctx, key, plan{deletes: existing})
	case err != nil:
		return fmt.Errorf("get service %s from cache: %w", key, err)
	case !backends.Selects(svc):
		// The Service lost its selector: its slices are no longer ours.
		return c.apply(ctx, key, plan{deletes: existing})
	}
	pods, err := c.podLister.Pods(ns).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return fmt.Errorf("list pods of service %s from cache: %w", key, err)
	}
	return c.apply(ctx, key, reconcile(svc, Desired(svc, pods), existing, c.maxPerSlice))
}

// apply carries out a plan: creates first, so that consumers never see a
// Service lose endpoints that only move, then updates, then deletes.
func (c *Controller) apply(ctx context.Context, key string, p plan) error {
	var errs []error
	for _, s := range p.creates {
		got, err := c.client.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("create endpoint slice for %s: %w", key, err))
			continue
		}
		c.writes.expect(key, got.Name, got.Generation)
		c.log.Debug("created endpoint slice", "namespace", got.Namespace, "name", got.Name, "service", key)
	}
	for _, s := range p.updates {
		got, err := c.client.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx, s, metav1.UpdateOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("update endpoint slice %s/%s: %w", s.Namespace, s.Name, err))
			continue
		}
		c.writes.expect(key, got.Name, got.Generation)
		c.log.Debug("updated endpoint slice", "namespace", got.Namespace, "name", got.Name, "service", key)
	}
	for _, s := range p.deletes {
		err := c.client.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &s.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete endpoint slice %s/%s: %w", s.Namespace, s.Name, err))
			continue
		}
		c.writes.expect(key, s.Name, gone)
		c.log.Debug("deleted endpoint slice", "namespace", s.Namespace, "name", s.Name, "service", key)
	}
	return errors.Join(errs...)
}

// group is the endpoints of one address type that share one port list.
type group struct {
	addressType discoveryv1.AddressType
	ports       []discoveryv1.EndpointPort
	endpoints   []discoveryv1.Endpoint
}

// groupKey identifies a group by its address type and port list.
func groupKey(at discoveryv1.AddressType, ports []discoveryv1.EndpointPort) string {
	var b strings.Builder
	b.WriteString(string(at))
	for _, p := range sortedPorts(ports) {
		b.WriteByte(';')
		b.WriteString(deref(p.Name))
		b.WriteByte('/')
		if p.Port != nil {
			b.WriteString(strconv.Itoa(int(*p.Port)))
		}
		b.WriteByte('/')
		if p.Protocol != nil {
			b.WriteString(string(*p.Protocol))
		}
		if p.AppProtocol != nil {
			b.WriteString("/" + *p.AppProtocol)
		}
	}
	return b.String()
}

// Desired returns the endpoints svc should have, grouped by address type
// and port list, keyed by groupKey.
func Desired(svc *corev1.Service, pods []*corev1.Pod) map[string]*group {
	out := map[string]*group{}
	for _, family := range backends.Families(svc) {
		at := discoveryv1.AddressTypeIPv4
		if family == corev1.IPv6Protocol {
			at = discoveryv1.AddressTypeIPv6
		}
		for _, pod := range pods {
			if !backends.Include(pod, true) {
				continue
			}
			ip := backends.IP(pod, family)
			if ip == "" {
				continue
			}
			var ports []discoveryv1.EndpointPort
			for i := range svc.Spec.Ports {
				sp := &svc.Spec.Ports[i]
				n, ok := backends.Port(pod, sp)
				if !ok {
					continue
				}
				proto := sp.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				name := sp.Name
				ports = append(ports, discoveryv1.EndpointPort{Name: &name, Port: &n, Protocol: &proto, AppProtocol: sp.AppProtocol})
			}
			if len(ports) == 0 && len(svc.Spec.Ports) > 0 {
				continue // nothing to reach it on
			}
			ports = sortedPorts(ports)
			k := groupKey(at, ports)
			g := out[k]
			if g == nil {
				g = &group{addressType: at, ports: ports}
				out[k] = g
			}
			g.endpoints = append(g.endpoints, endpointFor(svc, pod, ip))
		}
	}
	return out
}

// endpointFor builds the endpoint of pod at ip, with upstream's meaning of
// the conditions: a terminating pod is never ready unless the Service
// publishes not-ready addresses, but may still be serving.
func endpointFor(svc *corev1.Service, pod *corev1.Pod, ip string) discoveryv1.Endpoint {
	serving := backends.Ready(pod)
	terminating := pod.DeletionTimestamp != nil
	ready := svc.Spec.PublishNotReadyAddresses || (serving && !terminating)
	ep := discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
		NodeName:   backends.NodeName(pod),
		TargetRef:  backends.TargetRef(pod),
	}
	if h := backends.Hostname(pod, svc); h != "" {
		ep.Hostname = &h
	}
	return ep
}

// endpointKey identifies an endpoint across syncs: its pod and address.
func endpointKey(ep *discoveryv1.Endpoint) string {
	k := strings.Join(ep.Addresses, ",")
	if ep.TargetRef != nil {
		k = string(ep.TargetRef.UID) + "/" + k
	}
	return k
}

// plan is what a sync writes.
type plan struct {
	creates, updates, deletes []*discoveryv1.EndpointSlice
}

// reconcile plans the writes that turn existing into the slices desired
// for svc, with at most max endpoints a slice. Endpoints stay in the slice
// they are in; new ones fill slices with room, then new slices. Slices of
// an older incarnation of the Service (another UID) are deleted.
func reconcile(svc *corev1.Service, desired map[string]*group, existing []*discoveryv1.EndpointSlice, max int) plan {
	var p plan
	byGroup := map[string][]*discoveryv1.EndpointSlice{}
	existing = slices.Clone(existing)
	slices.SortFunc(existing, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range existing {
		if !ownedBy(s, svc) {
			p.deletes = append(p.deletes, s)
			continue
		}
		k := groupKey(s.AddressType, s.Ports)
		byGroup[k] = append(byGroup[k], s)
	}

	if len(desired) == 0 {
		// A placeholder: one slice of the primary address type with
		// neither endpoints nor ports.
		at := discoveryv1.AddressTypeIPv4
		if backends.Families(svc)[0] == corev1.IPv6Protocol {
			at = discoveryv1.AddressTypeIPv6
		}
		desired = map[string]*group{groupKey(at, nil): {addressType: at}}
	}

	for _, k := range slices.Sorted(maps.Keys(desired)) {
		g := desired[k]
		want := map[string]discoveryv1.Endpoint{}
		for _, ep := range g.endpoints {
			want[endpointKey(&ep)] = ep
		}
		placed := map[string]bool{}
		var kept []*discoveryv1.EndpointSlice // copies, with endpoints set
		for _, s := range byGroup[k] {
			cp := s.DeepCopy()
			cp.Endpoints = nil
			for i := range s.Endpoints {
				ek := endpointKey(&s.Endpoints[i])
				if ep, ok := want[ek]; ok && !placed[ek] && len(cp.Endpoints) < max {
					cp.Endpoints = append(cp.Endpoints, ep)
					placed[ek] = true
				}
			}
			kept = append(kept, cp)
		}
		delete(byGroup, k)
		var rest []discoveryv1.Endpoint
		for _, ep := range g.endpoints {
			if !placed[endpointKey(&ep)] {
				rest = append(rest, ep)
			}
		}
		for _, cp := range kept {
			n := min(max-len(cp.Endpoints), len(rest))
			cp.Endpoints = append(cp.Endpoints, rest[:n]...)
			rest = rest[n:]
		}
		var fresh []*discoveryv1.EndpointSlice
		for len(rest) > 0 {
			n := min(max, len(rest))
			s := newSlice(svc, g)
			s.Endpoints = rest[:n:n]
			rest = rest[n:]
			fresh = append(fresh, s)
		}
		placeholder := len(g.endpoints) == 0
		for i, cp := range kept {
			if len(cp.Endpoints) == 0 && !(placeholder && i == 0) {
				p.deletes = append(p.deletes, sliceOf(existing, cp.Name))
				continue
			}
			setMeta(cp, svc)
			if !sameSlice(cp, sliceOf(existing, cp.Name)) {
				p.updates = append(p.updates, cp)
			}
		}
		if placeholder && len(kept) == 0 {
			fresh = append(fresh, newSlice(svc, g))
		}
		p.creates = append(p.creates, fresh...)
	}
	// Slices of groups nothing belongs to any more.
	for _, k := range slices.Sorted(maps.Keys(byGroup)) {
		p.deletes = append(p.deletes, byGroup[k]...)
	}
	return p
}

func sliceOf(all []*discoveryv1.EndpointSlice, name string) *discoveryv1.EndpointSlice {
	for _, s := range all {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// ownedBy reports whether s belongs to this incarnation of svc: it has no
// controller reference, or one to svc's UID.
func ownedBy(s *discoveryv1.EndpointSlice, svc *corev1.Service) bool {
	ref := metav1.GetControllerOf(s)
	return ref == nil || ref.UID == svc.UID
}

func newSlice(svc *corev1.Service, g *group) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: svc.Namespace, GenerateName: svc.Name + "-"},
		AddressType: g.addressType,
		Ports:       g.ports,
	}
	if s.Ports == nil {
		s.Ports = []discoveryv1.EndpointPort{}
	}
	setMeta(s, svc)
	return s
}

// setMeta sets the labels and the controller reference of a slice of svc.
// The Service's own labels are copied, as upstream does.
func setMeta(s *discoveryv1.EndpointSlice, svc *corev1.Service) {
	l := maps.Clone(svc.Labels)
	if l == nil {
		l = map[string]string{}
	}
	delete(l, LabelHeadless)
	l[discoveryv1.LabelServiceName] = svc.Name
	l[discoveryv1.LabelManagedBy] = ManagedBy
	if backends.Headless(svc) {
		l[LabelHeadless] = ""
	}
	s.Labels = l
	s.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(svc, corev1.SchemeGroupVersion.WithKind("Service"))}
}

// sameSlice reports whether writing s over cur would change nothing.
func sameSlice(s, cur *discoveryv1.EndpointSlice) bool {
	return cur != nil && maps.Equal(s.Labels, cur.Labels) &&
		equality.Semantic.DeepEqual(s.OwnerReferences, cur.OwnerReferences) &&
		equality.Semantic.DeepEqual(s.Endpoints, cur.Endpoints) &&
		equality.Semantic.DeepEqual(s.Ports, cur.Ports)
}

func sortedPorts(ports []discoveryv1.EndpointPort) []discoveryv1.EndpointPort {
	out := slices.Clone(ports)
	slices.SortFunc(out, func(a, b discoveryv1.EndpointPort) int { return strings.Compare(deref(a.Name), deref(b.Name)) })
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// gone is the generation expected of a slice that was deleted.
const gone = -1

type expectation struct {
	generation int64 // or gone
	at         time.Time
}

// expectations remember the slices this controller wrote until its cache
// shows them, per Service key.
type expectations struct {
	mu sync.Mutex
	m  map[string]map[string]expectation
}

func (e *expectations) expect(key, name string, gen int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m[key] == nil {
		e.m[key] = map[string]expectation{}
	}
	e.m[key][name] = expectation{generation: gen, at: time.Now()}
}

// observed is told that the cache holds slice name at generation gen.
func (e *expectations) observed(key, name string, gen int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key][name]; ok && x.generation != gone && gen >= x.generation {
		e.forget(key, name)
	}
}

// deleted is told that the cache no longer holds slice name.
func (e *expectations) deleted(key, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forget(key, name)
}

func (e *expectations) forget(key, name string) {
	delete(e.m[key], name)
	if len(e.m[key]) == 0 {
		delete(e.m, key)
	}
}

// pending reports whether the cached slices of key lag behind a write of
// ours. Expectations older than expectationTTL are dropped: the object may
// have changed again in a way the cache will never show.
func (e *expectations) pending(key string, cached []*discoveryv1.EndpointSlice) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	lag := false
	for name, x := range e.m[key] {
		if time.Since(x.at) > expectationTTL {
			e.forget(key, name)
			continue
		}
		s := sliceOf(cached, name)
		switch {
		case x.generation == gone && s != nil, x.generation != gone && (s == nil || s.Generation < x.generation):
			lag = true
		default:
			e.forget(key, name)
		}
	}
	return lag
}
