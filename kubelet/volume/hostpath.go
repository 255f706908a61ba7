package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
)

// checkHostPath makes sure a hostPath volume's path is what its type asks
// for, creating it for the *OrCreate types.
func checkHostPath(src *corev1.HostPathVolumeSource) error {
	path := src.Path
	if !filepath.IsAbs(path) {
		return fmt.Errorf("hostPath %q is not an absolute path", path)
	}
	typ := corev1.HostPathUnset
	if src.Type != nil {
		typ = *src.Type
	}
	fi, err := os.Stat(path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("hostPath %q: %w", path, err)
	}
	switch typ {
	case corev1.HostPathUnset:
		return nil
	case corev1.HostPathDirectoryOrCreate:
		if !exists {
			if err := os.MkdirAll(path, 0o755); err != nil {
				return fmt.Errorf("hostPath %q: create directory: %w", path, err)
			}
			return nil
		}
		return expectType(path, fi, typ, fi.IsDir(), "a directory")
	case corev1.HostPathFileOrCreate:
		if !exists {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return fmt.Errorf("hostPath %q: create parent directory: %w", path, err)
			}
			f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
			if err != nil {
				return fmt.Errorf("hostPath %q: create file: %w", path, err)
			}
			return f.Close()
		}
		return expectType(path, fi, typ, fi.Mode().IsRegular(), "a file")
	}
	if !exists {
		return fmt.Errorf("hostPath %q does not exist (type %s)", path, typ)
	}
	mode := fi.Mode()
	switch typ {
	case corev1.HostPathDirectory:
		return expectType(path, fi, typ, fi.IsDir(), "a directory")
	case corev1.HostPathFile:
		return expectType(path, fi, typ, mode.IsRegular(), "a file")
	case corev1.HostPathSocket:
		return expectType(path, fi, typ, mode&fs.ModeSocket != 0, "a socket")
	case corev1.HostPathCharDev:
		return expectType(path, fi, typ, mode&fs.ModeCharDevice != 0, "a character device")
	case corev1.HostPathBlockDev:
		return expectType(path, fi, typ, mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0, "a block device")
	}
	return fmt.Errorf("hostPath %q: unknown type %q", path, typ)
}

func expectType(path string, fi fs.FileInfo, typ corev1.HostPathType, ok bool, want string) error {
	if ok {
		return nil
	}
	return fmt.Errorf("hostPath %q is %s, not %s (type %s)", path, describeMode(fi.Mode()), want, typ)
}

func describeMode(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a file"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	}
	return "of another kind"
}
