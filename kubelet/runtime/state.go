package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Files in a bundle directory (see the package documentation).
const (
	metaFile       = "meta.json"
	shimConfigFile = "shim.json"
	shimPidFile    = "shim.pid"
	startedFile    = "started.json"
	exitFile       = "exit.json"
	runcLogFile    = "runc.log"
	shimLogFile    = "shim.log"
	initPidFile    = "init.pid"
	attachSocket   = "attach.sock"
	rootfsDir      = "rootfs"
)

// meta is what Start records about a container.
type meta struct {
	ID          string            `json:"id"`
	Labels      map[string]string `json:"labels,omitempty"`
	CreatedAt   time.Time         `json:"createdAt"`
	CgroupsPath string            `json:"cgroupsPath,omitempty"`
	LogPath     string            `json:"logPath"`
}

// shimConfig is what the shim needs to run a container.
type shimConfig struct {
	ID         string `json:"id"`
	Runc       string `json:"runc"`
	RuncRoot   string `json:"runcRoot"`
	LogPath    string `json:"logPath"`
	LogMaxSize int64  `json:"logMaxSize"`
	OOMControl string `json:"oomControl,omitempty"` // memory.oom_control of the container's cgroup
	Stdin      bool   `json:"stdin,omitempty"`
	StdinOnce  bool   `json:"stdinOnce,omitempty"`
	TTY        bool   `json:"tty,omitempty"`
}

// shimReport is what the shim tells Start over the report pipe.
type shimReport struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// proc identifies a process across pid reuse: its pid and its start time
// in clock ticks since boot (field 22 of /proc/<pid>/stat).
type proc struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

// started records the container's init process.
type started struct {
	proc
	StartedAt time.Time `json:"startedAt"`
}

// exitStatus records how a container ended.
type exitStatus struct {
	ExitCode   int       `json:"exitCode"`
	FinishedAt time.Time `json:"finishedAt"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`
}

// procStat returns the state letter and start time of pid.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], start, err
}

// procOf returns the identity of a running process.
func procOf(pid int) (proc, error) {
	_, start, err := procStat(pid)
	return proc{Pid: pid, StartTime: start}, err
}

// alive reports whether p still runs (and is not a zombie).
func (p proc) alive() bool {
	if p.Pid <= 0 {
		return false
	}
	state, start, err := procStat(p.Pid)
	return err == nil && state != 'Z' && start == p.StartTime
}

// open returns a pidfd for p, checking after opening it that the pid was
// not reused.
func (p proc) open() (int, error) {
	if p.Pid <= 0 {
		return -1, unix.ESRCH
	}
	fd, err := unix.PidfdOpen(p.Pid, 0)
	if err != nil {
		return -1, err
	}
	if _, start, err := procStat(p.Pid); err != nil || start != p.StartTime {
		unix.Close(fd)
		return -1, unix.ESRCH
	}
	return fd, nil
}

// pollPidfd waits until the process behind fd exits, for up to timeout
// (negative: no limit) or until ctx ends.
func pollPidfd(ctx context.Context, fd int, timeout time.Duration) (exited bool, err error) {
	deadline := time.Now().Add(timeout)
	for {
		wait := 100 * time.Millisecond
		if timeout >= 0 {
			left := time.Until(deadline)
			if left <= 0 {
				return false, nil
			}
			wait = min(wait, left)
		}
		ms := int((wait + time.Millisecond - 1) / time.Millisecond)
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false, fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return true, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
}

// writeJSON writes v to path atomically.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// cgroupMounts returns the mount points of every cgroup hierarchy (v1 and
// v2) and the one of the v1 memory controller.
func cgroupMounts() (all []string, memory string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || (qf[0] != "cgroup" && qf[0] != "cgroup2") {
			continue
		}
		mp := unescapeMount(pf[4])
		if slices.Contains(all, mp) {
			continue
		}
		all = append(all, mp)
		if qf[0] == "cgroup" && memory == "" && slices.Contains(strings.Split(qf[2], ","), "memory") {
			memory = mp
		}
	}
	return all, memory, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the cgroup path from every hierarchy, and its
// parent where that is now empty.
func (r *Runtime) removeCgroups(path string) error {
	if path == "" || path == "/" {
		return nil
	}
	var errs []error
	for _, h := range r.cgroups {
		dir := filepath.Join(h, path)
		var err error
		// Tasks may take a moment to leave a cgroup after being killed.
		for range 50 {
			if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
		}
		if parent := filepath.Dir(path); parent != "/" {
			unix.Rmdir(filepath.Join(h, parent)) // fails unless empty, as intended
		}
	}
	return errors.Join(errs...)
}

// boundingSet returns this process's capability bounding set.
func boundingSet() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ^uint64(0)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil {
				return n
			}
		}
	}
	return ^uint64(0)
}

// mountRootfs mounts an overlayfs of lowers (bottom first) at dir/rootfs,
// with its upper and work directories in dir.
func mountRootfs(dir string, lowers []string) error {
	rootfs, upper, work := filepath.Join(dir, rootfsDir), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{rootfs, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	top := make([]string, 0, len(lowers))
	for i := len(lowers) - 1; i >= 0; i-- {
		l := lowers[i]
		if !filepath.IsAbs(l) || strings.ContainsAny(l, ":,") {
			return fmt.Errorf("mount rootfs: layer directory %q must be an absolute path without ':' or ','", l)
		}
		top = append(top, l)
	}
	opts := "lowerdir=" + strings.Join(top, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(opts) >= os.Getpagesize() {
		return fmt.Errorf("mount rootfs: %d layers make overlay options longer than a page", len(lowers))
	}
	if err := unix.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount rootfs: overlay %s: %w", opts, err)
	}
	return nil
}

// unmountRootfs unmounts dir/rootfs if it is mounted.
func (r *Runtime) unmountRootfs(dir string) error {
	rootfs := filepath.Join(dir, rootfsDir)
	for range 10 { // undo stacked mounts too
		err := unix.Unmount(rootfs, 0)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EBUSY):
			if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount rootfs: %w", err)
			}
		default:
			return fmt.Errorf("unmount rootfs: %w", err)
		}
	}
	return fmt.Errorf("unmount rootfs %s: still mounted", rootfs)
}
