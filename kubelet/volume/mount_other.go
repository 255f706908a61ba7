//go:build !linux

package volume

import (
	"errors"
	"os"
	"runtime"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

var errNoMounts = errors.New("volume: tmpfs mounts need Linux")

func mountTmpfs(dir string, size int64, mode os.FileMode) error { return errNoMounts }
func isMountPoint(dir string) (bool, error)                     { return false, nil }
func mountsUnder(dir string) ([]string, error)                  { return nil, nil }
func unmount(path string) error                                 { return errNoMounts }
func canMount() bool                                            { return false }

func machineAllocatable() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU: *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
	}
}
