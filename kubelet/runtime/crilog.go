package runtime

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"time"
)

// maxLogLine is the longest content of one CRI log record; longer lines
// are split into partial records.
const maxLogLine = 16 << 10

// CRI log tags.
const (
	tagFull    = 'F'
	tagPartial = 'P'
)

// logWriter writes CRI-format log records to a file, rotating it to
// path+".1" when it would grow beyond maxSize. It is safe for concurrent
// use by the stdout and stderr copiers.
type logWriter struct {
	path    string
	maxSize int64
	now     func() time.Time

	mu   sync.Mutex
	f    *os.File
	size int64
	buf  []byte
}

func openLog(path string, maxSize int64) (*logWriter, error) {
	w := &logWriter{path: path, maxSize: maxSize, now: time.Now}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *logWriter) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// record writes one record: "<time> <stream> <tag> <content>\n".
func (w *logWriter) record(ts time.Time, stream string, tag byte, content []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return os.ErrClosed
	}
	b := ts.UTC().AppendFormat(w.buf[:0], time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, ' ', tag, ' ')
	b = append(b, content...)
	b = append(b, '\n')
	w.buf = b
	if w.size > 0 && w.size+int64(len(b)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	return err
}

func (w *logWriter) rotate() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	w.f = nil
	if err := os.Rename(w.path, w.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return w.open()
}

// Close closes the file.
func (w *logWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// copyStream copies r into the log as stream ("stdout" or "stderr") until
// EOF or a read error, one record per line; a last line without a newline
// is written as a partial record.
func (w *logWriter) copyStream(stream string, r io.Reader) error {
	buf := make([]byte, 32<<10)
	carry := make([]byte, 0, maxLogLine)
	pending := carry
	for {
		n, err := r.Read(buf)
		if n > 0 {
			ts := w.now()
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				line := pending[:i]
				for len(line) > maxLogLine {
					w.record(ts, stream, tagPartial, line[:maxLogLine])
					line = line[maxLogLine:]
				}
				w.record(ts, stream, tagFull, line)
				pending = pending[i+1:]
			}
			for len(pending) >= maxLogLine {
				w.record(ts, stream, tagPartial, pending[:maxLogLine])
				pending = pending[maxLogLine:]
			}
			// Keep the remainder (< 16 KiB) at the front of carry.
			carry = append(carry[:0], pending...)
			pending = carry
		}
		if err != nil {
			if len(pending) > 0 {
				w.record(w.now(), stream, tagPartial, pending)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
	}
}
