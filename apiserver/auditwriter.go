package apiserver

import (
	"io"
	"sync"
)

// auditBufferMax is how many bytes of audit lines may wait for the disk
// before requests wait too (about 4,000 lines).
const auditBufferMax = 4 << 20

// auditWriter takes the audit log's file writes off the request path.
//
// The log backend wrote each request's line to the file under one lock, so
// concurrent requests queued behind each other's write calls, and a write
// that the kernel held up (dirty pages being written back) stalled every
// request in flight for tens of milliseconds. Here a request only appends
// its line to memory; one goroutine writes whatever has gathered, at once,
// as soon as the previous write returns. Nothing is dropped: if the disk
// falls behind by auditBufferMax, requests wait for it as before. A line
// reaches the file a write call after its request, and Close writes the
// rest. Requests still running after Close (watches end as the server
// shuts down, after its audit backend) write their lines straight to the
// file, which the rotating writer opens again.
type auditWriter struct {
	out io.WriteCloser
	max int // auditBufferMax; tests lower it

	mu      sync.Mutex
	space   *sync.Cond // signalled when pending shrinks
	pending []byte
	err     error // from the last write to out, not yet reported
	closed  bool
	wake    chan struct{}
	late    sync.Mutex // serializes the writes made after Close
	done    chan struct{}
}

func newAuditWriter(out io.WriteCloser) *auditWriter {
	w := &auditWriter{out: out, max: auditBufferMax, wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.space = sync.NewCond(&w.mu)
	go w.loop()
	return w
}

// Write queues p. An error from writing earlier lines to the file is
// returned by the next Write (the backend logs it and carries on); p is
// queued all the same.
func (w *auditWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.pending) > 0 && len(w.pending)+len(p) > w.max && !w.closed {
		w.space.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		<-w.done // the queue is written: the lines stay in order
		w.late.Lock()
		defer w.late.Unlock()
		return w.out.Write(p)
	}
	defer w.mu.Unlock()
	w.pending = append(w.pending, p...)
	select {
	case w.wake <- struct{}{}:
	default:
	}
	err := w.err
	w.err = nil
	return len(p), err
}

func (w *auditWriter) loop() {
	defer close(w.done)
	var batch []byte
	for {
		_, open := <-w.wake
		w.mu.Lock()
		batch, w.pending = w.pending, batch[:0]
		closed := w.closed
		w.space.Broadcast()
		w.mu.Unlock()
		if len(batch) > 0 {
			if _, err := w.out.Write(batch); err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
		}
		if closed || !open {
			return
		}
	}
}

// Close writes what is queued and closes the file.
func (w *auditWriter) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return nil
	}
	w.closed = true
	w.space.Broadcast()
	close(w.wake)
	w.mu.Unlock()
	<-w.done
	return w.out.Close()
}
