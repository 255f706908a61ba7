package runtime

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The attach protocol, spoken over the shim's attach socket: frames of a
// 1-byte type, a 4-byte big-endian payload length and the payload.
const (
	// client to shim
	frameStdin      byte = 'i' // bytes for the container's stdin
	frameCloseStdin byte = 'c' // the client's stdin ended (the shim closes the container's with StdinOnce)
	frameResize     byte = 'r' // 4 bytes: rows, columns (uint16 big-endian)
	// shim to client
	frameStdout byte = 'o' // container output (the terminal's, with TTY)
	frameStderr byte = 'e'
	frameExit   byte = 'x' // 4 bytes: exit code; the container has exited and its output is all sent
)

// maxFrame bounds a frame's payload.
const maxFrame = 1 << 20

// attachQueueBytes is how much output the shim queues for an attached
// client that reads slowly; a client that falls further behind is
// disconnected (the container and the log never wait for clients).
const attachQueueBytes = 4 << 20

// attachFlush bounds how long the shim waits, after the container exited,
// for attached clients to take the rest of its output.
const attachFlush = 2 * time.Second

func writeFrame(w io.Writer, typ byte, p []byte) error {
	_, err := w.Write(appendFrame(make([]byte, 0, 5+len(p)), typ, p))
	return err
}

func appendFrame(b []byte, typ byte, p []byte) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

// readFrame reads one frame; p is valid until the next call.
func readFrame(r *bufio.Reader, buf *[]byte) (typ byte, p []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("attach: frame of %d bytes is too large", n)
	}
	if cap(*buf) < int(n) {
		*buf = make([]byte, n)
	}
	p = (*buf)[:n]
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return hdr[0], p, nil
}

// withSocketPath calls fn with a path for the socket dir/name that fits in
// a sockaddr_un (108 bytes): the path itself if it is short enough, else
// one through /proc/self/fd and an open descriptor of dir.
func withSocketPath(dir, name string, fn func(path string) error) error {
	p := filepath.Join(dir, name)
	if len(p) < 100 {
		return fn(p)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	return fn(fmt.Sprintf("/proc/self/fd/%d/%s", fd, name))
}

func listenUnix(dir, name string) (*net.UnixListener, error) {
	path := filepath.Join(dir, name)
	os.Remove(path) // a stale socket
	var ln *net.UnixListener
	err := withSocketPath(dir, name, func(p string) error {
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, err
	}
	// The name it was bound with may be a /proc/self/fd one; remove the
	// socket by its real path instead.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, err
	}
	return ln, nil
}

func dialUnix(ctx context.Context, dir, name string) (*net.UnixConn, error) {
	var conn *net.UnixConn
	err := withSocketPath(dir, name, func(p string) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", p)
		if err != nil {
			return err
		}
		conn = c.(*net.UnixConn)
		return nil
	})
	return conn, err
}

// Attach connects to the container's main process: output written by the
// container from now on is copied to stdout/stderr (with TTY: the terminal
// output to stdout), and stdin (if the container was created with Stdin) is
// written to the process's stdin. Several attaches at once are allowed
// (each gets the output; stdin is shared). stdout and stderr may be nil
// (output discarded); they are not written to after Attach returns.
//
// Attach returns nil when the container exits (after the last of its
// output), ctx's error when ctx ends, and nil when the client's stdin
// ends, which detaches the client except in one case: like upstream's
// runtimes, when the container has StdinOnce and no TTY, the container's
// stdin is closed and Attach goes on copying output until the container
// exits (or ctx ends). With StdinOnce and TTY, the shim types the
// terminal's EOF character (^D) and ignores any later input, then Attach
// returns. Without StdinOnce the container's stdin stays open for later
// attaches. stdin is ignored if the container was created without Stdin.
// A Read of stdin that blocks may outlast Attach; what it returns is
// dropped.
//
// With TTY, sizes from resize (may be nil) are applied to the container's
// terminal.
//
// Attach works on containers started by another Runtime on the same
// StateDir (before an agent restart): it talks to the container's shim.
// It returns an error wrapping ErrNotFound or ErrNotRunning for a missing
// or not running container.
func (r *Runtime) Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan Size) error {
	c, err := r.Status(ctx, id)
	if err != nil {
		return err
	}
	if c.State != StateRunning {
		return fmt.Errorf("%w: %s is %s", ErrNotRunning, id, c.State)
	}
	dir := r.bundle(id)
	var sc shimConfig
	if err := readJSON(filepath.Join(dir, shimConfigFile), &sc); err != nil {
		return fmt.Errorf("runtime: attach %s: %w", id, err)
	}
	conn, err := dialUnix(ctx, dir, attachSocket)
	if err != nil {
		if c, serr := r.Status(ctx, id); serr == nil && c.State != StateRunning {
			return fmt.Errorf("%w: %s is %s", ErrNotRunning, id, c.State)
		}
		return fmt.Errorf("runtime: attach %s: connect to the shim: %w", id, err)
	}
	defer conn.Close()

	var wmu sync.Mutex
	send := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return writeFrame(conn, typ, p)
	}
	result := make(chan error, 2)
	stop := make(chan struct{})

	var reader sync.WaitGroup
	reader.Go(func() { result <- attachOutput(conn, stdout, stderr) })

	if stdin != nil && sc.Stdin {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					if send(frameStdin, buf[:n]) != nil {
						return // Attach has returned
					}
				}
				if err != nil {
					// Any error ends the client's stdin, like EOF.
					if sc.StdinOnce {
						send(frameCloseStdin, nil)
						if !sc.TTY {
							return // the output goes on until the container exits
						}
					}
					result <- nil
					return
				}
			}
		}()
	}
	if resize != nil && sc.TTY {
		go func() {
			for {
				select {
				case s, ok := <-resize:
					if !ok {
						return
					}
					var b [4]byte
					binary.BigEndian.PutUint16(b[0:], s.Height)
					binary.BigEndian.PutUint16(b[2:], s.Width)
					if send(frameResize, b[:]) != nil {
						return
					}
				case <-stop:
					return
				}
			}
		}()
	}

	select {
	case err = <-result:
	case <-ctx.Done():
		err = ctx.Err()
	}
	close(stop)
	conn.Close()
	reader.Wait()
	if err != nil {
		return fmt.Errorf("runtime: attach %s: %w", id, err)
	}
	return nil
}

// attachOutput copies output frames from the shim to stdout and stderr
// until the exit frame.
func attachOutput(conn net.Conn, stdout, stderr io.Writer) error {
	br := bufio.NewReaderSize(conn, 64<<10)
	var buf []byte
	for {
		typ, p, err := readFrame(br, &buf)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return errors.New("the shim closed the connection (the client fell too far behind, or the shim exited)")
			}
			return err
		}
		var w io.Writer
		switch typ {
		case frameStdout:
			w = stdout
		case frameStderr:
			w = stderr
		case frameExit:
			return nil
		}
		if w != nil {
			if _, err := w.Write(p); err != nil {
				return err
			}
		}
	}
}

// attachServer is the shim's side of attach: it accepts clients on the
// bundle's attach socket, sends them the container's output and writes
// their input to the container's stdin.
type attachServer struct {
	log       *slog.Logger
	path      string
	ln        *net.UnixListener
	tty       bool
	stdinOnce bool

	// stdin is where attached input goes: the stdin pipe's write end, or
	// the pty master with TTY; nil if the container has no stdin.
	stdin       *os.File
	master      *os.File // the pty master, for resizing
	inMu        sync.Mutex
	stdinClosed atomic.Bool

	mu      sync.Mutex
	clients map[*attachClient]struct{}
	closed  bool
	writers sync.WaitGroup
}

type attachClient struct {
	conn     *net.UnixConn
	out      chan []byte  // encoded frames; closed on shutdown
	queued   atomic.Int64 // bytes in out
	gone     chan struct{}
	dropOnce sync.Once
}

// newAttachServer listens on the bundle's attach socket. Clients that
// connect before serve are accepted then.
func newAttachServer(bundle string, cfg shimConfig, log *slog.Logger) (*attachServer, error) {
	ln, err := listenUnix(bundle, attachSocket)
	if err != nil {
		return nil, fmt.Errorf("attach socket: %w", err)
	}
	return &attachServer{
		log: log, path: filepath.Join(bundle, attachSocket), ln: ln,
		tty: cfg.TTY, stdinOnce: cfg.StdinOnce,
		clients: map[*attachClient]struct{}{},
	}, nil
}

// serve starts accepting clients. stdin is where their input goes (nil:
// dropped), master the pty master to resize (nil without TTY).
func (s *attachServer) serve(stdin, master *os.File) {
	s.stdin, s.master = stdin, master
	go func() {
		for {
			conn, err := s.ln.AcceptUnix()
			if err != nil {
				s.mu.Lock()
				closed := s.closed
				s.mu.Unlock()
				if !closed {
					s.log.Error("attach socket: accept", "err", err)
				}
				return
			}
			s.add(conn)
		}
	}()
}

func (s *attachServer) add(conn *net.UnixConn) {
	c := &attachClient{conn: conn, out: make(chan []byte, 1024), gone: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	// Registered before any of its input is read: output caused by its
	// input reaches it.
	s.clients[c] = struct{}{}
	s.writers.Add(1)
	s.mu.Unlock()
	go s.writeLoop(c)
	go s.readLoop(c)
}

// drop disconnects c. The caller holds s.mu.
func (s *attachServer) dropLocked(c *attachClient) {
	delete(s.clients, c)
	c.dropOnce.Do(func() {
		close(c.gone)
		c.conn.Close()
	})
}

func (s *attachServer) drop(c *attachClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(c)
}

func (s *attachServer) writeLoop(c *attachClient) {
	defer s.writers.Done()
	defer c.conn.Close()
	for {
		select {
		case f, ok := <-c.out:
			if !ok {
				return // shut down; everything including the exit frame is sent
			}
			if _, err := c.conn.Write(f); err != nil {
				s.drop(c)
				return
			}
			c.queued.Add(-int64(len(f)))
		case <-c.gone:
			return
		}
	}
}

func (s *attachServer) readLoop(c *attachClient) {
	br := bufio.NewReaderSize(c.conn, 32<<10)
	var buf []byte
	for {
		typ, p, err := readFrame(br, &buf)
		if err != nil {
			// The client left (or the connection was closed): it gets no
			// more output. Its queued frames are dropped.
			s.mu.Lock()
			if !s.closed {
				s.dropLocked(c)
			}
			s.mu.Unlock()
			return
		}
		switch typ {
		case frameStdin:
			s.writeStdin(p)
		case frameCloseStdin:
			s.closeStdin()
		case frameResize:
			if s.master != nil && len(p) == 4 {
				sz := Size{Height: binary.BigEndian.Uint16(p[0:]), Width: binary.BigEndian.Uint16(p[2:])}
				if err := resize(s.master, sz); err != nil {
					s.log.Warn("resize terminal", "err", err)
				}
			}
		default:
			s.log.Warn("attach: unknown frame; disconnecting the client", "type", typ)
			s.drop(c)
			return
		}
	}
}

func (s *attachServer) writeStdin(p []byte) {
	if s.stdin == nil || s.stdinClosed.Load() {
		return
	}
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.stdinClosed.Load() {
		return
	}
	// Fails once the container's stdin is gone (EPIPE, or EIO on a pty
	// whose other end is closed); the input is then dropped.
	if _, err := s.stdin.Write(p); err != nil {
		s.log.Debug("write container stdin", "err", err)
	}
}

// closeStdin handles the end of a client's stdin: with StdinOnce the
// container's stdin is closed (for a pty, which cannot be half-closed,
// the terminal's EOF character is typed) and later input dropped.
func (s *attachServer) closeStdin() {
	if !s.stdinOnce || s.stdin == nil || s.stdinClosed.Load() {
		return
	}
	if !s.tty {
		// Not under inMu: closing unblocks a pending write (the pipe is
		// non-blocking under Go's poller).
		if s.stdinClosed.CompareAndSwap(false, true) {
			s.stdin.Close()
			s.log.Info("container stdin closed (StdinOnce)")
		}
		return
	}
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if !s.stdinClosed.CompareAndSwap(false, true) {
		return
	}
	eof := byte(4) // ^D
	if rc, err := s.master.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS); err == nil && t.Cc[unix.VEOF] != 0 {
				eof = t.Cc[unix.VEOF]
			}
		})
	}
	s.master.Write([]byte{eof})
	s.log.Info("container terminal input ended (StdinOnce)")
}

// tee returns a reader of r that also sends what it reads to attached
// clients as stream (frameStdout or frameStderr).
func (s *attachServer) tee(stream byte, r io.Reader) io.Reader {
	if s == nil {
		return r
	}
	return &attachTee{s: s, stream: stream, r: r}
}

type attachTee struct {
	s      *attachServer
	stream byte
	r      io.Reader
}

func (t *attachTee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.s.broadcast(t.stream, p[:n])
	}
	return n, err
}

func (s *attachServer) broadcast(stream byte, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.clients) == 0 {
		return
	}
	f := appendFrame(make([]byte, 0, 5+len(p)), stream, p)
	for c := range s.clients {
		if c.queued.Load()+int64(len(f)) <= attachQueueBytes {
			select {
			case c.out <- f:
				c.queued.Add(int64(len(f)))
				continue
			default:
			}
		}
		s.log.Warn("attached client is too slow; disconnecting it")
		s.dropLocked(c)
	}
}

// shutdown tells attached clients that the container exited (after the
// rest of its output) and closes the socket. It waits up to attachFlush
// for the clients to take what is queued for them.
func (s *attachServer) shutdown(exitCode int) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.ln.Close()
	os.Remove(s.path)
	exit := appendFrame(nil, frameExit, binary.BigEndian.AppendUint32(nil, uint32(int32(exitCode))))
	deadline := time.Now().Add(attachFlush)
	for c := range s.clients {
		c.conn.SetWriteDeadline(deadline)
		select {
		case c.out <- exit:
			close(c.out)
		default:
			s.dropLocked(c)
		}
	}
	s.clients = map[*attachClient]struct{}{}
	s.mu.Unlock()
	s.writers.Wait() // bounded by the write deadline
}

// close stops serving without telling clients anything (the shim is
// failing).
func (s *attachServer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.ln.Close()
	os.Remove(s.path)
	for c := range s.clients {
		s.dropLocked(c)
	}
}
