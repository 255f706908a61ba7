package registry

// Validation and defaulting helpers shared by the core/v1 workload and
// networking resources (pods, nodes, services, endpoints). Each returns
// field errors at the path it is given, so that the API server can answer
// 422 with one cause per problem.

import (
	"fmt"
	"net"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// coreProtocols are the transport protocols of ports, in the order the
// API reference lists them.
var coreProtocols = []string{string(corev1.ProtocolTCP), string(corev1.ProtocolUDP), string(corev1.ProtocolSCTP)}

// validateFormat turns the messages of a string check from
// k8s.io/apimachinery/pkg/util/validation into Invalid errors at p.
func validateFormat(p *field.Path, value string, check func(string) []string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range check(value) {
		errs = append(errs, field.Invalid(p, value, msg))
	}
	return errs
}

// validateRequiredFormat is validateFormat for a value that must be set.
func validateRequiredFormat(p *field.Path, value string, check func(string) []string) field.ErrorList {
	if value == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	return validateFormat(p, value, check)
}

// validateOneOf reports a value outside allowed, or an empty one.
func validateOneOf(p *field.Path, value string, allowed ...string) field.ErrorList {
	if value == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	for _, a := range allowed {
		if value == a {
			return nil
		}
	}
	return field.ErrorList{field.NotSupported(p, value, allowed)}
}

// validatePortNumber checks a port in 1–65535.
func validatePortNumber(p *field.Path, port int32) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsValidPortNum(int(port)) {
		errs = append(errs, field.Invalid(p, port, msg))
	}
	return errs
}

// validatePortNumOrName checks a port given as a number (1–65535) or as the
// IANA_SVC_NAME of a container port.
func validatePortNumOrName(p *field.Path, port intstr.IntOrString) field.ErrorList {
	switch port.Type {
	case intstr.Int:
		return validatePortNumber(p, port.IntVal)
	case intstr.String:
		return validateRequiredFormat(p, port.StrVal, validation.IsValidPortName)
	}
	return field.ErrorList{field.InternalError(p, fmt.Errorf("unknown type of port %v", port.Type))}
}

// validateProtocol checks a required port protocol.
func validateProtocol(p *field.Path, proto corev1.Protocol) field.ErrorList {
	return validateOneOf(p, string(proto), coreProtocols...)
}

// validateAppProtocol checks the optional appProtocol of a service or
// endpoint port: an IANA name or a domain-prefixed name.
func validateAppProtocol(p *field.Path, proto *string) field.ErrorList {
	if proto == nil {
		return nil
	}
	return metav1validation.ValidateLabelName(*proto, p)
}

// validateIP checks an IP address in a field that predates strict IP
// parsing: values already stored in old are accepted unchanged.
func validateIP(p *field.Path, ip string, old []string) field.ErrorList {
	return validation.IsValidIPForLegacyField(p, ip, true, old)
}

// validateCIDR checks a CIDR in a field that predates strict parsing:
// values already stored in old are accepted unchanged.
func validateCIDR(p *field.Path, cidr string, old []string) field.ErrorList {
	return validation.IsValidCIDRForLegacyField(p, cidr, true, old)
}

// validateDualStack checks that a list of (already valid) IPs or CIDRs holds
// at most one value per IP family, as podIPs, hostIPs and podCIDRs must.
func validateDualStack(p *field.Path, values []string) field.ErrorList {
	if len(values) > 2 {
		return field.ErrorList{field.TooMany(p, len(values), 2)}
	}
	if len(values) == 2 && coreIPFamily(values[0]) == coreIPFamily(values[1]) {
		what := "IP"
		if strings.Contains(values[0], "/") {
			what = "CIDR"
		}
		return field.ErrorList{field.Invalid(p, values, fmt.Sprintf("may specify no more than one %s for each IP family", what))}
	}
	return nil
}

// validateNonSpecialIP rejects (already valid) addresses that cannot name
// a service backend or an external IP: unspecified, loopback, link-local
// and link-local multicast ones.
func validateNonSpecialIP(p *field.Path, s string) field.ErrorList {
	ip := net.ParseIP(s)
	var msg string
	switch {
	case ip == nil:
		return nil
	case ip.IsUnspecified():
		msg = fmt.Sprintf("may not be unspecified (%v)", s)
	case ip.IsLoopback():
		msg = "may not be in the loopback range (127.0.0.0/8, ::1/128)"
	case ip.IsLinkLocalUnicast():
		msg = "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
	case ip.IsLinkLocalMulticast():
		msg = "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
	default:
		return nil
	}
	return field.ErrorList{field.Invalid(p, s, msg)}
}

// coreIPFamily returns the family of an IP or CIDR, or "" if it parses as
// neither.
func coreIPFamily(s string) corev1.IPFamily {
	ip := net.ParseIP(s)
	if ip == nil {
		var err error
		if ip, _, err = net.ParseCIDR(s); err != nil {
			return ""
		}
	}
	if ip.To4() != nil {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// validateNodeName checks a reference to a node, which is named by a DNS
// subdomain.
func validateNodeName(p *field.Path, name string) field.ErrorList {
	return validateFormat(p, name, validation.IsDNS1123Subdomain)
}

// validateQuantity checks that a resource quantity is not negative.
func validateQuantity(p *field.Path, q resource.Quantity) field.ErrorList {
	if q.Sign() < 0 {
		return field.ErrorList{field.Invalid(p, q.String(), "must be greater than or equal to 0")}
	}
	return nil
}

// validateResourceList checks the names and quantities of a capacity-like
// list: names are standard resource names or domain-qualified extended
// resources, quantities are not negative.
func validateResourceList(p *field.Path, list corev1.ResourceList) field.ErrorList {
	var errs field.ErrorList
	for _, name := range coreResourceNames(list) {
		kp := p.Key(string(name))
		errs = append(errs, validateResourceName(kp, name)...)
		errs = append(errs, validateQuantity(kp, list[name])...)
	}
	return errs
}

// validateResourceName checks a resource name: either one of the standard
// unprefixed names (cpu, memory, hugepages-2Mi, …) or a qualified name with
// a domain prefix (example.com/gpu).
func validateResourceName(p *field.Path, name corev1.ResourceName) field.ErrorList {
	errs := metav1validation.ValidateLabelName(string(name), p)
	if len(errs) == 0 && !strings.Contains(string(name), "/") && !coreStandardResource(name) {
		errs = append(errs, field.Invalid(p, string(name), "must be a standard resource type or fully qualified"))
	}
	return errs
}

// coreStandardResource reports the unprefixed resource names that nodes
// and containers use.
func coreStandardResource(name corev1.ResourceName) bool {
	switch name {
	case corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage,
		corev1.ResourceStorage, corev1.ResourcePods:
		return true
	}
	return strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix) ||
		strings.HasPrefix(string(name), "attachable-volumes-")
}

// validateRelativePath checks a path that must stay below a directory: it
// is relative and has no ".." element.
func validateRelativePath(p *field.Path, target string) field.ErrorList {
	var errs field.ErrorList
	if path.IsAbs(target) || strings.HasPrefix(target, `\`) {
		errs = append(errs, field.Invalid(p, target, "must be a relative path"))
	}
	for _, part := range strings.FieldsFunc(target, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			errs = append(errs, field.Invalid(p, target, "must not contain '..'"))
			break
		}
	}
	return errs
}

// validateFileMode checks a file mode bits value: 0 to 0777.
func validateFileMode(p *field.Path, mode *int32) field.ErrorList {
	if mode != nil && (*mode < 0 || *mode > 0o777) {
		return field.ErrorList{field.Invalid(p, *mode, "must be a number between 0 and 0777 (octal), both inclusive")}
	}
	return nil
}

// defaultProtocol sets an empty port protocol to TCP.
func defaultProtocol(proto *corev1.Protocol) {
	if *proto == "" {
		*proto = corev1.ProtocolTCP
	}
}

// defaultInt32 points an unset *int32 at v.
func defaultInt32(p **int32, v int32) {
	if *p == nil {
		*p = &v
	}
}

// defaultInt64 points an unset *int64 at v.
func defaultInt64(p **int64, v int64) {
	if *p == nil {
		*p = &v
	}
}

// defaultBool points an unset *bool at v.
func defaultBool(p **bool, v bool) {
	if *p == nil {
		*p = &v
	}
}

// defaultIPs keeps a singular IP (or CIDR) field and its plural twin in
// step, the way conversion through the internal version does upstream: the
// singular field wins when both are set and differ, since older clients know
// only it, and the first plural value fills an empty singular field. ip and
// wrap convert between the plural's element type and a string.
func defaultIPs[T any](single *string, plural *[]T, ip func(T) string, wrap func(string) T) {
	switch {
	case *single != "" && (len(*plural) == 0 || ip((*plural)[0]) != *single):
		*plural = []T{wrap(*single)}
	case *single == "" && len(*plural) > 0:
		*single = ip((*plural)[0])
	}
}

// coreResourceNames returns the names in a resource list, sorted, so that
// errors come in a stable order.
func coreResourceNames(list corev1.ResourceList) []corev1.ResourceName {
	names := make([]corev1.ResourceName, 0, len(list))
	for name := range list {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// coreOrNone returns s, or "<none>" for an empty table cell.
func coreOrNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
