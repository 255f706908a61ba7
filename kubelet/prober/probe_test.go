package prober

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func serverAddr(t *testing.T, rawURL string) (host string, port int) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err = strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname(), port
}

func TestProbeHTTP(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if ua := r.Header.Get("User-Agent"); ua != userAgent {
			t.Errorf("User-Agent = %q, want %q", ua, userAgent)
		}
		w.Write([]byte("fine"))
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "probe.example" || r.Header.Get("X-Custom") != "v" || r.Header.Get("Accept") != "application/json" || r.URL.RawQuery != "a=b" {
			http.Error(w, "bad request: host="+r.Host, http.StatusBadRequest)
			return
		}
		w.Write([]byte("headers ok"))
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("/redirect-fail", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/fail", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(mux)
	defer tlsSrv.Close()
	host, port := serverAddr(t, srv.URL)
	_, tlsPort := serverAddr(t, tlsSrv.URL)

	// Elsewhere redirects to the same server under another host name.
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:"+strconv.Itoa(port)+"/ok", http.StatusFound)
	})

	// A closed port: listen, note the port, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	container := &corev1.Container{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}
	get := func(path string, port intstr.IntOrString) *corev1.HTTPGetAction {
		return &corev1.HTTPGetAction{Path: path, Port: port}
	}
	tests := []struct {
		name    string
		action  *corev1.HTTPGetAction
		want    Result
		wantMsg string
	}{
		{"200", get("/ok", intstr.FromInt32(int32(port))), Success, "fine"},
		{"named port", get("/ok", intstr.FromString("http")), Success, "fine"},
		{"port number as string", get("/ok", intstr.FromString(strconv.Itoa(port))), Success, "fine"},
		{"unknown named port", get("/ok", intstr.FromString("metrics")), Unknown, `couldn't find port "metrics" in container "app"`},
		{"headers and query", &corev1.HTTPGetAction{Path: "/headers?a=b", Port: intstr.FromInt32(int32(port)), HTTPHeaders: []corev1.HTTPHeader{
			{Name: "Host", Value: "probe.example"}, {Name: "x-custom", Value: "v"}, {Name: "Accept", Value: "application/json"},
		}}, Success, "headers ok"},
		{"500", get("/fail", intstr.FromInt32(int32(port))), Failure, "HTTP probe failed with statuscode: 500"},
		{"404", get("/missing", intstr.FromInt32(int32(port))), Failure, "HTTP probe failed with statuscode: 404"},
		{"same-host redirect followed", get("/redirect", intstr.FromInt32(int32(port))), Success, "fine"},
		{"same-host redirect to a failure", get("/redirect-fail", intstr.FromInt32(int32(port))), Failure, "HTTP probe failed with statuscode: 500"},
		{"redirect loop", get("/loop", intstr.FromInt32(int32(port))), Failure, "stopped after 10 redirects"},
		{"other-host redirect not followed", get("/elsewhere", intstr.FromInt32(int32(port))), Success, "Probe terminated redirects"},
		{"https without verification", &corev1.HTTPGetAction{Scheme: corev1.URISchemeHTTPS, Path: "/ok", Port: intstr.FromInt32(int32(tlsPort))}, Success, "fine"},
		{"explicit host", &corev1.HTTPGetAction{Host: "127.0.0.1", Path: "/ok", Port: intstr.FromInt32(int32(port))}, Success, "fine"},
		{"connection refused", get("/ok", intstr.FromInt32(int32(closedPort))), Failure, "dial tcp 127.0.0.1:" + strconv.Itoa(closedPort) + ": connect: connection refused"},
		{"timeout", get("/slow", intstr.FromInt32(int32(port))), Failure, "Client.Timeout exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: tt.action}, TimeoutSeconds: 1}
			got, msg := Probe(t.Context(), nil, p, &corev1.Pod{}, container, "cid", host)
			if got != tt.want || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("Probe() = %v, %q; want %v, a message containing %q", got, msg, tt.want, tt.wantMsg)
			}
		})
	}
}

func TestProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	open := ln.Addr().(*net.TCPAddr).Port
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln2.Addr().(*net.TCPAddr).Port
	ln2.Close()

	container := &corev1.Container{Name: "db", Ports: []corev1.ContainerPort{{Name: "sql", ContainerPort: int32(open)}}}
	tests := []struct {
		name    string
		action  corev1.TCPSocketAction
		want    Result
		wantMsg string
	}{
		{"open", corev1.TCPSocketAction{Port: intstr.FromInt32(int32(open))}, Success, ""},
		{"named port", corev1.TCPSocketAction{Port: intstr.FromString("sql")}, Success, ""},
		{"closed", corev1.TCPSocketAction{Port: intstr.FromInt32(int32(closed))}, Failure,
			"dial tcp 127.0.0.1:" + strconv.Itoa(closed) + ": connect: connection refused"},
		{"invalid port", corev1.TCPSocketAction{Port: intstr.FromInt32(70000)}, Unknown, "invalid port number: 70000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &tt.action}}
			got, msg := Probe(t.Context(), nil, p, &corev1.Pod{}, container, "cid", "127.0.0.1")
			if got != tt.want || msg != tt.wantMsg {
				t.Errorf("Probe() = %v, %q; want %v, %q", got, msg, tt.want, tt.wantMsg)
			}
		})
	}
}

func TestProbeExec(t *testing.T) {
	type call struct {
		out  string
		code int
		err  error
		hang bool
	}
	tests := []struct {
		name    string
		call    call
		want    Result
		wantMsg string
	}{
		{"exit 0", call{out: "ok\n"}, Success, "ok\n"},
		{"exit 1 with output", call{out: "not healthy", code: 1}, Failure, "not healthy"},
		{"exit 2 without output", call{code: 2}, Failure, `command "cat /tmp/healthy" exited with code 2`},
		{"timeout", call{hang: true}, Failure, `command "cat /tmp/healthy" timed out`},
		{"execer reports timeout", call{err: ErrTimeout}, Failure, `command "cat /tmp/healthy" timed out`},
		{"runtime error", call{err: context.Canceled}, Unknown, "exec probe: context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				exec := func(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, int, error) {
					if id != "cid" || timeout != 2*time.Second || strings.Join(cmd, " ") != "cat /tmp/healthy" {
						t.Errorf("exec(%q, %q, %v): unexpected arguments", id, cmd, timeout)
					}
					if tt.call.hang {
						<-ctx.Done()
						return nil, -1, ctx.Err()
					}
					return []byte(tt.call.out), tt.call.code, tt.call.err
				}
				p := &corev1.Probe{
					ProbeHandler:   corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/healthy"}}},
					TimeoutSeconds: 2,
				}
				start := time.Now()
				got, msg := Probe(t.Context(), exec, p, &corev1.Pod{}, &corev1.Container{}, "cid", "")
				if got != tt.want || msg != tt.wantMsg {
					t.Errorf("Probe() = %v, %q; want %v, %q", got, msg, tt.want, tt.wantMsg)
				}
				if tt.call.hang && time.Since(start) != 2*time.Second {
					t.Errorf("timed-out probe took %v, want 2s", time.Since(start))
				}
			})
		})
	}
	// $(VAR) in the command expands against the container's literal env.
	var gotCmd []string
	record := func(_ context.Context, _ string, cmd []string, _ time.Duration) ([]byte, int, error) {
		gotCmd = cmd
		return nil, 0, nil
	}
	c := &corev1.Container{Env: []corev1.EnvVar{
		{Name: "FILE", Value: "/tmp/healthy"},
		{Name: "FROM", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
	}}
	p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "$(FILE)", "$(FROM)"}}}}
	Probe(t.Context(), record, p, &corev1.Pod{}, c, "cid", "")
	if want := []string{"cat", "/tmp/healthy", "$(FROM)"}; !slices.Equal(gotCmd, want) {
		t.Errorf("exec probe ran %q, want %q", gotCmd, want)
	}

	p = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	if got, _ := Probe(t.Context(), nil, p, &corev1.Pod{}, &corev1.Container{}, "cid", ""); got != Unknown {
		t.Errorf("Probe() without an Execer = %v, want unknown", got)
	}
	if got, msg := Probe(t.Context(), nil, &corev1.Probe{}, &corev1.Pod{}, &corev1.Container{}, "cid", ""); got != Unknown {
		t.Errorf("Probe() without a handler = %v, %q; want unknown", got, msg)
	}
}

func TestProbeWithoutPodIP(t *testing.T) {
	for _, h := range []corev1.ProbeHandler{
		{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(80)}},
		{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}},
		{GRPC: &corev1.GRPCAction{Port: 80}},
	} {
		got, msg := Probe(t.Context(), nil, &corev1.Probe{ProbeHandler: h}, &corev1.Pod{}, &corev1.Container{}, "cid", "")
		if got != Unknown || msg != errNoAddress {
			t.Errorf("Probe(%+v) without a pod IP = %v, %q; want unknown, %q", h, got, msg, errNoAddress)
		}
	}
}

func TestProbeGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("db", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()
	port := int32(ln.Addr().(*net.TCPAddr).Port)

	bare := grpc.NewServer() // no health service
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go bare.Serve(ln2)
	defer bare.Stop()
	barePort := int32(ln2.Addr().(*net.TCPAddr).Port)

	ln3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := int32(ln3.Addr().(*net.TCPAddr).Port)
	ln3.Close()

	str := func(s string) *string { return &s }
	tests := []struct {
		name    string
		action  corev1.GRPCAction
		want    Result
		wantMsg string
	}{
		{"serving", corev1.GRPCAction{Port: port}, Success, "service is serving"},
		{"not serving", corev1.GRPCAction{Port: port, Service: str("db")}, Failure, `service unhealthy (responded with "NOT_SERVING")`},
		{"unknown service", corev1.GRPCAction{Port: port, Service: str("nope")}, Failure, "error: health rpc probe failed"},
		{"unimplemented", corev1.GRPCAction{Port: barePort}, Failure, "does not implement the grpc health protocol"},
		{"refused", corev1.GRPCAction{Port: closedPort}, Failure, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &tt.action}}
			got, msg := Probe(t.Context(), nil, p, &corev1.Pod{}, &corev1.Container{}, "cid", "127.0.0.1")
			if got != tt.want || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("Probe() = %v, %q; want %v, a message containing %q", got, msg, tt.want, tt.wantMsg)
			}
		})
	}
}
