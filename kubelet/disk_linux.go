package kubelet

import "syscall"

// diskCapacity returns the size of the file system holding path, or 0.
func diskCapacity(path string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0
	}
	return int64(st.Blocks) * int64(st.Bsize)
}
