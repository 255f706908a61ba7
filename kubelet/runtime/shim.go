package runtime

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// reportFD is the shim's file descriptor for its report to Start.
const reportFD = 3

// copyGrace bounds how long the shim waits for the container's output to
// drain after its init exited.
const copyGrace = 2 * time.Second

// ShimMain is the shim's entry point, called by the process Start launches
// with Config.ShimCommand. args are the arguments after that command,
// "run <bundle>". It runs the container as described in the package
// documentation and returns the process exit code.
func ShimMain(args []string) int {
	if len(args) != 2 || args[0] != "run" || !filepath.IsAbs(args[1]) {
		fmt.Fprintln(os.Stderr, "usage: shim run <absolute bundle path>")
		return 2
	}
	return shimRun(args[1])
}

// shim runs one container.
type shim struct {
	bundle string
	cfg    shimConfig
	log    *slog.Logger
	report *os.File

	mu     sync.Mutex
	exited map[int]unix.WaitStatus // reaped children
}

func shimRun(bundle string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "shim", "bundle", bundle)
	// Keep terminal and stop signals from killing the shim. Handled (not
	// ignored) signals are reset to their defaults for runc and the
	// container.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	go func() {
		for s := range sigs {
			log.Info("ignoring signal", "signal", s)
		}
	}()
	unix.CloseOnExec(reportFD) // runc must not hold Start's pipe open
	s := &shim{bundle: bundle, log: log, report: os.NewFile(reportFD, "report"), exited: map[int]unix.WaitStatus{}}
	if err := s.run(); err != nil {
		log.Error("shim failed", "err", err)
		s.sendReport(shimReport{Error: err.Error()})
		return 1
	}
	return 0
}

func (s *shim) sendReport(rep shimReport) {
	if s.report == nil {
		return
	}
	b, _ := json.Marshal(rep)
	s.report.Write(b)
	s.report.Close()
	s.report = nil
}

func (s *shim) path(name string) string { return filepath.Join(s.bundle, name) }

func (s *shim) run() error {
	self, err := procOf(os.Getpid())
	if err != nil {
		return err
	}
	if err := writeJSON(s.path(shimPidFile), self); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become subreaper: %w", err)
	}
	if err := readJSON(s.path(shimConfigFile), &s.cfg); err != nil {
		return err
	}
	lw, err := openLog(s.cfg.LogPath, s.cfg.LogMaxSize)
	if err != nil {
		return fmt.Errorf("open container log: %w", err)
	}
	defer lw.Close()

	sio, err := s.newIO()
	if err != nil {
		return err
	}
	defer sio.Close()

	// Listening before runc starts makes attach available as soon as Start
	// returns.
	attach, err := newAttachServer(s.bundle, s.cfg, s.log)
	if err != nil {
		return err
	}
	defer attach.close()

	runcArgs := []string{s.cfg.Runc, "--root", s.cfg.RuncRoot, "--log", s.path(runcLogFile), "--log-format", "json",
		"run", "-d", "--pid-file", s.path(initPidFile), "-b", s.bundle}
	if sio.console != nil {
		runcArgs = append(runcArgs, "--console-socket", sio.console.path)
	}
	runcArgs = append(runcArgs, s.cfg.ID)
	p, err := os.StartProcess(s.cfg.Runc, runcArgs, &os.ProcAttr{
		Dir:   s.bundle,
		Env:   []string{"PATH=" + os.Getenv("PATH")},
		Files: sio.runcFiles(),
	})
	if err != nil {
		return fmt.Errorf("start runc: %w", err)
	}
	runcPid := p.Pid
	p.Release()
	sio.closeContainerEnds()
	if sio.console != nil {
		sio.awaitConsole()
	}

	runcStatus, err := s.wait(runcPid)
	if err != nil {
		return fmt.Errorf("wait for runc: %w", err)
	}
	if !runcStatus.Exited() || runcStatus.ExitStatus() != 0 {
		return s.startFailed(sio)
	}

	pid, err := readPidFile(s.path(initPidFile))
	if err != nil {
		return fmt.Errorf("runc run: %w", err)
	}
	// A short-lived init may already be reaped (while waiting for runc);
	// then it has no start time to record, and its pid may be reused.
	init := proc{Pid: pid}
	if _, gone := s.exited[pid]; !gone {
		if init, err = procOf(pid); err != nil {
			return fmt.Errorf("container init: %w", err)
		}
	}
	if err := writeJSON(s.path(startedFile), started{proc: init, StartedAt: time.Now()}); err != nil {
		return err
	}
	outputs := sio.outputs()
	var attachStdin *os.File
	switch {
	case !s.cfg.Stdin:
	case sio.console != nil:
		attachStdin = sio.master
	default:
		attachStdin = sio.stdinW
	}
	attach.serve(attachStdin, sio.master)
	s.sendReport(shimReport{Pid: pid})

	var copiers sync.WaitGroup
	for stream, r := range outputs {
		frame := frameStdout
		if stream == "stderr" {
			frame = frameStderr
		}
		copiers.Go(func() {
			if err := lw.copyStream(stream, attach.tee(frame, r)); err != nil && !errors.Is(err, unix.EIO) {
				s.log.Warn("copy container output", "stream", stream, "err", err)
			}
		})
	}

	status, err := s.wait(pid)
	finished := time.Now()
	ex := exitStatus{FinishedAt: finished, OOMKilled: s.oomKilled()}
	switch {
	case err != nil:
		s.log.Error("wait for container", "err", err)
		ex.ExitCode, ex.Reason, ex.Message = 255, ReasonUnknown, "lost track of the container's process: "+err.Error()
	case status.Signaled():
		ex.ExitCode = 128 + int(status.Signal())
	default:
		ex.ExitCode = status.ExitStatus()
	}
	switch {
	case ex.Reason != "":
	case ex.OOMKilled:
		ex.Reason = ReasonOOMKilled
	case ex.ExitCode == 0:
		ex.Reason = ReasonCompleted
	default:
		ex.Reason = ReasonError
	}

	drained := make(chan struct{})
	go func() { copiers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(copyGrace):
		s.log.Warn("container output still open after its init exited; closing it")
		sio.closeOutputs()
		<-drained
	}
	lw.Close()
	if err := writeJSON(s.path(exitFile), ex); err != nil {
		return fmt.Errorf("record exit status: %w", err)
	}
	// Attached clients return once the exit status is recorded.
	attach.shutdown(ex.ExitCode)
	s.log.Info("container exited", "id", s.cfg.ID, "exitCode", ex.ExitCode, "oomKilled", ex.OOMKilled)
	return nil
}

// startFailed records and reports a container runc could not start.
func (s *shim) startFailed(sio *shimIO) error {
	msg := lastRuncError(s.path(runcLogFile))
	if msg == "" {
		// runc also prints its error on its stderr, the container's.
		msg = strings.TrimSpace(string(sio.drainStderr(500 * time.Millisecond)))
	}
	if msg == "" {
		msg = "runc run failed"
	}
	if err := writeJSON(s.path(exitFile), exitStatus{
		ExitCode: StartFailedExitCode, FinishedAt: time.Now(), Reason: ReasonStartError, Message: msg,
	}); err != nil {
		s.log.Error("record start failure", "err", err)
	}
	s.sendReport(shimReport{Error: msg})
	return nil
}

// wait reaps children until pid exits and returns its status. As a
// subreaper the shim also collects the container's init after runc exits,
// and any orphan inside it.
func (s *shim) wait(pid int) (unix.WaitStatus, error) {
	for {
		if ws, ok := s.exited[pid]; ok {
			return ws, nil
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if ws.Exited() || ws.Signaled() {
			s.exited[got] = ws
		}
	}
}

// oomKilled reports whether the container's memory cgroup OOM-killed a
// process.
func (s *shim) oomKilled() bool {
	if s.cfg.OOMControl == "" {
		return false
	}
	b, err := os.ReadFile(s.cfg.OOMControl)
	if err != nil {
		s.log.Warn("read OOM counter", "err", err)
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n > 0
		}
	}
	return false
}

// lastRuncError returns the last error message in runc's JSON log.
func lastRuncError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var msg string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && (e.Level == "error" || e.Level == "fatal") && e.Msg != "" {
			msg = e.Msg
		}
	}
	return msg
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad pid file %s: %q", path, b)
	}
	return pid, nil
}

// shimIO holds the container's stdio as the shim sees it.
type shimIO struct {
	stdin             *os.File // runc's stdin (read end or /dev/null)
	stdinW            *os.File // kept open so the container's stdin stays open
	stdoutR, stdoutW  *os.File
	stderrR, stderrW  *os.File
	console           *consoleSocket
	consoleDone       chan struct{} // closed when master (or consoleErr) is set
	consoleErr        error
	master            *os.File // the pty master, with TTY
	closeOutputsOnce  sync.Once
	containerEndsOnce sync.Once
}

func (s *shim) newIO() (*shimIO, error) {
	sio := &shimIO{}
	var err error
	if s.cfg.TTY {
		if sio.console, err = newConsoleSocket(); err != nil {
			return nil, err
		}
		if sio.stdin, err = os.Open(os.DevNull); err != nil {
			return nil, err
		}
		sio.stdoutW, sio.stderrW = sio.stdin, sio.stdin
		return sio, nil
	}
	if s.cfg.Stdin {
		if sio.stdin, sio.stdinW, err = os.Pipe(); err != nil {
			return nil, err
		}
	} else if sio.stdin, err = os.Open(os.DevNull); err != nil {
		return nil, err
	}
	if sio.stdoutR, sio.stdoutW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if sio.stderrR, sio.stderrW, err = os.Pipe(); err != nil {
		return nil, err
	}
	return sio, nil
}

func (sio *shimIO) runcFiles() []*os.File { return []*os.File{sio.stdin, sio.stdoutW, sio.stderrW} }

// closeContainerEnds closes the shim's copies of the descriptors runc and
// the container inherited.
func (sio *shimIO) closeContainerEnds() {
	sio.containerEndsOnce.Do(func() {
		for _, f := range []*os.File{sio.stdin, sio.stdoutW, sio.stderrW} {
			if f != nil {
				f.Close()
			}
		}
	})
}

// awaitConsole receives the pty master from runc (in the background; it
// arrives before runc exits).
func (sio *shimIO) awaitConsole() {
	sio.consoleDone = make(chan struct{})
	go func() {
		defer close(sio.consoleDone)
		sio.master, sio.consoleErr = sio.console.receive()
	}()
}

// outputs returns the streams to copy into the log.
func (sio *shimIO) outputs() map[string]*os.File {
	if sio.console != nil {
		if sio.consoleDone != nil {
			<-sio.consoleDone
		}
		if sio.master == nil {
			return nil
		}
		return map[string]*os.File{"stdout": sio.master}
	}
	return map[string]*os.File{"stdout": sio.stdoutR, "stderr": sio.stderrR}
}

func (sio *shimIO) closeOutputs() {
	sio.closeOutputsOnce.Do(func() {
		for _, f := range []*os.File{sio.stdoutR, sio.stderrR, sio.master} {
			if f != nil {
				f.Close()
			}
		}
	})
}

// drainStderr reads what is buffered on the container's stderr.
func (sio *shimIO) drainStderr(timeout time.Duration) []byte {
	if sio.stderrR == nil {
		return nil
	}
	sio.stderrR.SetReadDeadline(time.Now().Add(timeout))
	b, _ := readAtMost(sio.stderrR, 64<<10)
	return b
}

func readAtMost(r io.Reader, n int64) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, n))
}

func (sio *shimIO) Close() {
	sio.closeContainerEnds()
	sio.closeOutputs()
	if sio.stdinW != nil {
		sio.stdinW.Close()
	}
	if sio.console != nil {
		sio.console.Close()
	}
}
