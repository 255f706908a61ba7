package scheduler

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// testNode returns a Ready node with cpu 2, memory 4Gi and 110 pods.
func testNode(name string, mutate ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("2"),
				corev1.ResourceMemory: resource.MustParse("4Gi"),
				corev1.ResourcePods:   resource.MustParse("110"),
			},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, m := range mutate {
		m(n)
	}
	return n
}

// testPod returns a pending pod with one container requesting requests
// ("cpu=500m", "memory=1Gi", ...).
func testPod(name string, requests corev1.ResourceList, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{
			SchedulerName: DefaultSchedulerName,
			Containers:    []corev1.Container{{Name: "c", Image: "i", Resources: corev1.ResourceRequirements{Requests: requests}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func res(cpu, mem string) corev1.ResourceList {
	l := corev1.ResourceList{}
	if cpu != "" {
		l[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if mem != "" {
		l[corev1.ResourceMemory] = resource.MustParse(mem)
	}
	return l
}

func withCondition(t corev1.NodeConditionType, s corev1.ConditionStatus) func(*corev1.Node) {
	return func(n *corev1.Node) {
		for i := range n.Status.Conditions {
			if n.Status.Conditions[i].Type == t {
				n.Status.Conditions[i].Status = s
				return
			}
		}
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: t, Status: s})
	}
}

func withTaint(key, value string, effect corev1.TaintEffect) func(*corev1.Node) {
	return func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Value: value, Effect: effect})
	}
}

func withToleration(tol corev1.Toleration) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.Tolerations = append(p.Spec.Tolerations, tol) }
}

func withHostPort(ip string, port int32, proto corev1.Protocol) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 80, HostPort: port, HostIP: ip, Protocol: proto})
	}
}

func withAffinity(terms ...corev1.NodeSelectorTerm) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms},
		}}
	}
}

func expr(key string, op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorTerm {
	return corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func TestFilter(t *testing.T) {
	bound := func(name string, requests corev1.ResourceList, mutate ...func(*corev1.Pod)) *corev1.Pod {
		p := testPod(name, requests, mutate...)
		p.Spec.NodeName = "n1"
		return p
	}
	labelled := func(n *corev1.Node) { n.Labels["disk"] = "ssd"; n.Labels["cores"] = "8" }
	tests := []struct {
		name    string
		node    *corev1.Node
		running []*corev1.Pod
		pod     *corev1.Pod
		want    []string
	}{
		{"fits", testNode("n1"), nil, testPod("p", res("1", "1Gi")), nil},
		{"best effort fits", testNode("n1"), nil, testPod("p", nil), nil},

		// Readiness and schedulability.
		{"not ready", testNode("n1", withCondition(corev1.NodeReady, corev1.ConditionFalse)), nil, testPod("p", nil),
			[]string{"node(s) had untolerated taint {node.kubernetes.io/not-ready: }"}},
		{"no ready condition", testNode("n1", func(n *corev1.Node) { n.Status.Conditions = nil }), nil, testPod("p", nil),
			[]string{"node(s) had untolerated taint {node.kubernetes.io/not-ready: }"}},
		{"unknown", testNode("n1", withCondition(corev1.NodeReady, corev1.ConditionUnknown)), nil, testPod("p", nil),
			[]string{"node(s) had untolerated taint {node.kubernetes.io/unreachable: }"}},
		{"unknown and tainted by the lifecycle controller", testNode("n1", withCondition(corev1.NodeReady, corev1.ConditionUnknown),
			withTaint(corev1.TaintNodeUnreachable, "", corev1.TaintEffectNoExecute)), nil,
			testPod("p", nil, withToleration(corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})),
			[]string{"node(s) had untolerated taint {node.kubernetes.io/unreachable: }"}},
		{"not ready tolerated", testNode("n1", withCondition(corev1.NodeReady, corev1.ConditionFalse)), nil,
			testPod("p", nil, withToleration(corev1.Toleration{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists})), nil},
		{"memory pressure", testNode("n1", withCondition(corev1.NodeMemoryPressure, corev1.ConditionTrue)), nil, testPod("p", nil),
			[]string{"node(s) had untolerated taint {node.kubernetes.io/memory-pressure: }"}},
		{"cordoned", testNode("n1", func(n *corev1.Node) { n.Spec.Unschedulable = true }), nil, testPod("p", nil),
			[]string{"node(s) were unschedulable"}},
		{"cordoned tolerated", testNode("n1", func(n *corev1.Node) { n.Spec.Unschedulable = true }), nil,
			testPod("p", nil, withToleration(corev1.Toleration{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})), nil},

		// Taints and tolerations.
		{"NoSchedule taint", testNode("n1", withTaint("dedicated", "gpu", corev1.TaintEffectNoSchedule)), nil, testPod("p", nil),
			[]string{"node(s) had untolerated taint {dedicated: gpu}"}},
		{"NoExecute taint", testNode("n1", withTaint("dedicated", "gpu", corev1.TaintEffectNoExecute)), nil, testPod("p", nil),
			[]string{"node(s) had untolerated taint {dedicated: gpu}"}},
		{"PreferNoSchedule taint ignored", testNode("n1", withTaint("dedicated", "gpu", corev1.TaintEffectPreferNoSchedule)), nil, testPod("p", nil), nil},
		{"Equal toleration", testNode("n1", withTaint("dedicated", "gpu", corev1.TaintEffectNoSchedule)), nil,
			testPod("p", nil, withToleration(corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule})), nil},
		{"Equal toleration, other value", testNode("n1", withTaint("dedicated", "gpu", corev1.TaintEffectNoSchedule)), nil,
			testPod("p", nil, withToleration(corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "cpu", Effect: corev1.TaintEffectNoSchedule})),
			[]string{"node(s) had untolerated taint {dedicated: gpu}"}},
		{"Exists toleration with empty effect", testNode("n1", withTaint("dedicated", "gpu", corev1.TaintEffectNoExecute)), nil,
			testPod("p", nil, withToleration(corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpExists})), nil},
		{"toleration for another effect", testNode("n1", withTaint("dedicated", "gpu", corev1.TaintEffectNoExecute)), nil,
			testPod("p", nil, withToleration(corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})),
			[]string{"node(s) had untolerated taint {dedicated: gpu}"}},
		{"empty key Exists tolerates all", testNode("n1", withTaint("a", "1", corev1.TaintEffectNoSchedule), withTaint("b", "", corev1.TaintEffectNoExecute),
			withCondition(corev1.NodeReady, corev1.ConditionFalse), func(n *corev1.Node) { n.Spec.Unschedulable = true }), nil,
			testPod("p", nil, withToleration(corev1.Toleration{Operator: corev1.TolerationOpExists})), nil},

		// Node selector and affinity.
		{"nodeSelector matches", testNode("n1", labelled), nil, testPod("p", nil, func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"disk": "ssd"} }), nil},
		{"nodeSelector differs", testNode("n1", labelled), nil, testPod("p", nil, func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"disk": "hdd"} }),
			[]string{reasonAffinity}},
		{"affinity In", testNode("n1", labelled), nil, testPod("p", nil, withAffinity(expr("disk", corev1.NodeSelectorOpIn, "hdd", "ssd"))), nil},
		{"affinity NotIn", testNode("n1", labelled), nil, testPod("p", nil, withAffinity(expr("disk", corev1.NodeSelectorOpNotIn, "ssd"))), []string{reasonAffinity}},
		{"affinity Exists", testNode("n1", labelled), nil, testPod("p", nil, withAffinity(expr("disk", corev1.NodeSelectorOpExists))), nil},
		{"affinity DoesNotExist", testNode("n1", labelled), nil, testPod("p", nil, withAffinity(expr("disk", corev1.NodeSelectorOpDoesNotExist))), []string{reasonAffinity}},
		{"affinity Gt", testNode("n1", labelled), nil, testPod("p", nil, withAffinity(expr("cores", corev1.NodeSelectorOpGt, "4"))), nil},
		{"affinity Lt", testNode("n1", labelled), nil, testPod("p", nil, withAffinity(expr("cores", corev1.NodeSelectorOpLt, "4"))), []string{reasonAffinity}},
		{"affinity terms are ORed", testNode("n1", labelled), nil,
			testPod("p", nil, withAffinity(expr("disk", corev1.NodeSelectorOpIn, "hdd"), expr("cores", corev1.NodeSelectorOpIn, "8"))), nil},
		{"affinity matchFields name", testNode("n1"), nil, testPod("p", nil, withAffinity(corev1.NodeSelectorTerm{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"n1"}}},
		})), nil},
		{"affinity matchFields other name", testNode("n1"), nil, testPod("p", nil, withAffinity(corev1.NodeSelectorTerm{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"n2"}}},
		})), []string{reasonAffinity}},
		{"selector and affinity both apply", testNode("n1", labelled), nil,
			testPod("p", nil, withAffinity(expr("disk", corev1.NodeSelectorOpExists)), func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"zone": "a"} }),
			[]string{reasonAffinity}},

		// Host ports.
		{"free port", testNode("n1"), []*corev1.Pod{bound("web", nil, withHostPort("", 8080, corev1.ProtocolTCP))},
			testPod("p", nil, withHostPort("", 8081, corev1.ProtocolTCP)), nil},
		{"same port", testNode("n1"), []*corev1.Pod{bound("web", nil, withHostPort("", 8080, corev1.ProtocolTCP))},
			testPod("p", nil, withHostPort("", 8080, "")), []string{reasonPorts}},
		{"same port, other protocol", testNode("n1"), []*corev1.Pod{bound("web", nil, withHostPort("", 8080, corev1.ProtocolTCP))},
			testPod("p", nil, withHostPort("", 8080, corev1.ProtocolUDP)), nil},
		{"same port, distinct addresses", testNode("n1"), []*corev1.Pod{bound("web", nil, withHostPort("10.0.0.1", 8080, corev1.ProtocolTCP))},
			testPod("p", nil, withHostPort("10.0.0.2", 8080, corev1.ProtocolTCP)), nil},
		{"same port, wildcard and address", testNode("n1"), []*corev1.Pod{bound("web", nil, withHostPort("10.0.0.1", 8080, corev1.ProtocolTCP))},
			testPod("p", nil, withHostPort("0.0.0.0", 8080, corev1.ProtocolTCP)), []string{reasonPorts}},

		// Resources.
		{"fills the node exactly", testNode("n1"), []*corev1.Pod{bound("a", res("1500m", "3Gi"))}, testPod("p", res("500m", "1Gi")), nil},
		{"insufficient cpu", testNode("n1"), []*corev1.Pod{bound("a", res("1500m", ""))}, testPod("p", res("600m", "")), []string{"Insufficient cpu"}},
		{"insufficient cpu and memory", testNode("n1"), nil, testPod("p", res("3", "100Gi")), []string{"Insufficient cpu", "Insufficient memory"}},
		{"finished pods do not count", testNode("n1"), []*corev1.Pod{bound("done", res("2", "4Gi"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })},
			testPod("p", res("1", "1Gi")), nil},
		{"init containers count their maximum", testNode("n1"), nil, testPod("p", res("1", ""), func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{
				{Name: "i1", Image: "i", Resources: corev1.ResourceRequirements{Requests: res("1500m", "")}},
				{Name: "i2", Image: "i", Resources: corev1.ResourceRequirements{Requests: res("2500m", "")}},
			}
		}), []string{"Insufficient cpu"}},
		{"overhead counts", testNode("n1"), nil, testPod("p", res("1800m", ""), func(p *corev1.Pod) { p.Spec.Overhead = res("250m", "") }),
			[]string{"Insufficient cpu"}},
		{"ephemeral storage", testNode("n1", func(n *corev1.Node) {
			n.Status.Allocatable[corev1.ResourceEphemeralStorage] = resource.MustParse("10Gi")
		}), nil,
			testPod("p", corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("20Gi")}), []string{"Insufficient ephemeral-storage"}},
		{"extended resource missing", testNode("n1"), nil,
			testPod("p", corev1.ResourceList{"example.com/gpu": resource.MustParse("1")}), []string{"Insufficient example.com/gpu"}},
		{"extended resource present", testNode("n1", func(n *corev1.Node) { n.Status.Allocatable["example.com/gpu"] = resource.MustParse("2") }), nil,
			testPod("p", corev1.ResourceList{"example.com/gpu": resource.MustParse("2")}), nil},
		{"too many pods", testNode("n1", func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourcePods] = resource.MustParse("1") }),
			[]*corev1.Pod{bound("a", nil)}, testPod("p", nil), []string{"Too many pods"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache()
			c.setNode(tt.node)
			for _, p := range tt.running {
				c.setPod(podKey(p), p)
			}
			got := filter(newPodInfo(tt.pod), c.nodes[tt.node.Name])
			if !slices.Equal(got, tt.want) {
				t.Errorf("filter() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFitErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  fitError
		want string
	}{
		{"no nodes", fitError{}, "no nodes available to schedule pods"},
		{"counts sorted", fitError{nodes: 3, reasons: map[string]int{
			"node(s) had untolerated taint {node.kubernetes.io/unreachable: }": 2,
			"Insufficient memory": 1,
		}}, "0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint {node.kubernetes.io/unreachable: }. preemption: not eligible"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPlace(t *testing.T) {
	first := func(int) int { return 0 }
	t.Run("reasons per node", func(t *testing.T) {
		c := newCache()
		c.setNode(testNode("small", func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceMemory] = resource.MustParse("1Gi") }))
		c.setNode(testNode("gone1", withCondition(corev1.NodeReady, corev1.ConditionUnknown)))
		c.setNode(testNode("gone2", withCondition(corev1.NodeReady, corev1.ConditionUnknown)))
		_, fe := c.place(testPod("p", res("", "2Gi")), first)
		want := "0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint {node.kubernetes.io/unreachable: }. preemption: not eligible"
		if fe == nil || fe.Error() != want {
			t.Fatalf("place() error = %v, want %q", fe, want)
		}
	})
	t.Run("assumed pods count", func(t *testing.T) {
		c := newCache()
		c.setNode(testNode("n1"))
		p1, p2 := testPod("p1", res("1500m", "")), testPod("p2", res("1500m", ""))
		node, fe := c.place(p1, first)
		if fe != nil || node != "n1" {
			t.Fatalf("place(p1) = %q, %v; want n1", node, fe)
		}
		c.assume(podKey(p1), p1, node)
		if _, fe := c.place(p2, first); fe == nil {
			t.Fatalf("place(p2) found a node although p1 is assumed on it")
		}
		// The informer confirms the binding; then p1 finishes.
		bound := p1.DeepCopy()
		bound.Spec.NodeName = "n1"
		c.setPod(podKey(p1), bound)
		c.forget(podKey(p1)) // no effect once confirmed
		if _, fe := c.place(p2, first); fe == nil {
			t.Fatalf("place(p2) found a node although p1 is bound to it")
		}
		bound = bound.DeepCopy()
		bound.Status.Phase = corev1.PodSucceeded
		c.setPod(podKey(p1), bound)
		if node, fe := c.place(p2, first); fe != nil || node != "n1" {
			t.Fatalf("place(p2) after p1 finished = %q, %v; want n1", node, fe)
		}
	})
	t.Run("forget undoes assume", func(t *testing.T) {
		c := newCache()
		c.setNode(testNode("n1"))
		p1, p2 := testPod("p1", res("1500m", "")), testPod("p2", res("1500m", ""))
		c.assume(podKey(p1), p1, "n1")
		c.forget(podKey(p1))
		if node, fe := c.place(p2, first); fe != nil || node != "n1" {
			t.Fatalf("place(p2) after forget = %q, %v; want n1", node, fe)
		}
	})
}
