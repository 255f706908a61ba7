package pods

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	goruntime "runtime"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	crremotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"golang.org/x/sys/unix"

	"tether/kubelet/runtime"
	"tether/kubelet/server"
)

// What the kubelet API asks of the pods, for logs, exec, attach and
// port-forward. These methods are safe to call from any goroutine.

// Errors of Container: the kubelet API's, so that it answers 404.
var (
	ErrPodNotFound       = server.ErrPodNotFound
	ErrContainerNotFound = server.ErrContainerNotFound
)

// published is what a worker shares with the kubelet API after each sync.
type published struct {
	netns      string
	containers map[string]pubContainer
}

type pubContainer struct {
	id, logPath         string
	lastID, lastLogPath string
}

// publish records, under w.mu, what the kubelet API may look up.
func (w *worker) publish(pod *corev1.Pod) {
	p := published{netns: w.netns, containers: map[string]pubContainer{}}
	for name, c := range w.ctrs {
		pc := pubContainer{id: c.id}
		if c.id != "" && pod != nil {
			pc.logPath = w.logPath(pod, name, c.attempt)
			if c.lastID != "" {
				pc.lastID, pc.lastLogPath = c.lastID, w.logPath(pod, name, c.attempt-1)
			}
		}
		p.containers[name] = pc
	}
	w.mu.Lock()
	w.pub = p
	w.mu.Unlock()
}

// Pods returns the pods bound to this node.
func (m *Manager) Pods() []*corev1.Pod {
	if m.podsList == nil {
		return nil
	}
	pods, _ := m.podsList.List(labels.Everything())
	return pods
}

// workerFor finds the worker of a pod by namespace and name (and UID when
// given).
func (m *Manager) workerFor(namespace, name, uid string) (*worker, *corev1.Pod, error) {
	if m.podsList == nil {
		return nil, nil, fmt.Errorf("pod %s/%s: %w", namespace, name, ErrPodNotFound)
	}
	pod, err := m.podsList.Pods(namespace).Get(name)
	if err != nil || (uid != "" && string(pod.UID) != uid) {
		return nil, nil, fmt.Errorf("pod %s/%s: %w", namespace, name, ErrPodNotFound)
	}
	m.mu.Lock()
	w := m.workers[pod.UID]
	m.mu.Unlock()
	if w == nil {
		return nil, nil, fmt.Errorf("pod %s/%s is not running on this node: %w", namespace, name, ErrPodNotFound)
	}
	return w, pod, nil
}

// Container resolves a pod's container to its current (or, with previous,
// its previous) runtime instance and that instance's log file.
func (m *Manager) Container(namespace, name, uid, container string, previous bool) (id, logPath string, err error) {
	w, pod, err := m.workerFor(namespace, name, uid)
	if err != nil {
		return "", "", err
	}
	if findContainer(pod, container) == nil {
		return "", "", fmt.Errorf("container %q is not in pod %s/%s: %w", container, namespace, name, ErrContainerNotFound)
	}
	w.mu.Lock()
	pc, ok := w.pub.containers[container]
	w.mu.Unlock()
	switch {
	case !ok || pc.id == "":
		return "", "", fmt.Errorf("container %q in pod %s/%s has not started: %w", container, namespace, name, ErrContainerNotFound)
	case previous && pc.lastID == "":
		return "", "", fmt.Errorf("previous terminated container %q in pod %s/%s not found: %w", container, namespace, name, ErrContainerNotFound)
	case previous:
		return pc.lastID, pc.lastLogPath, nil
	}
	return pc.id, pc.logPath, nil
}

// resizes converts the kubelet API's terminal sizes to the runtime's.
func resizes(ctx context.Context, in <-chan crremotecommand.TerminalSize) <-chan runtime.Size {
	if in == nil {
		return nil
	}
	out := make(chan runtime.Size)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- runtime.Size{Width: s.Width, Height: s.Height}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// Exec runs cmd in a container. A non-zero exit is an exec.ExitError, which
// the streaming protocols report as the command's exit code.
func (m *Manager) Exec(ctx context.Context, containerID string, cmd []string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan crremotecommand.TerminalSize) error {
	rt, ok := m.cfg.Runtime.(interface {
		Exec(ctx context.Context, id string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan runtime.Size) (int, error)
	})
	if !ok {
		return errors.New("the container runtime cannot exec")
	}
	var out, errOut io.Writer
	if stdout != nil {
		out = stdout
	}
	if stderr != nil {
		errOut = stderr
	}
	code, err := rt.Exec(ctx, containerID, cmd, stdin, out, errOut, tty, resizes(ctx, resize))
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

// Attach connects to a container's main process.
func (m *Manager) Attach(ctx context.Context, containerID string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan crremotecommand.TerminalSize) error {
	rt, ok := m.cfg.Runtime.(interface {
		Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan runtime.Size) error
	})
	if !ok {
		return errors.New("the container runtime cannot attach")
	}
	var out, errOut io.Writer
	if stdout != nil {
		out = stdout
	}
	if stderr != nil {
		errOut = stderr
	}
	return rt.Attach(ctx, containerID, stdin, out, errOut, resizes(ctx, resize))
}

// PortForward connects to port inside the pod's network namespace (so a
// server bound to the pod's localhost is reached too) and copies bytes
// both ways until either side closes.
func (m *Manager) PortForward(ctx context.Context, namespace, name string, uid types.UID, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	w, _, err := m.workerFor(namespace, name, string(uid))
	if err != nil {
		return err
	}
	w.mu.Lock()
	netns := w.pub.netns
	w.mu.Unlock()
	if netns == "" {
		return fmt.Errorf("pod %s/%s has no network namespace yet", namespace, name)
	}
	conn, err := dialIn(ctx, netns, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("pod %s/%s port %d: %w", namespace, name, port, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(stream, conn)
		done <- struct{}{}
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

// dialIn connects to addr from inside the network namespace at path. The
// dialing thread enters the namespace and is never returned to the Go
// scheduler (it ends with its goroutine); the socket stays in the
// namespace.
func dialIn(ctx context.Context, path, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		f, err := os.Open(path)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("enter the pod's network namespace: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
