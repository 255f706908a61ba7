package registry

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Endpoints serves core/v1 Endpoints: the addresses and ports behind the
// service of the same name, kept by the endpoints controller.
var Endpoints = &Resource{
	GVK:            corev1.SchemeGroupVersion.WithKind("Endpoints"),
	Resource:       "endpoints",
	Singular:       "endpoints",
	ShortNames:     []string{"ep"},
	Namespaced:     true,
	New:            func() runtime.Object { return &corev1.Endpoints{} },
	NewList:        func() runtime.Object { return &corev1.EndpointsList{} },
	Default:        endpointsDefault,
	Validate:       endpointsValidate,
	ValidateUpdate: endpointsValidateUpdate,
	Columns:        endpointsColumns,
	Row:            endpointsRow,
}

func endpointsDefault(obj runtime.Object) {
	ep := obj.(*corev1.Endpoints)
	for i := range ep.Subsets {
		for j := range ep.Subsets[i].Ports {
			defaultProtocol(&ep.Subsets[i].Ports[j].Protocol)
		}
	}
}

func endpointsValidate(_ context.Context, obj runtime.Object) field.ErrorList {
	return endpointsValidateSubsets(obj.(*corev1.Endpoints).Subsets, nil)
}

func endpointsValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	var oldIPs []string
	for _, ss := range old.(*corev1.Endpoints).Subsets {
		for _, a := range ss.Addresses {
			oldIPs = append(oldIPs, a.IP)
		}
		for _, a := range ss.NotReadyAddresses {
			oldIPs = append(oldIPs, a.IP)
		}
	}
	return endpointsValidateSubsets(obj.(*corev1.Endpoints).Subsets, oldIPs)
}

// endpointsValidateSubsets checks addresses and ports; IPs in oldIPs were
// accepted before and stay valid.
func endpointsValidateSubsets(subsets []corev1.EndpointSubset, oldIPs []string) field.ErrorList {
	var errs field.ErrorList
	for i, ss := range subsets {
		sp := field.NewPath("subsets").Index(i)
		if len(ss.Addresses) == 0 && len(ss.NotReadyAddresses) == 0 {
			errs = append(errs, field.Required(sp, "must specify `addresses` or `notReadyAddresses`"))
		}
		for j, a := range ss.Addresses {
			errs = append(errs, endpointsValidateAddress(a, oldIPs, sp.Child("addresses").Index(j))...)
		}
		for j, a := range ss.NotReadyAddresses {
			errs = append(errs, endpointsValidateAddress(a, oldIPs, sp.Child("notReadyAddresses").Index(j))...)
		}
		for j, port := range ss.Ports {
			pp := sp.Child("ports").Index(j)
			switch {
			case port.Name == "" && len(ss.Ports) > 1:
				errs = append(errs, field.Required(pp.Child("name"), ""))
			case port.Name != "":
				errs = append(errs, validateFormat(pp.Child("name"), port.Name, validation.IsDNS1123Label)...)
			}
			errs = append(errs, validatePortNumber(pp.Child("port"), port.Port)...)
			errs = append(errs, validateProtocol(pp.Child("protocol"), port.Protocol)...)
			errs = append(errs, validateAppProtocol(pp.Child("appProtocol"), port.AppProtocol)...)
		}
	}
	return errs
}

func endpointsValidateAddress(a corev1.EndpointAddress, oldIPs []string, p *field.Path) field.ErrorList {
	errs := validateIP(p.Child("ip"), a.IP, oldIPs)
	if len(errs) == 0 {
		errs = validateNonSpecialIP(p.Child("ip"), a.IP)
	}
	if a.Hostname != "" {
		errs = append(errs, validateFormat(p.Child("hostname"), a.Hostname, validation.IsDNS1123Label)...)
	}
	if a.NodeName != nil {
		errs = append(errs, validateNodeName(p.Child("nodeName"), *a.NodeName)...)
	}
	return errs
}

var endpointsColumns = []metav1.TableColumnDefinition{
	NameColumn,
	{Name: "Endpoints", Type: "string", Description: corev1.Endpoints{}.SwaggerDoc()["subsets"]},
	AgeColumn,
}

func endpointsRow(obj runtime.Object) []interface{} {
	ep := obj.(*corev1.Endpoints)
	return []interface{}{ep.Name, endpointsString(ep.Subsets), Age(ep.CreationTimestamp)}
}

// endpointsShown is how many endpoints the ENDPOINTS column lists before it
// only counts the rest.
const endpointsShown = 3

// endpointsString lists the ready endpoints as ip:port (or just the IP for a
// subset without ports), the first three of them followed by
// " + N more...".
func endpointsString(subsets []corev1.EndpointSubset) string {
	var shown []string
	total := 0
	add := func(s string) {
		if total++; len(shown) < endpointsShown {
			shown = append(shown, s)
		}
	}
	for _, ss := range subsets {
		if len(ss.Ports) == 0 {
			for _, a := range ss.Addresses {
				add(a.IP)
			}
			continue
		}
		for _, port := range ss.Ports {
			for _, a := range ss.Addresses {
				add(net.JoinHostPort(a.IP, strconv.Itoa(int(port.Port))))
			}
		}
	}
	out := coreOrNone(strings.Join(shown, ","))
	if total > len(shown) {
		out = fmt.Sprintf("%s + %d more...", strings.Join(shown, ","), total-len(shown))
	}
	return out
}
