package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/util/dryrun"

	"tether/apiserver/registry/allocator"
	"tether/apiserver/storage"
)

// DefaultServiceNodePortRange is kube-apiserver's default
// --service-node-port-range.
var DefaultServiceNodePortRange = utilnet.PortRange{Base: 30000, Size: 2768}

// ServiceAllocatorConfig configures the allocation of Service cluster IPs
// and node ports.
type ServiceAllocatorConfig struct {
	// Storage is the etcd that holds the allocations: the API server's
	// own, so that allocations live and die with the Services. Required.
	Storage storage.Backend
	// ClusterIPRange is --service-cluster-ip-range. Required.
	ClusterIPRange *net.IPNet
	// NodePortRange is --service-node-port-range. If zero,
	// DefaultServiceNodePortRange.
	NodePortRange utilnet.PortRange
	// RepairInterval is how often Run reconciles the allocations with the
	// Services. If 0, three minutes.
	RepairInterval time.Duration
	// Logger receives repair findings. If nil, they are discarded.
	Logger *slog.Logger
}

// ServiceAllocator gives Services their cluster IPs and node ports. The
// allocations are etcd keys written before the Service (package
// allocator); Storage hooks it into the Service storage, and Run repairs
// what a crash between the two writes leaves behind.
type ServiceAllocator struct {
	cfg    ServiceAllocatorConfig
	client *clientv3.Client
	ips    *allocator.IPRange
	ports  *allocator.PortRange
	log    *slog.Logger

	// store lists Services for repairs; set by Storage.
	store *genericregistry.Store
	// now is the clock of repairs, which leave young allocations alone.
	now func() time.Time
	// grace is the age below which repairs never release an allocation.
	grace     time.Duration
	closeOnce sync.Once
}

// svcRepairGrace exceeds the time any create or update takes from its
// allocation to its write.
const svcRepairGrace = 2 * time.Minute

// NewServiceAllocator validates cfg and prepares an etcd client, which
// connects on first use. Close releases it.
func NewServiceAllocator(cfg ServiceAllocatorConfig) (*ServiceAllocator, error) {
	if cfg.NodePortRange.Size == 0 {
		cfg.NodePortRange = DefaultServiceNodePortRange
	}
	if cfg.RepairInterval == 0 {
		cfg.RepairInterval = 3 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := ValidateServiceRanges(cfg.ClusterIPRange, cfg.NodePortRange); err != nil {
		return nil, err
	}
	if len(cfg.Storage.Servers) == 0 {
		return nil, errors.New("registry: service allocation needs etcd servers")
	}
	client, err := allocator.NewClient(cfg.Storage)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	prefix := allocator.Prefix(cfg.Storage)
	// Both ranges are valid: ValidateServiceRanges built them already.
	ips, _ := allocator.NewIPRange(allocator.NewSet(client, prefix+"serviceips/"), cfg.ClusterIPRange)
	ports, _ := allocator.NewPortRange(allocator.NewSet(client, prefix+"servicenodeports/"), cfg.NodePortRange)
	return &ServiceAllocator{
		cfg: cfg, client: client, ips: ips, ports: ports,
		log: cfg.Logger.With("component", "apiserver", "resource", "services"),
		now: time.Now, grace: svcRepairGrace,
	}, nil
}

// ValidateServiceRanges checks --service-cluster-ip-range and
// --service-node-port-range.
func ValidateServiceRanges(ips *net.IPNet, ports utilnet.PortRange) error {
	var errs []error
	if _, err := allocator.NewIPRange(nil, ips); err != nil {
		errs = append(errs, fmt.Errorf("registry: --service-cluster-ip-range: %w", err))
	}
	if _, err := allocator.NewPortRange(nil, ports); err != nil {
		errs = append(errs, fmt.Errorf("registry: --service-node-port-range: %w", err))
	}
	return errors.Join(errs...)
}

// Close releases the etcd client. The Service storage closes its
// allocator when it is destroyed.
func (a *ServiceAllocator) Close() {
	if a == nil {
		return
	}
	a.closeOnce.Do(func() { _ = a.client.Close() })
}

// ServiceREST is the Service storage with allocation: updates release what
// the Service no longer holds only once the new Service is written, and
// destroying the storage closes the allocator.
type ServiceREST struct {
	*REST
	alloc *ServiceAllocator
}

var (
	_ rest.StandardStorage    = (*ServiceREST)(nil)
	_ rest.ShortNamesProvider = (*ServiceREST)(nil)
	_ rest.CategoriesProvider = (*ServiceREST)(nil)
)

// Storage hooks the allocator into the Service storage that NewStore
// built. With a nil allocator it returns the storage unchanged (Services
// keep what they are given).
func (a *ServiceAllocator) Storage(s rest.Storage) (rest.Storage, error) {
	if a == nil {
		return s, nil
	}
	r, ok := s.(*REST)
	if !ok || r.res != Services {
		return nil, fmt.Errorf("registry: unexpected service storage %T", s)
	}
	a.store = r.Store
	r.Store.BeginCreate = a.beginCreate
	r.Store.BeginUpdate = a.beginUpdate
	r.Store.AfterDelete = a.afterDelete
	return &ServiceREST{REST: r, alloc: a}, nil
}

// Destroy implements rest.Storage.
func (r *ServiceREST) Destroy() {
	r.REST.Destroy()
	r.alloc.Close()
}

// svcUpdateKey carries a *svcUpdate through the generic update.
type svcUpdateKey struct{}

// svcUpdate collects the allocations of the attempts of one update (the
// generic store retries on conflicts) until the outcome is known.
type svcUpdate struct {
	mu       sync.Mutex
	attempts []*svcAllocation
}

// Update implements rest.Updater. Values the Service gives up are released
// after the write, never before: until then the stored Service holds them.
func (r *ServiceREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	u := &svcUpdate{}
	out, created, err := r.REST.Update(context.WithValue(ctx, svcUpdateKey{}, u), name, objInfo, createValidation, updateValidation, forceAllowCreate, options)
	u.mu.Lock()
	defer u.mu.Unlock()
	bg, cancel := svcBackground(ctx)
	defer cancel()
	svc, _ := out.(*corev1.Service)
	for _, t := range u.attempts {
		if err != nil || svc == nil {
			// Nothing was written: what the attempts took goes back.
			t.rollback(bg)
			continue
		}
		held := svcHeld(svc)
		t.created.release(bg, r.alloc, t.owner, held)
		t.dropped.release(bg, r.alloc, t.owner, held)
	}
	return out, created, err
}

// svcBackground returns a context for releases that must happen even when
// the request's context has ended.
func svcBackground(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// svcValues are the cluster IPs and node ports of a Service.
type svcValues struct {
	ips   []netip.Addr
	ports []int
}

// svcHeld returns what svc holds.
func svcHeld(svc *corev1.Service) svcValues {
	var v svcValues
	spec := &svc.Spec
	if svcNeedsClusterIP(spec) {
		for _, s := range spec.ClusterIPs {
			if ip, err := netip.ParseAddr(s); err == nil && !slices.Contains(v.ips, ip) {
				v.ips = append(v.ips, ip)
			}
		}
	}
	add := func(p int32) {
		if p != 0 && !slices.Contains(v.ports, int(p)) {
			v.ports = append(v.ports, int(p))
		}
	}
	for _, p := range spec.Ports {
		add(p.NodePort)
	}
	add(spec.HealthCheckNodePort)
	return v
}

// release frees the values of v that keep does not hold.
func (v svcValues) release(ctx context.Context, a *ServiceAllocator, owner allocator.Owner, keep svcValues) {
	for _, ip := range v.ips {
		if slices.Contains(keep.ips, ip) {
			continue
		}
		if err := a.ips.Release(ctx, ip, owner); err != nil {
			a.log.Warn("releasing a cluster IP", "namespace", owner.Namespace, "name", owner.Name, "ip", ip.String(), "err", err)
		}
	}
	for _, p := range v.ports {
		if slices.Contains(keep.ports, p) {
			continue
		}
		if err := a.ports.Release(ctx, p, owner); err != nil {
			a.log.Warn("releasing a node port", "namespace", owner.Namespace, "name", owner.Name, "port", p, "err", err)
		}
	}
}

// svcAllocation is what one create or update attempt allocated (created)
// and what its Service gives up (dropped).
type svcAllocation struct {
	a       *ServiceAllocator
	owner   allocator.Owner
	dry     bool
	created svcValues
	dropped svcValues
}

func (t *svcAllocation) rollback(ctx context.Context) {
	if !t.dry {
		t.created.release(ctx, t.a, t.owner, svcValues{})
	}
}

func svcOwner(svc *corev1.Service) allocator.Owner {
	return allocator.Owner{Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID}
}

func (a *ServiceAllocator) beginCreate(ctx context.Context, obj runtime.Object, options *metav1.CreateOptions) (genericregistry.FinishFunc, error) {
	svc := obj.(*corev1.Service)
	if len(svcValidate(ctx, svc)) > 0 {
		// Validation, next, reports the problems; nothing to allocate.
		return func(context.Context, bool) {}, nil
	}
	t, err := a.allocate(ctx, svc, nil, dryrun.IsDryRun(options.DryRun))
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, success bool) {
		if !success {
			bg, cancel := svcBackground(ctx)
			defer cancel()
			t.rollback(bg)
		}
	}, nil
}

func (a *ServiceAllocator) beginUpdate(ctx context.Context, obj, oldObj runtime.Object, options *metav1.UpdateOptions) (genericregistry.FinishFunc, error) {
	svc, old := obj.(*corev1.Service), oldObj.(*corev1.Service)
	// The strategy does this again; allocation needs the values the
	// update keeps from the stored Service.
	svcPrepareForUpdate(ctx, svc, old)
	if len(svcValidateUpdate(ctx, svc, old)) > 0 {
		return func(context.Context, bool) {}, nil
	}
	dry := dryrun.IsDryRun(options.DryRun)
	t, err := a.allocate(ctx, svc, old, dry)
	if err != nil {
		return nil, err
	}
	u, _ := ctx.Value(svcUpdateKey{}).(*svcUpdate)
	return func(ctx context.Context, success bool) {
		bg, cancel := svcBackground(ctx)
		defer cancel()
		switch {
		case !success:
			t.rollback(bg)
		case dry:
		case u != nil:
			// ServiceREST.Update settles once the write is done.
			u.mu.Lock()
			u.attempts = append(u.attempts, t)
			u.mu.Unlock()
		default:
			t.dropped.release(bg, a, t.owner, svcValues{})
		}
	}, nil
}

func (a *ServiceAllocator) afterDelete(obj runtime.Object, options *metav1.DeleteOptions) {
	if options != nil && dryrun.IsDryRun(options.DryRun) {
		return
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svcHeld(svc).release(ctx, a, svcOwner(svc), svcValues{})
}

// allocate gives svc the cluster IP and node ports it needs and has not
// got; old is the stored Service on update. On error nothing stays
// allocated.
func (a *ServiceAllocator) allocate(ctx context.Context, svc, old *corev1.Service, dry bool) (*svcAllocation, error) {
	t := &svcAllocation{a: a, owner: svcOwner(svc), dry: dry}
	if old != nil {
		// An update need not carry the uid; the stored Service has it.
		t.owner = svcOwner(old)
	}
	err := t.clusterIP(ctx, svc, old)
	if err == nil {
		err = t.nodePorts(ctx, svc, old)
	}
	if err != nil {
		bg, cancel := svcBackground(ctx)
		defer cancel()
		t.rollback(bg)
		return nil, err
	}
	if old != nil {
		now := svcHeld(svc)
		t.dropped = svcHeld(old)
		t.dropped.ips = slices.DeleteFunc(t.dropped.ips, func(ip netip.Addr) bool { return slices.Contains(now.ips, ip) })
		t.dropped.ports = slices.DeleteFunc(t.dropped.ports, func(p int) bool { return slices.Contains(now.ports, p) })
	}
	return t, nil
}

// svcInvalid is the 422 of a Service whose requested values are refused.
func svcInvalid(svc *corev1.Service, errs field.ErrorList) error {
	return apierrors.NewInvalid(Services.GVK.GroupKind(), svc.Name, errs)
}

// clusterIP allocates the Service's cluster IP: the one it asks for, or a
// free one. The cluster is single-stack, of the range's family.
func (t *svcAllocation) clusterIP(ctx context.Context, svc, old *corev1.Service) error {
	spec := &svc.Spec
	if !svcNeedsClusterIP(spec) {
		return nil
	}
	p := field.NewPath("spec")
	family := corev1.IPv4Protocol
	if t.a.ips.Is6() {
		family = corev1.IPv6Protocol
	}
	if len(spec.IPFamilies) == 0 {
		spec.IPFamilies = []corev1.IPFamily{family}
	}
	var oldIPs []string
	if old != nil && svcNeedsClusterIP(&old.Spec) {
		oldIPs = old.Spec.ClusterIPs
	}
	if spec.ClusterIP != "" && (spec.ClusterIP == corev1.ClusterIPNone || slices.Contains(oldIPs, spec.ClusterIP)) {
		return nil // headless, or kept
	}

	// A new IP: of the cluster's family, and one of them.
	var errs field.ErrorList
	if spec.IPFamilies[0] != family {
		errs = append(errs, field.Invalid(p.Child("ipFamilies").Index(0), spec.IPFamilies[0], "not configured on this cluster"))
	}
	policy := corev1.IPFamilyPolicySingleStack
	if spec.IPFamilyPolicy != nil {
		policy = *spec.IPFamilyPolicy
	}
	switch {
	case policy == corev1.IPFamilyPolicyRequireDualStack:
		errs = append(errs, field.Invalid(p.Child("ipFamilyPolicy"), policy, "this cluster is not configured for dual-stack services"))
	case len(spec.ClusterIPs) > 1:
		errs = append(errs, field.Invalid(p.Child("clusterIPs").Index(1), spec.ClusterIPs[1], "this cluster is not configured for dual-stack services"))
	case len(spec.IPFamilies) > 1:
		spec.IPFamilies = spec.IPFamilies[:1] // PreferDualStack gets one
	}
	if len(errs) > 0 {
		return svcInvalid(svc, errs)
	}

	var ip netip.Addr
	if spec.ClusterIP == "" {
		var err error
		if t.dry {
			ip, err = t.a.ips.Peek(ctx)
		} else {
			ip, err = t.a.ips.Allocate(ctx, t.owner)
		}
		if errors.Is(err, allocator.ErrFull) {
			return apierrors.NewInternalError(errors.New("failed to allocate a serviceIP: range is full"))
		}
		if err != nil {
			return apierrors.NewInternalError(fmt.Errorf("failed to allocate a serviceIP: %w", err))
		}
		if !t.dry {
			t.created.ips = append(t.created.ips, ip)
		}
	} else {
		var err error
		ip, err = netip.ParseAddr(spec.ClusterIP)
		if err != nil {
			return svcInvalid(svc, field.ErrorList{field.Invalid(p.Child("clusterIPs"), spec.ClusterIP, "must be a valid IP address")})
		}
		created := false
		if t.dry {
			err = t.a.ips.Check(ctx, ip, t.owner)
		} else {
			created, err = t.a.ips.Reserve(ctx, ip, t.owner)
		}
		if msg := svcAllocMessage(err, "IP", "IPs"); msg != "" {
			return svcInvalid(svc, field.ErrorList{field.Invalid(p.Child("clusterIPs"), spec.ClusterIP, msg)})
		}
		if err != nil {
			return apierrors.NewInternalError(fmt.Errorf("failed to allocate IP %s: %w", ip, err))
		}
		if created {
			t.created.ips = append(t.created.ips, ip)
		}
	}
	spec.ClusterIP = ip.String()
	spec.ClusterIPs = []string{ip.String()}
	return nil
}

// svcAllocMessage words a failed request for a given value as upstream
// does, or returns "" for an error that is not the client's.
func svcAllocMessage(err error, what, plural string) string {
	var re *allocator.RangeError
	switch {
	case errors.Is(err, allocator.ErrAllocated):
		return fmt.Sprintf("provided %s is already allocated", what)
	case errors.As(err, &re):
		return fmt.Sprintf("provided %s is not in the valid range. The range of valid %s is %s", what, plural, re.Range)
	}
	return ""
}

// nodePorts reserves the node ports the Service asks for, then allocates
// one for each port without: NodePort services, and LoadBalancers unless
// allocateLoadBalancerNodePorts is false. Ports with the same number (and
// so different protocols) share a node port. A LoadBalancer with
// externalTrafficPolicy Local gets a health check node port too.
func (t *svcAllocation) nodePorts(ctx context.Context, svc, old *corev1.Service) error {
	spec := &svc.Spec
	var oldPorts []int
	if old != nil {
		oldPorts = svcHeld(old).ports
	}
	p := field.NewPath("spec")
	var errs field.ErrorList
	var taken []int // this Service's, in this pass
	request := func(port int32, path *field.Path) error {
		np := int(port)
		if np == 0 || slices.Contains(taken, np) {
			return nil
		}
		taken = append(taken, np)
		if slices.Contains(oldPorts, np) {
			return nil
		}
		var err error
		created := false
		if t.dry {
			err = t.a.ports.Check(ctx, np, t.owner)
		} else {
			created, err = t.a.ports.Reserve(ctx, np, t.owner)
		}
		if msg := svcAllocMessage(err, "port", "ports"); msg != "" {
			errs = append(errs, field.Invalid(path, port, msg))
			return nil
		}
		if err != nil {
			return apierrors.NewInternalError(fmt.Errorf("failed to allocate port %d: %w", np, err))
		}
		if created {
			t.created.ports = append(t.created.ports, np)
		}
		return nil
	}
	for i := range spec.Ports {
		if err := request(spec.Ports[i].NodePort, p.Child("ports").Index(i).Child("nodePort")); err != nil {
			return err
		}
	}
	if err := request(spec.HealthCheckNodePort, p.Child("healthCheckNodePort")); err != nil {
		return err
	}
	if len(errs) > 0 {
		return svcInvalid(svc, errs)
	}

	next := func() (int32, error) {
		var np int
		var err error
		if t.dry {
			np, err = t.a.ports.Peek(ctx, taken...)
		} else {
			np, err = t.a.ports.Allocate(ctx, t.owner)
		}
		if errors.Is(err, allocator.ErrFull) {
			return 0, apierrors.NewInternalError(errors.New("failed to allocate a nodePort: range is full"))
		}
		if err != nil {
			return 0, apierrors.NewInternalError(fmt.Errorf("failed to allocate a nodePort: %w", err))
		}
		taken = append(taken, np)
		if !t.dry {
			t.created.ports = append(t.created.ports, np)
		}
		return int32(np), nil
	}
	auto := spec.Type == corev1.ServiceTypeNodePort ||
		(spec.Type == corev1.ServiceTypeLoadBalancer && (spec.AllocateLoadBalancerNodePorts == nil || *spec.AllocateLoadBalancerNodePorts))
	if auto {
		byPort := map[int32]int32{}
		for _, sp := range spec.Ports {
			if sp.NodePort != 0 {
				byPort[sp.Port] = sp.NodePort
			}
		}
		for i := range spec.Ports {
			sp := &spec.Ports[i]
			if sp.NodePort != 0 {
				continue
			}
			if np, ok := byPort[sp.Port]; ok {
				sp.NodePort = np
				continue
			}
			np, err := next()
			if err != nil {
				return err
			}
			sp.NodePort, byPort[sp.Port] = np, np
		}
	}
	if spec.Type == corev1.ServiceTypeLoadBalancer && spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal && spec.HealthCheckNodePort == 0 {
		np, err := next()
		if err != nil {
			return err
		}
		spec.HealthCheckNodePort = np
	}
	return nil
}
