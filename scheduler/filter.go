package scheduler

import (
	"fmt"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"
	schedulinghelper "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// Reasons a node does not fit a pod, worded as upstream's filter plugins
// word them, so that FailedScheduling messages read the same.
const (
	reasonUnschedulable = "node(s) were unschedulable"
	reasonAffinity      = "node(s) didn't match Pod's node affinity/selector"
	reasonPorts         = "node(s) didn't have free ports for the requested pod ports"
	reasonTooManyPods   = "Too many pods"
)

// reasonTaint is the reason for a taint the pod does not tolerate.
func reasonTaint(t corev1.Taint) string {
	return fmt.Sprintf("node(s) had untolerated taint {%s: %s}", t.Key, t.Value)
}

// reasonInsufficient is the reason for a resource the node has too little
// of.
func reasonInsufficient(name corev1.ResourceName) string {
	return "Insufficient " + string(name)
}

// Requests that scoring assumes for a pod that asks for no CPU or memory,
// as upstream does, so that such pods still spread over the nodes.
var nonZeroDefaults = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("100m"),
	corev1.ResourceMemory: resource.MustParse("200Mi"),
}

// hostPort is a port a pod claims on its node's addresses. An empty ip
// means every address.
type hostPort struct {
	ip       string
	protocol corev1.Protocol
	port     int32
}

// conflicts reports whether two claims cannot both be granted: same port
// and protocol, on overlapping addresses.
func (p hostPort) conflicts(q hostPort) bool {
	return p.port == q.port && p.protocol == q.protocol && (p.ip == "" || q.ip == "" || p.ip == q.ip)
}

// podInfo is what placement needs to know of a pod, worked out once.
type podInfo struct {
	pod *corev1.Pod
	// requests are the pod's effective requests (containers, the largest
	// init container, overhead): CPU in millicores, everything else in
	// units. Resources it does not ask for are absent.
	requests map[corev1.ResourceName]int64
	// nonZeroCPU and nonZeroMemory are the requests used for scoring,
	// with the defaults for containers that state none.
	nonZeroCPU, nonZeroMemory int64
	ports                     []hostPort
}

func newPodInfo(pod *corev1.Pod) *podInfo {
	p := &podInfo{pod: pod, requests: map[corev1.ResourceName]int64{}}
	for name, q := range resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{}) {
		if v := quantityValue(name, q); v > 0 {
			p.requests[name] = v
		}
	}
	nz := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{NonMissingContainerRequests: nonZeroDefaults})
	p.nonZeroCPU = quantityValue(corev1.ResourceCPU, nz[corev1.ResourceCPU])
	p.nonZeroMemory = quantityValue(corev1.ResourceMemory, nz[corev1.ResourceMemory])
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			for _, cp := range c.Ports {
				if cp.HostPort <= 0 {
					continue
				}
				hp := hostPort{ip: cp.HostIP, protocol: cp.Protocol, port: cp.HostPort}
				if hp.ip == "0.0.0.0" || hp.ip == "::" {
					hp.ip = ""
				}
				if hp.protocol == "" {
					hp.protocol = corev1.ProtocolTCP
				}
				p.ports = append(p.ports, hp)
			}
		}
	}
	return p
}

// quantityValue converts a quantity to the scheduler's integer units:
// millicores for CPU, units for everything else.
func quantityValue(name corev1.ResourceName, q resource.Quantity) int64 {
	if name == corev1.ResourceCPU {
		return q.MilliValue()
	}
	return q.Value()
}

// nodeInfo is a node and the pods the scheduler counts on it: those bound
// to it (or assumed bound) that have not finished.
type nodeInfo struct {
	// node is nil while pods on a node are known but the node is not.
	node *corev1.Node
	pods map[string]*podInfo
	// requested is the sum of the pods' requests, in quantityValue units.
	requested                 map[corev1.ResourceName]int64
	nonZeroCPU, nonZeroMemory int64
	ports                     map[hostPort]int
}

func newNodeInfo(node *corev1.Node) *nodeInfo {
	return &nodeInfo{node: node, pods: map[string]*podInfo{}, requested: map[corev1.ResourceName]int64{}, ports: map[hostPort]int{}}
}

func (n *nodeInfo) add(key string, p *podInfo) {
	n.pods[key] = p
	for name, v := range p.requests {
		n.requested[name] += v
	}
	n.nonZeroCPU += p.nonZeroCPU
	n.nonZeroMemory += p.nonZeroMemory
	for _, hp := range p.ports {
		n.ports[hp]++
	}
}

func (n *nodeInfo) remove(key string) {
	p, ok := n.pods[key]
	if !ok {
		return
	}
	delete(n.pods, key)
	for name, v := range p.requests {
		if n.requested[name] -= v; n.requested[name] == 0 {
			delete(n.requested, name)
		}
	}
	n.nonZeroCPU -= p.nonZeroCPU
	n.nonZeroMemory -= p.nonZeroMemory
	for _, hp := range p.ports {
		if n.ports[hp]--; n.ports[hp] <= 0 {
			delete(n.ports, hp)
		}
	}
}

func (n *nodeInfo) allocatable(name corev1.ResourceName) int64 {
	q, ok := n.node.Status.Allocatable[name]
	if !ok {
		return 0
	}
	return quantityValue(name, q)
}

// filter returns why pod does not fit node n, or nothing if it fits. Like
// upstream's filter plugins, the checks run in a fixed order (unschedulable,
// taints, node affinity, host ports, resources) and stop at the first that
// fails; only the resource check reports several reasons.
func filter(pod *podInfo, n *nodeInfo) []string {
	spec := &pod.pod.Spec
	node := n.node
	if node.Spec.Unschedulable && !tolerates(spec.Tolerations, corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}) {
		return []string{reasonUnschedulable}
	}
	for _, t := range effectiveTaints(node) {
		if t.Effect != corev1.TaintEffectNoSchedule && t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		if !tolerates(spec.Tolerations, t) {
			return []string{reasonTaint(t)}
		}
	}
	if ok, err := nodeaffinity.GetRequiredNodeAffinity(pod.pod).Match(node); !ok || err != nil {
		return []string{reasonAffinity}
	}
	for _, want := range pod.ports {
		for have := range n.ports {
			if want.conflicts(have) {
				return []string{reasonPorts}
			}
		}
	}
	return fitsResources(pod, n)
}

// fitsResources checks the pod count and every resource the pod asks for
// against what is left of the node's allocatable.
func fitsResources(pod *podInfo, n *nodeInfo) []string {
	var reasons []string
	if int64(len(n.pods))+1 > n.allocatable(corev1.ResourcePods) {
		reasons = append(reasons, reasonTooManyPods)
	}
	names := make([]corev1.ResourceName, 0, len(pod.requests))
	for name := range pod.requests {
		names = append(names, name)
	}
	// cpu, memory and ephemeral-storage first, as upstream reports them.
	rank := func(name corev1.ResourceName) int {
		switch name {
		case corev1.ResourceCPU:
			return 0
		case corev1.ResourceMemory:
			return 1
		case corev1.ResourceEphemeralStorage:
			return 2
		}
		return 3
	}
	slices.SortFunc(names, func(a, b corev1.ResourceName) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(string(a), string(b))
	})
	for _, name := range names {
		if name == corev1.ResourcePods {
			continue
		}
		if want := pod.requests[name]; want > n.allocatable(name)-n.requested[name] {
			reasons = append(reasons, reasonInsufficient(name))
		}
	}
	return reasons
}

// effectiveTaints returns the node's taints plus the NoSchedule taints that
// upstream's node lifecycle controller would derive from its conditions
// (node.kubernetes.io/not-ready, unreachable, memory-, disk- and
// pid-pressure, network-unavailable). tether's controller does not add
// those, so the scheduler reads the conditions itself: a node is used only
// once it reports Ready, unless the pod tolerates the taint.
func effectiveTaints(node *corev1.Node) []corev1.Taint {
	taints := slices.Clone(node.Spec.Taints)
	add := func(key string) {
		t := corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule}
		if !slices.ContainsFunc(taints, func(have corev1.Taint) bool { return have.MatchTaint(&t) }) {
			taints = append(taints, t)
		}
	}
	ready := condition(node, corev1.NodeReady)
	switch {
	case ready == nil || ready.Status == corev1.ConditionFalse:
		add(corev1.TaintNodeNotReady)
	case ready.Status != corev1.ConditionTrue:
		add(corev1.TaintNodeUnreachable)
	}
	for cond, key := range map[corev1.NodeConditionType]string{
		corev1.NodeMemoryPressure:     corev1.TaintNodeMemoryPressure,
		corev1.NodeDiskPressure:       corev1.TaintNodeDiskPressure,
		corev1.NodePIDPressure:        corev1.TaintNodePIDPressure,
		corev1.NodeNetworkUnavailable: corev1.TaintNodeNetworkUnavailable,
	} {
		if c := condition(node, cond); c != nil && c.Status == corev1.ConditionTrue {
			add(key)
		}
	}
	// The map above is unordered; keep the reported taint stable.
	derived := taints[len(node.Spec.Taints):]
	slices.SortFunc(derived, func(a, b corev1.Taint) int { return strings.Compare(a.Key, b.Key) })
	return taints
}

func condition(node *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == t {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

// tolerates reports whether one of tolerations tolerates taint: operators
// Exists and Equal, an empty key with Exists tolerating every taint, and
// an empty effect matching every effect.
func tolerates(tolerations []corev1.Toleration, taint corev1.Taint) bool {
	return schedulinghelper.TolerationsTolerateTaint(logr.Discard(), tolerations, &taint, false)
}

// fitError says why no node fits a pod: how many nodes there were and, for
// each reason, on how many nodes it held.
type fitError struct {
	nodes   int
	reasons map[string]int
}

// Error words the failure as upstream does, for example "0/3 nodes are
// available: 1 Insufficient memory, 2 node(s) had untolerated taint
// {node.kubernetes.io/unreachable: }. preemption: not eligible". tether
// does not preempt, so the preemption part never finds victims.
func (e *fitError) Error() string {
	if e.nodes == 0 {
		return "no nodes available to schedule pods"
	}
	parts := make([]string, 0, len(e.reasons))
	for reason, n := range e.reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, reason))
	}
	slices.Sort(parts)
	return fmt.Sprintf("0/%d nodes are available: %s. preemption: not eligible", e.nodes, strings.Join(parts, ", "))
}
