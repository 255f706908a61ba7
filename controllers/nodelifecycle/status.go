package nodelifecycle

import (
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition reasons and messages this controller writes, as upstream.
const (
	ReasonNodeStatusUnknown       = "NodeStatusUnknown"
	MessageNodeStatusUnknown      = "Kubelet stopped posting node status."
	ReasonNodeStatusNeverUpdated  = "NodeStatusNeverUpdated"
	MessageNodeStatusNeverUpdated = "Kubelet never posted node status."
)

// pressureConditions are the conditions besides Ready that the kubelet
// reports and that become Unknown with it. They are changed only when the
// Node has them.
var pressureConditions = []corev1.NodeConditionType{
	corev1.NodeMemoryPressure,
	corev1.NodeDiskPressure,
	corev1.NodePIDPressure,
}

// condition returns the condition of type t in status, or nil.
func condition(status *corev1.NodeStatus, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range status.Conditions {
		if status.Conditions[i].Type == t {
			return &status.Conditions[i]
		}
	}
	return nil
}

// markUnknown returns a copy of node whose Ready condition, and whichever
// pressure conditions it has, are Unknown because its kubelet went silent,
// and whether anything changed. A condition that is Unknown already is left
// as it is, so marking a marked node changes nothing. A missing Ready
// condition is added (the kubelet never reported); lastHeartbeatTime is
// never touched: it stays the kubelet's.
func markUnknown(node *corev1.Node, now time.Time) (*corev1.Node, bool) {
	out := node.DeepCopy()
	at := metav1.NewTime(now)
	changed := false
	set := func(c *corev1.NodeCondition) {
		if c.Status == corev1.ConditionUnknown {
			return
		}
		c.Status = corev1.ConditionUnknown
		c.Reason = ReasonNodeStatusUnknown
		c.Message = MessageNodeStatusUnknown
		c.LastTransitionTime = at
		changed = true
	}
	if c := condition(&out.Status, corev1.NodeReady); c != nil {
		set(c)
	} else {
		out.Status.Conditions = append(out.Status.Conditions, corev1.NodeCondition{
			Type:               corev1.NodeReady,
			Status:             corev1.ConditionUnknown,
			Reason:             ReasonNodeStatusNeverUpdated,
			Message:            MessageNodeStatusNeverUpdated,
			LastTransitionTime: at,
		})
		changed = true
	}
	for _, t := range pressureConditions {
		if c := condition(&out.Status, t); c != nil {
			set(c)
		}
	}
	return out, changed
}

// The NoExecute taints that mirror the Ready condition.
var (
	unreachableTaint = corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute}
	notReadyTaint    = corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoExecute}
)

// wantTaints returns the taints node should have given its Ready condition,
// and whether they differ from what it has: unreachable:NoExecute while
// Ready is Unknown, not-ready:NoExecute while it is False, neither while it
// is True. A Node without a Ready condition keeps its taints (it has not
// reported yet; once it is overdue, markUnknown adds the condition). Other
// taints are kept in place; a taint that stays keeps its timeAdded, a new
// one gets now.
func wantTaints(node *corev1.Node, now time.Time) ([]corev1.Taint, bool) {
	ready := condition(&node.Status, corev1.NodeReady)
	if ready == nil {
		return node.Spec.Taints, false
	}
	var want *corev1.Taint
	switch ready.Status {
	case corev1.ConditionTrue:
	case corev1.ConditionFalse:
		want = &notReadyTaint
	default: // Unknown, or anything a future kubelet might report
		want = &unreachableTaint
	}

	taints := slices.DeleteFunc(slices.Clone(node.Spec.Taints), func(t corev1.Taint) bool {
		ours := t.MatchTaint(&unreachableTaint) || t.MatchTaint(&notReadyTaint)
		return ours && (want == nil || !t.MatchTaint(want))
	})
	if want != nil && !slices.ContainsFunc(taints, func(t corev1.Taint) bool { return t.MatchTaint(want) }) {
		t := *want
		added := metav1.NewTime(now)
		t.TimeAdded = &added
		taints = append(taints, t)
	}
	changed := len(taints) != len(node.Spec.Taints)
	if !changed {
		for i := range taints {
			if !taints[i].MatchTaint(&node.Spec.Taints[i]) {
				changed = true
				break
			}
		}
	}
	if len(taints) == 0 {
		taints = nil
	}
	return taints, changed
}
