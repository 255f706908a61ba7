package registry

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/storagebackend"

	"tether/apiserver/registry/allocator"
	"tether/apiserver/scheme"
	"tether/apiserver/storage"
)

// svcAllocEnv is a Service storage with allocation over a test etcd.
type svcAllocEnv struct {
	t     *testing.T
	rest  *ServiceREST
	alloc *ServiceAllocator
	ctx   context.Context
}

func newSvcAllocEnv(t *testing.T, cidr, ports string) *svcAllocEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("needs etcd")
	}
	url := nsStartEtcd(t)
	cfg := storagebackend.NewDefaultConfig("/registry-test", scheme.Codecs.LegacyCodec(scheme.Served...))
	cfg.Transport.ServerList = []string{url}
	main, _, err := NewStore(Services, nsTestOptions{cfg: *cfg})
	if err != nil {
		t.Fatal(err)
	}
	_, ipnet, _ := net.ParseCIDR(cidr)
	a, err := NewServiceAllocator(ServiceAllocatorConfig{
		Storage:        storage.Backend{Servers: []string{url}, Prefix: "/registry-test"},
		ClusterIPRange: ipnet,
		NodePortRange:  *utilnet.ParsePortRangeOrDie(ports),
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := a.Storage(main)
	if err != nil {
		t.Fatal(err)
	}
	r := s.(*ServiceREST)
	t.Cleanup(r.Destroy)
	return &svcAllocEnv{t: t, rest: r, alloc: a, ctx: request.WithNamespace(t.Context(), "default")}
}

// svcAllocService returns a defaulted Service, as a request decodes it.
func svcAllocService(name string, mutate ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	svcDefault(svc)
	return svc
}

func (e *svcAllocEnv) create(svc *corev1.Service, dryRun bool) (*corev1.Service, error) {
	opts := &metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	out, err := e.rest.Create(e.ctx, svc, rest.ValidateAllObjectFunc, opts)
	if err != nil {
		return nil, err
	}
	return out.(*corev1.Service), nil
}

func (e *svcAllocEnv) mustCreate(svc *corev1.Service) *corev1.Service {
	e.t.Helper()
	out, err := e.create(svc, false)
	if err != nil {
		e.t.Fatalf("Create(%s) = %v", svc.Name, err)
	}
	return out
}

func (e *svcAllocEnv) update(svc *corev1.Service, dryRun bool) (*corev1.Service, error) {
	opts := &metav1.UpdateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	svcDefault(svc)
	out, _, err := e.rest.Update(e.ctx, svc.Name, rest.DefaultUpdatedObjectInfo(svc), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, opts)
	if err != nil {
		return nil, err
	}
	return out.(*corev1.Service), nil
}

func (e *svcAllocEnv) get(name string) *corev1.Service {
	e.t.Helper()
	out, err := e.rest.Get(e.ctx, name, &metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("Get(%s) = %v", name, err)
	}
	return out.(*corev1.Service)
}

// records returns the recorded cluster IPs and node ports, each as
// "value=namespace/name".
func (e *svcAllocEnv) records() (ips, ports []string) {
	e.t.Helper()
	list := func(s *allocator.Set) []string {
		recs, err := s.List(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		var out []string
		for v, r := range recs {
			out = append(out, v+"="+r.Namespace+"/"+r.Name)
		}
		slices.Sort(out)
		return out
	}
	return list(e.alloc.ips.Set()), list(e.alloc.ports.Set())
}

// svcAllocWantInvalid checks that err is a 422 with one cause at path
// whose message contains msg.
func svcAllocWantInvalid(t *testing.T, err error, path, msg string) {
	t.Helper()
	if !apierrors.IsInvalid(err) {
		t.Fatalf("error = %v, want Invalid", err)
	}
	causes := err.(apierrors.APIStatus).Status().Details.Causes
	for _, c := range causes {
		if c.Field == path && strings.Contains(c.Message, msg) {
			return
		}
	}
	t.Errorf("error = %v, want a cause at %s saying %q", err, path, msg)
}

func TestServiceAllocateClusterIP(t *testing.T) {
	e := newSvcAllocEnv(t, "10.96.0.0/12", "30000-32767")
	_, ipnet, _ := net.ParseCIDR("10.96.0.0/12")

	auto := e.mustCreate(svcAllocService("auto"))
	if ip := net.ParseIP(auto.Spec.ClusterIP); ip == nil || !ipnet.Contains(ip) || auto.Spec.ClusterIP == "10.96.0.1" {
		t.Errorf("clusterIP = %q, want a free address of 10.96.0.0/12", auto.Spec.ClusterIP)
	}
	if !slices.Equal(auto.Spec.ClusterIPs, []string{auto.Spec.ClusterIP}) || !slices.Equal(auto.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol}) {
		t.Errorf("clusterIPs, ipFamilies = %v, %v; want [%s], [IPv4]", auto.Spec.ClusterIPs, auto.Spec.IPFamilies, auto.Spec.ClusterIP)
	}

	// The first address goes to whoever asks: the kubernetes Service.
	k := e.mustCreate(svcAllocService("kubernetes", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.1" }))
	if k.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("clusterIP = %q, want the requested 10.96.0.1", k.Spec.ClusterIP)
	}
	dns := e.mustCreate(svcAllocService("dns", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.10" }))
	if dns.Spec.ClusterIP != "10.96.0.10" {
		t.Errorf("clusterIP = %q, want the requested 10.96.0.10", dns.Spec.ClusterIP)
	}
	_, err := e.create(svcAllocService("dns2", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.10" }), false)
	svcAllocWantInvalid(t, err, "spec.clusterIPs", "provided IP is already allocated")
	_, err = e.create(svcAllocService("far", func(s *corev1.Service) { s.Spec.ClusterIP = "192.168.0.10" }), false)
	svcAllocWantInvalid(t, err, "spec.clusterIPs", "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12")
	_, err = e.create(svcAllocService("v6", func(s *corev1.Service) {
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	}), false)
	svcAllocWantInvalid(t, err, "spec.ipFamilies[0]", "not configured on this cluster")
	_, err = e.create(svcAllocService("dual", func(s *corev1.Service) {
		p := corev1.IPFamilyPolicyRequireDualStack
		s.Spec.IPFamilyPolicy = &p
	}), false)
	svcAllocWantInvalid(t, err, "spec.ipFamilyPolicy", "not configured for dual-stack")
	prefer := e.mustCreate(svcAllocService("prefer", func(s *corev1.Service) {
		p := corev1.IPFamilyPolicyPreferDualStack
		s.Spec.IPFamilyPolicy = &p
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}))
	if len(prefer.Spec.ClusterIPs) != 1 || !slices.Equal(prefer.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol}) {
		t.Errorf("PreferDualStack: clusterIPs, ipFamilies = %v, %v; want one IPv4", prefer.Spec.ClusterIPs, prefer.Spec.IPFamilies)
	}

	headless := e.mustCreate(svcAllocService("headless", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }))
	if headless.Spec.ClusterIP != "None" || !slices.Equal(headless.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol}) {
		t.Errorf("headless: clusterIP, ipFamilies = %q, %v; want None, [IPv4]", headless.Spec.ClusterIP, headless.Spec.IPFamilies)
	}
	ext := e.mustCreate(svcAllocService("ext", func(s *corev1.Service) {
		s.Spec.Type, s.Spec.ExternalName, s.Spec.Selector = corev1.ServiceTypeExternalName, "example.com", nil
	}))
	if ext.Spec.ClusterIP != "" {
		t.Errorf("ExternalName: clusterIP = %q, want none", ext.Spec.ClusterIP)
	}

	// Dry runs allocate nothing but still check.
	dry, err := e.create(svcAllocService("dry"), true)
	if err != nil || dry.Spec.ClusterIP == "" {
		t.Errorf("dry-run Create = %v, clusterIP %q; want an address", err, dry.Spec.ClusterIP)
	}
	_, err = e.create(svcAllocService("dry2", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.10" }), true)
	svcAllocWantInvalid(t, err, "spec.clusterIPs", "provided IP is already allocated")

	// A create that fails after allocating gives the address back.
	_, err = e.create(svcAllocService("dns", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.20" }), false)
	if !apierrors.IsAlreadyExists(err) {
		t.Errorf("Create(dns) again = %v, want AlreadyExists", err)
	}
	_, err = e.create(svcAllocService("bad name_", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.21" }), false)
	if !apierrors.IsInvalid(err) {
		t.Errorf("Create(bad name_) = %v, want Invalid", err)
	}

	ips, _ := e.records()
	want := []string{
		auto.Spec.ClusterIP + "=default/auto", "10.96.0.1=default/kubernetes", "10.96.0.10=default/dns",
		prefer.Spec.ClusterIP + "=default/prefer",
	}
	slices.Sort(want)
	if !slices.Equal(ips, want) {
		t.Errorf("recorded IPs = %v, want %v", ips, want)
	}
}

func TestServiceAllocateRangeFull(t *testing.T) {
	e := newSvcAllocEnv(t, "10.0.0.0/29", "30000-30001")
	// 8 addresses: network, broadcast, and the first are never picked.
	seen := map[string]bool{}
	for i := range 5 {
		svc := e.mustCreate(svcAllocService(fmt.Sprint("s", i)))
		if seen[svc.Spec.ClusterIP] || svc.Spec.ClusterIP == "10.0.0.1" {
			t.Errorf("clusterIP %s given twice or the first address", svc.Spec.ClusterIP)
		}
		seen[svc.Spec.ClusterIP] = true
	}
	_, err := e.create(svcAllocService("full"), false)
	if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), "failed to allocate a serviceIP: range is full") {
		t.Errorf("Create on a full range = %v, want an internal error saying the range is full", err)
	}

	np := func(s *corev1.Service) { s.Spec.Type, s.Spec.ClusterIP = corev1.ServiceTypeNodePort, "10.0.0.1" }
	_, err = e.create(svcAllocService("np", np, func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "a", Port: 81}, corev1.ServicePort{Name: "b", Port: 82})
	}), false)
	if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), "failed to allocate a nodePort: range is full") {
		t.Errorf("Create with 3 node ports of 2 = %v, want an internal error saying the range is full", err)
	}
	// Nothing of the failed create stays.
	if ips, ports := e.records(); len(ips) != 5 || len(ports) != 0 {
		t.Errorf("records = %v, %v; want the 5 services' IPs only", ips, ports)
	}
}

func TestServiceAllocateNodePorts(t *testing.T) {
	e := newSvcAllocEnv(t, "10.96.0.0/12", "30000-32767")
	inRange := func(p int32) bool { return p >= 30000 && p <= 32767 }

	np := e.mustCreate(svcAllocService("np", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports = []corev1.ServicePort{
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
			{Name: "http", Port: 80, NodePort: 30080},
		}
	}))
	ports := np.Spec.Ports
	if !inRange(ports[0].NodePort) || ports[0].NodePort != ports[1].NodePort || ports[2].NodePort != 30080 {
		t.Errorf("nodePorts = %d, %d, %d; want one shared for port 53 and 30080", ports[0].NodePort, ports[1].NodePort, ports[2].NodePort)
	}
	_, err := e.create(svcAllocService("np2", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30080
	}), false)
	svcAllocWantInvalid(t, err, "spec.ports[0].nodePort", "provided port is already allocated")
	_, err = e.create(svcAllocService("np3", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 8080
	}), false)
	svcAllocWantInvalid(t, err, "spec.ports[0].nodePort", "provided port is not in the valid range. The range of valid ports is 30000-32767")

	lb := e.mustCreate(svcAllocService("lb", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}))
	if !inRange(lb.Spec.Ports[0].NodePort) || !inRange(lb.Spec.HealthCheckNodePort) || lb.Spec.HealthCheckNodePort == lb.Spec.Ports[0].NodePort {
		t.Errorf("LoadBalancer: nodePort, healthCheckNodePort = %d, %d; want two ports of the range", lb.Spec.Ports[0].NodePort, lb.Spec.HealthCheckNodePort)
	}
	noPorts := e.mustCreate(svcAllocService("lb-no-ports", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		no := false
		s.Spec.AllocateLoadBalancerNodePorts = &no
	}))
	if noPorts.Spec.Ports[0].NodePort != 0 {
		t.Errorf("allocateLoadBalancerNodePorts=false: nodePort = %d, want 0", noPorts.Spec.Ports[0].NodePort)
	}
	_, gotPorts := e.records()
	want := []string{
		"30080=default/np", fmt.Sprintf("%d=default/np", ports[0].NodePort),
		fmt.Sprintf("%d=default/lb", lb.Spec.Ports[0].NodePort), fmt.Sprintf("%d=default/lb", lb.Spec.HealthCheckNodePort),
	}
	slices.Sort(want)
	if !slices.Equal(gotPorts, want) {
		t.Errorf("recorded ports = %v, want %v", gotPorts, want)
	}
}

func TestServiceAllocateUpdate(t *testing.T) {
	e := newSvcAllocEnv(t, "10.96.0.0/12", "30000-32767")
	svc := e.mustCreate(svcAllocService("web"))
	ip := svc.Spec.ClusterIP
	check := func(what string, wantIPs []string, wantPorts ...int32) {
		t.Helper()
		ips, ports := e.records()
		var wantP []string
		for _, p := range wantPorts {
			wantP = append(wantP, strconv.Itoa(int(p))+"=default/web")
		}
		var wantI []string
		for _, ip := range wantIPs {
			wantI = append(wantI, ip+"=default/web")
		}
		slices.Sort(wantP)
		if !slices.Equal(ips, wantI) || !slices.Equal(ports, wantP) {
			t.Errorf("%s: records = %v, %v; want %v, %v", what, ips, ports, wantI, wantP)
		}
	}

	// ClusterIP → NodePort, replacing the whole object without the
	// allocated values.
	up := svcAllocService("web", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort })
	up.ResourceVersion = svc.ResourceVersion
	up.Spec.ClusterIP, up.Spec.ClusterIPs = "", nil
	svc, err := e.update(up, false)
	if err != nil {
		t.Fatalf("Update to NodePort = %v", err)
	}
	np := svc.Spec.Ports[0].NodePort
	if svc.Spec.ClusterIP != ip || np < 30000 {
		t.Errorf("after Update to NodePort: clusterIP, nodePort = %s, %d; want %s and a node port", svc.Spec.ClusterIP, np, ip)
	}
	check("NodePort", []string{ip}, np)

	// A port more, then a port less.
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "https", Port: 443})
	if svc, err = e.update(svc, false); err != nil {
		t.Fatalf("Update adding a port = %v", err)
	}
	np2 := svc.Spec.Ports[1].NodePort
	check("port added", []string{ip}, np, np2)
	svc.Spec.Ports = svc.Spec.Ports[1:]
	if svc, err = e.update(svc, false); err != nil {
		t.Fatalf("Update removing a port = %v", err)
	}
	check("port removed", []string{ip}, np2)

	// A requested node port that is taken leaves everything as it was.
	other := e.mustCreate(svcAllocService("other", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 31000
	}))
	bad := svc.DeepCopy()
	bad.Spec.Ports = append(bad.Spec.Ports, corev1.ServicePort{Name: "x", Port: 81, NodePort: 31000}, corev1.ServicePort{Name: "y", Port: 82, NodePort: 31001})
	_, err = e.update(bad, false)
	svcAllocWantInvalid(t, err, "spec.ports[1].nodePort", "provided port is already allocated")
	if _, _, err := e.rest.Delete(e.ctx, other.Name, rest.ValidateAllObjectFunc, &metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	check("after a failed update", []string{ip}, np2)

	// Dry runs change nothing.
	dry := svc.DeepCopy()
	dry.Spec.Type, dry.Spec.Ports[0].NodePort, dry.Spec.ExternalTrafficPolicy = corev1.ServiceTypeClusterIP, 0, ""
	if _, err := e.update(dry, true); err != nil {
		t.Fatalf("dry-run Update = %v", err)
	}
	check("dry run", []string{ip}, np2)

	// NodePort → ClusterIP releases the node ports.
	svc.Spec.Type, svc.Spec.ExternalTrafficPolicy = corev1.ServiceTypeClusterIP, ""
	if svc, err = e.update(svc, false); err != nil {
		t.Fatalf("Update to ClusterIP = %v", err)
	}
	if svc.Spec.Ports[0].NodePort != 0 {
		t.Errorf("after Update to ClusterIP: nodePort = %d, want 0", svc.Spec.Ports[0].NodePort)
	}
	check("ClusterIP", []string{ip})

	// ClusterIP → ExternalName releases the address; back allocates one.
	svc.Spec.Type, svc.Spec.ExternalName, svc.Spec.Selector = corev1.ServiceTypeExternalName, "example.com", nil
	if svc, err = e.update(svc, false); err != nil {
		t.Fatalf("Update to ExternalName = %v", err)
	}
	check("ExternalName", nil)
	svc.Spec.Type, svc.Spec.ExternalName = corev1.ServiceTypeClusterIP, ""
	if svc, err = e.update(svc, false); err != nil {
		t.Fatalf("Update to ClusterIP = %v", err)
	}
	if svc.Spec.ClusterIP == "" {
		t.Error("after Update from ExternalName: no clusterIP")
	}
	check("ClusterIP again", []string{svc.Spec.ClusterIP})

	// Delete releases everything; a dry-run delete nothing.
	if _, _, err := e.rest.Delete(e.ctx, "web", rest.ValidateAllObjectFunc, &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	check("dry-run delete", []string{svc.Spec.ClusterIP})
	if _, _, err := e.rest.Delete(e.ctx, "web", rest.ValidateAllObjectFunc, &metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	check("deleted", nil)
}

func TestServiceRepair(t *testing.T) {
	e := newSvcAllocEnv(t, "10.96.0.0/12", "30000-32767")
	a := e.alloc
	kept := e.mustCreate(svcAllocService("kept", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
	}))
	lost := e.mustCreate(svcAllocService("lost", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.50" }))
	// A crash lost lost's record; another left a record nobody holds,
	// and one whose Service is being written right now.
	if err := a.ips.Release(e.ctx, netip.MustParseAddr("10.96.0.50"), svcOwner(lost)); err != nil {
		t.Fatal(err)
	}
	ghost := allocator.Owner{Namespace: "default", Name: "ghost", UID: "ghost"}
	if _, err := a.ips.Reserve(e.ctx, netip.MustParseAddr("10.96.0.60"), ghost); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ports.Reserve(e.ctx, 31111, ghost); err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return time.Now().Add(time.Hour) }
	young := allocator.Owner{Namespace: "default", Name: "young", UID: "young"}
	if _, err := a.ips.Reserve(e.ctx, netip.MustParseAddr("10.96.0.70"), young); err != nil {
		t.Fatal(err)
	}
	// Young means younger than the grace period at the repair's now.
	a.grace = time.Hour + time.Minute

	ips, _ := e.records()
	if err := a.Repair(e.ctx); err != nil {
		t.Fatalf("Repair() = %v", err)
	}
	ips2, _ := e.records()
	wantIPs := []string{kept.Spec.ClusterIP + "=default/kept", "10.96.0.50=default/lost", "10.96.0.60=default/ghost", "10.96.0.70=default/young"}
	slices.Sort(wantIPs)
	if !slices.Equal(ips2, wantIPs) {
		t.Errorf("after Repair with everything young: IPs = %v (were %v), want %v", ips2, ips, wantIPs)
	}

	a.grace = 30 * time.Minute
	if err := a.Repair(e.ctx); err != nil {
		t.Fatalf("Repair() = %v", err)
	}
	ips2, ports2 := e.records()
	wantIPs = []string{kept.Spec.ClusterIP + "=default/kept", "10.96.0.50=default/lost"}
	slices.Sort(wantIPs)
	wantPorts := []string{fmt.Sprintf("%d=default/kept", kept.Spec.Ports[0].NodePort)}
	if !slices.Equal(ips2, wantIPs) || !slices.Equal(ports2, wantPorts) {
		t.Errorf("after Repair: records = %v, %v; want %v, %v", ips2, ports2, wantIPs, wantPorts)
	}
	// The recorded address is lost's: nobody else gets it.
	_, err := e.create(svcAllocService("thief", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.50" }), false)
	svcAllocWantInvalid(t, err, "spec.clusterIPs", "provided IP is already allocated")
}
