package proxy

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// The fixed objects of tether's table. The per-service objects are named
// after the service port they serve: "svc-<namespace>/<name>/<proto>/<port>"
// for the load-balancing chain, "ext-…" for the NodePort entry chain and
// "ep-…__<ip>/<port>" (with "aff-…" for its session-affinity set) for each
// endpoint.
const (
	chainNATPrerouting  = "nat-prerouting"
	chainNATOutput      = "nat-output"
	chainNATPostrouting = "nat-postrouting"
	chainFilterInput    = "filter-input"
	chainFilterForward  = "filter-forward"
	chainFilterOutput   = "filter-output"
	chainServices       = "services"
	chainMasquerading   = "masquerading"
	chainMarkMasq       = "mark-for-masquerade"
	chainReject         = "reject-connection"

	mapServiceIPs          = "service-ips"
	mapServiceNodePorts    = "service-nodeports"
	setNoEndpointServices  = "no-endpoint-services"
	setNoEndpointNodePorts = "no-endpoint-nodeports"
	setNodeIPs             = "node-ips"
)

// masqueradeMark is the packet-mark bit that asks the postrouting chain to
// masquerade a connection's first packet. It is the bit kube-proxy uses for
// the same purpose, so the two never disagree about its meaning.
const masqueradeMark = "0x4000"

// Priorities of the base chains. nft 1.0.6 refuses the "dstnat" keyword in
// an output chain, so its NAT chain gets the number (-100). The filter
// chains run just before DNAT (-110), like kube-proxy's.
const (
	priorityNATOutput knftables.BaseChainPriority = "-100"
	priorityFilter    knftables.BaseChainPriority = "-110"
)

// defaultAffinityTimeout is how long a ClientIP session-affinity entry
// lasts when the Service does not say (the API's default, 3 hours).
const defaultAffinityTimeout = 10800 * time.Second

// Input is the state of the cluster that BuildRules turns into rules.
type Input struct {
	// ServiceCIDR is the range ClusterIPs are allocated from. If set, a new
	// connection to any address in it that was not DNATed to an endpoint is
	// rejected, and NodePorts never answer on it. If nil, only the VIPs of
	// known Services without endpoints are rejected.
	ServiceCIDR *net.IPNet

	// ClusterCIDR is the pod network. If set, Service traffic from outside
	// it is masqueraded and pod traffic leaving it (for anything but a node
	// address) is masqueraded; if nil, all Service traffic is masqueraded
	// and pod egress is left alone.
	ClusterCIDR *net.IPNet

	// NodeIPs are the addresses of the cluster's nodes, this one included.
	// Pod traffic to them is not masqueraded: the nodes route pod CIDRs, so
	// replies find their way back and the pod's address is kept.
	NodeIPs []net.IP

	// Services and EndpointSlices are the API objects; only IPv4 addresses
	// and IPv4 EndpointSlices are used.
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
}

// Ruleset is the complete content of tether's nftables table for one
// Input: the fixed skeleton and the per-service chains, sets and map
// elements. It is immutable once built; Apply writes it, or the difference
// from the previously applied Ruleset, into a knftables transaction.
type Ruleset struct {
	// skeleton is the set of fixed chains and their rules; it depends only
	// on the CIDRs, so two Rulesets with equal skeletons differ only in
	// their dynamic parts.
	skeleton skeleton
	chains   map[string][]string         // dynamic chain → its rules
	sets     map[string]knftables.Set    // dynamic (affinity) sets
	elements map[string]map[string]entry // set or map name → key text → element
}

type skeleton struct {
	serviceCIDR, clusterCIDR string
}

// entry is one element of a set or map.
type entry struct {
	key   []string
	value string // the verdict for map elements; "" for set elements
}

// isMap tells the maps among the containers of elements.
var isMap = map[string]bool{mapServiceIPs: true, mapServiceNodePorts: true}

// Rules is the number of rules and set or map elements in the table.
func (r *Ruleset) Rules() int {
	n := 0
	for _, c := range r.skeleton.chains() {
		n += len(c.rules)
	}
	for _, rules := range r.chains {
		n += len(rules)
	}
	for _, elems := range r.elements {
		n += len(elems)
	}
	return n
}

// Chains is the number of per-service chains.
func (r *Ruleset) Chains() int { return len(r.chains) }

// BuildRules computes the table for in. It does no I/O; the result is
// deterministic for a given Input (the order of Services and slices does
// not matter).
func BuildRules(in Input) *Ruleset {
	r := &Ruleset{
		chains:   make(map[string][]string),
		sets:     make(map[string]knftables.Set),
		elements: make(map[string]map[string]entry),
	}
	for _, name := range []string{mapServiceIPs, mapServiceNodePorts, setNoEndpointServices, setNoEndpointNodePorts, setNodeIPs} {
		r.elements[name] = make(map[string]entry)
	}
	if in.ServiceCIDR != nil {
		r.skeleton.serviceCIDR = in.ServiceCIDR.String()
	}
	if in.ClusterCIDR != nil {
		r.skeleton.clusterCIDR = in.ClusterCIDR.String()
	}
	for _, ip := range in.NodeIPs {
		if ip4 := ip.To4(); ip4 != nil {
			r.addElement(setNodeIPs, entry{key: []string{ip4.String()}})
		}
	}

	slicesBySvc := make(map[string][]*discoveryv1.EndpointSlice)
	for _, s := range in.EndpointSlices {
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" || s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		k := s.Namespace + "/" + name
		slicesBySvc[k] = append(slicesBySvc[k], s)
	}

	// Sort so that, when two Services claim the same address and port
	// (externalIPs can), the same one wins every time.
	svcs := slices.Clone(in.Services)
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, svc := range svcs {
		r.addService(svc, slicesBySvc[svc.Namespace+"/"+svc.Name])
	}
	return r
}

func (r *Ruleset) addElement(container string, e entry) bool {
	k := strings.Join(e.key, " . ")
	if _, dup := r.elements[container][k]; dup {
		return false
	}
	r.elements[container][k] = e
	return true
}

// endpoint is one backend of a service port.
type endpoint struct {
	ip   string
	port int32
}

func (r *Ruleset) addService(svc *corev1.Service, epSlices []*discoveryv1.EndpointSlice) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return
	}
	var vips []string
	clusterIPs := svc.Spec.ClusterIPs
	if len(clusterIPs) == 0 && svc.Spec.ClusterIP != "" {
		clusterIPs = []string{svc.Spec.ClusterIP}
	}
	for _, s := range clusterIPs {
		if ip := net.ParseIP(s); ip != nil && ip.To4() != nil {
			vips = append(vips, ip.To4().String())
		}
	}
	// External IPs and load-balancer addresses reach the same chains as
	// the ClusterIP.
	for _, s := range svc.Spec.ExternalIPs {
		if ip := net.ParseIP(s); ip != nil && ip.To4() != nil {
			vips = append(vips, ip.To4().String())
		}
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ip := net.ParseIP(ing.IP); ip != nil && ip.To4() != nil {
			vips = append(vips, ip.To4().String())
		}
	}
	hasNodePorts := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer

	var affinity time.Duration
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}

	for _, sp := range svc.Spec.Ports {
		proto := strings.ToLower(string(cmp.Or(sp.Protocol, corev1.ProtocolTCP)))
		nodePort := hasNodePorts && sp.NodePort != 0
		if len(vips) == 0 && !nodePort {
			continue // headless
		}
		id := fmt.Sprintf("%s/%s/%s/%d", svc.Namespace, svc.Name, proto, sp.Port)
		eps := endpointsFor(sp, epSlices)
		port := strconv.Itoa(int(sp.Port))
		if len(eps) == 0 {
			for _, vip := range vips {
				r.addElement(setNoEndpointServices, entry{key: []string{vip, proto, port}})
			}
			if nodePort {
				r.addElement(setNoEndpointNodePorts, entry{key: []string{proto, strconv.Itoa(int(sp.NodePort))}})
			}
			continue
		}

		svcChain := "svc-" + id
		for _, vip := range vips {
			r.addElement(mapServiceIPs, entry{key: []string{vip, proto, port}, value: "goto " + svcChain})
		}
		if nodePort {
			ext := "ext-" + id
			if r.addElement(mapServiceNodePorts, entry{key: []string{proto, strconv.Itoa(int(sp.NodePort))}, value: "goto " + ext}) {
				// Traffic to a NodePort may come from anywhere: always
				// masquerade it, so the reply comes back through this node.
				r.chains[ext] = []string{"jump " + chainMarkMasq, "goto " + svcChain}
			}
		}

		var rules []string
		if r.skeleton.clusterCIDR != "" {
			rules = append(rules, "ip saddr != "+r.skeleton.clusterCIDR+" jump "+chainMarkMasq)
		} else {
			rules = append(rules, "jump "+chainMarkMasq)
		}
		epChains := make([]string, len(eps))
		for i, ep := range eps {
			epID := fmt.Sprintf("%s__%s/%d", id, ep.ip, ep.port)
			epChain := "ep-" + epID
			epChains[i] = epChain
			epRules := []string{
				// Hairpin: a pod reaching itself through its Service must
				// see the reply come from the VIP, not from itself.
				"ip saddr " + ep.ip + " jump " + chainMarkMasq,
			}
			if affinity > 0 {
				set := "aff-" + epID
				r.sets[set] = knftables.Set{
					Name:    set,
					Type:    "ipv4_addr",
					Flags:   []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
					Timeout: &affinity,
				}
				rules = append(rules, "ip saddr @"+set+" goto "+epChain)
				epRules = append(epRules, "update @"+set+" { ip saddr }")
			}
			epRules = append(epRules, fmt.Sprintf("meta l4proto %s dnat to %s:%d", proto, ep.ip, ep.port))
			r.chains[epChain] = epRules
		}
		if len(epChains) == 1 {
			rules = append(rules, "goto "+epChains[0])
		} else {
			// The element separator has spaces on both sides so that
			// every chain name stands alone as a word (knftables' fake
			// checks references word by word).
			var b strings.Builder
			fmt.Fprintf(&b, "numgen random mod %d vmap { ", len(epChains))
			for i, c := range epChains {
				if i > 0 {
					b.WriteString(" , ")
				}
				fmt.Fprintf(&b, "%d : goto %s", i, c)
			}
			b.WriteString(" }")
			rules = append(rules, b.String())
		}
		r.chains[svcChain] = rules
	}
}

// endpointsFor returns the endpoints of one service port, sorted: the
// ready ones, or if there are none, the ones still serving while they
// terminate (so that a rolling update does not drop connections when the
// last ready pod goes away before its replacement is ready).
func endpointsFor(sp corev1.ServicePort, epSlices []*discoveryv1.EndpointSlice) []endpoint {
	var ready, terminating []endpoint
	seen := make(map[endpoint]bool)
	for _, s := range epSlices {
		var port *int32
		for _, p := range s.Ports {
			pp := cmp.Or(ptrVal(p.Protocol), corev1.ProtocolTCP)
			if ptrVal(p.Name) == sp.Name && pp == cmp.Or(sp.Protocol, corev1.ProtocolTCP) && p.Port != nil {
				port = p.Port
				break
			}
		}
		if port == nil {
			continue
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			ip := net.ParseIP(e.Addresses[0])
			if ip == nil || ip.To4() == nil {
				continue
			}
			ep := endpoint{ip: ip.To4().String(), port: *port}
			if seen[ep] {
				continue
			}
			// A nil condition means "unknown", which the API says to
			// treat as ready (or serving).
			isReady := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := e.Conditions.Serving == nil || *e.Conditions.Serving
			isTerminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			switch {
			case isReady:
				ready = append(ready, ep)
			case serving && isTerminating:
				terminating = append(terminating, ep)
			default:
				continue
			}
			seen[ep] = true
		}
	}
	eps := ready
	if len(eps) == 0 {
		eps = terminating
	}
	slices.SortFunc(eps, func(a, b endpoint) int {
		return cmp.Or(cmp.Compare(a.ip, b.ip), cmp.Compare(a.port, b.port))
	})
	return eps
}

func ptrVal[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// fixedChain is a chain of the skeleton.
type fixedChain struct {
	chain knftables.Chain
	rules []string
}

// chains returns the skeleton's chains in the order they must be created
// (a chain before any chain that jumps to it).
func (s skeleton) chains() []fixedChain {
	base := func(name string, t knftables.BaseChainType, h knftables.BaseChainHook, p knftables.BaseChainPriority) knftables.Chain {
		return knftables.Chain{Name: name, Type: &t, Hook: &h, Priority: &p}
	}
	// Only the first packet of a connection is refused: a reset sent to
	// the node itself (whose connections to a VIP start from the VIP, see
	// the package comment) must not be refused in turn.
	noEndpoints := "ct state new ip daddr . meta l4proto . th dport @" + setNoEndpointServices + " goto " + chainReject
	inputRules := []string{
		noEndpoints,
		"ct state new fib daddr type local meta l4proto . th dport @" + setNoEndpointNodePorts + " goto " + chainReject,
	}
	forwardRules := []string{noEndpoints}
	if s.serviceCIDR != "" {
		// Nothing addressed to the service range may reach a local socket
		// or leave the node without having been DNATed to an endpoint.
		inputRules = append(inputRules, "ct state new ip daddr "+s.serviceCIDR+" goto "+chainReject)
		forwardRules = append(forwardRules, "ct state new ip daddr "+s.serviceCIDR+" goto "+chainReject)
	}

	nodePorts := "ip daddr != 127.0.0.0/8 "
	if s.serviceCIDR != "" {
		nodePorts += "ip daddr != " + s.serviceCIDR + " "
	}
	nodePorts += "fib daddr type local meta l4proto . th dport vmap @" + mapServiceNodePorts

	masq := []string{
		"meta mark & " + masqueradeMark + " == " + masqueradeMark + " meta mark set meta mark ^ " + masqueradeMark + " masquerade fully-random",
	}
	if s.clusterCIDR != "" {
		// Pods reaching outside the pod network (other than the nodes,
		// which route pod CIDRs) need the node's address to get replies.
		masq = append(masq, "ip saddr "+s.clusterCIDR+" ip daddr != "+s.clusterCIDR+" ip daddr != @"+setNodeIPs+" masquerade fully-random")
	}

	return []fixedChain{
		{chain: knftables.Chain{Name: chainMarkMasq}, rules: []string{"meta mark set meta mark | " + masqueradeMark}},
		// TCP gets a reset rather than an ICMP error: the kernel rate-limits
		// ICMP errors (net.ipv4.icmp_ratelimit), so under a burst of
		// connections some would time out instead of failing at once.
		{chain: knftables.Chain{Name: chainReject}, rules: []string{"meta l4proto tcp reject with tcp reset", "reject"}},
		{chain: knftables.Chain{Name: chainServices}, rules: []string{
			"ip daddr . meta l4proto . th dport vmap @" + mapServiceIPs,
			nodePorts,
		}},
		{chain: knftables.Chain{Name: chainMasquerading}, rules: masq},
		{chain: base(chainNATPrerouting, knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority), rules: []string{"jump " + chainServices}},
		{chain: base(chainNATOutput, knftables.NATType, knftables.OutputHook, priorityNATOutput), rules: []string{"jump " + chainServices}},
		{chain: base(chainNATPostrouting, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority), rules: []string{"jump " + chainMasquerading}},
		{chain: base(chainFilterInput, knftables.FilterType, knftables.InputHook, priorityFilter), rules: inputRules},
		{chain: base(chainFilterForward, knftables.FilterType, knftables.ForwardHook, priorityFilter), rules: forwardRules},
		{chain: base(chainFilterOutput, knftables.FilterType, knftables.OutputHook, priorityFilter), rules: []string{noEndpoints}},
	}
}

// containers returns the skeleton's sets and maps.
func (skeleton) containers() []knftables.Object {
	return []knftables.Object{
		&knftables.Map{Name: mapServiceIPs, Type: "ipv4_addr . inet_proto . inet_service : verdict"},
		&knftables.Map{Name: mapServiceNodePorts, Type: "inet_proto . inet_service : verdict"},
		&knftables.Set{Name: setNoEndpointServices, Type: "ipv4_addr . inet_proto . inet_service"},
		&knftables.Set{Name: setNoEndpointNodePorts, Type: "inet_proto . inet_service"},
		&knftables.Set{Name: setNodeIPs, Type: "ipv4_addr"},
	}
}

// Apply adds to tx the operations that turn the table from prev into r.
// If prev is nil (nothing known about the kernel's state), or its skeleton
// differs, the whole table is deleted and rebuilt in tx, which the kernel
// applies atomically; otherwise only the chains, sets and elements that
// changed are written. The transaction must be run on an Interface for
// the ip family and tether's table.
func (r *Ruleset) Apply(tx *knftables.Transaction, prev *Ruleset) {
	if prev == nil || prev.skeleton != r.skeleton || !sameSets(prev, r) {
		r.applyFull(tx)
		return
	}

	// 1. New sets and chains, so that everything below can refer to them.
	for _, name := range sortedKeys(r.sets) {
		if _, ok := prev.sets[name]; !ok {
			set := r.sets[name]
			tx.Add(&set)
		}
	}
	for _, name := range sortedKeys(r.chains) {
		if _, ok := prev.chains[name]; !ok {
			tx.Add(&knftables.Chain{Name: name})
		}
	}
	// 2. The rules of new and changed chains.
	for _, name := range sortedKeys(r.chains) {
		rules := r.chains[name]
		old, existed := prev.chains[name]
		if existed && slices.Equal(old, rules) {
			continue
		}
		if existed {
			tx.Flush(&knftables.Chain{Name: name})
		}
		for _, rule := range rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: rule})
		}
	}
	// 3. Elements: removed or changed ones out, new ones in.
	for _, container := range sortedKeys(r.elements) {
		cur, old := r.elements[container], prev.elements[container]
		for _, k := range sortedKeys(old) {
			if e, ok := cur[k]; !ok || e.value != old[k].value {
				tx.Delete(element(container, old[k]))
			}
		}
		for _, k := range sortedKeys(cur) {
			if e, ok := old[k]; !ok || e.value != cur[k].value {
				tx.Add(element(container, cur[k]))
			}
		}
	}
	// 4. Chains nothing refers to any more: empty them all first (a
	// service chain refers to its endpoint chains), then delete them.
	var gone []string
	for _, name := range sortedKeys(prev.chains) {
		if _, ok := r.chains[name]; !ok {
			gone = append(gone, name)
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	for _, name := range gone {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, name := range sortedKeys(prev.sets) {
		if _, ok := r.sets[name]; !ok {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
}

// sameSets reports whether every set present in both a and b is defined
// the same way (a changed affinity timeout needs the set recreated, which
// the full rebuild does).
func sameSets(a, b *Ruleset) bool {
	for name, sa := range a.sets {
		if sb, ok := b.sets[name]; ok && ptrVal(sa.Timeout) != ptrVal(sb.Timeout) {
			return false
		}
	}
	return true
}

func (r *Ruleset) applyFull(tx *knftables.Transaction) {
	// Adding the table first makes the delete succeed on a fresh host.
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("service proxy rules, owned by tether")})

	for _, c := range r.skeleton.containers() {
		tx.Add(c)
	}
	for _, name := range sortedKeys(r.sets) {
		set := r.sets[name]
		tx.Add(&set)
	}
	// Chains are created before any rule, since rules jump between them.
	fixed := r.skeleton.chains()
	for _, c := range fixed {
		tx.Add(&c.chain)
	}
	names := sortedKeys(r.chains)
	for _, name := range names {
		tx.Add(&knftables.Chain{Name: name})
	}
	for _, name := range names {
		for _, rule := range r.chains[name] {
			tx.Add(&knftables.Rule{Chain: name, Rule: rule})
		}
	}
	for _, c := range fixed {
		for _, rule := range c.rules {
			tx.Add(&knftables.Rule{Chain: c.chain.Name, Rule: rule})
		}
	}
	for _, container := range sortedKeys(r.elements) {
		elems := r.elements[container]
		for _, k := range sortedKeys(elems) {
			tx.Add(element(container, elems[k]))
		}
	}
}

func element(container string, e entry) *knftables.Element {
	el := &knftables.Element{Key: e.key}
	if isMap[container] {
		el.Map = container
		el.Value = []string{e.value}
	} else {
		el.Set = container
	}
	return el
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
