package runtime

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chunks is a reader returning one chunk per Read.
type chunks []string

func (c *chunks) Read(p []byte) (int, error) {
	if len(*c) == 0 {
		return 0, io.EOF
	}
	n := copy(p, (*c)[0])
	(*c)[0] = (*c)[0][n:]
	if (*c)[0] == "" {
		*c = (*c)[1:]
	}
	return n, nil
}

func TestCopyStream(t *testing.T) {
	long := strings.Repeat("x", maxLogLine+10)
	tests := []struct {
		name  string
		input chunks
		want  []string // "<stream> <tag> <content>" per record
	}{
		{"lines", chunks{"a\nb\n"}, []string{"stdout F a", "stdout F b"}},
		{"empty line", chunks{"\n"}, []string{"stdout F "}},
		{"split across reads", chunks{"hel", "lo\nwor", "ld\n"}, []string{"stdout F hello", "stdout F world"}},
		{"no final newline", chunks{"a\nrest"}, []string{"stdout F a", "stdout P rest"}},
		{"long line", chunks{long + "\n"}, []string{"stdout P " + long[:maxLogLine], "stdout F " + long[maxLogLine:]}},
		{"long partial", chunks{long}, []string{"stdout P " + long[:maxLogLine], "stdout P " + long[maxLogLine:]}},
		{"carriage return kept", chunks{"a\r\n"}, []string{"stdout F a\r"}},
	}
	ts := time.Date(2026, 11, 27, 8, 0, 0, 123456789, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "0.log")
			w, err := openLog(path, DefaultLogMaxSize)
			if err != nil {
				t.Fatal(err)
			}
			w.now = func() time.Time { return ts }
			if err := w.copyStream("stdout", &tt.input); err != nil {
				t.Fatalf("copyStream: %v", err)
			}
			w.Close()
			b, _ := os.ReadFile(path)
			var want strings.Builder
			for _, rec := range tt.want {
				want.WriteString("2026-11-27T08:00:00.123456789Z " + rec + "\n")
			}
			if string(b) != want.String() {
				t.Errorf("log =\n%q\nwant\n%q", b, want.String())
			}
		})
	}
}

func TestLogRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := openLog(path, 200)
	if err != nil {
		t.Fatal(err)
	}
	// Each record is about 50 bytes: four fit in a file.
	in := chunks{strings.Repeat("0123456789\n", 10)}
	if err := w.copyStream("stderr", &in); err != nil {
		t.Fatal(err)
	}
	w.Close()
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if fi.Size() == 0 || fi.Size() > 200 {
			t.Errorf("%s has %d bytes, want 1..200", p, fi.Size())
		}
	}
	if _, err := os.Stat(path + ".2"); err == nil {
		t.Errorf("%s.2 exists; want only one rotated file", path)
	}
}
