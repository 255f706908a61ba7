// Package endpoints is the endpoints controller: it keeps a core/v1
// Endpoints object, named like its Service, for every Service with a
// selector, listing the pods the selector matches (paths P3 and the
// service proxy read it; EndpointSlices, kept by package endpointslice,
// carry the same information for newer consumers).
//
// A pod is listed once it has an IP, unless it has finished or, for a
// Service that does not publish not-ready addresses, is being deleted.
// Ready pods go to a subset's addresses, others to its notReadyAddresses;
// publishNotReadyAddresses lists every pod as ready. Each address names the
// pod (targetRef), its node and, when the pod's subdomain is the Service,
// its hostname. The ports are the Service's ports with each targetPort
// resolved on the pod: a number as it is, a name among the pod's container
// ports; pods that resolve the ports differently land in different subsets,
// and a pod that resolves none is left out.
//
// The controller is driven by events on Services, Pods and its Endpoints,
// so a change in a pod's readiness reaches the Endpoints as soon as the
// informers deliver it; a periodic resync only repairs what was missed. It
// writes only when the computed subsets or labels differ from the stored
// ones. Services without a selector are left to their owners (the API
// server keeps default/kubernetes). When a Service goes, its Endpoints go
// too; Endpoints left behind by a Service deleted while the controller was
// down are found by their endpointslice.kubernetes.io/skip-mirror label,
// which the controller sets as upstream's does.
//
// It runs in the controller manager and reaches the API server only
// through client-go; it needs to list and watch Services, Pods and
// Endpoints and to create, update and delete Endpoints.
package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
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
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"tether/controllers/internal/backends"
	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

// DefaultResyncPeriod is used when Config.ResyncPeriod is zero.
const DefaultResyncPeriod = 10 * time.Minute

// MaxAddresses is how many addresses one Endpoints object lists at most;
// beyond that it is truncated and annotated, as upstream does.
const MaxAddresses = 1000

// Labels and annotations the controller sets.
const (
	// LabelHeadless marks the Endpoints of a Service without a cluster IP.
	LabelHeadless = "service.kubernetes.io/headless"
	// AnnotationOverCapacity says the Endpoints were truncated.
	AnnotationOverCapacity = "endpoints.kubernetes.io/over-capacity"
)

// Back-off bounds for a failed sync. Conflicts with a write still on its
// way to the cache are the common failure, so the first retry is quick.
const (
	minRetryDelay = 5 * time.Millisecond
	maxRetryDelay = time.Minute
)

// workers is how many Services are synced at once.
const workers = 5

// Config configures a Controller. A Config is not changed after it is
// passed to New.
type Config struct {
	// Client reads Services and Pods and writes Endpoints. Required.
	Client kubernetes.Interface
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// ResyncPeriod is how often every Service is looked at again even
	// without an event. If 0, DefaultResyncPeriod is used.
	ResyncPeriod time.Duration
}

// Controller keeps the Endpoints of Services with a selector. Create it
// with New and start it with Run.
type Controller struct {
	client kubernetes.Interface
	log    *slog.Logger

	factory   informers.SharedInformerFactory // owned; shut down by Run
	svcInf    cache.SharedIndexInformer
	svcLister corelisters.ServiceLister
	podInf    cache.SharedIndexInformer
	podLister corelisters.PodLister
	epInf     cache.SharedIndexInformer
	epLister  corelisters.EndpointsLister

	ready chan struct{}
	queue workqueue.TypedRateLimitingInterface[string] // set by Run; keys are namespace/name of Services
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("endpoints: Config.Client is required"))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("endpoints: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
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
	f := informer.NewFactory(cfg.Client, resync)
	c := &Controller{
		client:  cfg.Client,
		log:     log.With("component", "endpoints-controller"),
		factory: f,
		ready:   make(chan struct{}),
	}
	svc := f.Core().V1().Services()
	c.svcInf, c.svcLister = svc.Informer(), svc.Lister()
	pod := f.Core().V1().Pods()
	c.podInf, c.podLister = pod.Informer(), pod.Lister()
	ep := f.Core().V1().Endpoints()
	c.epInf, c.epLister = ep.Informer(), ep.Lister()
	return c, nil
}

// Ready returns a channel that is closed once the caches have synced and
// the controller is about to work.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run keeps Endpoints until ctx ends. It must be called at most once. On
// return its workers have finished, its event handlers are removed and its
// informers have stopped.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("endpoints", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown()
	defer c.factory.Shutdown() // after ctx ends; waits for the informer goroutines
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
			{Informer: c.epInf, Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    c.enqueueEndpoints,
				UpdateFunc: func(_, obj any) { c.enqueueEndpoints(obj) },
				DeleteFunc: c.enqueueEndpoints,
			}},
		},
		Informers: []queue.Starter{c.factory},
		Start: func(context.Context) error {
			c.log.Info("started")
			return nil
		},
		Ready: c.ready,
		Failed: func(key string, err error) {
			if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
				// A write of ours is not in the cache yet.
				c.log.Debug("sync endpoints: cache behind, retrying", "service", key, "err", err)
				return
			}
			c.log.Error("sync endpoints", "service", key, "err", err)
		},
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("endpoints: %w", err)
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

// enqueueEndpoints queues the Service of an Endpoints object the
// controller manages, so that a change made by someone else is undone and
// one whose Service is gone is deleted.
func (c *Controller) enqueueEndpoints(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if ep, ok := obj.(*corev1.Endpoints); ok && ep.Labels[discoveryv1.LabelSkipMirror] == "true" {
		c.queue.Add(ep.Namespace + "/" + ep.Name)
	}
}

// sync brings the Endpoints of the Service behind key where they should be.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // never queued by us
	}
	svc, err := c.svcLister.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return c.deleteEndpoints(ctx, ns, name)
	}
	if err != nil {
		return fmt.Errorf("get service %s from cache: %w", key, err)
	}
	if !backends.Selects(svc) {
		return nil // its owner keeps its endpoints
	}
	pods, err := c.podLister.Pods(ns).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return fmt.Errorf("list pods of service %s from cache: %w", key, err)
	}
	subsets, truncated := Subsets(svc, pods)
	wantLabels := endpointsLabels(svc)

	cur, err := c.epLister.Endpoints(ns).Get(name)
	switch {
	case apierrors.IsNotFound(err):
		ep := &corev1.Endpoints{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: wantLabels},
			Subsets:    subsets,
		}
		setOverCapacity(ep, truncated)
		_, err := c.client.CoreV1().Endpoints(ns).Create(ctx, ep, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create endpoints %s: %w", key, err)
		}
		c.log.Debug("created endpoints", "namespace", ns, "name", name)
		return nil
	case err != nil:
		return fmt.Errorf("get endpoints %s from cache: %w", key, err)
	}
	ep := cur.DeepCopy()
	ep.Labels = wantLabels
	ep.Subsets = subsets
	setOverCapacity(ep, truncated)
	if equality.Semantic.DeepEqual(cur.Subsets, ep.Subsets) && maps.Equal(cur.Labels, ep.Labels) &&
		maps.Equal(cur.Annotations, ep.Annotations) {
		return nil
	}
	if _, err := c.client.CoreV1().Endpoints(ns).Update(ctx, ep, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update endpoints %s: %w", key, err)
	}
	c.log.Debug("updated endpoints", "namespace", ns, "name", name)
	return nil
}

// deleteEndpoints deletes the Endpoints of a Service that is gone.
func (c *Controller) deleteEndpoints(ctx context.Context, ns, name string) error {
	if _, err := c.epLister.Endpoints(ns).Get(name); apierrors.IsNotFound(err) {
		return nil
	}
	err := c.client.CoreV1().Endpoints(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete endpoints %s/%s: %w", ns, name, err)
	}
	c.log.Debug("deleted endpoints", "namespace", ns, "name", name)
	return nil
}

// endpointsLabels are the Service's labels plus the controller's own.
func endpointsLabels(svc *corev1.Service) map[string]string {
	out := maps.Clone(svc.Labels)
	if out == nil {
		out = map[string]string{}
	}
	out[discoveryv1.LabelSkipMirror] = "true"
	delete(out, LabelHeadless)
	if backends.Headless(svc) {
		out[LabelHeadless] = ""
	}
	return out
}

func setOverCapacity(ep *corev1.Endpoints, truncated bool) {
	if truncated {
		if ep.Annotations == nil {
			ep.Annotations = map[string]string{}
		}
		ep.Annotations[AnnotationOverCapacity] = "truncated"
		return
	}
	delete(ep.Annotations, AnnotationOverCapacity)
	if len(ep.Annotations) == 0 {
		ep.Annotations = nil
	}
}

// Subsets computes the subsets of svc's Endpoints from the pods its
// selector matches, in a canonical order: subsets by their ports,
// addresses by IP. truncated reports that more than MaxAddresses were
// found and the rest left out (not-ready ones first).
func Subsets(svc *corev1.Service, pods []*corev1.Pod) (subsets []corev1.EndpointSubset, truncated bool) {
	publishAll := svc.Spec.PublishNotReadyAddresses
	family := backends.Families(svc)[0]
	byPorts := map[string]*corev1.EndpointSubset{}
	for _, pod := range pods {
		if !backends.Include(pod, publishAll) {
			continue
		}
		ip := backends.IP(pod, family)
		if ip == "" {
			continue
		}
		var ports []corev1.EndpointPort
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
			ports = append(ports, corev1.EndpointPort{Name: sp.Name, Port: n, Protocol: proto, AppProtocol: sp.AppProtocol})
		}
		if len(ports) == 0 && !(len(svc.Spec.Ports) == 0 && backends.Headless(svc)) {
			continue // nothing to reach it on
		}
		slices.SortFunc(ports, comparePorts)
		key := portsKey(ports)
		ss := byPorts[key]
		if ss == nil {
			ss = &corev1.EndpointSubset{Ports: ports}
			byPorts[key] = ss
		}
		addr := corev1.EndpointAddress{IP: ip, Hostname: backends.Hostname(pod, svc), NodeName: backends.NodeName(pod), TargetRef: backends.TargetRef(pod)}
		if publishAll || backends.Ready(pod) {
			ss.Addresses = append(ss.Addresses, addr)
		} else {
			ss.NotReadyAddresses = append(ss.NotReadyAddresses, addr)
		}
	}
	keys := slices.Sorted(maps.Keys(byPorts))
	total := 0
	for _, k := range keys {
		ss := byPorts[k]
		slices.SortFunc(ss.Addresses, compareAddresses)
		slices.SortFunc(ss.NotReadyAddresses, compareAddresses)
		total += len(ss.Addresses) + len(ss.NotReadyAddresses)
		subsets = append(subsets, *ss)
	}
	if total > MaxAddresses {
		return truncate(subsets, MaxAddresses), true
	}
	return subsets, false
}

// truncate keeps at most max addresses, ready ones before not-ready ones,
// and drops subsets left empty.
func truncate(subsets []corev1.EndpointSubset, max int) []corev1.EndpointSubset {
	left := max
	for i := range subsets {
		n := min(left, len(subsets[i].Addresses))
		subsets[i].Addresses = subsets[i].Addresses[:n]
		left -= n
	}
	for i := range subsets {
		n := min(left, len(subsets[i].NotReadyAddresses))
		subsets[i].NotReadyAddresses = subsets[i].NotReadyAddresses[:n]
		left -= n
	}
	return slices.DeleteFunc(subsets, func(ss corev1.EndpointSubset) bool {
		return len(ss.Addresses) == 0 && len(ss.NotReadyAddresses) == 0
	})
}

func comparePorts(a, b corev1.EndpointPort) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	if c := int(a.Port) - int(b.Port); c != 0 {
		return c
	}
	return strings.Compare(string(a.Protocol), string(b.Protocol))
}

func compareAddresses(a, b corev1.EndpointAddress) int {
	if c := strings.Compare(a.IP, b.IP); c != 0 {
		return c
	}
	if a.TargetRef != nil && b.TargetRef != nil {
		return strings.Compare(string(a.TargetRef.UID), string(b.TargetRef.UID))
	}
	return 0
}

// portsKey identifies a sorted port list.
func portsKey(ports []corev1.EndpointPort) string {
	var b strings.Builder
	for _, p := range ports {
		b.WriteString(p.Name)
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(int(p.Port)))
		b.WriteByte('/')
		b.WriteString(string(p.Protocol))
		if p.AppProtocol != nil {
			b.WriteString("/" + *p.AppProtocol)
		}
		b.WriteByte(';')
	}
	return b.String()
}
