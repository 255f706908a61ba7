package nodelifecycle

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Minute)
)

func withConditions(conds ...corev1.NodeCondition) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n"},
		Status:     corev1.NodeStatus{Conditions: conds},
	}
}

func cond(t corev1.NodeConditionType, s corev1.ConditionStatus) corev1.NodeCondition {
	return corev1.NodeCondition{
		Type: t, Status: s, Reason: "KubeletSays", Message: "kubelet message",
		LastHeartbeatTime: metav1.NewTime(t0), LastTransitionTime: metav1.NewTime(t0),
	}
}

func TestMarkUnknown(t *testing.T) {
	t.Run("ready and pressures become unknown", func(t *testing.T) {
		in := withConditions(
			cond(corev1.NodeReady, corev1.ConditionTrue),
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse),
			cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse),
		)
		out, changed := markUnknown(in, t1)
		if !changed {
			t.Fatalf("markUnknown changed = false, want true")
		}
		for _, c := range out.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable {
				if c != in.Status.Conditions[4] {
					t.Errorf("NetworkUnavailable = %+v, want it untouched", c)
				}
				continue
			}
			if c.Status != corev1.ConditionUnknown || c.Reason != ReasonNodeStatusUnknown || c.Message != MessageNodeStatusUnknown {
				t.Errorf("%s = %s/%s/%q, want Unknown/%s/%q", c.Type, c.Status, c.Reason, c.Message, ReasonNodeStatusUnknown, MessageNodeStatusUnknown)
			}
			if !c.LastTransitionTime.Time.Equal(t1) || !c.LastHeartbeatTime.Time.Equal(t0) {
				t.Errorf("%s: lastTransitionTime %v, lastHeartbeatTime %v, want %v and the kubelet's %v", c.Type, c.LastTransitionTime, c.LastHeartbeatTime, t1, t0)
			}
		}
		if in.Status.Conditions[0].Status != corev1.ConditionTrue {
			t.Errorf("markUnknown changed its input")
		}
	})
	t.Run("absent pressures are not added", func(t *testing.T) {
		out, _ := markUnknown(withConditions(cond(corev1.NodeReady, corev1.ConditionFalse)), t1)
		if len(out.Status.Conditions) != 1 {
			t.Errorf("conditions = %v, want Ready only", out.Status.Conditions)
		}
	})
	t.Run("missing ready is added", func(t *testing.T) {
		out, changed := markUnknown(withConditions(), t1)
		ready := condition(&out.Status, corev1.NodeReady)
		if !changed || ready == nil || ready.Status != corev1.ConditionUnknown || ready.Reason != ReasonNodeStatusNeverUpdated {
			t.Errorf("markUnknown(no conditions) = %+v, %v, want Ready Unknown/%s", ready, changed, ReasonNodeStatusNeverUpdated)
		}
	})
	t.Run("already unknown is left alone", func(t *testing.T) {
		in := withConditions(cond(corev1.NodeReady, corev1.ConditionUnknown), cond(corev1.NodeDiskPressure, corev1.ConditionUnknown))
		out, changed := markUnknown(in, t1)
		if changed || !slices.Equal(out.Status.Conditions, in.Status.Conditions) {
			t.Errorf("markUnknown(already unknown) changed = %v, conditions %v, want no change", changed, out.Status.Conditions)
		}
	})
}

func TestWantTaints(t *testing.T) {
	at := metav1.NewTime(t0)
	other := corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}
	oldUnreachable := corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute, TimeAdded: &at}
	oldNotReady := corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoExecute, TimeAdded: &at}
	// A NoSchedule taint with the same key is someone else's; it stays.
	unreachableNoSchedule := corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoSchedule}

	for _, tc := range []struct {
		name    string
		ready   corev1.ConditionStatus // "" means no Ready condition
		taints  []corev1.Taint
		want    []string
		changed bool
	}{
		{"ready, untainted", corev1.ConditionTrue, nil, nil, false},
		{"ready, other taint kept", corev1.ConditionTrue, []corev1.Taint{other}, []string{"dedicated=gpu:NoSchedule"}, false},
		{"ready, unreachable removed", corev1.ConditionTrue, []corev1.Taint{other, oldUnreachable, unreachableNoSchedule},
			[]string{"dedicated=gpu:NoSchedule", "node.kubernetes.io/unreachable:NoSchedule"}, true},
		{"ready, not-ready removed", corev1.ConditionTrue, []corev1.Taint{oldNotReady}, nil, true},
		{"unknown, tainted", corev1.ConditionUnknown, nil, []string{"node.kubernetes.io/unreachable:NoExecute"}, true},
		{"unknown, already tainted", corev1.ConditionUnknown, []corev1.Taint{other, oldUnreachable},
			[]string{"dedicated=gpu:NoSchedule", "node.kubernetes.io/unreachable:NoExecute"}, false},
		{"unknown after false swaps taints", corev1.ConditionUnknown, []corev1.Taint{oldNotReady},
			[]string{"node.kubernetes.io/unreachable:NoExecute"}, true},
		{"false, tainted not-ready", corev1.ConditionFalse, []corev1.Taint{other},
			[]string{"dedicated=gpu:NoSchedule", "node.kubernetes.io/not-ready:NoExecute"}, true},
		{"false after unknown swaps taints", corev1.ConditionFalse, []corev1.Taint{oldUnreachable},
			[]string{"node.kubernetes.io/not-ready:NoExecute"}, true},
		{"no ready condition keeps taints", "", []corev1.Taint{oldUnreachable},
			[]string{"node.kubernetes.io/unreachable:NoExecute"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := withConditions()
			if tc.ready != "" {
				node = withConditions(cond(corev1.NodeReady, tc.ready))
			}
			node.Spec.Taints = tc.taints
			got, changed := wantTaints(node, t1)
			if changed != tc.changed {
				t.Errorf("wantTaints changed = %v, want %v", changed, tc.changed)
			}
			var keys []string
			for _, tt := range got {
				keys = append(keys, tt.ToString())
				if tt.MatchTaint(&oldUnreachable) || tt.MatchTaint(&oldNotReady) {
					wantAdded := t1
					if slices.ContainsFunc(tc.taints, func(o corev1.Taint) bool { return o.MatchTaint(&tt) }) {
						wantAdded = t0 // kept taints keep their time
					}
					if tt.TimeAdded == nil || !tt.TimeAdded.Time.Equal(wantAdded) {
						t.Errorf("taint %s timeAdded = %v, want %v", tt.ToString(), tt.TimeAdded, wantAdded)
					}
				}
			}
			if !slices.Equal(keys, tc.want) {
				t.Errorf("wantTaints = %v, want %v", keys, tc.want)
			}
		})
	}
}
