package apiserver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// fileLike records what reaches "the file"; gate, if set, holds each write
// until it is closed.
type fileLike struct {
	mu     sync.Mutex
	data   bytes.Buffer
	writes int
	gate   chan struct{}
	fail   error
	closed bool
}

func (f *fileLike) Write(p []byte) (int, error) {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return 0, f.fail
	}
	f.writes++
	return f.data.Write(p)
}

func (f *fileLike) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func TestAuditWriterKeepsEveryLine(t *testing.T) {
	f := &fileLike{}
	w := newAuditWriter(f)
	const writers, each = 16, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				line := fmt.Sprintf("{\"writer\":%d,\"line\":%d,\"pad\":%q}\n", g, i, strings.Repeat("x", i%97))
				if n, err := w.Write([]byte(line)); err != nil || n != len(line) {
					t.Errorf("Write = %d, %v", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if !f.closed {
		t.Error("Close did not close the file")
	}
	lines := strings.Split(strings.TrimSuffix(f.data.String(), "\n"), "\n")
	if len(lines) != writers*each {
		t.Fatalf("file has %d lines, want %d", len(lines), writers*each)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if !strings.HasPrefix(l, "{\"writer\":") || !strings.HasSuffix(l, "\"}") || seen[l] {
			t.Fatalf("line torn or repeated: %q", l)
		}
		seen[l] = true
	}
	if f.writes >= writers*each {
		t.Errorf("%d writes to the file for %d lines: nothing was batched", f.writes, writers*each)
	}
	t.Logf("%d lines in %d file writes", len(lines), f.writes)
}

func TestAuditWriterWaitsForASlowDisk(t *testing.T) {
	f := &fileLike{gate: make(chan struct{})}
	w := newAuditWriter(f)
	w.mu.Lock()
	w.max = 100
	w.mu.Unlock()
	line := []byte(strings.Repeat("a", 59) + "\n")
	// The first line goes to the (stuck) file; the next fits in memory; the
	// one after that would pass the limit and has to wait.
	for range 2 {
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		n := len(w.pending)
		w.mu.Unlock()
		if n == len(line) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d bytes, want one line held while the file is stuck", n)
		}
		time.Sleep(time.Millisecond)
	}
	wrote := make(chan struct{})
	go func() {
		_, _ = w.Write(line)
		close(wrote)
	}()
	select {
	case <-wrote:
		t.Fatal("Write past the limit returned while the file was stuck")
	case <-time.After(100 * time.Millisecond):
	}
	close(f.gate)
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("Write still blocked after the file caught up")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.data.Len(); got != 3*len(line) {
		t.Fatalf("file has %d bytes, want %d", got, 3*len(line))
	}
}

func TestAuditWriterReportsFileErrors(t *testing.T) {
	full := errors.New("no space left on device")
	f := &fileLike{fail: full}
	w := newAuditWriter(f)
	defer w.Close()
	if _, err := w.Write([]byte("one\n")); err != nil {
		t.Fatalf("first Write = %v, want nil (the error is not known yet)", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := w.Write([]byte("next\n"))
		if errors.Is(err, full) {
			return
		}
		if err != nil && err != io.ErrClosedPipe {
			t.Fatalf("Write = %v, want %v", err, full)
		}
		if time.Now().After(deadline) {
			t.Fatal("the file's write error was never reported")
		}
		time.Sleep(time.Millisecond)
	}
}

// Requests that end after the server's audit backend shut down (its
// watches) still get their lines, after everything queued before.
func TestAuditWriterWritesAfterClose(t *testing.T) {
	f := &fileLike{}
	w := newAuditWriter(f)
	if _, err := w.Write([]byte("before\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write([]byte("after\n")); err != nil || n != len("after\n") {
		t.Fatalf("Write after Close = %d, %v; want it written", n, err)
	}
	if got := f.data.String(); got != "before\nafter\n" {
		t.Fatalf("file has %q, want both lines in order", got)
	}
}
