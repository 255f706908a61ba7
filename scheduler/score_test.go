package scheduler

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestLeastRequested(t *testing.T) {
	tests := []struct {
		name    string
		running []*corev1.Pod
		pod     *corev1.Pod
		want    int64
	}{
		// cpu 2, memory 4Gi.
		{"empty node, 1 cpu 2Gi", nil, testPod("p", res("1", "2Gi")), 50},
		{"empty node, cpu only", nil, testPod("p", res("1", "")), (50 + 95) / 2}, // 200Mi of 4Gi counted for memory
		{"best effort counts defaults", nil, testPod("p", nil), (95 + 95) / 2},
		{"half used", []*corev1.Pod{testPod("a", res("1", "2Gi"))}, testPod("p", res("500m", "1Gi")), 25},
		{"full", []*corev1.Pod{testPod("a", res("2", "4Gi"))}, testPod("p", res("1", "1Gi")), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNodeInfo(testNode("n1"))
			for _, p := range tt.running {
				n.add(podKey(p), newPodInfo(p))
			}
			if got := leastRequested(newPodInfo(tt.pod), n); got != tt.want {
				t.Errorf("leastRequested() = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestChoose(t *testing.T) {
	busy := newNodeInfo(testNode("busy"))
	busy.add("ns/a", newPodInfo(testPod("a", res("1", "2Gi"))))
	idle1, idle2 := newNodeInfo(testNode("idle1")), newNodeInfo(testNode("idle2"))
	big := newNodeInfo(testNode("big", func(n *corev1.Node) {
		n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("8")
		n.Status.Allocatable[corev1.ResourceMemory] = resource.MustParse("16Gi")
	}))
	pod := newPodInfo(testPod("p", res("500m", "1Gi")))

	if got := choose(pod, []*nodeInfo{busy, idle1, big}, func(int) int { return 0 }); got != "big" {
		t.Errorf("choose(busy, idle1, big) = %q, want big (most left free)", got)
	}
	// Ties are broken by pick, over the tied nodes only.
	var seen int
	pick := func(n int) int { seen = n; return n - 1 }
	if got := choose(pod, []*nodeInfo{busy, idle1, idle2}, pick); got != "idle2" || seen != 2 {
		t.Errorf("choose(busy, idle1, idle2) = %q with pick over %d, want idle2 with pick over 2", got, seen)
	}
	if got := choose(pod, nil, pick); got != "" {
		t.Errorf("choose(no nodes) = %q, want empty", got)
	}
}
