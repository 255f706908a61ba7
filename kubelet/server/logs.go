package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// How /containerLogs?follow=true watches a log file.
const (
	// logPollInterval is how often a followed file is read again at its
	// end: a new line reaches the client within about this long.
	logPollInterval = 100 * time.Millisecond
	// logCheckInterval is how often a follower asks whether the
	// container it follows is still the current one.
	logCheckInterval = time.Second
)

// logOptions are the decoded, validated PodLogOptions of a request.
type logOptions struct {
	follow     bool
	previous   bool
	timestamps bool
	since      time.Time // zero: from the start
	tail       int64     // < 0: every line
	limit      int64     // < 0: no limit
	stream     string    // "Stdout", "Stderr", or "" for both
}

// parseLogOptions decodes PodLogOptions from a query the way the API
// server encodes them (plus the kubelet's legacy tail=N|all). A malformed
// value is a 400; a valid but refused combination a 422.
func parseLogOptions(q url.Values, now time.Time) (logOptions, int, error) {
	o := logOptions{tail: -1, limit: -1}
	o.follow = queryBool(q, "follow")
	o.previous = queryBool(q, "previous")
	o.timestamps = queryBool(q, "timestamps")
	if t := q.Get("tail"); t != "" {
		q = cloneValues(q)
		q.Set("tailLines", t)
		if t == "all" {
			q.Del("tailLines")
		}
	}
	var (
		sinceSeconds, tailLines, limitBytes *int64
		sinceTime                           *time.Time
	)
	for _, f := range []struct {
		name string
		dst  **int64
	}{{"sinceSeconds", &sinceSeconds}, {"tailLines", &tailLines}, {"limitBytes", &limitBytes}} {
		v, ok := q[f.name]
		if !ok || len(v) == 0 || v[0] == "" {
			continue
		}
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil {
			return o, http.StatusBadRequest, fmt.Errorf("invalid %s %q: want an integer", f.name, v[0])
		}
		*f.dst = &n
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return o, http.StatusBadRequest, fmt.Errorf("invalid sinceTime %q: want RFC 3339", v)
		}
		sinceTime = &t
	}

	var errs []error
	if tailLines != nil {
		if *tailLines < 0 {
			errs = append(errs, fmt.Errorf("tailLines: Invalid value: %d: must be greater than or equal to 0", *tailLines))
		}
		o.tail = *tailLines
	}
	if limitBytes != nil {
		if *limitBytes < 1 {
			errs = append(errs, fmt.Errorf("limitBytes: Invalid value: %d: must be greater than 0", *limitBytes))
		}
		o.limit = *limitBytes
	}
	switch {
	case sinceSeconds != nil && sinceTime != nil:
		errs = append(errs, errors.New("sinceSeconds: Forbidden: at most one of sinceTime or sinceSeconds may be specified"))
	case sinceSeconds != nil:
		if *sinceSeconds < 1 {
			errs = append(errs, fmt.Errorf("sinceSeconds: Invalid value: %d: must be greater than 0", *sinceSeconds))
		}
		o.since = now.Add(-time.Duration(*sinceSeconds) * time.Second)
	case sinceTime != nil:
		o.since = *sinceTime
	}
	switch st := q.Get("stream"); st {
	case "", corev1.LogStreamAll:
	case corev1.LogStreamStdout, corev1.LogStreamStderr:
		o.stream = st
	default:
		errs = append(errs, fmt.Errorf("stream: Unsupported value: %q: supported values: %q, %q, %q", st, corev1.LogStreamAll, corev1.LogStreamStdout, corev1.LogStreamStderr))
	}
	if len(errs) > 0 {
		return o, http.StatusUnprocessableEntity, fmt.Errorf("PodLogOptions is invalid: %w", errors.Join(errs...))
	}
	return o, 0, nil
}

// queryBool decodes a boolean query parameter as Kubernetes does: absent,
// "0" and "false" are false, anything else (even empty) is true.
func queryBool(q url.Values, name string) bool {
	v, ok := q[name]
	if !ok || len(v) == 0 {
		return false
	}
	return v[0] != "0" && !strings.EqualFold(v[0], "false")
}

func cloneValues(q url.Values) url.Values {
	c := make(url.Values, len(q))
	for k, v := range q {
		c[k] = append([]string(nil), v...)
	}
	return c
}

// serveContainerLogs serves GET /containerLogs/{ns}/{pod}/{container}
// from the container's CRI log file.
func (s *Server) serveContainerLogs(w http.ResponseWriter, r *http.Request, ns, pod, container string) {
	opts, code, err := parseLogOptions(r.URL.Query(), time.Now())
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	id, path, err := s.cfg.Containers.Container(ns, pod, "", container, opts.previous)
	if err != nil {
		s.containerError(w, err)
		return
	}
	f, err := os.Open(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		http.Error(w, fmt.Sprintf("open the log of container %q in pod %s/%s: %v", container, ns, pod, err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if opts.follow {
		// The client sees the answer start even before the first line.
		rc.Flush()
	}
	lf := &logFollower{
		opts: opts,
		out:  &logWriter{w: w, rc: rc, limit: opts.limit, timestamps: opts.timestamps},
		path: path,
	}
	if f != nil {
		lf.open(f)
	}
	defer lf.close()
	if err := lf.readExisting(!opts.follow || opts.previous); err != nil {
		s.logStop(ns, pod, container, err)
		return
	}
	if !opts.follow || opts.previous {
		return
	}
	stillCurrent := func() bool {
		cur, _, err := s.cfg.Containers.Container(ns, pod, "", container, false)
		if errors.Is(err, ErrPodNotFound) || errors.Is(err, ErrContainerNotFound) {
			return false
		}
		return err != nil || cur == id
	}
	s.logStop(ns, pod, container, lf.follow(r.Context(), stillCurrent))
}

func (s *Server) logStop(ns, pod, container string, err error) {
	if err != nil && !errors.Is(err, errLimitReached) && !errors.Is(err, context.Canceled) {
		s.log.Debug("container log stream ended", "namespace", ns, "name", pod, "container", container, "err", err)
	}
}

// errLimitReached ends a stream at limitBytes.
var errLimitReached = errors.New("kubelet server: limitBytes reached")

// logEntry is one line of a container's output, partial pieces joined.
type logEntry struct {
	ts      time.Time
	stream  string // "stdout" or "stderr"
	content []byte // with its newline
}

// logFollower reads a CRI log file: lines "<RFC3339Nano> <stream> <P|F>
// <content>", where P marks a piece of a longer line continued by the
// next line of the same stream.
type logFollower struct {
	opts logOptions
	out  *logWriter
	path string

	f       *os.File
	rd      *bufio.Reader
	pending []byte               // a line read without its newline yet
	partial map[string]*logEntry // per stream, the pieces of an unfinished line
}

func (lf *logFollower) open(f *os.File) {
	lf.f = f
	lf.rd = bufio.NewReaderSize(f, 64<<10)
	lf.pending = nil
}

func (lf *logFollower) close() {
	if lf.f != nil {
		lf.f.Close()
	}
}

// readExisting writes what the file holds now, honouring since, stream and
// tailLines. With final (no follow to come), a line the container left
// unfinished — its last output without a newline — is written too, as
// upstream does.
func (lf *logFollower) readExisting(final bool) error {
	if lf.opts.tail < 0 {
		if err := lf.drain(lf.out.write); err != nil {
			return err
		}
		if final {
			return lf.flushPartials(lf.out.write)
		}
		return nil
	}
	// Keep the last tail entries in a ring.
	var ring []logEntry
	next, full := 0, false
	keep := func(e logEntry) error {
		if lf.opts.tail == 0 {
			return nil
		}
		if int64(len(ring)) < lf.opts.tail {
			ring = append(ring, e)
			return nil
		}
		full = true
		ring[next] = e
		next = (next + 1) % len(ring)
		return nil
	}
	err := lf.drain(keep)
	if err == nil && final {
		err = lf.flushPartials(keep)
	}
	if err != nil {
		return err
	}
	if full {
		ring = append(ring[next:], ring[:next]...)
	}
	for _, e := range ring {
		if err := lf.out.write(e); err != nil {
			return err
		}
	}
	return lf.out.flush()
}

// drain reads the open file to its end and passes every complete entry
// that passes the filters to emit.
func (lf *logFollower) drain(emit func(logEntry) error) error {
	if lf.f == nil {
		return nil
	}
	for {
		b, err := lf.rd.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			lf.pending = append(lf.pending, b...)
			continue
		}
		if err != nil {
			lf.pending = append(lf.pending, b...)
			if err == io.EOF {
				return nil
			}
			return err
		}
		line := b
		if len(lf.pending) > 0 {
			line = append(lf.pending, b...)
			lf.pending = nil
		}
		e, ok := lf.parse(bytes.TrimSuffix(line, []byte("\n")))
		if !ok {
			continue
		}
		if !lf.opts.since.IsZero() && e.ts.Before(lf.opts.since) {
			continue
		}
		if lf.opts.stream != "" && !strings.EqualFold(e.stream, lf.opts.stream) {
			continue
		}
		if err := emit(e); err != nil {
			return err
		}
	}
}

// flushPartials passes the unfinished lines, oldest first, to emit without
// a newline.
func (lf *logFollower) flushPartials(emit func(logEntry) error) error {
	var rest []*logEntry
	for _, e := range lf.partial {
		rest = append(rest, e)
	}
	slices.SortFunc(rest, func(a, b *logEntry) int { return a.ts.Compare(b.ts) })
	lf.partial = nil
	for _, e := range rest {
		if !lf.opts.since.IsZero() && e.ts.Before(lf.opts.since) {
			continue
		}
		if lf.opts.stream != "" && !strings.EqualFold(e.stream, lf.opts.stream) {
			continue
		}
		if err := emit(*e); err != nil {
			return err
		}
	}
	return nil
}

// parse parses one CRI log line; it returns false for a malformed line or
// a partial piece (kept until its line is complete).
func (lf *logFollower) parse(line []byte) (logEntry, bool) {
	tsField, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return logEntry{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(tsField))
	if err != nil {
		return logEntry{}, false
	}
	stream, rest, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return logEntry{}, false
	}
	tags, content, _ := bytes.Cut(rest, []byte(" "))
	tag, _, _ := bytes.Cut(tags, []byte(":"))
	key := string(stream)
	prev := lf.partial[key]
	switch string(tag) {
	case "P":
		if prev == nil {
			if lf.partial == nil {
				lf.partial = make(map[string]*logEntry)
			}
			lf.partial[key] = &logEntry{ts: ts, stream: key, content: bytes.Clone(content)}
		} else {
			prev.content = append(prev.content, content...)
		}
		return logEntry{}, false
	case "F":
		e := logEntry{ts: ts, stream: key}
		if prev != nil {
			delete(lf.partial, key)
			e.ts = prev.ts
			e.content = prev.content
		}
		e.content = append(append(e.content, content...), '\n')
		return e, true
	}
	return logEntry{}, false
}

// follow writes new entries as they are appended, across rotations
// (the file renamed and a new one created at path), until ctx ends, the
// file is deleted, limitBytes is reached, or stillCurrent reports that the
// followed container has been replaced or removed (checked about once a
// second; what it wrote before is still delivered).
func (lf *logFollower) follow(ctx context.Context, stillCurrent func() bool) error {
	tick := time.NewTicker(logPollInterval)
	defer tick.Stop()
	lastCheck := time.Now()
	for {
		if err := lf.drain(lf.out.write); err != nil {
			return err
		}
		if err := lf.out.flush(); err != nil {
			return err
		}
		switch lf.fileState() {
		case fileDeleted:
			return nil
		case fileReplaced:
			// Read what reached the old file after the last pass, then
			// switch to the new one.
			if err := lf.drain(lf.out.write); err != nil {
				return err
			}
			f, err := os.Open(lf.path)
			if err == nil {
				lf.f.Close()
				lf.open(f)
				continue
			}
		}
		if time.Since(lastCheck) >= logCheckInterval {
			lastCheck = time.Now()
			if !stillCurrent() {
				if err := lf.drain(lf.out.write); err != nil {
					return err
				}
				return lf.out.flush()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

type fileState int

const (
	fileSame     fileState = iota // still the file at path (or nothing there yet)
	fileReplaced                  // a different file is at path now
	fileDeleted                   // the open file was unlinked and nothing replaced it
)

func (lf *logFollower) fileState() fileState {
	cur, err := os.Stat(lf.path)
	if lf.f == nil {
		if err == nil {
			return fileReplaced
		}
		return fileSame
	}
	open, ferr := lf.f.Stat()
	if ferr != nil {
		return fileSame
	}
	if err == nil {
		if os.SameFile(open, cur) {
			return fileSame
		}
		return fileReplaced
	}
	// Nothing at path: rotated away (a new file comes soon) or deleted.
	if st, ok := open.Sys().(*syscall.Stat_t); ok && st.Nlink == 0 {
		return fileDeleted
	}
	return fileSame
}

// logWriter writes entries to the response, with timestamps if asked,
// and stops at the byte limit.
type logWriter struct {
	w          io.Writer
	rc         *http.ResponseController
	limit      int64 // < 0: none
	timestamps bool
	dirty      bool
}

func (lw *logWriter) write(e logEntry) error {
	var b []byte
	if lw.timestamps {
		b = append(e.ts.AppendFormat(nil, time.RFC3339Nano), ' ')
		b = append(b, e.content...)
	} else {
		b = e.content
	}
	full := false
	if lw.limit >= 0 && int64(len(b)) >= lw.limit {
		b, full = b[:lw.limit], true
	}
	if len(b) > 0 {
		if _, err := lw.w.Write(b); err != nil {
			return err
		}
		lw.dirty = true
	}
	if lw.limit >= 0 {
		lw.limit -= int64(len(b))
	}
	if full {
		lw.flush()
		return errLimitReached
	}
	return nil
}

func (lw *logWriter) flush() error {
	if !lw.dirty {
		return nil
	}
	lw.dirty = false
	if err := lw.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
