//go:build !linux

package kubelet

// diskCapacity is unknown off Linux.
func diskCapacity(string) int64 { return 0 }
