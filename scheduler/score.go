package scheduler

import (
	corev1 "k8s.io/api/core/v1"
)

// maxScore is the score of an empty node.
const maxScore = 100

// leastRequested scores node n for pod: the share of the node's CPU and
// memory that would stay free with the pod on it, averaged and scaled to
// 0..100. Requests count with the non-zero defaults, so pods that state
// none still spread.
func leastRequested(pod *podInfo, n *nodeInfo) int64 {
	free := func(alloc, used int64) int64 {
		if alloc <= 0 || used >= alloc {
			return 0
		}
		return (alloc - used) * maxScore / alloc
	}
	cpu := free(n.allocatable(corev1.ResourceCPU), n.nonZeroCPU+pod.nonZeroCPU)
	mem := free(n.allocatable(corev1.ResourceMemory), n.nonZeroMemory+pod.nonZeroMemory)
	return (cpu + mem) / 2
}

// choose returns the name of the best-scoring node among fit, picking at
// random among equals with pick (which returns a number in [0, n)).
func choose(pod *podInfo, fit []*nodeInfo, pick func(n int) int) string {
	var best []*nodeInfo
	bestScore := int64(-1)
	for _, n := range fit {
		switch s := leastRequested(pod, n); {
		case s > bestScore:
			best, bestScore = append(best[:0], n), s
		case s == bestScore:
			best = append(best, n)
		}
	}
	if len(best) == 0 {
		return ""
	}
	return best[pick(len(best))].node.Name
}
