package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is an io.Writer safe for concurrent use that tests can wait on.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor waits until the buffer contains want.
func (b *syncBuffer) waitFor(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output = %q; want %q within %v", b.String(), want, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// attachment is an Attach running in the background.
type attachment struct {
	stdin  *io.PipeWriter
	stdout syncBuffer
	stderr syncBuffer
	resize chan Size
	cancel context.CancelFunc
	done   chan error
}

func attach(t *testing.T, rt *Runtime, id string, withStdin bool) *attachment {
	t.Helper()
	a := &attachment{resize: make(chan Size, 1), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(t.Context())
	a.cancel = cancel
	var stdin io.Reader
	if withStdin {
		var pr *io.PipeReader
		pr, a.stdin = io.Pipe()
		stdin = pr
	}
	go func() { a.done <- rt.Attach(ctx, id, stdin, &a.stdout, &a.stderr, a.resize) }()
	t.Cleanup(func() {
		cancel()
		if a.stdin != nil {
			a.stdin.Close()
		}
	})
	return a
}

func (a *attachment) write(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(a.stdin, s); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
}

// wait waits for Attach to return.
func (a *attachment) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-a.done:
		return err
	case <-time.After(timeout):
		t.Fatalf("Attach has not returned after %v", timeout)
		return nil
	}
}

// running asserts Attach has not returned.
func (a *attachment) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-a.done:
		t.Fatalf("Attach returned early: %v", err)
	default:
	}
}

func TestAttachStdinOnce(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("cat", "cat")
	spec.Stdin, spec.StdinOnce = true, true
	e.start(spec)
	a := attach(t, e.rt, "cat", true)
	a.write(t, "hello\n")
	a.stdout.waitFor(t, "hello\n", 5*time.Second)
	a.running(t)
	// The end of the client's stdin closes the container's: cat exits, and
	// Attach returns once it has.
	a.stdin.Close()
	if err := a.wait(t, 5*time.Second); err != nil {
		t.Errorf("Attach = %v, want nil", err)
	}
	c := e.waitExited("cat", 5*time.Second)
	if c.ExitCode != 0 {
		t.Errorf("exit code = %d (%s: %s), want 0; output %q", c.ExitCode, c.Reason, c.Message, a.stdout.String())
	}
	if got := a.stdout.String(); got != "hello\n" || a.stderr.String() != "" {
		t.Errorf("stdout %q, stderr %q; want hello and nothing", got, a.stderr.String())
	}
	if log := readLog(t, spec.LogPath); !strings.Contains(log, " stdout F hello\n") {
		t.Errorf("log = %q, want hello", log)
	}
	if err := e.rt.Attach(t.Context(), "cat", nil, io.Discard, io.Discard, nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Attach to an exited container = %v, want ErrNotRunning", err)
	}
	if err := e.rt.Attach(t.Context(), "nope", nil, io.Discard, io.Discard, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Attach to a missing container = %v, want ErrNotFound", err)
	}
}

func TestAttachConcurrent(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("ticker", "sh", "-c", "while true; do echo tick; echo tock >&2; sleep 0.2; done")
	e.start(spec)
	a, b := attach(t, e.rt, "ticker", false), attach(t, e.rt, "ticker", false)
	for _, x := range []*attachment{a, b} {
		x.stdout.waitFor(t, "tick\ntick\n", 5*time.Second)
		x.stderr.waitFor(t, "tock\n", 5*time.Second)
		x.running(t)
	}
	// Ending one attach leaves the other.
	a.cancel()
	if err := a.wait(t, 2*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Attach = %v, want context.Canceled", err)
	}
	n := strings.Count(b.stdout.String(), "tick")
	b.stdout.waitFor(t, strings.Repeat("tick\n", n+2), 5*time.Second)
	// The log gets the output while clients are attached.
	log := readLog(t, spec.LogPath)
	if c := strings.Count(log, " stdout F tick\n"); c < n || !strings.Contains(log, " stderr F tock\n") {
		t.Errorf("log has %d ticks (attached client saw %d): %q", c, n, log)
	}
	// Stopping the container ends the attach, with nil.
	if err := e.rt.Stop(t.Context(), "ticker", 0); err != nil {
		t.Fatal(err)
	}
	if err := b.wait(t, 5*time.Second); err != nil {
		t.Errorf("Attach after the container exited = %v, want nil", err)
	}
}

func TestAttachTTY(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("shell", "sh")
	spec.TTY, spec.Stdin = true, true
	e.start(spec)
	a := attach(t, e.rt, "shell", true)
	a.write(t, "echo $((6*7))\n")
	a.stdout.waitFor(t, "42", 5*time.Second)
	if a.stderr.String() != "" {
		t.Errorf("stderr = %q, want nothing with a TTY", a.stderr.String())
	}
	a.resize <- Size{Width: 100, Height: 30}
	// The resize and stdin are sent by different goroutines: ask until
	// the resize has been applied.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(a.stdout.String(), "30 100") {
		if time.Now().After(deadline) {
			t.Fatalf("output = %q; want stty size to say 30 100", a.stdout.String())
		}
		a.write(t, "stty size\n")
		time.Sleep(100 * time.Millisecond)
	}
	e.waitLog(spec.LogPath, " stdout F 42\r\n", 5*time.Second)

	// Without StdinOnce, the end of the client's stdin detaches it; the
	// shell goes on.
	a.stdin.Close()
	if err := a.wait(t, 2*time.Second); err != nil {
		t.Errorf("Attach after stdin EOF = %v, want nil", err)
	}
	if c, _ := e.rt.Status(t.Context(), "shell"); c.State != StateRunning {
		t.Fatalf("the shell is %s after the client detached, want running", c.State)
	}
	b := attach(t, e.rt, "shell", true)
	b.write(t, "echo again-$((1+1))\n")
	b.stdout.waitFor(t, "again-2", 5*time.Second)
	b.write(t, "exit 3\n")
	if err := b.wait(t, 5*time.Second); err != nil {
		t.Errorf("Attach when the shell exits = %v, want nil", err)
	}
	if c := e.waitExited("shell", 5*time.Second); c.ExitCode != 3 {
		t.Errorf("exit code = %d, want 3", c.ExitCode)
	}
}

func TestAttachTTYStdinOnce(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("once", "sh")
	spec.TTY, spec.Stdin, spec.StdinOnce = true, true, true
	e.start(spec)
	a := attach(t, e.rt, "once", true)
	a.write(t, "echo hi-$((2*3))\n")
	a.stdout.waitFor(t, "hi-6", 5*time.Second)
	// Wait for the next prompt: the shell's line editor puts the terminal
	// in raw mode before printing it, and a ^D typed while the terminal
	// is still cooked (the shell running the command) is read as a NUL
	// instead (CI saw the shell go on running once).
	deadline := time.Now().Add(5 * time.Second)
	for out := a.stdout.String(); !strings.Contains(out[strings.Index(out, "hi-6"):], "# "); out = a.stdout.String() {
		if time.Now().After(deadline) {
			t.Fatalf("output = %q; want a prompt after hi-6", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// EOF on the client's stdin types ^D: the shell exits.
	a.stdin.Close()
	if err := a.wait(t, 5*time.Second); err != nil {
		t.Errorf("Attach = %v, want nil", err)
	}
	if c := e.waitExited("once", 5*time.Second); c.ExitCode != 0 {
		t.Errorf("exit code = %d (%s: %s), want 0; output %q", c.ExitCode, c.Reason, c.Message, a.stdout.String())
	}
}

// TestAttachAfterAgentRestart attaches to a container that another process
// (an earlier agent) started.
func TestAttachAfterAgentRestart(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("kept", "cat")
	spec.Stdin = true
	arg, _ := json.Marshal(struct {
		Config Config
		Spec   ContainerSpec
	}{Config: Config{StateDir: e.cfg.StateDir, ShimCommand: e.cfg.ShimCommand, ShimEnv: e.cfg.ShimEnv}, Spec: spec})
	cmd := exec.Command(e.cfg.ShimCommand[0])
	cmd.Env = append(os.Environ(), "TETHER_TEST_AGENT="+string(arg))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("agent process: %v: %s", err, out)
	}
	rt2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, rt := range []*Runtime{rt2, e.rt} {
		a := attach(t, rt, "kept", true)
		want := strings.Repeat("x", i+1) + "\n"
		a.write(t, want)
		a.stdout.waitFor(t, want, 5*time.Second)
		// Without StdinOnce the container's stdin stays open.
		a.stdin.Close()
		if err := a.wait(t, 2*time.Second); err != nil {
			t.Errorf("Attach = %v, want nil", err)
		}
	}
	if c, _ := e.rt.Status(t.Context(), "kept"); c.State != StateRunning {
		t.Errorf("cat is %s, want running", c.State)
	}
	e.waitLog(spec.LogPath, " stdout F xx\n", 5*time.Second)
}

// TestAttachSlowClient checks that a client that stops reading holds up
// neither the container nor its log: it is disconnected.
func TestAttachSlowClient(t *testing.T) {
	e := newTestEnv(t)
	spec := e.spec("flood", "sh", "-c", "read x; yes 0123456789012345678901234567890123456789 | head -c 30000000; echo; echo end")
	spec.Stdin = true
	spec.LogMaxSize = 1 << 20
	e.start(spec)
	blocked := make(chan struct{})
	stuck := writerFunc(func(p []byte) (int, error) {
		<-blocked
		return len(p), nil
	})
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- e.rt.Attach(t.Context(), "flood", pr, stuck, io.Discard, nil) }()
	pw.Write([]byte("go\n"))
	if c := e.waitExited("flood", 20*time.Second); c.ExitCode != 0 {
		t.Errorf("exit code = %d", c.ExitCode)
	}
	e.waitLog(spec.LogPath, " stdout F end\n", time.Second)
	close(blocked)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "closed the connection") {
			t.Errorf("Attach of the stuck client = %v, want it disconnected", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Attach of the stuck client has not returned")
	}
	pw.Close()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestAttachSocketLongPath(t *testing.T) {
	dir := t.TempDir()
	for len(dir) < 150 {
		dir = filepath.Join(dir, "a-rather-long-directory-name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := listenUnix(dir, attachSocket)
	if err != nil {
		t.Fatalf("listen in %d-byte dir: %v", len(dir), err)
	}
	defer ln.Close()
	fi, err := os.Stat(filepath.Join(dir, attachSocket))
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket = %v, %v; want a 0600 socket in the directory", fi, err)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			writeFrame(c, frameStdout, []byte("hi"))
			c.Close()
		}
	}()
	conn, err := dialUnix(t.Context(), dir, attachSocket)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	var buf []byte
	typ, p, err := readFrame(bufio.NewReader(conn), &buf)
	if err != nil || typ != frameStdout || string(p) != "hi" {
		t.Errorf("frame = %c %q %v", typ, p, err)
	}
}
