// Package e2e runs the built tether binary as a subprocess and drives it
// with the real kubectl and with client-go, the way a user would.
//
// The binary is taken from $TETHER_BIN; if that is unset it is built once
// into a temporary directory. Tests that need kubectl skip when it is not
// on $PATH.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds how long a server may take to print its ready line.
	readyTimeout = 60 * time.Second
	// stopGrace is how long a server has to exit after SIGTERM before it
	// gets SIGKILL.
	stopGrace = 10 * time.Second
	// kubectlTimeout bounds a single kubectl invocation.
	kubectlTimeout = 60 * time.Second
	// readyPrefix starts the line `tether server` prints once it serves.
	readyPrefix = "tether server is ready at "
)

// tetherBin is the path of the binary under test, set by TestMain.
var tetherBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tetherBin = os.Getenv("TETHER_BIN")
	if tetherBin == "" {
		dir, err := os.MkdirTemp("", "tether-e2e-bin-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: temp dir for the binary: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		tetherBin = filepath.Join(dir, "tether")
		if err := buildTether(tetherBin); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
	}
	if _, err := os.Stat(tetherBin); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: TETHER_BIN: %v\n", err)
		return 1
	}
	return m.Run()
}

// buildTether builds ./cmd/tether from the module root into out.
func buildTether(out string) error {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(gomod))
	if mod == "" || mod == os.DevNull {
		return errors.New("go env GOMOD: not inside the tether module; set TETHER_BIN")
	}
	cmd := exec.Command("go", "build", "-o", out, "./cmd/tether")
	cmd.Dir = filepath.Dir(mod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/tether: %w\n%s", err, b)
	}
	return nil
}

// server is one `tether server` subprocess. Restart runs a new process on
// the same data directory and port.
type server struct {
	t       *testing.T
	dataDir string
	port    int
	logDir  string

	// URL and Kubeconfig are what the ready lines announced.
	URL        string
	Kubeconfig string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	starts int
}

// startServer starts `tether server` on a fresh short data directory and a
// free loopback port and waits until it is ready. The server is stopped
// when the test ends.
func startServer(t *testing.T) *server {
	t.Helper()
	dataDir, err := os.MkdirTemp("", "te-")
	if err != nil {
		t.Fatalf("data dir: %v", err)
	}
	s := &server{t: t, dataDir: dataDir, port: freePort(t), logDir: t.TempDir()}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			s.logTail()
		}
		os.RemoveAll(dataDir)
	})
	s.start()
	return s
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// stderrPath is the file that captures the stderr of the n-th start.
func (s *server) stderrPath(n int) string {
	return filepath.Join(s.logDir, fmt.Sprintf("stderr-%d.log", n))
}

// start runs the binary and waits for the ready line.
func (s *server) start() {
	t := s.t
	t.Helper()
	s.mu.Lock()
	s.starts++
	n := s.starts
	s.mu.Unlock()

	errFile, err := os.Create(s.stderrPath(n))
	if err != nil {
		t.Fatalf("stderr file: %v", err)
	}
	// These servers run in the test's own network namespace: their local
	// agent registers the node but runs no pods and no service proxy, so
	// the machine's bridges, routes and nftables are left alone.
	cmd := exec.Command(tetherBin, "server",
		"--data-dir", s.dataDir,
		"--secure-port", strconv.Itoa(s.port),
		"--bind-address", "127.0.0.1",
		"--disable-pods", "--disable-proxy")
	cmd.Stderr = errFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		errFile.Close()
		t.Fatalf("start %s: %v", tetherBin, err)
	}
	exited := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	// Read stdout until EOF so the process never blocks on a full pipe;
	// report the ready URL and kubeconfig path as they appear.
	type ready struct{ url, kubeconfig string }
	readyc := make(chan ready, 1)
	outPath := filepath.Join(s.logDir, fmt.Sprintf("stdout-%d.log", n))
	go func() {
		out, _ := os.Create(outPath)
		defer out.Close()
		var r ready
		sent := false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(out, line)
			if u, ok := strings.CutPrefix(line, readyPrefix); ok {
				r.url = strings.TrimSpace(u)
			}
			if k, ok := strings.CutPrefix(strings.TrimSpace(line), "export KUBECONFIG="); ok {
				r.kubeconfig = k
			}
			if !sent && r.url != "" && r.kubeconfig != "" {
				readyc <- r
				sent = true
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	waitErr := make(chan error, 1)
	go func() {
		waitErr <- cmd.Wait()
		errFile.Close()
		close(exited)
	}()

	select {
	case r := <-readyc:
		s.URL, s.Kubeconfig = r.url, r.kubeconfig
	case err := <-waitErr:
		t.Fatalf("tether server (start %d) exited before it was ready: %v\nstderr tail:\n%s", n, err, tail(s.stderrPath(n), 40))
	case <-time.After(readyTimeout):
		s.Kill()
		t.Fatalf("tether server (start %d) printed no ready line within %s\nstderr tail:\n%s", n, readyTimeout, tail(s.stderrPath(n), 40))
	}
	if want := "https://127.0.0.1:" + strconv.Itoa(s.port); s.URL != want {
		t.Errorf("ready line URL = %q, want %q", s.URL, want)
	}
	if want := filepath.Join(s.dataDir, "admin.kubeconfig"); s.Kubeconfig != want {
		t.Errorf("KUBECONFIG line = %q, want %q", s.Kubeconfig, want)
	}
}

// Restart starts a new process on the same data directory and port; the
// previous one must have exited.
func (s *server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	if exited != nil {
		select {
		case <-exited:
		default:
			s.t.Fatalf("Restart: previous server still running")
		}
	}
	s.start()
}

// Kill sends SIGKILL and waits for the process to exit.
func (s *server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Stop sends SIGTERM, then SIGKILL after stopGrace, and waits for the exit.
func (s *server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(stopGrace):
		s.t.Errorf("tether server did not exit within %s of SIGTERM; sending SIGKILL", stopGrace)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

// logTail prints the end of every captured stderr file.
func (s *server) logTail() {
	s.mu.Lock()
	n := s.starts
	s.mu.Unlock()
	for i := 1; i <= n; i++ {
		s.t.Logf("tether server stderr (start %d, last 40 lines):\n%s", i, tail(s.stderrPath(i), 40))
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kubectlPath returns the kubectl binary, skipping the test if there is none.
func kubectlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skipf("kubectl not found on $PATH (%v); the e2e kubectl tests need a real kubectl", err)
	}
	return p
}

// kubectlCmd builds a kubectl command against s with its own cache
// directory, so discovery is never reused across servers or runs.
func (s *server) kubectlCmd(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	bin := kubectlPath(t)
	cache := filepath.Join(s.logDir, "kubectl-cache")
	full := append([]string{"--cache-dir", cache}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.Kubeconfig, "KUBECACHEDIR="+cache)
	return cmd
}

// kubectl runs kubectl against s and returns its output. The command and,
// on failure, its stderr are logged.
func (s *server) kubectl(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), kubectlTimeout)
	defer cancel()
	cmd := s.kubectlCmd(ctx, t, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("kubectl %s: timed out after %s: %w", strings.Join(args, " "), kubectlTimeout, err)
	}
	t.Logf("$ kubectl %s (err=%v)\n%s%s", strings.Join(args, " "), err, clip(out.String()), clip(errb.String()))
	return out.String(), errb.String(), err
}

// mustKubectl is kubectl that fails the test on a non-zero exit.
func (s *server) mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := s.kubectl(t, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// eventually calls f every interval until it returns nil or timeout passes,
// and returns the last error.
func eventually(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// clip shortens long command output for the test log.
func clip(s string) string {
	const max = 1500
	if len(s) <= max {
		return s
	}
	return s[:max] + fmt.Sprintf("\n… (%d more bytes)\n", len(s)-max)
}
