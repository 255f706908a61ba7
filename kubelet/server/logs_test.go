package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

const currentLog = `2024-01-01T00:00:01.000000001Z stdout F line one
2024-01-01T00:00:02Z stderr F err one
garbage that is not a CRI line
2024-01-01T00:00:03.5Z stdout P joined-
2024-01-01T00:00:03.6Z stderr F err two
2024-01-01T00:00:03.7Z stdout P line-
2024-01-01T00:00:03.8Z stdout F end
2024-01-01T00:00:04Z stdout F line four
`

// The previous instance's last output had no newline: the runtime wrote it
// as a partial piece when the container exited.
const previousLog = "2023-12-31T00:00:00Z stdout F old instance\n2023-12-31T00:00:01Z stdout P last words\n"

func writeLogs(t *testing.T, f *fakeContainers) {
	t.Helper()
	if err := os.WriteFile(f.logs["app-2"], []byte(currentLog), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.logs["app-1"], []byte(previousLog), 0o644); err != nil {
		t.Fatal(err)
	}
}

func getLogs(t *testing.T, e *env, ctx context.Context, container, query string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/containerLogs/default/web/"+container+"?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer admin-token")
	resp, err := e.httpClient(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestContainerLogs(t *testing.T) {
	e := startEnv(t)
	writeLogs(t, e.containers)
	all := "line one\nerr one\nerr two\njoined-line-end\nline four\n"
	tests := []struct {
		query    string
		wantCode int
		want     string // the body, or for errors a substring of it
	}{
		{"", 200, all},
		{"timestamps=true", 200, "2024-01-01T00:00:01.000000001Z line one\n2024-01-01T00:00:02Z err one\n2024-01-01T00:00:03.6Z err two\n2024-01-01T00:00:03.5Z joined-line-end\n2024-01-01T00:00:04Z line four\n"},
		{"tailLines=2", 200, "joined-line-end\nline four\n"},
		{"tailLines=0", 200, ""},
		{"tailLines=100", 200, all},
		{"tail=1", 200, "line four\n"},
		{"tail=all&tailLines=1", 200, all},
		{"sinceTime=2024-01-01T00:00:03Z", 200, "err two\njoined-line-end\nline four\n"},
		{"sinceTime=2024-01-01T00:00:03Z&tailLines=1", 200, "line four\n"},
		{"sinceSeconds=1", 200, ""},
		{"limitBytes=12", 200, "line one\nerr"},
		{"limitBytes=12&timestamps=true", 200, "2024-01-01T0"},
		{"stream=Stderr", 200, "err one\nerr two\n"},
		{"stream=Stdout&tailLines=1", 200, "line four\n"},
		{"previous=true", 200, "old instance\nlast words"},
		{"previous=true&follow=true", 200, "old instance\nlast words"},
		{"previous=true&tailLines=1", 200, "last words"},
		{"sinceSeconds=10&sinceTime=2024-01-01T00:00:03Z", 422, "at most one of sinceTime or sinceSeconds"},
		{"tailLines=-1", 422, "tailLines"},
		{"limitBytes=0", 422, "limitBytes"},
		{"sinceSeconds=0", 422, "sinceSeconds"},
		{"stream=Both", 422, "stream"},
		{"tailLines=x", 400, "tailLines"},
		{"sinceTime=yesterday", 400, "sinceTime"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp := getLogs(t, e, t.Context(), "app", tt.query)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("GET containerLogs?%s = %d %q, want %d", tt.query, resp.StatusCode, body, tt.wantCode)
			}
			if tt.wantCode == 200 && string(body) != tt.want {
				t.Errorf("GET containerLogs?%s = %q, want %q", tt.query, body, tt.want)
			}
			if tt.wantCode != 200 && !strings.Contains(string(body), tt.want) {
				t.Errorf("GET containerLogs?%s = %q, want it to mention %q", tt.query, body, tt.want)
			}
		})
	}
}

func TestParseLogOptionsBooleans(t *testing.T) {
	for _, tt := range []struct {
		query string
		want  bool
	}{{"", false}, {"follow=false", false}, {"follow=0", false}, {"follow=true", true}, {"follow=1", true}, {"follow=", true}} {
		q, _ := url.ParseQuery(tt.query)
		o, _, err := parseLogOptions(q, time.Now())
		if err != nil || o.follow != tt.want {
			t.Errorf("parseLogOptions(%q).follow = %v, %v; want %v", tt.query, o.follow, err, tt.want)
		}
	}
}

// follower reads a followed log line by line.
type follower struct {
	t     *testing.T
	lines chan string
	done  chan struct{}
}

func startFollow(t *testing.T, e *env, query string) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	resp := getLogs(t, e, ctx, "app", query)
	if resp.StatusCode != 200 {
		t.Fatalf("follow: status %d", resp.StatusCode)
	}
	f := &follower{t: t, lines: make(chan string, 100), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
	}()
	return f
}

func (f *follower) expect(want string, within time.Duration) {
	f.t.Helper()
	select {
	case got := <-f.lines:
		if got != want {
			f.t.Errorf("followed line = %q, want %q", got, want)
		}
	case <-time.After(within):
		f.t.Fatalf("no line within %v, want %q", within, want)
	}
}

func (f *follower) expectEnd(within time.Duration) {
	f.t.Helper()
	select {
	case <-f.done:
	case l := <-f.lines:
		f.t.Errorf("unexpected line %q, want the stream to end", l)
	case <-time.After(within):
		f.t.Fatalf("the follow did not end within %v", within)
	}
}

func appendLine(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "%s stdout F %s\n", time.Now().UTC().Format(time.RFC3339Nano), content)
}

func TestContainerLogsFollow(t *testing.T) {
	e := startEnv(t)
	writeLogs(t, e.containers)
	path := e.containers.logs["app-2"]
	f := startFollow(t, e, "follow=true&tailLines=1")
	f.expect("line four", 2*time.Second)

	for i := range 3 {
		start := time.Now()
		appendLine(t, path, fmt.Sprintf("new line %d", i))
		f.expect(fmt.Sprintf("new line %d", i), 300*time.Millisecond)
		t.Logf("line %d arrived after %v", i, time.Since(start))
	}

	// A line written in two pieces arrives whole once complete.
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(fh, "%s stdout F half ", time.Now().UTC().Format(time.RFC3339Nano))
	time.Sleep(250 * time.Millisecond)
	fmt.Fprint(fh, "and half\n")
	fh.Close()
	f.expect("half and half", 300*time.Millisecond)

	// Rotation: the file is renamed and a new one created at the path.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendLine(t, path+".1", "late line in the old file")
	time.Sleep(150 * time.Millisecond)
	appendLine(t, path, "first line after rotation")
	f.expect("late line in the old file", time.Second)
	f.expect("first line after rotation", time.Second)
	appendLine(t, path, "second line after rotation")
	f.expect("second line after rotation", 300*time.Millisecond)

	// The container is replaced by a new instance: the follow ends.
	e.containers.setCurrent("app-3")
	f.expectEnd(3 * time.Second)
}

func TestContainerLogsFollowEndsWhenDeleted(t *testing.T) {
	e := startEnv(t)
	writeLogs(t, e.containers)
	f := startFollow(t, e, "follow=true&tailLines=1")
	f.expect("line four", time.Second)
	appendLine(t, e.containers.logs["app-2"], "before removal")
	f.expect("before removal", time.Second)
	if err := os.Remove(e.containers.logs["app-2"]); err != nil {
		t.Fatal(err)
	}
	f.expectEnd(2 * time.Second)
}

func TestContainerLogsFollowLimit(t *testing.T) {
	e := startEnv(t)
	writeLogs(t, e.containers)
	f := startFollow(t, e, "follow=true&tailLines=1&limitBytes=19")
	f.expect("line four", time.Second)
	appendLine(t, e.containers.logs["app-2"], "12345678")
	f.expect("12345678", time.Second)
	f.expectEnd(time.Second)
}

func TestContainerLogsFollowWaitsForFile(t *testing.T) {
	e := startEnv(t)
	f := startFollow(t, e, "follow=true")
	appendLine(t, e.containers.logs["app-2"], "first ever line")
	f.expect("first ever line", time.Second)
}
