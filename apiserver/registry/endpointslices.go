package registry

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// EndpointSlices serves discovery.k8s.io/v1 EndpointSlices: a service's
// endpoints, split in slices of at most a thousand. The endpointslice
// controller writes one set per service with a selector; the API server
// writes the slice of the kubernetes Service. Like upstream there is no
// short name and no category, and field selectors know only the metadata.
var EndpointSlices = &Resource{
	GVK:              discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"),
	Resource:         "endpointslices",
	Namespaced:       true,
	New:              func() runtime.Object { return &discoveryv1.EndpointSlice{} },
	NewList:          func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
	Default:          sliceDefault,
	PrepareForCreate: slicePrepareForCreate,
	PrepareForUpdate: slicePrepareForUpdate,
	Validate:         sliceValidate,
	ValidateUpdate:   sliceValidateUpdate,
	Columns:          sliceColumns,
	Row:              sliceRow,
}

// Limits of one slice, as upstream validation has them.
const (
	sliceMaxEndpoints      = 1000
	sliceMaxAddresses      = 100
	sliceMaxPorts          = 100
	sliceMaxTopologyLabels = 16
	sliceMaxHints          = 8
)

// sliceAddressTypes are the address types a slice may be created with.
var sliceAddressTypes = []string{string(discoveryv1.AddressTypeIPv4), string(discoveryv1.AddressTypeIPv6), string(discoveryv1.AddressTypeFQDN)}

// sliceDefault gives every port a name ("") and a protocol (TCP), as the
// v1 defaulting does, so that consumers can compare ports by value.
func sliceDefault(obj runtime.Object) {
	s := obj.(*discoveryv1.EndpointSlice)
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.Name == nil {
			p.Name = new(string)
		}
		if p.Protocol == nil {
			tcp := corev1.ProtocolTCP
			p.Protocol = &tcp
		}
	}
}

// A slice has no spec, but its generation counts changes to everything
// outside the metadata, as upstream's strategy does.
func slicePrepareForCreate(_ context.Context, obj runtime.Object) {
	obj.(*discoveryv1.EndpointSlice).Generation = 1
}

func slicePrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	s, o := obj.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice)
	s.Generation = o.Generation
	if s.AddressType != o.AddressType ||
		!equality.Semantic.DeepEqual(s.Endpoints, o.Endpoints) ||
		!equality.Semantic.DeepEqual(s.Ports, o.Ports) {
		s.Generation++
	}
}

func sliceValidate(_ context.Context, obj runtime.Object) field.ErrorList {
	return sliceValidateSlice(obj.(*discoveryv1.EndpointSlice), nil)
}

func sliceValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	s, o := obj.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice)
	errs := sliceValidateSlice(s, o)
	if s.AddressType != o.AddressType {
		errs = append(errs, field.Invalid(field.NewPath("addressType"), s.AddressType, "field is immutable"))
	}
	return errs
}

// sliceValidateSlice checks a slice; old, if not nil, is the stored slice,
// whose addresses stay acceptable even if they predate strict IP parsing.
func sliceValidateSlice(s, old *discoveryv1.EndpointSlice) field.ErrorList {
	var errs field.ErrorList
	atPath := field.NewPath("addressType")
	switch {
	case s.AddressType == "":
		errs = append(errs, field.Required(atPath, ""))
	case old != nil && s.AddressType == old.AddressType:
		// Kept as stored, even the deprecated "IP".
	default:
		errs = append(errs, validateOneOf(atPath, string(s.AddressType), sliceAddressTypes...)...)
	}
	var oldAddrs []string
	if old != nil {
		for _, ep := range old.Endpoints {
			oldAddrs = append(oldAddrs, ep.Addresses...)
		}
	}
	errs = append(errs, sliceValidateEndpoints(s.Endpoints, s.AddressType, oldAddrs, field.NewPath("endpoints"))...)
	errs = append(errs, sliceValidatePorts(s.Ports, field.NewPath("ports"))...)
	return errs
}

func sliceValidateEndpoints(eps []discoveryv1.Endpoint, at discoveryv1.AddressType, oldAddrs []string, p *field.Path) field.ErrorList {
	if len(eps) > sliceMaxEndpoints {
		return field.ErrorList{field.TooMany(p, len(eps), sliceMaxEndpoints)}
	}
	var errs field.ErrorList
	for i, ep := range eps {
		ip := p.Index(i)
		ap := ip.Child("addresses")
		switch {
		case len(ep.Addresses) == 0:
			errs = append(errs, field.Required(ap, "must contain at least 1 address"))
		case len(ep.Addresses) > sliceMaxAddresses:
			errs = append(errs, field.TooMany(ap, len(ep.Addresses), sliceMaxAddresses))
		}
		for j, addr := range ep.Addresses {
			errs = append(errs, sliceValidateAddress(ap.Index(j), addr, at, oldAddrs)...)
		}
		if ep.NodeName != nil {
			errs = append(errs, validateNodeName(ip.Child("nodeName"), *ep.NodeName)...)
		}
		if ep.Hostname != nil {
			errs = append(errs, validateFormat(ip.Child("hostname"), *ep.Hostname, validation.IsDNS1123Label)...)
		}
		if ep.Zone != nil {
			errs = append(errs, validateFormat(ip.Child("zone"), *ep.Zone, validation.IsValidLabelValue)...)
		}
		tp := ip.Child("deprecatedTopology")
		if len(ep.DeprecatedTopology) > sliceMaxTopologyLabels {
			errs = append(errs, field.TooMany(tp, len(ep.DeprecatedTopology), sliceMaxTopologyLabels))
		}
		errs = append(errs, metav1validation.ValidateLabels(ep.DeprecatedTopology, tp)...)
		if ref := ep.TargetRef; ref != nil {
			if ref.Name == "" {
				errs = append(errs, field.Required(ip.Child("targetRef", "name"), ""))
			}
		}
		if ep.Hints != nil {
			errs = append(errs, sliceValidateHints(ep.Hints, ip.Child("hints"))...)
		}
	}
	return errs
}

// sliceValidateAddress checks one address against the slice's type:
// IPv4 and IPv6 addresses must be of that family and may not be loopback,
// link-local or unspecified; FQDNs must be fully qualified domain names.
// Addresses of an unknown (legacy) type are not checked.
func sliceValidateAddress(p *field.Path, addr string, at discoveryv1.AddressType, oldAddrs []string) field.ErrorList {
	switch at {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		if slices.Contains(oldAddrs, addr) {
			return nil // accepted before; kept unchanged
		}
		if errs := validateIP(p, addr, nil); len(errs) > 0 {
			return errs
		}
		is4 := net.ParseIP(addr).To4() != nil
		if want4 := at == discoveryv1.AddressTypeIPv4; is4 != want4 {
			return field.ErrorList{field.Invalid(p, addr, fmt.Sprintf("must be an %s address", at))}
		}
		return validateNonSpecialIP(p, addr)
	case discoveryv1.AddressTypeFQDN:
		return validation.IsFullyQualifiedDomainName(p, addr)
	}
	return nil
}

func sliceValidateHints(h *discoveryv1.EndpointHints, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	zp := p.Child("forZones")
	if len(h.ForZones) > sliceMaxHints {
		errs = append(errs, field.TooMany(zp, len(h.ForZones), sliceMaxHints))
	} else {
		seen := map[string]bool{}
		for i, z := range h.ForZones {
			np := zp.Index(i).Child("name")
			if seen[z.Name] {
				errs = append(errs, field.Duplicate(np, z.Name))
			}
			seen[z.Name] = true
			errs = append(errs, validateFormat(np, z.Name, validation.IsValidLabelValue)...)
		}
	}
	np := p.Child("forNodes")
	if len(h.ForNodes) > sliceMaxHints {
		errs = append(errs, field.TooMany(np, len(h.ForNodes), sliceMaxHints))
	} else {
		seen := map[string]bool{}
		for i, n := range h.ForNodes {
			fp := np.Index(i).Child("name")
			if seen[n.Name] {
				errs = append(errs, field.Duplicate(fp, n.Name))
			}
			seen[n.Name] = true
			errs = append(errs, validateNodeName(fp, n.Name)...)
		}
	}
	return errs
}

// sliceValidatePorts checks the ports: at most 100, names unique and
// DNS-1123 labels (or empty), a known protocol, a port in 1–65535 when set
// (unset means "every port"), and a qualified appProtocol.
func sliceValidatePorts(ports []discoveryv1.EndpointPort, p *field.Path) field.ErrorList {
	if len(ports) > sliceMaxPorts {
		return field.ErrorList{field.TooMany(p, len(ports), sliceMaxPorts)}
	}
	var errs field.ErrorList
	names := map[string]bool{}
	for i, port := range ports {
		ip := p.Index(i)
		name := ""
		if port.Name != nil {
			name = *port.Name
		}
		if name != "" {
			errs = append(errs, validateFormat(ip.Child("name"), name, validation.IsDNS1123Label)...)
		}
		if names[name] {
			errs = append(errs, field.Duplicate(ip.Child("name"), name))
		}
		names[name] = true
		if port.Protocol == nil {
			errs = append(errs, field.Required(ip.Child("protocol"), ""))
		} else {
			errs = append(errs, validateProtocol(ip.Child("protocol"), *port.Protocol)...)
		}
		if port.Port != nil {
			errs = append(errs, validatePortNumber(ip.Child("port"), *port.Port)...)
		}
		if port.AppProtocol != nil {
			errs = append(errs, validateFormat(ip.Child("appProtocol"), *port.AppProtocol, validation.IsQualifiedName)...)
		}
	}
	return errs
}

// The table has upstream's columns: NAME, ADDRESSTYPE, PORTS, ENDPOINTS,
// AGE.
var sliceColumns = []metav1.TableColumnDefinition{
	NameColumn,
	{Name: "AddressType", Type: "string", Description: discoveryv1.EndpointSlice{}.SwaggerDoc()["addressType"]},
	{Name: "Ports", Type: "string", Description: discoveryv1.EndpointSlice{}.SwaggerDoc()["ports"]},
	{Name: "Endpoints", Type: "string", Description: discoveryv1.EndpointSlice{}.SwaggerDoc()["endpoints"]},
	AgeColumn,
}

func sliceRow(obj runtime.Object) []interface{} {
	s := obj.(*discoveryv1.EndpointSlice)
	return []interface{}{s.Name, string(s.AddressType), slicePortsString(s.Ports), sliceEndpointsString(s.Endpoints), Age(s.CreationTimestamp)}
}

// sliceShown is how many ports or addresses a cell lists before it only
// counts the rest.
const sliceShown = 3

// slicePortsString lists port numbers; a port without a number shows its
// name, or "*" (every port).
func slicePortsString(ports []discoveryv1.EndpointPort) string {
	var all []string
	for _, p := range ports {
		switch {
		case p.Port != nil:
			all = append(all, strconv.Itoa(int(*p.Port)))
		case p.Name != nil && *p.Name != "":
			all = append(all, *p.Name)
		default:
			all = append(all, "*")
		}
	}
	return sliceList(all)
}

// sliceEndpointsString lists every endpoint address, ready or not.
func sliceEndpointsString(eps []discoveryv1.Endpoint) string {
	var all []string
	for _, ep := range eps {
		all = append(all, ep.Addresses...)
	}
	return sliceList(all)
}

// sliceList joins the first three items and counts the others, or says
// "<unset>" when there are none.
func sliceList(all []string) string {
	switch {
	case len(all) == 0:
		return "<unset>"
	case len(all) > sliceShown:
		return fmt.Sprintf("%s + %d more...", strings.Join(all[:sliceShown], ","), len(all)-sliceShown)
	}
	return strings.Join(all, ",")
}
