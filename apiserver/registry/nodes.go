package registry

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Nodes serves core/v1 Nodes, cluster-scoped and named by DNS subdomains.
// The kubelet registers its node and reports through the status
// subresource; administrators cordon (spec.unschedulable) and taint it.
var Nodes = &Resource{
	GVK:                  corev1.SchemeGroupVersion.WithKind("Node"),
	Resource:             "nodes",
	ShortNames:           []string{"no"},
	New:                  func() runtime.Object { return &corev1.Node{} },
	NewList:              func() runtime.Object { return &corev1.NodeList{} },
	Default:              nodeDefault,
	Validate:             nodeValidate,
	ValidateUpdate:       nodeValidateUpdate,
	HasStatus:            true,
	KeepStatusOnCreate:   true,
	ValidateStatusUpdate: nodeValidateStatusUpdate,
	Fields:               nodeFields,
	Columns:              nodeColumns,
	Row:                  nodeRow,
}

func nodeDefault(obj runtime.Object) {
	node := obj.(*corev1.Node)
	same := func(s string) string { return s }
	defaultIPs(&node.Spec.PodCIDR, &node.Spec.PodCIDRs, same, same)
	// A node that reports no allocatable resources can use all it has.
	if node.Status.Allocatable == nil && node.Status.Capacity != nil {
		node.Status.Allocatable = node.Status.Capacity.DeepCopy()
	}
}

func nodeValidate(_ context.Context, obj runtime.Object) field.ErrorList {
	return nodeValidateSpec(&obj.(*corev1.Node).Spec, nil)
}

// nodeValidateSpec checks a node spec; old is the stored spec on update,
// nil on create.
func nodeValidateSpec(spec, old *corev1.NodeSpec) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	var oldCIDRs []string
	if old != nil {
		oldCIDRs = old.PodCIDRs
	}
	cp := p.Child("podCIDRs")
	for i, cidr := range spec.PodCIDRs {
		errs = append(errs, validateCIDR(cp.Index(i), cidr, oldCIDRs)...)
	}
	if len(errs) == 0 {
		errs = append(errs, validateDualStack(cp, spec.PodCIDRs)...)
	}
	errs = append(errs, nodeValidateTaints(spec.Taints, p.Child("taints"))...)
	return errs
}

func nodeValidateTaints(taints []corev1.Taint, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, t := range taints {
		tp := p.Index(i)
		errs = append(errs, metav1validation.ValidateLabelName(t.Key, tp.Child("key"))...)
		errs = append(errs, validateFormat(tp.Child("value"), t.Value, validation.IsValidLabelValue)...)
		errs = append(errs, validateOneOf(tp.Child("effect"), string(t.Effect), podTaintEffects...)...)
		key := t.Key + ":" + string(t.Effect)
		if seen[key] {
			errs = append(errs, field.Duplicate(tp, fmt.Sprintf("%s:%s", t.Key, t.Effect)))
		}
		seen[key] = true
	}
	return errs
}

func nodeValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	node, oldNode := obj.(*corev1.Node), old.(*corev1.Node)
	spec, ospec := &node.Spec, &oldNode.Spec
	errs := nodeValidateSpec(spec, ospec)
	p := field.NewPath("spec")
	// The pod CIDRs and the provider ID are assigned once.
	if len(ospec.PodCIDRs) > 0 && !slices.Equal(spec.PodCIDRs, ospec.PodCIDRs) {
		errs = append(errs, field.Forbidden(p.Child("podCIDRs"), "node updates may not change podCIDR except from \"\" to valid"))
	}
	if ospec.ProviderID != "" && spec.ProviderID != ospec.ProviderID {
		errs = append(errs, field.Forbidden(p.Child("providerID"), "node updates may not change providerID except from \"\" to valid"))
	}
	return errs
}

func nodeValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	node := obj.(*corev1.Node)
	p := field.NewPath("status")
	errs := validateResourceList(p.Child("capacity"), node.Status.Capacity)
	errs = append(errs, validateResourceList(p.Child("allocatable"), node.Status.Allocatable)...)
	if port := node.Status.DaemonEndpoints.KubeletEndpoint.Port; port != 0 {
		errs = append(errs, validatePortNumber(p.Child("daemonEndpoints", "kubeletEndpoint", "Port"), port)...)
	}
	return errs
}

func nodeFields(obj runtime.Object) fields.Set {
	node := obj.(*corev1.Node)
	return fields.Set{"spec.unschedulable": strconv.FormatBool(node.Spec.Unschedulable)}
}

var nodeColumns = []metav1.TableColumnDefinition{
	NameColumn,
	{Name: "Status", Type: "string", Description: "Whether the node is ready, and whether it takes new pods."},
	{Name: "Roles", Type: "string", Description: "The roles of the node, from its node-role.kubernetes.io labels."},
	AgeColumn,
	{Name: "Version", Type: "string", Description: corev1.NodeSystemInfo{}.SwaggerDoc()["kubeletVersion"]},
	{Name: "Internal-IP", Type: "string", Priority: 1, Description: corev1.NodeStatus{}.SwaggerDoc()["addresses"]},
	{Name: "External-IP", Type: "string", Priority: 1, Description: corev1.NodeStatus{}.SwaggerDoc()["addresses"]},
	{Name: "OS-Image", Type: "string", Priority: 1, Description: corev1.NodeSystemInfo{}.SwaggerDoc()["osImage"]},
	{Name: "Kernel-Version", Type: "string", Priority: 1, Description: corev1.NodeSystemInfo{}.SwaggerDoc()["kernelVersion"]},
	{Name: "Container-Runtime", Type: "string", Priority: 1, Description: corev1.NodeSystemInfo{}.SwaggerDoc()["containerRuntimeVersion"]},
}

func nodeRow(obj runtime.Object) []interface{} {
	node := obj.(*corev1.Node)
	info := node.Status.NodeInfo
	unknown := func(s string) string {
		if s == "" {
			return "<unknown>"
		}
		return s
	}
	return []interface{}{
		node.Name,
		nodeStatus(node),
		nodeRoles(node.Labels),
		Age(node.CreationTimestamp),
		info.KubeletVersion,
		coreOrNone(nodeAddress(node, corev1.NodeInternalIP)),
		coreOrNone(nodeAddress(node, corev1.NodeExternalIP)),
		unknown(info.OSImage),
		unknown(info.KernelVersion),
		unknown(info.ContainerRuntimeVersion),
	}
}

// nodeStatus reads the Ready condition: "Ready", "NotReady" (false or
// unknown), or "Unknown" without one; a cordoned node adds
// ",SchedulingDisabled".
func nodeStatus(node *corev1.Node) string {
	status := "Unknown"
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			status = "NotReady"
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
			}
			break
		}
	}
	if node.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	return status
}

// nodeRoles lists the roles named by node-role.kubernetes.io/<role> labels
// and the older kubernetes.io/role=<role> label.
func nodeRoles(labels map[string]string) string {
	var roles []string
	for k, v := range labels {
		if role, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && role != "" {
			roles = append(roles, role)
		} else if k == "kubernetes.io/role" && v != "" {
			roles = append(roles, v)
		}
	}
	if len(roles) == 0 {
		return "<none>"
	}
	slices.Sort(roles)
	return strings.Join(slices.Compact(roles), ",")
}

func nodeAddress(node *corev1.Node, t corev1.NodeAddressType) string {
	for _, a := range node.Status.Addresses {
		if a.Type == t {
			return a.Address
		}
	}
	return ""
}
