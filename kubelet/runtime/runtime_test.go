package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// shimEnv makes the test binary act as the shim (see TestMain).
const shimEnv = "TETHER_TEST_SHIM=1"

func TestMain(m *testing.M) {
	if os.Getenv("TETHER_TEST_SHIM") == "1" {
		os.Exit(ShimMain(os.Args[1:]))
	}
	if a := os.Getenv("TETHER_TEST_AGENT"); a != "" {
		os.Exit(agentMain(a))
	}
	code := m.Run()
	if busyboxDir != "" {
		os.RemoveAll(filepath.Dir(busyboxDir))
	}
	os.Exit(code)
}

var (
	rootfsOnce sync.Once
	busyboxDir string
	rootfsErr  error
)

// busyboxRootfs returns a directory with busybox and its applets, built
// once per test run.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	rootfsOnce.Do(func() {
		rootfsErr = func() error {
			tmp, err := os.MkdirTemp("", "tether-rootfs-")
			if err != nil {
				return err
			}
			dir := filepath.Join(tmp, "rootfs")
			for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
				if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
					return err
				}
			}
			os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
			bb, err := os.ReadFile("/usr/bin/busybox")
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), bb, 0o755); err != nil {
				return err
			}
			out, err := exec.Command("/usr/bin/busybox", "--list").Output()
			if err != nil {
				return err
			}
			for _, name := range strings.Fields(string(out)) {
				if name == "busybox" {
					continue
				}
				if err := os.Symlink("busybox", filepath.Join(dir, "bin", name)); err != nil {
					return err
				}
			}
			passwd := "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
			if err := os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte(passwd), 0o644); err != nil {
				return err
			}
			group := "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"
			if err := os.WriteFile(filepath.Join(dir, "etc", "group"), []byte(group), 0o644); err != nil {
				return err
			}
			busyboxDir = dir
			return nil
		}()
	})
	if rootfsErr != nil {
		t.Fatalf("build busybox rootfs: %v", rootfsErr)
	}
	return busyboxDir
}

// needRunc skips tests that run containers where they cannot.
func needRunc(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: running containers needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("skipping: runc is not installed")
	}
	if _, err := os.Stat("/usr/bin/busybox"); err != nil {
		t.Skip("skipping: /usr/bin/busybox (busybox-static) is not installed")
	}
}

func randomName() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// testEnv is a Runtime with its own state directory and cgroup parent.
type testEnv struct {
	t      *testing.T
	cfg    Config
	rt     *Runtime
	cgroup string // "/tether-test-<random>"
	logDir string
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	needRunc(t)
	shim, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{t: t, cgroup: "/tether-test-" + randomName(), logDir: t.TempDir()}
	env.cfg = Config{
		StateDir:    t.TempDir(),
		ShimCommand: []string{shim},
		// Under -race, a process otherwise sleeps 1s before exiting.
		ShimEnv: []string{shimEnv, "GORACE=atexit_sleep_ms=0"},
	}
	if env.rt, err = New(env.cfg); err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		cs, _ := env.rt.List(ctx)
		for _, c := range cs {
			if err := env.rt.Remove(ctx, c.ID); err != nil {
				t.Errorf("cleanup: Remove(%s): %v", c.ID, err)
			}
		}
		for _, h := range env.rt.cgroups {
			os.Remove(filepath.Join(h, env.cgroup, "pod"))
			os.Remove(filepath.Join(h, env.cgroup))
		}
	})
	return env
}

// spec returns a ContainerSpec for a busybox container running args.
func (e *testEnv) spec(id string, args ...string) ContainerSpec {
	return ContainerSpec{
		ID:          id,
		Labels:      map[string]string{"io.kubernetes.container.name": id},
		LowerDirs:   []string{busyboxRootfs(e.t)},
		Args:        args,
		Hostname:    id,
		CgroupsPath: e.cgroup + "/pod/" + id,
		LogPath:     filepath.Join(e.logDir, id, "0.log"),
	}
}

func (e *testEnv) start(spec ContainerSpec) time.Duration {
	e.t.Helper()
	begin := time.Now()
	if err := e.rt.Start(e.t.Context(), spec); err != nil {
		e.t.Fatalf("Start(%s): %v", spec.ID, err)
	}
	return time.Since(begin)
}

// waitExited polls Status until the container has exited.
func (e *testEnv) waitExited(id string, timeout time.Duration) Container {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := e.rt.Status(e.t.Context(), id)
		if err != nil {
			e.t.Fatalf("Status(%s): %v", id, err)
		}
		if c.State == StateExited {
			return c
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s is still %s after %v", id, c.State, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLog polls the log file until it contains want.
func (e *testEnv) waitLog(path, want string, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("log %s = %q; want %q within %v", path, b, want, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read log: %v", err)
	}
	return string(b)
}

var criLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (stdout|stderr) [FP] `)

func TestOutputAndExitCode(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("echo", "sh", "-c", "echo hello; echo oops >&2; exit 3")
	took := e.start(spec)
	t.Logf("Start took %v", took)
	c := e.waitExited("echo", 5*time.Second)
	if c.ExitCode != 3 || c.Reason != ReasonError || c.OOMKilled {
		t.Errorf("exit = code %d reason %q oom %v, want 3 Error false", c.ExitCode, c.Reason, c.OOMKilled)
	}
	if c.StartedAt.IsZero() || c.FinishedAt.Before(c.StartedAt) || c.CreatedAt.After(c.StartedAt) {
		t.Errorf("times: created %v started %v finished %v", c.CreatedAt, c.StartedAt, c.FinishedAt)
	}
	if c.Labels["io.kubernetes.container.name"] != "echo" || c.Pid <= 0 {
		t.Errorf("Status = %+v, want labels and a pid", c)
	}
	log := readLog(t, spec.LogPath)
	for _, line := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		if !criLine.MatchString(line) {
			t.Errorf("log line %q is not in CRI format", line)
		}
	}
	for _, want := range []string{" stdout F hello\n", " stderr F oops\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("log = %q, want a line ending %q", log, want)
		}
	}
}

func TestProcessSettings(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("settings", "sh", "-c", `echo "$FOO|$0|$1|$(pwd)|$(id -u):$(id -g)|$(id -G)|$(hostname)|$(ulimit -n)"`, "zero", "one")
	spec.Env = []string{"FOO=bar baz"}
	spec.WorkingDir = "/tmp"
	spec.UID, spec.GID, spec.AdditionalGIDs = 1000, 1000, []uint32{2000}
	spec.Hostname = "myhost"
	e.start(spec)
	if c := e.waitExited("settings", 5*time.Second); c.ExitCode != 0 || c.Reason != ReasonCompleted {
		t.Errorf("exit = %d %q, want 0 Completed", c.ExitCode, c.Reason)
	}
	want := fmt.Sprintf(" stdout F bar baz|zero|one|/tmp|1000:1000|1000 2000|myhost|%d\n", e.rt.nofile)
	if log := readLog(t, spec.LogPath); !strings.Contains(log, want) {
		t.Errorf("log = %q, want %q", log, want)
	}
}

func TestOOMKilled(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("oom", "sh", "-c", "head -c 100m /dev/zero | tail")
	spec.MemoryLimit = 32 << 20
	e.start(spec)
	c := e.waitExited("oom", 20*time.Second)
	if !c.OOMKilled || c.ExitCode != 137 || c.Reason != ReasonOOMKilled {
		t.Errorf("exit = code %d oom %v reason %q, want 137 true OOMKilled", c.ExitCode, c.OOMKilled, c.Reason)
	}
}

func TestStopAfterGrace(t *testing.T) {
	e := newTestEnv(t)
	// sh as PID 1 ignores SIGTERM: Stop must kill it after the grace period.
	e.start(e.spec("stubborn", "sh", "-c", "sleep 3600; echo unreachable"))
	begin := time.Now()
	if err := e.rt.Stop(t.Context(), "stubborn", time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	took := time.Since(begin)
	if took < time.Second || took > 1500*time.Millisecond {
		t.Errorf("Stop took %v, want about 1s", took)
	}
	c, err := e.rt.Status(t.Context(), "stubborn")
	if err != nil || c.State != StateExited || c.ExitCode != 137 {
		t.Errorf("Status after Stop = %+v, %v; want exited with 137", c, err)
	}
	if err := e.rt.Stop(t.Context(), "stubborn", time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	// The exited shim is reaped, not left a zombie.
	var sp proc
	readJSON(filepath.Join(e.cfg.StateDir, "stubborn", shimPidFile), &sp)
	for deadline := time.Now().Add(2 * time.Second); exists(fmt.Sprintf("/proc/%d", sp.Pid)); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			st, _, _ := procStat(sp.Pid)
			t.Fatalf("shim %d still exists in state %c", sp.Pid, st)
		}
	}
}

func TestStopGraceful(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("polite", "sh", "-c", `trap "exit 0" TERM; echo ready; while true; do sleep 0.05; done`)
	e.start(spec)
	// A SIGTERM before the trap is set would be lost (sh is PID 1).
	e.waitLog(spec.LogPath, "F ready\n", 5*time.Second)
	begin := time.Now()
	if err := e.rt.Stop(t.Context(), "polite", 10*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("Stop took %v, want the container to exit on SIGTERM", took)
	}
	if c, _ := e.rt.Status(t.Context(), "polite"); c.ExitCode != 0 {
		t.Errorf("exit code = %d, want 0", c.ExitCode)
	}
}

func TestRemove(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("doomed", "sleep", "3600")
	e.start(spec)
	var cgroupDirs []string
	for _, h := range e.rt.cgroups {
		if d := filepath.Join(h, spec.CgroupsPath); exists(d) {
			cgroupDirs = append(cgroupDirs, d, filepath.Dir(d))
		}
	}
	if len(cgroupDirs) == 0 {
		t.Fatal("the container has no cgroup directories")
	}
	if err := e.rt.Remove(t.Context(), "doomed"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	out, err := exec.Command("runc", "--root", e.rt.cfg.RuncRoot, "list", "-q").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("runc list = %q, %v; want nothing", out, err)
	}
	if exists(filepath.Join(e.cfg.StateDir, "doomed")) {
		t.Error("the bundle is still there")
	}
	for _, d := range cgroupDirs {
		if exists(d) {
			t.Errorf("cgroup %s is still there", d)
		}
	}
	if !exists(spec.LogPath) {
		t.Error("Remove removed the log file")
	}
	if _, err := e.rt.Status(t.Context(), "doomed"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status after Remove: %v, want ErrNotFound", err)
	}
	if err := e.rt.Remove(t.Context(), "doomed"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestAdoptAfterRestart(t *testing.T) {
	e := newTestEnv(t)
	e.start(e.spec("survivor", "sleep", "3600"))
	before, err := e.rt.Status(t.Context(), "survivor")
	if err != nil || before.State != StateRunning {
		t.Fatalf("Status = %+v, %v; want running", before, err)
	}
	var sp proc
	if err := readJSON(filepath.Join(e.cfg.StateDir, "survivor", shimPidFile), &sp); err != nil {
		t.Fatal(err)
	}
	if sid, _ := unix.Getsid(sp.Pid); sid != sp.Pid {
		t.Errorf("shim session = %d, want its own (%d)", sid, sp.Pid)
	}
	// A new agent on the same state directory.
	rt2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	list, err := rt2.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != "survivor" || list[0].Pid != before.Pid || list[0].State != StateRunning {
		t.Fatalf("List = %+v, want survivor running with pid %d", list, before.Pid)
	}
	if err := rt2.Stop(t.Context(), "survivor", 0); err != nil {
		t.Fatal(err)
	}
	if c, _ := rt2.Status(t.Context(), "survivor"); c.State != StateExited || c.ExitCode != 137 {
		t.Errorf("after Stop: %+v, want exited 137", c)
	}
}

func TestExecSync(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("exec", "sleep", "3600")
	spec.Env = []string{"GREETING=hi"}
	e.start(spec)
	stdout, stderr, code, err := e.rt.ExecSync(t.Context(), "exec", []string{"sh", "-c", "echo $GREETING; echo err >&2; exit 4"}, 5*time.Second)
	if err != nil || string(stdout) != "hi\n" || string(stderr) != "err\n" || code != 4 {
		t.Errorf("ExecSync = %q, %q, %d, %v; want hi, err, 4", stdout, stderr, code, err)
	}
	begin := time.Now()
	_, _, _, err = e.rt.ExecSync(t.Context(), "exec", []string{"sleep", "30"}, 200*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(begin) > 2*time.Second {
		t.Errorf("ExecSync past its timeout: %v after %v; want DeadlineExceeded soon", err, time.Since(begin))
	}
	if _, _, _, err = e.rt.ExecSync(t.Context(), "exec", []string{"no-such-command"}, 5*time.Second); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("ExecSync(missing command) error = %v, want runc's not found", err)
	}
}

func TestExecStreaming(t *testing.T) {
	e := newTestEnv(t)
	e.start(e.spec("stream", "sleep", "3600"))
	var out, errOut bytes.Buffer
	code, err := e.rt.Exec(t.Context(), "stream", []string{"sh", "-c", "cat; echo done >&2"}, strings.NewReader("from stdin\n"), &out, &errOut, false, nil)
	if err != nil || code != 0 || out.String() != "from stdin\n" || errOut.String() != "done\n" {
		t.Errorf("Exec = %d, %v, stdout %q, stderr %q", code, err, out.String(), errOut.String())
	}
	t.Run("tty", func(t *testing.T) {
		out.Reset()
		sizes := make(chan Size, 1)
		sizes <- Size{Width: 123, Height: 45}
		code, err := e.rt.Exec(t.Context(), "stream", []string{"sh", "-c", "sleep 0.2; tty; stty size"}, nil, &out, nil, true, sizes)
		if err != nil || code != 0 || !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "45 123") {
			t.Errorf("Exec(tty) = %d, %v, output %q; want a pty of 45x123", code, err, out.String())
		}
	})
}

func TestStartError(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("broken", "/no/such/binary")
	err := e.rt.Start(t.Context(), spec)
	if !errors.Is(err, ErrStartFailed) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Start = %v, want ErrStartFailed with runc's message", err)
	}
	c, err := e.rt.Status(t.Context(), "broken")
	if err != nil || c.State != StateExited || c.ExitCode != StartFailedExitCode || c.Reason != ReasonStartError || !strings.Contains(c.Message, "no such file") {
		t.Errorf("Status = %+v, %v; want exited 128 StartError with runc's message", c, err)
	}
	if exists(filepath.Join(e.rt.cfg.RuncRoot, "broken")) {
		t.Error("runc state left behind")
	}
	if err := e.rt.Start(t.Context(), spec); !errors.Is(err, ErrExists) {
		t.Errorf("Start again = %v, want ErrExists", err)
	}
	if err := e.rt.Remove(t.Context(), "broken"); err != nil {
		t.Errorf("Remove: %v", err)
	}
}

func TestTTYAndStdin(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("tty", "sh", "-c", "tty")
	spec.TTY = true
	e.start(spec)
	e.waitExited("tty", 5*time.Second)
	if log := readLog(t, spec.LogPath); !strings.Contains(log, " stdout F /dev/pts/0\r") {
		t.Errorf("log = %q, want the pty name", log)
	}

	// With Stdin, cat waits for input instead of seeing EOF.
	spec = e.spec("stdin", "cat")
	spec.Stdin = true
	e.start(spec)
	stdout, _, _, err := e.rt.ExecSync(t.Context(), "stdin", []string{"sh", "-c", "ls -l /proc/1/fd/0"}, 5*time.Second)
	if err != nil || !strings.Contains(string(stdout), "pipe:") {
		t.Errorf("container stdin = %q, %v; want a pipe", stdout, err)
	}
	if c, _ := e.rt.Status(t.Context(), "stdin"); c.State != StateRunning {
		t.Errorf("cat with stdin is %s, want running", c.State)
	}
}

func TestStartLatency(t *testing.T) {
	e := newTestEnv(t)
	var total time.Duration
	const n = 5
	for i := range n {
		id := "lat" + string(rune('a'+i))
		total += e.start(e.spec(id, "sleep", "3600"))
	}
	t.Logf("mean Start latency over %d containers: %v", n, total/n)
	list, err := e.rt.List(t.Context())
	if err != nil || len(list) != n {
		t.Fatalf("List = %d containers, %v", len(list), err)
	}
	begin := time.Now()
	for range 100 {
		e.rt.List(t.Context())
	}
	t.Logf("List of %d containers took %v", n, time.Since(begin)/100)
}

func TestMountsAndReadOnlyRootfs(t *testing.T) {
	e := newTestEnv(t)
	host := filepath.Join(t.TempDir(), "data", "missing") // created by Start
	ro := t.TempDir()
	os.WriteFile(filepath.Join(ro, "f"), []byte("ro-content\n"), 0o644)
	spec := e.spec("mounts", "sh", "-c", `echo hi > /data/out && cat /ro/f && (touch /ro/x 2>/dev/null || echo ro-ok) && (touch /newfile 2>/dev/null || echo rootfs-ro)`)
	spec.Mounts = []Mount{{HostPath: host, ContainerPath: "/data"}, {HostPath: ro, ContainerPath: "/ro", ReadOnly: true}}
	spec.ReadOnlyRootfs = true
	e.start(spec)
	if c := e.waitExited("mounts", 5*time.Second); c.ExitCode != 0 {
		t.Errorf("exit code = %d; log %q", c.ExitCode, readLog(t, spec.LogPath))
	}
	if b, err := os.ReadFile(filepath.Join(host, "out")); err != nil || string(b) != "hi\n" {
		t.Errorf("host file = %q, %v; want hi", b, err)
	}
	log := readLog(t, spec.LogPath)
	for _, want := range []string{"F ro-content\n", "F ro-ok\n", "F rootfs-ro\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("log = %q, want %q", log, want)
		}
	}
}

func TestPrivilegedAndNetNS(t *testing.T) {
	e := newTestEnv(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: iproute2 is not installed")
	}
	netns := "tether-test-" + randomName()
	if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
		t.Skipf("skipping: ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", netns).Run() })
	nsPath := "/var/run/netns/" + netns
	var st unix.Stat_t
	if err := unix.Stat(nsPath, &st); err != nil {
		t.Fatal(err)
	}
	spec := e.spec("priv", "sh", "-c", `readlink /proc/self/ns/net; grep CapEff /proc/self/status`)
	spec.Privileged = true
	spec.NetNSPath = nsPath
	e.start(spec)
	if c := e.waitExited("priv", 5*time.Second); c.ExitCode != 0 {
		t.Errorf("exit code = %d", c.ExitCode)
	}
	log := readLog(t, spec.LogPath)
	if want := fmt.Sprintf("F net:[%d]\n", st.Ino); !strings.Contains(log, want) {
		t.Errorf("log = %q, want the container in %s (%s)", log, nsPath, want)
	}
	if want := fmt.Sprintf("CapEff:\t%016x\n", e.rt.capBnd); !strings.Contains(log, want) {
		t.Errorf("log = %q, want %q", log, want)
	}
}

// TestTetherBinaryShim runs a container with the real tether binary as the
// shim ("tether shim"). Set TETHER_BINARY to the built binary to run it.
func TestTetherBinaryShim(t *testing.T) {
	bin := os.Getenv("TETHER_BINARY")
	if bin == "" {
		t.Skip("skipping: set TETHER_BINARY to a built tether binary")
	}
	e := newTestEnv(t)
	cfg := e.cfg
	cfg.ShimCommand, cfg.ShimEnv = []string{bin, "shim"}, nil
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	spec := e.spec("real-shim", "sh", "-c", "echo from-tether; sleep 3600")
	begin := time.Now()
	if err := rt.Start(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	t.Logf("Start with %s took %v", bin, time.Since(begin))
	e.waitLog(spec.LogPath, "stdout F from-tether\n", 5*time.Second)
	if err := rt.Stop(t.Context(), "real-shim", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if c, _ := rt.Status(t.Context(), "real-shim"); c.State != StateExited || c.ExitCode != 137 {
		t.Errorf("Status = %+v, want exited 137", c)
	}

	spec = e.spec("real-attach", "cat")
	spec.Stdin, spec.StdinOnce = true, true
	if err := rt.Start(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	if err := rt.Attach(t.Context(), "real-attach", strings.NewReader("via-attach\n"), &out, nil, nil); err != nil {
		t.Errorf("Attach: %v", err)
	}
	if out.String() != "via-attach\n" {
		t.Errorf("attached output = %q, want via-attach", out.String())
	}
	if c := e.waitExited("real-attach", 5*time.Second); c.ExitCode != 0 {
		t.Errorf("exit code = %d, want 0", c.ExitCode)
	}
}

// agentMain is a short-lived "agent" process: it starts the container
// described by the JSON in arg and exits, leaving it to its shim.
func agentMain(arg string) int {
	var a struct {
		Config Config
		Spec   ContainerSpec
	}
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rt, err := New(a.Config)
	if err == nil {
		err = rt.Start(context.Background(), a.Spec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestContainerOutlivesAgent(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("orphan", "sh", "-c", "echo one; sleep 0.5; echo two; sleep 3600")
	arg, _ := json.Marshal(struct {
		Config Config
		Spec   ContainerSpec
	}{Config: Config{StateDir: e.cfg.StateDir, ShimCommand: e.cfg.ShimCommand, ShimEnv: e.cfg.ShimEnv}, Spec: spec})
	cmd := exec.Command(e.cfg.ShimCommand[0])
	cmd.Env = append(os.Environ(), "TETHER_TEST_AGENT="+string(arg))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("agent process: %v: %s", err, out)
	}
	// The agent is gone; the container runs on and keeps logging.
	c, err := e.rt.Status(t.Context(), "orphan")
	if err != nil || c.State != StateRunning {
		t.Fatalf("Status = %+v, %v; want running", c, err)
	}
	e.waitLog(spec.LogPath, "stdout F two\n", 5*time.Second)
	if err := e.rt.Stop(t.Context(), "orphan", 0); err != nil {
		t.Fatal(err)
	}
	if c, _ := e.rt.Status(t.Context(), "orphan"); c.State != StateExited || c.ExitCode != 137 {
		t.Errorf("after Stop: %+v, want exited 137", c)
	}
}
