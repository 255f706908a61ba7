package kubelet

import (
	"net"
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"tether/internal/version"
	"tether/tunnel"
)

// KubeletVersion is what the node reports as its kubelet version: the
// Kubernetes API version tether implements, with tether's own version as
// a pre-release suffix.
var KubeletVersion = "v1.37.2-tether." + version.Version

// MaxPods is the number of pods a node offers.
const MaxPods = 110

// LeaseDurationSeconds is how long a node's Lease is valid without renewal;
// the node-lifecycle controller marks the node unreachable after it.
const LeaseDurationSeconds = 40

// nodeSpec is what the agent knows about its node before it registers.
type nodeSpec struct {
	Name string
	IP   net.IP
	Port int32
	Info machineInfo
	// NoPods registers the Node with NoPodsTaint: its agent runs no pods.
	NoPods bool
	// Tunnel: the node keeps a tunnel to the API server, which reaches
	// it only through that (tunnel.EgressAnnotation).
	Tunnel bool
}

// annotations are the agent's own annotations on its Node, nil for one
// to remove.
func (s nodeSpec) annotations() map[string]*string {
	if s.Tunnel {
		v := tunnel.EgressTunnel
		return map[string]*string{tunnel.EgressAnnotation: &v}
	}
	return map[string]*string{tunnel.EgressAnnotation: nil}
}

// NoPodsTaint keeps pods off a Node whose agent runs none (--disable-pods):
// a pod bound there would never start, nor finish a graceful deletion.
var NoPodsTaint = corev1.Taint{Key: "tether.dev/no-pods", Effect: corev1.TaintEffectNoSchedule}

// labels are the well-known labels a kubelet sets on its own Node (the
// NodeRestriction admission plugin lets it set exactly these).
func (s nodeSpec) labels() map[string]string {
	return map[string]string{
		corev1.LabelHostname:   s.Name,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: s.Info.Architecture,
	}
}

// addresses are the Node's status.addresses: InternalIP then Hostname. The
// serving certificate's SANs are exactly these.
func (s nodeSpec) addresses() []corev1.NodeAddress {
	return []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: s.IP.String()},
		{Type: corev1.NodeHostName, Address: s.Name},
	}
}

// capacity lists the node's resources; allocatable is the same, since the
// agent reserves nothing yet.
func (s nodeSpec) capacity() corev1.ResourceList {
	rl := corev1.ResourceList{
		corev1.ResourceCPU:  *resource.NewQuantity(int64(s.Info.CPUs), resource.DecimalSI),
		corev1.ResourcePods: *resource.NewQuantity(MaxPods, resource.DecimalSI),
	}
	if s.Info.MemoryBytes > 0 {
		rl[corev1.ResourceMemory] = *resource.NewQuantity(s.Info.MemoryBytes, resource.BinarySI)
	}
	if s.Info.EphemeralStorageBytes > 0 {
		rl[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(s.Info.EphemeralStorageBytes, resource.BinarySI)
	}
	return rl
}

func (s nodeSpec) nodeInfo() corev1.NodeSystemInfo {
	return corev1.NodeSystemInfo{
		MachineID:               s.Info.MachineID,
		SystemUUID:              s.Info.SystemUUID,
		BootID:                  s.Info.BootID,
		KernelVersion:           s.Info.KernelVersion,
		OSImage:                 s.Info.OSImage,
		ContainerRuntimeVersion: s.Info.ContainerRuntimeVersion,
		KubeletVersion:          KubeletVersion,
		KubeProxyVersion:        KubeletVersion,
		OperatingSystem:         "linux",
		Architecture:            s.Info.Architecture,
	}
}

// conditionSpec is a condition the agent reports, without its times.
type conditionSpec struct {
	Type    corev1.NodeConditionType
	Status  corev1.ConditionStatus
	Reason  string
	Message string
}

// conditions are the agent's conditions, in the order the kubelet reports
// them. Pressure is not measured yet: the node reports none.
var conditions = []conditionSpec{
	{corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
	{corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
	{corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"},
	{corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"},
}

// newNode is the Node the agent registers.
func (s nodeSpec) newNode(now time.Time) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Labels: s.labels()},
	}
	for k, v := range s.annotations() {
		if v != nil {
			metav1.SetMetaDataAnnotation(&n.ObjectMeta, k, *v)
		}
	}
	if s.NoPods {
		// Taints are set at registration only (NodeRestriction).
		n.Spec.Taints = []corev1.Taint{NoPodsTaint}
	}
	n.Status = s.status(n.Status, now)
	return n
}

// status returns cur with the agent's fields set: addresses, capacity,
// allocatable, the kubelet endpoint, node info and the agent's conditions.
// Conditions of other types (set by other components) are kept; each of the
// agent's conditions gets lastHeartbeatTime now and keeps its
// lastTransitionTime unless its status changes.
func (s nodeSpec) status(cur corev1.NodeStatus, now time.Time) corev1.NodeStatus {
	out := *cur.DeepCopy()
	out.Addresses = s.addresses()
	out.Capacity = s.capacity()
	out.Allocatable = s.capacity()
	out.DaemonEndpoints.KubeletEndpoint.Port = s.Port
	out.NodeInfo = s.nodeInfo()
	t := metav1.NewTime(now)
	var conds []corev1.NodeCondition
	for _, c := range cur.Conditions {
		if !slices.ContainsFunc(conditions, func(o conditionSpec) bool { return o.Type == c.Type }) {
			conds = append(conds, c)
		}
	}
	for _, want := range conditions {
		c := corev1.NodeCondition{Type: want.Type, Status: want.Status, Reason: want.Reason, Message: want.Message, LastHeartbeatTime: t, LastTransitionTime: t}
		if i := slices.IndexFunc(cur.Conditions, func(o corev1.NodeCondition) bool { return o.Type == want.Type }); i >= 0 {
			if prev := cur.Conditions[i]; prev.Status == want.Status && !prev.LastTransitionTime.IsZero() {
				c.LastTransitionTime = prev.LastTransitionTime
			}
		}
		conds = append(conds, c)
	}
	out.Conditions = conds
	return out
}

// statusDiffers reports whether the agent's fields of cur differ from what
// it would report, heartbeat and transition times aside.
func (s nodeSpec) statusDiffers(cur corev1.NodeStatus) bool {
	want := s.status(cur, time.Time{})
	if !equality.Semantic.DeepEqual(cur.Addresses, want.Addresses) ||
		!equality.Semantic.DeepEqual(cur.Capacity, want.Capacity) ||
		!equality.Semantic.DeepEqual(cur.Allocatable, want.Allocatable) ||
		cur.DaemonEndpoints != want.DaemonEndpoints ||
		cur.NodeInfo != want.NodeInfo {
		return true
	}
	for _, w := range conditions {
		i := slices.IndexFunc(cur.Conditions, func(o corev1.NodeCondition) bool { return o.Type == w.Type })
		if i < 0 {
			return true
		}
		if c := cur.Conditions[i]; c.Status != w.Status || c.Reason != w.Reason || c.Message != w.Message {
			return true
		}
	}
	return false
}

// annotationsDiffer reports whether annotations are not as the agent's
// own annotations say.
func (s nodeSpec) annotationsDiffer(annotations map[string]string) bool {
	for k, v := range s.annotations() {
		cur, has := annotations[k]
		if (v == nil && has) || (v != nil && (!has || cur != *v)) {
			return true
		}
	}
	return false
}

// labelsDiffer reports whether labels lacks one of the agent's labels or
// has another value for it.
func (s nodeSpec) labelsDiffer(labels map[string]string) bool {
	for k, v := range s.labels() {
		if labels[k] != v {
			return true
		}
	}
	return false
}

// lease is the node's heartbeat Lease in kube-node-lease, renewed at now and
// owned by the Node with uid (so it goes when the Node goes).
func (s nodeSpec) lease(uid types.UID, now time.Time) *coordinationv1.Lease {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: corev1.NamespaceNodeLease}}
	s.renew(l, uid, now)
	return l
}

// renew sets l's holder, duration, renew time and owner.
func (s nodeSpec) renew(l *coordinationv1.Lease, uid types.UID, now time.Time) {
	name := s.Name
	d := int32(LeaseDurationSeconds)
	t := metav1.NewMicroTime(now)
	l.Spec.HolderIdentity = &name
	l.Spec.LeaseDurationSeconds = &d
	l.Spec.RenewTime = &t
	if uid != "" {
		l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: s.Name, UID: uid}}
	}
}
