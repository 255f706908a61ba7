package volume

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

type statfs struct{ size int64 }

func statFS(path string, out *statfs) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return err
	}
	out.size = int64(st.Blocks) * st.Bsize
	return nil
}

func makeSocket(t *testing.T, path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	t.Cleanup(func() { ln.Close() })
	return nil
}

var (
	tmpfsOnce sync.Once
	tmpfsErr  error
)

// tmpfsAvailable reports whether this process can mount a tmpfs, and why
// not.
func tmpfsAvailable(t *testing.T) error {
	tmpfsOnce.Do(func() {
		if !canMount() {
			tmpfsErr = errors.New("not root")
			return
		}
		dir, err := os.MkdirTemp("", "volume-tmpfs-probe")
		if err != nil {
			tmpfsErr = err
			return
		}
		defer os.Remove(dir)
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4096"); err != nil {
			tmpfsErr = fmt.Errorf("mount tmpfs: %w", err)
			return
		}
		tmpfsErr = syscall.Unmount(dir, 0)
	})
	return tmpfsErr
}

// TestTmpfs checks the memory-backed volumes as mounted: sizes, options,
// root modes, and that Teardown unmounts them.
func TestTmpfs(t *testing.T) {
	if err := tmpfsAvailable(t); err != nil {
		t.Skipf("tmpfs mounts need root with CAP_SYS_ADMIN: %v", err)
	}
	f := newFixture(t, secret("creds", map[string]string{"k": "v"}))
	pod := testPod(
		corev1.Volume{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds", DefaultMode: ptr[int32](0o400)}}},
		corev1.Volume{Name: "p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
		}}}},
		corev1.Volume{Name: "m", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr(mustQuantity("2Mi")),
		}}},
	)
	mounts, err := f.m.Setup(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		volume string
		size   int64
		mode   os.FileMode
	}{
		{"s", DefaultMemoryVolumeSize, 0o755},
		{"p", DefaultMemoryVolumeSize, 0o755},
		{"m", 2 << 20, 0o777},
	}
	for _, tt := range tests {
		dir := mounts[tt.volume].HostPath
		var st statfs
		if err := statFS(dir, &st); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		opts := mountOptions(t, dir)
		if st.size != tt.size || fi.Mode().Perm() != tt.mode || !strings.Contains(opts, "nosuid") || !strings.Contains(opts, "nodev") {
			t.Errorf("volume %s: size %d, mode %v, options %s; want size %d, mode %v, nosuid,nodev",
				tt.volume, st.size, fi.Mode().Perm(), opts, tt.size, tt.mode)
		}
	}
	// Setup again does not stack mounts.
	f.clock.Advance(time.Hour)
	if _, err := f.m.Setup(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if got, _ := mountsUnder(f.m.PodDir(pod.UID)); len(got) != 3 {
		t.Errorf("mounts after a second Setup = %v, want 3", got)
	}
	if err := f.m.Teardown(t.Context(), pod.UID); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if got, _ := mountsUnder(f.m.PodDir(pod.UID)); len(got) != 0 {
		t.Errorf("mounts after Teardown = %v, want none", got)
	}
	if _, err := os.Lstat(f.m.PodDir(pod.UID)); !os.IsNotExist(err) {
		t.Errorf("pod dir after Teardown: %v, want it gone", err)
	}
}

// mountOptions returns the per-mount options of the mount at dir.
func mountOptions(t *testing.T, dir string) string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		if len(fields) > 5 && unescapeMountinfo(fields[4]) == dir {
			return fields[5]
		}
	}
	t.Fatalf("%s is not in mountinfo", dir)
	return ""
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:              "/a/b",
		`/with\040space`:    "/with space",
		`/tab\011and\134bs`: "/tab\tand\\bs",
		`/trailing\04`:      `/trailing\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
