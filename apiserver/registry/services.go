package registry

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Services serves core/v1 Services, named by DNS-1035 labels so that the
// name can be a DNS name and an environment variable prefix.
//
// Cluster IPs and node ports are allocated by a ServiceAllocator that
// ServiceAllocator.Storage hooks into the storage (services_alloc.go): a
// Service gets the clusterIP and nodePorts it asks for if they are free
// and in range, and free ones otherwise. Without an allocator a Service
// keeps what it is given, and an empty clusterIP stays empty.
var Services = &Resource{
	GVK:                  corev1.SchemeGroupVersion.WithKind("Service"),
	Resource:             "services",
	ShortNames:           []string{"svc"},
	Categories:           []string{"all"},
	Namespaced:           true,
	New:                  func() runtime.Object { return &corev1.Service{} },
	NewList:              func() runtime.Object { return &corev1.ServiceList{} },
	NameValidation:       apimachineryvalidation.NameIsDNS1035Label,
	Default:              svcDefault,
	PrepareForUpdate:     svcPrepareForUpdate,
	Validate:             svcValidate,
	ValidateUpdate:       svcValidateUpdate,
	HasStatus:            true,
	ValidateStatusUpdate: svcValidateStatusUpdate,
	Fields:               svcFields,
	Columns:              svcColumns,
	Row:                  svcRow,
}

// svcMaxAffinityTimeout is the longest ClientIP session affinity: a day.
const svcMaxAffinityTimeout = 24 * 60 * 60

// svcNeedsClusterIP reports whether a service of this type has a virtual IP.
func svcNeedsClusterIP(spec *corev1.ServiceSpec) bool {
	return spec.Type != corev1.ServiceTypeExternalName
}

// svcNeedsNodePorts reports whether a service of this type opens ports on
// every node.
func svcNeedsNodePorts(spec *corev1.ServiceSpec) bool {
	return spec.Type == corev1.ServiceTypeNodePort || spec.Type == corev1.ServiceTypeLoadBalancer
}

// svcExternallyAccessible reports whether traffic can reach the service from
// outside the cluster, which is when an external traffic policy applies.
func svcExternallyAccessible(spec *corev1.ServiceSpec) bool {
	return svcNeedsNodePorts(spec) || (spec.Type == corev1.ServiceTypeClusterIP && len(spec.ExternalIPs) > 0)
}

func svcDefault(obj runtime.Object) {
	spec := &obj.(*corev1.Service).Spec
	if spec.Type == "" {
		spec.Type = corev1.ServiceTypeClusterIP
	}
	if spec.SessionAffinity == "" {
		spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	if spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		if spec.SessionAffinityConfig == nil {
			spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{}
		}
		if spec.SessionAffinityConfig.ClientIP == nil {
			spec.SessionAffinityConfig.ClientIP = &corev1.ClientIPConfig{}
		}
		defaultInt32(&spec.SessionAffinityConfig.ClientIP.TimeoutSeconds, corev1.DefaultClientIPServiceAffinitySeconds)
	}
	for i := range spec.Ports {
		p := &spec.Ports[i]
		defaultProtocol(&p.Protocol)
		// The target port is the service port unless it says otherwise.
		if p.TargetPort == intstr.FromInt32(0) || p.TargetPort == intstr.FromString("") {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
	if svcNeedsNodePorts(spec) && spec.ExternalTrafficPolicy == "" {
		spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	}
	if spec.Type == corev1.ServiceTypeLoadBalancer {
		defaultBool(&spec.AllocateLoadBalancerNodePorts, true)
	}
	if !svcNeedsClusterIP(spec) {
		return
	}
	if spec.InternalTrafficPolicy == nil {
		p := corev1.ServiceInternalTrafficPolicyCluster
		spec.InternalTrafficPolicy = &p
	}
	// clusterIP is the first of clusterIPs.
	switch {
	case spec.ClusterIP != "" && len(spec.ClusterIPs) == 0:
		spec.ClusterIPs = []string{spec.ClusterIP}
	case spec.ClusterIP == "" && len(spec.ClusterIPs) > 0:
		spec.ClusterIP = spec.ClusterIPs[0]
	}
	// A service takes the families of the IPs it was given; the allocator
	// gives the others the cluster's family. Headless services without a
	// selector take whatever the cluster has.
	if spec.IPFamilyPolicy == nil {
		p := corev1.IPFamilyPolicySingleStack
		if spec.ClusterIP == corev1.ClusterIPNone && len(spec.Selector) == 0 {
			p = corev1.IPFamilyPolicyRequireDualStack
		}
		spec.IPFamilyPolicy = &p
	}
	if len(spec.IPFamilies) == 0 {
		for _, ip := range spec.ClusterIPs {
			if f := coreIPFamily(ip); f != "" && !slices.Contains(spec.IPFamilies, f) {
				spec.IPFamilies = append(spec.IPFamilies, f)
			}
		}
	}
}

// svcPrepareForUpdate fills in what a client that replaces a whole service
// does not know (its cluster IPs and node ports), and drops what its new
// type no longer uses, so that `kubectl replace` of a manifest and a change
// of type pass validation.
func svcPrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	spec, ospec := &obj.(*corev1.Service).Spec, &old.(*corev1.Service).Spec

	// Keep allocated values the update leaves out.
	if svcNeedsClusterIP(ospec) && svcNeedsClusterIP(spec) {
		if spec.ClusterIP == "" {
			spec.ClusterIP = ospec.ClusterIP
		}
		if len(spec.ClusterIPs) == 0 {
			spec.ClusterIPs = slices.Clone(ospec.ClusterIPs)
		}
		if len(spec.IPFamilies) == 0 && slices.Equal(spec.ClusterIPs, ospec.ClusterIPs) {
			spec.IPFamilies = slices.Clone(ospec.IPFamilies)
		}
		// A client that changed only clusterIP changed the first of
		// clusterIPs, which validation then rejects as such.
		if spec.ClusterIP != ospec.ClusterIP && slices.Equal(spec.ClusterIPs, ospec.ClusterIPs) {
			spec.ClusterIPs = nil
			if spec.ClusterIP != "" {
				spec.ClusterIPs = []string{spec.ClusterIP}
			}
		}
	}
	if svcNeedsNodePorts(ospec) && svcNeedsNodePorts(spec) {
		byName := map[string]int32{}
		for _, p := range ospec.Ports {
			byName[p.Name] = p.NodePort
		}
		taken := map[int32]bool{}
		for _, p := range spec.Ports {
			taken[p.NodePort] = true
		}
		for i := range spec.Ports {
			p := &spec.Ports[i]
			if np := byName[p.Name]; p.NodePort == 0 && !taken[np] {
				p.NodePort = np
				taken[np] = true
			}
		}
		if spec.HealthCheckNodePort == 0 && spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			spec.HealthCheckNodePort = ospec.HealthCheckNodePort
		}
	}

	// Drop fields of the old type, unless the update set them anew.
	if svcNeedsClusterIP(ospec) && !svcNeedsClusterIP(spec) {
		if spec.ClusterIP == ospec.ClusterIP && slices.Equal(spec.ClusterIPs, ospec.ClusterIPs) {
			spec.ClusterIP, spec.ClusterIPs = "", nil
		}
		if slices.Equal(spec.IPFamilies, ospec.IPFamilies) {
			spec.IPFamilies = nil
		}
		if reflect.DeepEqual(spec.IPFamilyPolicy, ospec.IPFamilyPolicy) {
			spec.IPFamilyPolicy = nil
		}
		if reflect.DeepEqual(spec.InternalTrafficPolicy, ospec.InternalTrafficPolicy) {
			spec.InternalTrafficPolicy = nil
		}
	}
	if svcNeedsNodePorts(ospec) && !svcNeedsNodePorts(spec) && len(spec.Ports) == len(ospec.Ports) {
		same := true
		for i := range spec.Ports {
			same = same && spec.Ports[i].NodePort == ospec.Ports[i].NodePort
		}
		if same {
			for i := range spec.Ports {
				spec.Ports[i].NodePort = 0
			}
		}
	}
	if spec.HealthCheckNodePort == ospec.HealthCheckNodePort &&
		(spec.Type != corev1.ServiceTypeLoadBalancer || spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal) {
		spec.HealthCheckNodePort = 0
	}
	if spec.Type != corev1.ServiceTypeLoadBalancer {
		if reflect.DeepEqual(spec.AllocateLoadBalancerNodePorts, ospec.AllocateLoadBalancerNodePorts) {
			spec.AllocateLoadBalancerNodePorts = nil
		}
		if reflect.DeepEqual(spec.LoadBalancerClass, ospec.LoadBalancerClass) {
			spec.LoadBalancerClass = nil
		}
	}
	if !svcExternallyAccessible(spec) && spec.ExternalTrafficPolicy == ospec.ExternalTrafficPolicy {
		spec.ExternalTrafficPolicy = ""
	}
}

func svcValidate(_ context.Context, obj runtime.Object) field.ErrorList {
	return svcValidateSpec(&obj.(*corev1.Service).Spec, nil)
}

func svcValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	spec, ospec := &obj.(*corev1.Service).Spec, &old.(*corev1.Service).Spec
	errs := svcValidateSpec(spec, ospec)
	p := field.NewPath("spec")
	// Once allocated, the primary cluster IP and its family stay.
	if svcNeedsClusterIP(ospec) && svcNeedsClusterIP(spec) {
		if len(ospec.ClusterIPs) > 0 && (len(spec.ClusterIPs) == 0 || spec.ClusterIPs[0] != ospec.ClusterIPs[0]) {
			errs = append(errs, field.Invalid(p.Child("clusterIPs").Index(0), spec.ClusterIP, "may not change once set"))
		}
		if len(ospec.IPFamilies) > 0 && (len(spec.IPFamilies) == 0 || spec.IPFamilies[0] != ospec.IPFamilies[0]) {
			errs = append(errs, field.Invalid(p.Child("ipFamilies").Index(0), spec.IPFamilies, "may not change once set"))
		}
	}
	return errs
}

var svcTypes = []string{
	string(corev1.ServiceTypeClusterIP), string(corev1.ServiceTypeNodePort),
	string(corev1.ServiceTypeLoadBalancer), string(corev1.ServiceTypeExternalName),
}

// svcValidateSpec checks a service spec; old is the stored spec on update,
// nil on create.
func svcValidateSpec(spec, old *corev1.ServiceSpec) field.ErrorList {
	p := field.NewPath("spec")
	errs := validateOneOf(p.Child("type"), string(spec.Type), svcTypes...)
	headless := spec.ClusterIP == corev1.ClusterIPNone
	if len(spec.Ports) == 0 && !headless && svcNeedsClusterIP(spec) {
		errs = append(errs, field.Required(p.Child("ports"), ""))
	}
	if spec.Type == corev1.ServiceTypeExternalName {
		errs = append(errs, validateRequiredFormat(p.Child("externalName"), strings.TrimSuffix(spec.ExternalName, "."), validation.IsDNS1123Subdomain)...)
	}
	errs = append(errs, svcValidateClusterIPs(spec, old, p)...)
	errs = append(errs, svcValidatePorts(spec, p.Child("ports"))...)
	errs = append(errs, metav1validation.ValidateLabels(spec.Selector, p.Child("selector"))...)

	errs = append(errs, validateOneOf(p.Child("sessionAffinity"), string(spec.SessionAffinity),
		string(corev1.ServiceAffinityClientIP), string(corev1.ServiceAffinityNone))...)
	cfg := spec.SessionAffinityConfig
	switch spec.SessionAffinity {
	case corev1.ServiceAffinityClientIP:
		tp := p.Child("sessionAffinityConfig", "clientIP", "timeoutSeconds")
		if cfg == nil || cfg.ClientIP == nil || cfg.ClientIP.TimeoutSeconds == nil {
			errs = append(errs, field.Required(tp, ""))
		} else if t := *cfg.ClientIP.TimeoutSeconds; t <= 0 || t > svcMaxAffinityTimeout {
			errs = append(errs, field.Invalid(tp, t, fmt.Sprintf("must be greater than 0 and less than %d", svcMaxAffinityTimeout)))
		}
	case corev1.ServiceAffinityNone:
		if cfg != nil {
			errs = append(errs, field.Invalid(p.Child("sessionAffinityConfig"), cfg, "must not be set when session affinity is None"))
		}
	}

	var oldExternal []string
	if old != nil {
		oldExternal = old.ExternalIPs
	}
	for i, ip := range spec.ExternalIPs {
		ep := p.Child("externalIPs").Index(i)
		if e := validateIP(ep, ip, oldExternal); len(e) > 0 {
			errs = append(errs, e...)
		} else {
			errs = append(errs, validateNonSpecialIP(ep, ip)...)
		}
	}

	errs = append(errs, svcValidateLoadBalancer(spec, p)...)
	errs = append(errs, svcValidateTrafficPolicies(spec, p)...)
	return errs
}

func svcValidateClusterIPs(spec, old *corev1.ServiceSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if !svcNeedsClusterIP(spec) {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"clusterIP", spec.ClusterIP != ""},
			{"clusterIPs", len(spec.ClusterIPs) > 0},
			{"ipFamilies", len(spec.IPFamilies) > 0},
			{"ipFamilyPolicy", spec.IPFamilyPolicy != nil},
		} {
			if f.set {
				errs = append(errs, field.Forbidden(p.Child(f.name), "may not be set for ExternalName services"))
			}
		}
		return errs
	}

	cp := p.Child("clusterIPs")
	if spec.ClusterIP == corev1.ClusterIPNone && svcNeedsNodePorts(spec) {
		errs = append(errs, field.Invalid(p.Child("clusterIP"), spec.ClusterIP, fmt.Sprintf("may not be set to 'None' for %s services", spec.Type)))
	}
	if len(spec.ClusterIPs) > 0 && spec.ClusterIPs[0] != spec.ClusterIP {
		errs = append(errs, field.Invalid(cp, spec.ClusterIPs, "first value must match `clusterIP`"))
	}
	var oldIPs []string
	if old != nil {
		oldIPs = old.ClusterIPs
	}
	valid := true
	for i, ip := range spec.ClusterIPs {
		ipp := cp.Index(i)
		if ip == corev1.ClusterIPNone {
			if len(spec.ClusterIPs) > 1 {
				errs = append(errs, field.Invalid(ipp, ip, "'None' must be the only value"))
				valid = false
			}
			continue
		}
		if e := validateIP(ipp, ip, oldIPs); len(e) > 0 {
			errs = append(errs, e...)
			valid = false
		}
	}
	if valid {
		errs = append(errs, validateDualStack(cp, spec.ClusterIPs)...)
	}

	pp := p.Child("ipFamilyPolicy")
	if spec.IPFamilyPolicy == nil {
		errs = append(errs, field.Required(pp, ""))
	} else {
		errs = append(errs, validateOneOf(pp, string(*spec.IPFamilyPolicy), string(corev1.IPFamilyPolicySingleStack),
			string(corev1.IPFamilyPolicyPreferDualStack), string(corev1.IPFamilyPolicyRequireDualStack))...)
	}
	fp := p.Child("ipFamilies")
	for i, f := range spec.IPFamilies {
		switch {
		case slices.Contains(spec.IPFamilies[:i], f):
			errs = append(errs, field.Duplicate(fp.Index(i), f))
		default:
			errs = append(errs, validateOneOf(fp.Index(i), string(f), string(corev1.IPv4Protocol), string(corev1.IPv6Protocol))...)
		}
	}
	if len(spec.IPFamilies) > 2 {
		errs = append(errs, field.TooMany(fp, len(spec.IPFamilies), 2))
	}
	if spec.IPFamilyPolicy != nil && *spec.IPFamilyPolicy == corev1.IPFamilyPolicySingleStack {
		if len(spec.IPFamilies) > 1 {
			errs = append(errs, field.Invalid(fp, spec.IPFamilies, "must hold one family when `ipFamilyPolicy` is SingleStack"))
		}
		if len(spec.ClusterIPs) > 1 {
			errs = append(errs, field.Invalid(cp, spec.ClusterIPs, "must hold one value when `ipFamilyPolicy` is SingleStack"))
		}
	}
	// The i-th cluster IP is of the i-th family.
	for i, ip := range spec.ClusterIPs {
		if f := coreIPFamily(ip); valid && f != "" && i < len(spec.IPFamilies) && f != spec.IPFamilies[i] {
			errs = append(errs, field.Invalid(cp.Index(i), ip, fmt.Sprintf("expected an %s value as indicated by `ipFamilies[%d]`", spec.IPFamilies[i], i)))
		}
	}
	return errs
}

func svcValidatePorts(spec *corev1.ServiceSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := map[string]bool{}
	ports := map[string]bool{}
	nodePorts := map[string]bool{}
	for i, port := range spec.Ports {
		pp := p.Index(i)
		np := pp.Child("name")
		switch {
		case port.Name == "" && len(spec.Ports) > 1:
			errs = append(errs, field.Required(np, ""))
		case port.Name == "":
		case names[port.Name]:
			errs = append(errs, field.Duplicate(np, port.Name))
		default:
			errs = append(errs, validateFormat(np, port.Name, validation.IsDNS1123Label)...)
		}
		names[port.Name] = true
		errs = append(errs, validatePortNumber(pp.Child("port"), port.Port)...)
		errs = append(errs, validateProtocol(pp.Child("protocol"), port.Protocol)...)
		errs = append(errs, validatePortNumOrName(pp.Child("targetPort"), port.TargetPort)...)
		errs = append(errs, validateAppProtocol(pp.Child("appProtocol"), port.AppProtocol)...)
		if key := fmt.Sprintf("%d/%s", port.Port, port.Protocol); ports[key] {
			errs = append(errs, field.Duplicate(pp, key))
		} else {
			ports[key] = true
		}
		if port.NodePort == 0 {
			continue
		}
		npp := pp.Child("nodePort")
		switch {
		case !svcNeedsNodePorts(spec):
			errs = append(errs, field.Forbidden(npp, fmt.Sprintf("may not be used when `type` is '%s'", spec.Type)))
		default:
			// The allocator checks --service-node-port-range.
			errs = append(errs, validatePortNumber(npp, port.NodePort)...)
		}
		if key := fmt.Sprintf("%d/%s", port.NodePort, port.Protocol); nodePorts[key] {
			errs = append(errs, field.Duplicate(npp, key))
		} else {
			nodePorts[key] = true
		}
	}
	return errs
}

func svcValidateLoadBalancer(spec *corev1.ServiceSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	lb := spec.Type == corev1.ServiceTypeLoadBalancer
	onlyLB := "may only be used when `type` is 'LoadBalancer'"
	if len(spec.LoadBalancerSourceRanges) > 0 && !lb {
		errs = append(errs, field.Forbidden(p.Child("loadBalancerSourceRanges"), onlyLB))
	}
	for i, r := range spec.LoadBalancerSourceRanges {
		errs = append(errs, validateCIDR(p.Child("loadBalancerSourceRanges").Index(i), strings.TrimSpace(r), nil)...)
	}
	if spec.LoadBalancerIP != "" {
		if !lb {
			errs = append(errs, field.Forbidden(p.Child("loadBalancerIP"), onlyLB))
		}
		errs = append(errs, validateIP(p.Child("loadBalancerIP"), spec.LoadBalancerIP, nil)...)
	}
	if spec.LoadBalancerClass != nil {
		if !lb {
			errs = append(errs, field.Forbidden(p.Child("loadBalancerClass"), onlyLB))
		}
		errs = append(errs, metav1validation.ValidateLabelName(*spec.LoadBalancerClass, p.Child("loadBalancerClass"))...)
	}
	switch {
	case !lb && spec.AllocateLoadBalancerNodePorts != nil:
		errs = append(errs, field.Forbidden(p.Child("allocateLoadBalancerNodePorts"), onlyLB))
	case lb && spec.AllocateLoadBalancerNodePorts == nil:
		errs = append(errs, field.Required(p.Child("allocateLoadBalancerNodePorts"), ""))
	}
	return errs
}

func svcValidateTrafficPolicies(spec *corev1.ServiceSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	ep := p.Child("externalTrafficPolicy")
	switch etp := spec.ExternalTrafficPolicy; {
	case etp == "" && svcNeedsNodePorts(spec):
		errs = append(errs, field.Required(ep, ""))
	case etp == "":
	case !svcExternallyAccessible(spec):
		errs = append(errs, field.Invalid(ep, etp, "may only be set for externally-accessible services"))
	default:
		errs = append(errs, validateOneOf(ep, string(etp), string(corev1.ServiceExternalTrafficPolicyCluster), string(corev1.ServiceExternalTrafficPolicyLocal))...)
	}
	if port := spec.HealthCheckNodePort; port != 0 {
		hp := p.Child("healthCheckNodePort")
		if spec.Type != corev1.ServiceTypeLoadBalancer || spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			errs = append(errs, field.Invalid(hp, port, "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))
		} else {
			errs = append(errs, validatePortNumber(hp, port)...)
		}
	}
	ip := p.Child("internalTrafficPolicy")
	switch itp := spec.InternalTrafficPolicy; {
	case itp == nil && svcNeedsClusterIP(spec):
		errs = append(errs, field.Required(ip, ""))
	case itp != nil:
		errs = append(errs, validateOneOf(ip, string(*itp), string(corev1.ServiceInternalTrafficPolicyCluster), string(corev1.ServiceInternalTrafficPolicyLocal))...)
	}
	return errs
}

func svcValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	st, ost := &obj.(*corev1.Service).Status, &old.(*corev1.Service).Status
	p := field.NewPath("status")
	var oldIPs []string
	for _, ing := range ost.LoadBalancer.Ingress {
		oldIPs = append(oldIPs, ing.IP)
	}
	var errs field.ErrorList
	for i, ing := range st.LoadBalancer.Ingress {
		ip := p.Child("loadBalancer", "ingress").Index(i)
		if ing.IP != "" {
			errs = append(errs, validateIP(ip.Child("ip"), ing.IP, oldIPs)...)
		}
		if ing.Hostname != "" {
			errs = append(errs, validateFormat(ip.Child("hostname"), ing.Hostname, validation.IsDNS1123Subdomain)...)
			if net.ParseIP(ing.Hostname) != nil {
				errs = append(errs, field.Invalid(ip.Child("hostname"), ing.Hostname, "must be a DNS name, not an IP address"))
			}
		}
		if ing.IPMode != nil {
			if ing.IP == "" {
				errs = append(errs, field.Forbidden(ip.Child("ipMode"), "may not be specified when `ip` is not set"))
			} else {
				errs = append(errs, validateOneOf(ip.Child("ipMode"), string(*ing.IPMode), string(corev1.LoadBalancerIPModeVIP), string(corev1.LoadBalancerIPModeProxy))...)
			}
		}
		for j, port := range ing.Ports {
			pp := ip.Child("ports").Index(j)
			errs = append(errs, validatePortNumber(pp.Child("port"), port.Port)...)
			errs = append(errs, validateProtocol(pp.Child("protocol"), port.Protocol)...)
		}
	}
	return append(errs, metav1validation.ValidateConditions(st.Conditions, p.Child("conditions"))...)
}

func svcFields(obj runtime.Object) fields.Set {
	svc := obj.(*corev1.Service)
	return fields.Set{
		"spec.clusterIP": svc.Spec.ClusterIP,
		"spec.type":      string(svc.Spec.Type),
	}
}

var svcColumns = []metav1.TableColumnDefinition{
	NameColumn,
	{Name: "Type", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["type"]},
	{Name: "Cluster-IP", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["clusterIP"]},
	{Name: "External-IP", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["externalIPs"]},
	{Name: "Port(s)", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["ports"]},
	AgeColumn,
	{Name: "Selector", Type: "string", Priority: 1, Description: corev1.ServiceSpec{}.SwaggerDoc()["selector"]},
}

func svcRow(obj runtime.Object) []interface{} {
	svc := obj.(*corev1.Service)
	clusterIP := svc.Spec.ClusterIP
	if len(svc.Spec.ClusterIPs) > 0 {
		clusterIP = svc.Spec.ClusterIPs[0]
	}
	return []interface{}{
		svc.Name,
		string(svc.Spec.Type),
		coreOrNone(clusterIP),
		svcExternalIP(svc),
		svcPorts(svc.Spec.Ports),
		Age(svc.CreationTimestamp),
		labels.FormatLabels(svc.Spec.Selector),
	}
}

// svcExternalIP is what EXTERNAL-IP shows: the external IPs, for a load
// balancer first its ingress points ("<pending>" until it has one), and for
// an ExternalName service the name.
func svcExternalIP(svc *corev1.Service) string {
	var ips []string
	switch svc.Spec.Type {
	case corev1.ServiceTypeExternalName:
		return svc.Spec.ExternalName
	case corev1.ServiceTypeLoadBalancer:
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			switch {
			case ing.IP != "":
				ips = append(ips, ing.IP)
			case ing.Hostname != "":
				ips = append(ips, ing.Hostname)
			}
		}
		if len(ips) == 0 && len(svc.Spec.ExternalIPs) == 0 {
			return "<pending>"
		}
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort:
	default:
		return "<unknown>"
	}
	return coreOrNone(strings.Join(append(ips, svc.Spec.ExternalIPs...), ","))
}

// svcPorts formats service ports as "80/TCP", or "80:30080/TCP" with a node
// port, comma-separated.
func svcPorts(ports []corev1.ServicePort) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		if p.NodePort > 0 {
			parts[i] = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
		} else {
			parts[i] = fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		}
	}
	return coreOrNone(strings.Join(parts, ","))
}
