package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxExecSyncOutput caps what ExecSync keeps of each output stream.
const maxExecSyncOutput = 16 << 20

// ExecSync runs cmd in a running container and returns its output and
// exit code (128+signal if a signal killed it), as exec probes need. The
// process runs with the container's environment, user and working
// directory. If it runs longer than timeout (zero: no limit) or ctx ends,
// it is killed and the error wraps context.DeadlineExceeded (or ctx's
// error). If the process cannot be started at all (for example, cmd[0]
// does not exist), err carries runc's message.
func (r *Runtime) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, exitCode int, err error) {
	o, e := &cappedBuffer{max: maxExecSyncOutput}, &cappedBuffer{max: maxExecSyncOutput}
	exitCode, err = r.exec(ctx, id, cmd, nil, o, e, false, nil, timeout)
	return o.Bytes(), e.Bytes(), exitCode, err
}

// Exec runs cmd in a running container, streaming stdin (may be nil) to
// it and its output to stdout and stderr (nil: discarded), and returns its
// exit code once it exits. With tty, the process gets a pty: its output
// goes to stdout only, and sizes from resize (may be nil) are applied to
// it. Exec returns when the process exits or ctx ends (then it is killed).
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan Size) (exitCode int, err error) {
	return r.exec(ctx, id, cmd, stdin, stdout, stderr, tty, resize, 0)
}

func (r *Runtime) exec(ctx context.Context, id string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resizeCh <-chan Size, timeout time.Duration) (int, error) {
	if len(cmd) == 0 {
		return -1, errors.New("runtime: exec: empty command")
	}
	c, err := r.Status(ctx, id)
	if err != nil {
		return -1, err
	}
	if c.State != StateRunning {
		return -1, fmt.Errorf("%w: %s is %s", ErrNotRunning, id, c.State)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	pidFile := filepath.Join(r.bundle(id), "exec-"+hex.EncodeToString(rnd[:])+".pid")
	defer os.Remove(pidFile)

	args := []string{"--root", r.cfg.RuncRoot, "exec", "--pid-file", pidFile}
	// With a tty, runc proxies between its own terminal and the process's
	// pty (it takes a console socket only when detached, and then it cannot
	// report the exit code), so runc gets a pty of ours as its controlling
	// terminal; resizing ours makes runc resize the process's.
	var master *os.File
	if tty {
		args = append(args, "--tty")
	}
	args = append(append(args, id), cmd...)
	ec := exec.Command(r.cfg.RuncPath, args...)
	ec.WaitDelay = time.Second // a background child may keep the output open
	// runc reports its own errors on stderr; keep the end of it.
	errTail := &tailBuffer{max: 4096}
	var stdinW, slave *os.File
	if tty {
		if master, slave, err = openPty(); err != nil {
			return -1, fmt.Errorf("runtime: exec in %s: %w", id, err)
		}
		defer master.Close()
		ec.Stdin, ec.Stdout, ec.Stderr = slave, slave, slave
		ec.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		// runc copies our terminal's size to the process's when it
		// starts, and a SIGWINCH that comes before runc handles it is
		// lost: the client sends its size first thing, so wait for it.
		if s, ok := firstSize(resizeCh, firstSizeWait); ok {
			resize(master, s)
		}
	} else {
		ec.Stdout = stdout
		if stderr != nil {
			ec.Stderr = io.MultiWriter(stderr, errTail)
		} else {
			ec.Stderr = errTail
		}
		if stdin != nil {
			var stdinR *os.File
			if stdinR, stdinW, err = os.Pipe(); err != nil {
				return -1, err
			}
			ec.Stdin = stdinR
			defer stdinR.Close()
		}
	}
	err = ec.Start()
	if slave != nil {
		slave.Close()
	}
	if err != nil {
		if stdinW != nil {
			stdinW.Close()
		}
		return -1, fmt.Errorf("runtime: exec in %s: %w", id, err)
	}
	if stdinW != nil {
		go func() {
			io.Copy(stdinW, stdin)
			stdinW.Close()
		}()
	}
	done := make(chan struct{})
	var ioWG sync.WaitGroup
	if tty {
		out := io.Writer(errTail)
		if stdout != nil {
			out = io.MultiWriter(stdout, errTail)
		}
		ioWG.Go(func() { execTTY(master, stdin, out, resizeCh, done) })
	}

	// Kill the process when time is up.
	var timedOut, cancelled bool
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		var timer <-chan time.Time
		if timeout > 0 {
			t := time.NewTimer(timeout)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-done:
			return
		case <-timer:
			timedOut = true
		case <-ctx.Done():
			cancelled = true
		}
		if pid, err := readPidFile(pidFile); err == nil {
			if p, err := procOf(pid); err == nil {
				if fd, err := p.open(); err == nil {
					unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
					unix.Close(fd)
					return
				}
			}
		}
		ec.Process.Kill() // not started yet: stop runc itself
	}()
	waitErr := ec.Wait()
	close(done)
	<-killed
	ioWG.Wait()

	switch {
	case timedOut:
		return -1, fmt.Errorf("runtime: exec in %s: timed out after %v: %w", id, timeout, context.DeadlineExceeded)
	case cancelled:
		return -1, fmt.Errorf("runtime: exec in %s: %w", id, ctx.Err())
	}
	if !exists(pidFile) {
		msg := runcMessage(errTail.Bytes())
		if msg == "" && waitErr != nil {
			msg = waitErr.Error()
		}
		return -1, fmt.Errorf("runtime: exec in %s: %s", id, msg)
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) && !errors.Is(waitErr, exec.ErrWaitDelay) {
		return -1, fmt.Errorf("runtime: exec in %s: %w", id, waitErr)
	}
	return ec.ProcessState.ExitCode(), nil
}

// execTTY connects the pty master to stdin, stdout and resizes until done
// closes and the output ends.
func execTTY(master *os.File, stdin io.Reader, stdout io.Writer, resizeCh <-chan Size, done <-chan struct{}) {
	if stdin != nil {
		go io.Copy(master, stdin) // ends when master is closed or stdin ends
	}
	if resizeCh != nil {
		go func() {
			for {
				select {
				case s, ok := <-resizeCh:
					if !ok {
						return
					}
					resize(master, s)
				case <-done:
					return
				}
			}
		}()
	}
	// Reading the master fails with EIO once runc has exited.
	copied := make(chan struct{})
	go func() {
		io.Copy(stdout, master)
		close(copied)
	}()
	select {
	case <-copied:
	case <-done:
		select {
		case <-copied:
		case <-time.After(time.Second):
			master.SetReadDeadline(time.Now()) // stop the copy
			<-copied
		}
	}
}

// firstSize waits up to wait for the first size on ch (nil: none).
func firstSize(ch <-chan Size, wait time.Duration) (Size, bool) {
	if ch == nil {
		return Size{}, false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s, ok := <-ch:
		return s, ok
	case <-t.C:
		return Size{}, false
	}
}

// firstSizeWait is how long an exec with a tty waits for the client's
// terminal size before it starts the process without one.
const firstSizeWait = time.Second

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	max int
	bytes.Buffer
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.b)
}
