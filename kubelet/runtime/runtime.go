package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Errors returned by the Runtime. Test them with errors.Is.
var (
	// ErrNotFound means no container with the given ID exists.
	ErrNotFound = errors.New("runtime: container not found")
	// ErrExists means Start was called with the ID of an existing container.
	ErrExists = errors.New("runtime: container already exists")
	// ErrNotRunning means the operation needs a running container.
	ErrNotRunning = errors.New("runtime: container is not running")
	// ErrStartFailed means runc could not start the container's process;
	// the error's text carries runc's message.
	ErrStartFailed = errors.New("runtime: container failed to start")
)

// Exit code and reasons reported for containers.
const (
	// StartFailedExitCode is the exit code of a container that never ran.
	StartFailedExitCode = 128

	ReasonCompleted  = "Completed"  // exited with code 0
	ReasonError      = "Error"      // exited with a non-zero code
	ReasonOOMKilled  = "OOMKilled"  // killed by the memory cgroup's OOM killer
	ReasonStartError = "StartError" // never ran; Message says why
	ReasonUnknown    = "Unknown"    // the exit status was lost
)

// maxNofile is containers' RLIMIT_NOFILE where the agent may grant it.
const maxNofile = 1048576

// DefaultLogMaxSize is the size at which container log files are rotated
// when ContainerSpec.LogMaxSize is zero.
const DefaultLogMaxSize = 10 << 20

// Config configures a Runtime. A Config is not changed after it is passed
// to New.
type Config struct {
	// StateDir holds one bundle directory per container, StateDir/<id>/.
	// Required.
	StateDir string
	// RuncRoot is runc's --root. If empty, StateDir+"/runc" is used. It
	// must be on a filesystem that supports unix sockets.
	RuncRoot string
	// RuncPath is the runc binary. If empty, "runc" is looked up in PATH.
	RuncPath string
	// ShimCommand is the argv that starts a shim, for example
	// [os.Executable(), "shim"]; the process must call ShimMain with the
	// arguments the Runtime appends. Required.
	ShimCommand []string
	// ShimEnv is added to the shim's environment (which otherwise holds
	// only PATH). Tests use it to make the test binary act as the shim.
	ShimEnv []string
	// Logger receives the runtime's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Mount is a bind mount (rbind) of a host path into the container. A
// missing HostPath is created as a directory; a missing target inside the
// container is created by runc.
type Mount struct {
	HostPath, ContainerPath string
	ReadOnly                bool
}

// Size is a terminal size, for resizing an exec's or attached container's
// pty.
type Size struct {
	Width, Height uint16
}

// ContainerSpec describes a container to Start.
type ContainerSpec struct {
	// ID is the runc container ID: [a-z0-9-], at most 64 characters,
	// chosen by the caller.
	ID string
	// Labels are stored with the container and returned by Status and List.
	Labels map[string]string
	// LowerDirs are the image's layer directories, bottom layer first.
	// The rootfs is an overlayfs of them with its upper and work
	// directories inside the bundle. At least one is required.
	LowerDirs []string

	Args       []string // process argv; required
	Env        []string // KEY=value; PATH is added if missing
	WorkingDir string   // if empty, "/"

	UID, GID       uint32
	AdditionalGIDs []uint32
	Hostname       string

	// NetNSPath is the network namespace to join. If empty the container
	// gets a new, empty one.
	NetNSPath string
	Mounts    []Mount

	// CgroupsPath is the container's cgroupfs path, like
	// "/tether/node1/pod<uid>/<id>".
	CgroupsPath string
	MemoryLimit int64  // bytes; 0: no limit
	CPUShares   uint64 // 0: unset
	CPUQuota    int64  // microseconds per CPUPeriod; 0: unset
	CPUPeriod   uint64 // microseconds; 0: unset

	// CapAdd and CapDrop adjust the default capability set. Names may
	// omit the CAP_ prefix; "ALL" drops (or adds) every capability.
	CapAdd, CapDrop []string
	// Privileged gives every capability the runtime holds, access to all
	// devices, and no masked or read-only paths.
	Privileged      bool
	ReadOnlyRootfs  bool
	NoNewPrivileges bool

	// Stdin keeps the container's stdin open (a pipe held by the shim,
	// fed by Attach). StdinOnce closes it when the first attached client's
	// stdin ends. TTY gives the container a pty (its output is logged as
	// stdout).
	Stdin, StdinOnce, TTY bool

	// LogPath is the CRI-format log file; its parent directories are
	// created. Required.
	LogPath string
	// LogMaxSize is the size at which the log is rotated to LogPath+".1".
	// If zero, DefaultLogMaxSize is used.
	LogMaxSize int64
}

// State is a container's state.
type State string

// Container states.
const (
	StateCreated State = "created" // the shim is starting it
	StateRunning State = "running"
	StateExited  State = "exited"
	StateUnknown State = "unknown" // the shim died before recording anything
)

// Container is the status of a container.
type Container struct {
	ID     string
	Labels map[string]string
	State  State
	// Pid is the container init's pid in the agent's pid namespace; zero
	// if it never started.
	Pid        int
	CreatedAt  time.Time
	StartedAt  time.Time // zero if it never started
	FinishedAt time.Time // zero unless exited
	ExitCode   int       // 128+signal if killed by a signal
	OOMKilled  bool
	Reason     string // for exited containers: one of the Reason constants
	Message    string
	LogPath    string
}

// Runtime runs containers with runc. Its methods are safe for concurrent
// use; calls for the same container are serialized.
type Runtime struct {
	cfg     Config
	log     *slog.Logger
	cgroups []string // v1 and v2 hierarchy mount points
	memory  string   // memory hierarchy mount point, "" if none
	capBnd  uint64   // our bounding set, the limit for privileged containers
	nofile  uint64   // containers' RLIMIT_NOFILE

	mu    sync.Mutex
	locks map[string]*idLock
}

type idLock struct {
	sync.Mutex
	refs int
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// New returns a Runtime for cfg. It does not start anything; containers
// already in StateDir (for example, from before an agent restart) are
// adopted as they are.
func New(cfg Config) (*Runtime, error) {
	var errs []error
	if cfg.StateDir == "" {
		errs = append(errs, errors.New("runtime: StateDir is required"))
	}
	if len(cfg.ShimCommand) == 0 {
		errs = append(errs, errors.New("runtime: ShimCommand is required"))
	}
	if cfg.RuncPath == "" {
		p, err := exec.LookPath("runc")
		if err != nil {
			errs = append(errs, fmt.Errorf("runtime: find runc: %w", err))
		}
		cfg.RuncPath = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var err error
	if cfg.StateDir, err = filepath.Abs(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("runtime: state dir: %w", err)
	}
	if cfg.RuncRoot == "" {
		cfg.RuncRoot = filepath.Join(cfg.StateDir, "runc")
	}
	if cfg.RuncRoot, err = filepath.Abs(cfg.RuncRoot); err != nil {
		return nil, fmt.Errorf("runtime: runc root: %w", err)
	}
	for _, d := range []string{cfg.StateDir, cfg.RuncRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runtime{cfg: cfg, log: log.With("component", "runtime"), locks: map[string]*idLock{}}
	r.cgroups, r.memory, err = cgroupMounts()
	if err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	r.capBnd = boundingSet()
	// Containers get 1048576 open files, or as many as this process may
	// have: raising a hard limit needs CAP_SYS_RESOURCE, which root lacks
	// on some machines.
	r.nofile = maxNofile
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Max < maxNofile && r.capBnd&(1<<unix.CAP_SYS_RESOURCE) == 0 {
		r.nofile = lim.Max
	}
	return r, nil
}

func (r *Runtime) lock(id string) func() {
	r.mu.Lock()
	l := r.locks[id]
	if l == nil {
		l = &idLock{}
		r.locks[id] = l
	}
	l.refs++
	r.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		r.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(r.locks, id)
		}
		r.mu.Unlock()
	}
}

func (r *Runtime) bundle(id string) string { return filepath.Join(r.cfg.StateDir, id) }

// Start creates the container's bundle, mounts its rootfs, and starts it
// under a new shim. It returns once the container's process runs.
//
// If runc cannot start the process, Start returns an error wrapping
// ErrStartFailed with runc's message, and the container remains as an
// exited record (exit code 128, reason StartError) for Status and List
// until Remove; nothing else of it remains. Errors before the bundle exists
// (an invalid spec, an existing ID) leave nothing behind. If ctx ends while
// the shim is starting, Start returns ctx's error and the container may
// still start; Remove it.
func (r *Runtime) Start(ctx context.Context, spec ContainerSpec) error {
	if err := validate(spec); err != nil {
		return err
	}
	defer r.lock(spec.ID)()
	dir := r.bundle(spec.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, spec.ID)
		}
		return fmt.Errorf("runtime: start %s: %w", spec.ID, err)
	}
	created := time.Now()
	m := meta{ID: spec.ID, Labels: spec.Labels, CreatedAt: created, CgroupsPath: spec.CgroupsPath, LogPath: spec.LogPath}
	if err := writeJSON(filepath.Join(dir, metaFile), m); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("runtime: start %s: %w", spec.ID, err)
	}
	// From here on a failure leaves an exited record the caller can see.
	fail := func(err error) error {
		r.cleanupFailedStart(dir, spec.ID, spec.CgroupsPath)
		writeJSON(filepath.Join(dir, exitFile), exitStatus{
			ExitCode: StartFailedExitCode, FinishedAt: time.Now(),
			Reason: ReasonStartError, Message: err.Error(),
		})
		r.log.Info("container failed to start", "id", spec.ID, "err", err)
		return fmt.Errorf("runtime: start %s: %w: %w", spec.ID, ErrStartFailed, err)
	}
	if err := r.prepareBundle(dir, spec); err != nil {
		return fail(err)
	}
	res, err := r.spawnShim(ctx, dir)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("runtime: start %s: %w", spec.ID, err)
		}
		// The shim records runc's failures itself; anything else is ours.
		if exists(filepath.Join(dir, exitFile)) {
			r.cleanupFailedStart(dir, spec.ID, spec.CgroupsPath)
			return fmt.Errorf("runtime: start %s: %w: %w", spec.ID, ErrStartFailed, err)
		}
		return fail(err)
	}
	r.log.Debug("container started", "id", spec.ID, "pid", res.Pid, "took", time.Since(created))
	return nil
}

func validate(spec ContainerSpec) error {
	var errs []error
	if !idPattern.MatchString(spec.ID) {
		errs = append(errs, fmt.Errorf("runtime: invalid container ID %q: want [a-z0-9-], at most 64 characters", spec.ID))
	}
	if len(spec.LowerDirs) == 0 {
		errs = append(errs, errors.New("runtime: LowerDirs is empty"))
	}
	if len(spec.Args) == 0 {
		errs = append(errs, errors.New("runtime: Args is empty"))
	}
	if spec.LogPath == "" {
		errs = append(errs, errors.New("runtime: LogPath is required"))
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.HostPath) || !filepath.IsAbs(m.ContainerPath) {
			errs = append(errs, fmt.Errorf("runtime: mount %q -> %q: paths must be absolute", m.HostPath, m.ContainerPath))
		}
	}
	if spec.CgroupsPath != "" && (!strings.HasPrefix(spec.CgroupsPath, "/") || strings.Contains(spec.CgroupsPath, "..")) {
		errs = append(errs, fmt.Errorf("runtime: invalid CgroupsPath %q: want an absolute cgroupfs path", spec.CgroupsPath))
	}
	return errors.Join(errs...)
}

// prepareBundle mounts the rootfs and writes config.json and shim.json.
func (r *Runtime) prepareBundle(dir string, spec ContainerSpec) error {
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o755); err != nil {
		return fmt.Errorf("create log directory: %w", err)
	}
	for _, m := range spec.Mounts {
		if _, err := os.Stat(m.HostPath); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(m.HostPath, 0o755); err != nil {
				return fmt.Errorf("create mount source: %w", err)
			}
		}
	}
	if err := mountRootfs(dir, spec.LowerDirs); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "config.json"), r.ociSpec(spec)); err != nil {
		return err
	}
	maxSize := spec.LogMaxSize
	if maxSize <= 0 {
		maxSize = DefaultLogMaxSize
	}
	sc := shimConfig{
		ID: spec.ID, Runc: r.cfg.RuncPath, RuncRoot: r.cfg.RuncRoot,
		LogPath: spec.LogPath, LogMaxSize: maxSize,
		Stdin: spec.Stdin, StdinOnce: spec.StdinOnce, TTY: spec.TTY,
	}
	if r.memory != "" && spec.CgroupsPath != "" {
		sc.OOMControl = filepath.Join(r.memory, spec.CgroupsPath, "memory.oom_control")
	}
	return writeJSON(filepath.Join(dir, shimConfigFile), sc)
}

// spawnShim starts the shim for the bundle dir and waits for its report.
func (r *Runtime) spawnShim(ctx context.Context, dir string) (shimReport, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return shimReport{}, err
	}
	defer pr.Close()
	logf, err := os.OpenFile(filepath.Join(dir, shimLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		pw.Close()
		return shimReport{}, fmt.Errorf("start shim: %w", err)
	}
	defer logf.Close()
	argv := append(append([]string(nil), r.cfg.ShimCommand...), "run", dir)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, r.cfg.ShimEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf // stdin: /dev/null
	cmd.ExtraFiles = []*os.File{pw}     // fd 3: the report pipe
	// A session of its own keeps the agent's terminal and process group
	// signals away from the shim; nothing ties its life to the agent's.
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return shimReport{}, fmt.Errorf("start shim: %w", err)
	}
	if err := reapLater(cmd.Process); err != nil {
		r.log.Warn("cannot reap shim; it will remain a zombie when it exits", "pid", cmd.Process.Pid, "err", err)
	}
	type result struct {
		rep shimReport
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var rep shimReport
		b, err := io.ReadAll(pr)
		if err == nil {
			if len(bytes.TrimSpace(b)) == 0 {
				err = fmt.Errorf("shim exited without reporting (see %s)", filepath.Join(dir, shimLogFile))
			} else {
				err = json.Unmarshal(b, &rep)
			}
		}
		ch <- result{rep, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			return shimReport{}, res.err
		}
		if res.rep.Error != "" {
			return res.rep, errors.New(res.rep.Error)
		}
		return res.rep, nil
	case <-ctx.Done():
		pr.Close() // unblocks the reader
		return shimReport{}, ctx.Err()
	}
}

// reapLater collects p's exit status once it exits, so the shim does not
// stay a zombie while the agent lives. It waits on a non-blocking pidfd
// through the runtime poller: no thread is held per running shim.
func reapLater(p *os.Process) error {
	fd, err := unix.PidfdOpen(p.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return err
	}
	p.Release() // from here on the pidfd is the only handle
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	go func() {
		defer f.Close()
		rc.Read(func(fd uintptr) bool {
			var info unix.Siginfo
			// On a non-blocking pidfd, waitid fails with EAGAIN (instead
			// of blocking) while the process runs; then wait until the
			// pidfd is readable. (WNOHANG would return 0 instead.)
			err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED, nil)
			return !errors.Is(err, unix.EAGAIN)
		})
	}()
	return nil
}

// cleanupFailedStart removes whatever a failed start may have left except
// the bundle's records.
func (r *Runtime) cleanupFailedStart(dir, id, cgroupsPath string) {
	if _, err := os.Stat(filepath.Join(r.cfg.RuncRoot, id)); err == nil {
		r.runc(context.Background(), "delete", "--force", id)
	}
	r.unmountRootfs(dir)
	r.removeCgroups(cgroupsPath)
}

// Stop stops a running container: SIGTERM to its init process, then
// SIGKILL once grace has passed, and returns when it has exited and its
// exit status is recorded. Stopping a container that is not running is not
// an error.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	defer r.lock(id)()
	return r.stop(ctx, id, grace)
}

func (r *Runtime) stop(ctx context.Context, id string, grace time.Duration) error {
	dir := r.bundle(id)
	if _, err := os.Stat(filepath.Join(dir, metaFile)); err != nil {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	var st started
	if readJSON(filepath.Join(dir, startedFile), &st) != nil || exists(filepath.Join(dir, exitFile)) {
		return nil // never started, or already exited
	}
	if err := killAndWait(ctx, st.proc, grace); err != nil {
		return fmt.Errorf("runtime: stop %s: %w", id, err)
	}
	// The shim records the exit status and exits; wait for that.
	var sp proc
	if err := readJSON(filepath.Join(dir, shimPidFile), &sp); err == nil {
		if err := waitExit(ctx, sp, -1); err != nil {
			return fmt.Errorf("runtime: stop %s: wait for shim: %w", id, err)
		}
	}
	return nil
}

// killAndWait signals p with SIGTERM (if grace > 0), waits up to grace for
// it to exit, then sends SIGKILL and waits for it to exit.
func killAndWait(ctx context.Context, p proc, grace time.Duration) error {
	fd, err := p.open()
	if err != nil {
		return nil // already gone
	}
	defer unix.Close(fd)
	if grace > 0 {
		if err := unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("send SIGTERM: %w", err)
		}
		if exited, err := pollPidfd(ctx, fd, grace); err != nil || exited {
			return err
		}
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("send SIGKILL: %w", err)
	}
	_, err = pollPidfd(ctx, fd, -1)
	return err
}

// waitExit waits for p to exit, up to timeout (negative: until ctx ends).
func waitExit(ctx context.Context, p proc, timeout time.Duration) error {
	fd, err := p.open()
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	exited, err := pollPidfd(ctx, fd, timeout)
	if err == nil && !exited {
		err = errors.New("timed out")
	}
	return err
}

// Remove removes a container: it kills it if it runs, deletes its runc
// state, unmounts its rootfs, removes its bundle and its cgroup in every
// hierarchy, and the parent cgroup (the pod's) if that is now empty. Log
// files stay. Removing a container that does not exist is not an error.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	defer r.lock(id)()
	dir := r.bundle(id)
	var m meta
	metaErr := readJSON(filepath.Join(dir, metaFile), &m)
	if metaErr == nil {
		if err := r.stop(ctx, id, 0); err != nil {
			return err
		}
	}
	// A shim still alive here is stuck starting; kill it.
	var sp proc
	if err := readJSON(filepath.Join(dir, shimPidFile), &sp); err == nil {
		if err := killAndWait(ctx, sp, 0); err != nil {
			return fmt.Errorf("runtime: remove %s: kill shim: %w", id, err)
		}
	}
	if exists(filepath.Join(r.cfg.RuncRoot, id)) {
		if _, err := r.runc(ctx, "delete", "--force", id); err != nil && exists(filepath.Join(r.cfg.RuncRoot, id)) {
			return fmt.Errorf("runtime: remove %s: %w", id, err)
		}
	}
	if err := r.unmountRootfs(dir); err != nil {
		return fmt.Errorf("runtime: remove %s: %w", id, err)
	}
	if metaErr == nil {
		if err := r.removeCgroups(m.CgroupsPath); err != nil {
			return fmt.Errorf("runtime: remove %s: %w", id, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("runtime: remove %s: %w", id, err)
	}
	return nil
}

// runc runs a short runc command and returns its combined output.
func (r *Runtime) runc(ctx context.Context, args ...string) ([]byte, error) {
	argv := append([]string{"--root", r.cfg.RuncRoot}, args...)
	out, err := exec.CommandContext(ctx, r.cfg.RuncPath, argv...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("runc %s: %w: %s", args[0], err, runcMessage(out))
	}
	return out, nil
}

// runcMessage extracts the message from runc's text log output.
func runcMessage(out []byte) string {
	var msgs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, `msg="`); i >= 0 {
			rest := line[i+4:]
			if j := strings.LastIndex(rest, `"`); j > 0 {
				var s string
				if json.Unmarshal([]byte(rest[:j+1]), &s) == nil {
					line = s
				}
			}
		}
		if line = strings.TrimSpace(line); line != "" {
			msgs = append(msgs, line)
		}
	}
	return strings.Join(msgs, "; ")
}

// Status returns the status of container id, or an error wrapping
// ErrNotFound. It reads the bundle's state files and /proc only.
func (r *Runtime) Status(ctx context.Context, id string) (Container, error) {
	if !idPattern.MatchString(id) {
		return Container{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	c, err := readStatus(r.bundle(id))
	if errors.Is(err, os.ErrNotExist) {
		return Container{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return c, err
}

// List returns the status of every container in StateDir, sorted by ID.
func (r *Runtime) List(ctx context.Context) ([]Container, error) {
	entries, err := os.ReadDir(r.cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("runtime: list: %w", err)
	}
	var out []Container
	for _, e := range entries {
		if !e.IsDir() || !idPattern.MatchString(e.Name()) {
			continue
		}
		c, err := readStatus(filepath.Join(r.cfg.StateDir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // not a container, or removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("runtime: list: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// readStatus derives a container's status from its bundle's files.
func readStatus(dir string) (Container, error) {
	var m meta
	if err := readJSON(filepath.Join(dir, metaFile), &m); err != nil {
		return Container{}, err
	}
	c := Container{ID: m.ID, Labels: m.Labels, CreatedAt: m.CreatedAt, LogPath: m.LogPath}
	// The shim's liveness is checked before reading the files it writes:
	// it records the exit status and then exits, and a shim that was
	// already gone has left everything it will ever write.
	var sp proc
	shimAlive := readJSON(filepath.Join(dir, shimPidFile), &sp) == nil && sp.alive()
	var st started
	haveStarted := readJSON(filepath.Join(dir, startedFile), &st) == nil
	if haveStarted {
		c.Pid, c.StartedAt = st.Pid, st.StartedAt
	}
	var ex exitStatus
	if err := readJSON(filepath.Join(dir, exitFile), &ex); err == nil {
		c.State = StateExited
		c.FinishedAt, c.ExitCode, c.OOMKilled = ex.FinishedAt, ex.ExitCode, ex.OOMKilled
		c.Reason, c.Message = ex.Reason, ex.Message
		return c, nil
	}
	switch {
	case haveStarted && (st.proc.alive() || shimAlive):
		// A dead init with a live shim is being recorded right now.
		c.State = StateRunning
	case haveStarted:
		c.State = StateExited
		c.ExitCode, c.Reason = 255, ReasonUnknown
		c.Message = "the container's shim exited without recording its exit status"
	case shimAlive:
		c.State = StateCreated
	default:
		c.State = StateUnknown
		c.Message = "the container's shim is not running and recorded no state"
	}
	return c, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
