package registry

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func nodeTestNode() *corev1.Node {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"kubernetes.io/hostname": "node-1"}},
		Spec: corev1.NodeSpec{
			PodCIDR: "10.244.1.0/24",
			Taints:  []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	nodeDefault(node)
	return node
}

func TestNodeDefault(t *testing.T) {
	for _, tc := range []struct {
		name      string
		podCIDR   string
		podCIDRs  []string
		wantCIDR  string
		wantCIDRs []string
	}{
		{"none", "", nil, "", nil},
		{"singular only", "10.244.1.0/24", nil, "10.244.1.0/24", []string{"10.244.1.0/24"}},
		{"plural only", "", []string{"10.244.1.0/24", "fd00:1::/64"}, "10.244.1.0/24", []string{"10.244.1.0/24", "fd00:1::/64"}},
		{"singular wins", "10.244.2.0/24", []string{"10.244.1.0/24"}, "10.244.2.0/24", []string{"10.244.2.0/24"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{Spec: corev1.NodeSpec{PodCIDR: tc.podCIDR, PodCIDRs: tc.podCIDRs}}
			nodeDefault(node)
			if node.Spec.PodCIDR != tc.wantCIDR || !slices.Equal(node.Spec.PodCIDRs, tc.wantCIDRs) {
				t.Errorf("podCIDR, podCIDRs = %q, %q; want %q, %q", node.Spec.PodCIDR, node.Spec.PodCIDRs, tc.wantCIDR, tc.wantCIDRs)
			}
		})
	}

	node := &corev1.Node{Status: corev1.NodeStatus{Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")}}}
	nodeDefault(node)
	if got := node.Status.Allocatable.Cpu().String(); got != "4" {
		t.Errorf("allocatable cpu = %s, want 4 (the capacity)", got)
	}
}

func TestNodeValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*corev1.Node)
		want   []string
	}{
		{"valid", func(*corev1.Node) {}, nil},
		{"dual-stack CIDRs", func(n *corev1.Node) {
			n.Spec.PodCIDRs = []string{"10.244.1.0/24", "fd00:1::/64"}
		}, nil},
		{"bad CIDR", func(n *corev1.Node) {
			n.Spec.PodCIDR, n.Spec.PodCIDRs = "", []string{"10.244.1.0/33"}
		}, []string{"spec.podCIDRs[0]"}},
		{"CIDR with host bits", func(n *corev1.Node) {
			n.Spec.PodCIDR, n.Spec.PodCIDRs = "", []string{"10.244.1.1/24"}
		}, []string{"spec.podCIDRs[0]"}},
		{"two IPv4 CIDRs", func(n *corev1.Node) {
			n.Spec.PodCIDR, n.Spec.PodCIDRs = "", []string{"10.244.1.0/24", "10.245.1.0/24"}
		}, []string{"spec.podCIDRs"}},
		{"taint without effect", func(n *corev1.Node) {
			n.Spec.Taints[0].Effect = ""
		}, []string{"spec.taints[0].effect"}},
		{"taint with unknown effect", func(n *corev1.Node) {
			n.Spec.Taints[0].Effect = "NoWay"
		}, []string{"spec.taints[0].effect"}},
		{"taint with bad key", func(n *corev1.Node) {
			n.Spec.Taints[0].Key = "not a key"
		}, []string{"spec.taints[0].key"}},
		{"duplicate taint", func(n *corev1.Node) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule})
		}, []string{"spec.taints[1]"}},
		{"same key, other effect", func(n *corev1.Node) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "dedicated", Effect: corev1.TaintEffectNoExecute})
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := nodeTestNode()
			tc.mutate(node)
			nodeDefault(node)
			coreTestCheck(t, nodeValidate(t.Context(), node), tc.want...)
		})
	}
}

func TestNodeStrategyName(t *testing.T) {
	st := newStrategy(Nodes, false)
	node := nodeTestNode()
	coreTestCheck(t, st.Validate(t.Context(), node))
	node.Name = "node_1"
	coreTestCheck(t, st.Validate(t.Context(), node), "metadata.name")
}

func TestNodeValidateUpdate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		old    func(*corev1.Node)
		mutate func(*corev1.Node)
		want   []string
	}{
		{"cordon", nil, func(n *corev1.Node) { n.Spec.Unschedulable = true }, nil},
		{"podCIDR assigned", func(n *corev1.Node) {
			n.Spec.PodCIDR, n.Spec.PodCIDRs = "", nil
		}, func(n *corev1.Node) {
			n.Spec.PodCIDR = "10.244.3.0/24"
		}, nil},
		{"podCIDR changed", nil, func(n *corev1.Node) {
			n.Spec.PodCIDR = "10.244.3.0/24"
		}, []string{"spec.podCIDRs"}},
		{"providerID set", nil, func(n *corev1.Node) { n.Spec.ProviderID = "tether://node-1" }, nil},
		{"providerID changed", func(n *corev1.Node) {
			n.Spec.ProviderID = "tether://node-1"
		}, func(n *corev1.Node) {
			n.Spec.ProviderID = "tether://node-2"
		}, []string{"spec.providerID"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := nodeTestNode()
			if tc.old != nil {
				tc.old(old)
			}
			node := old.DeepCopy()
			tc.mutate(node)
			nodeDefault(node)
			coreTestCheck(t, nodeValidateUpdate(t.Context(), node, old), tc.want...)
		})
	}
}

func TestNodeValidateStatusUpdate(t *testing.T) {
	old := nodeTestNode()
	node := old.DeepCopy()
	node.Status.Capacity = corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourcePods:   resource.MustParse("110"),
		"example.com/gpu":     resource.MustParse("1"),
		corev1.ResourceMemory: resource.MustParse("-1"),
		"gpu":                 resource.MustParse("1"),
	}
	nodeDefault(node)
	coreTestCheck(t, nodeValidateStatusUpdate(t.Context(), node, old),
		"status.capacity[memory]", "status.capacity[gpu]", "status.allocatable[memory]", "status.allocatable[gpu]")
}

func TestNodeRow(t *testing.T) {
	ready := func(s corev1.ConditionStatus) []corev1.NodeCondition {
		return []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}, {Type: corev1.NodeReady, Status: s}}
	}
	for _, tc := range []struct {
		name          string
		conditions    []corev1.NodeCondition
		unschedulable bool
		labels        map[string]string
		status, roles string
	}{
		{"ready", ready(corev1.ConditionTrue), false, nil, "Ready", "<none>"},
		{"not ready", ready(corev1.ConditionFalse), false, nil, "NotReady", "<none>"},
		{"ready unknown", ready(corev1.ConditionUnknown), false, nil, "NotReady", "<none>"},
		{"no conditions", nil, false, nil, "Unknown", "<none>"},
		{"cordoned control plane", ready(corev1.ConditionTrue), true,
			map[string]string{"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": "true", "kubernetes.io/role": "master"},
			"Ready,SchedulingDisabled", "control-plane,etcd,master"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: tc.labels},
				Spec:       corev1.NodeSpec{Unschedulable: tc.unschedulable},
				Status: corev1.NodeStatus{
					Conditions: tc.conditions,
					Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "node-1"}, {Type: corev1.NodeInternalIP, Address: "192.168.1.10"}},
					NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.37.0", OSImage: "Debian GNU/Linux 13"},
				},
			}
			row := nodeRow(node)
			want := []interface{}{"node-1", tc.status, tc.roles, "<unknown>", "v1.37.0", "192.168.1.10", "<none>", "Debian GNU/Linux 13", "<unknown>", "<unknown>"}
			if !slices.Equal(row, want) {
				t.Errorf("nodeRow() = %q, want %q", row, want)
			}
			if len(row) != len(nodeColumns) {
				t.Errorf("nodeRow() has %d cells, want %d", len(row), len(nodeColumns))
			}
		})
	}
}

func TestNodeFields(t *testing.T) {
	node := nodeTestNode()
	node.Spec.Unschedulable = true
	if got := nodeFields(node)["spec.unschedulable"]; got != "true" {
		t.Errorf(`nodeFields()["spec.unschedulable"] = %q, want "true"`, got)
	}
}
