package prober

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"tether/kubelet/podenv"
)

// Execer runs cmd in the container containerID and returns its combined
// output and exit code. It should give up after timeout (Probe also cancels
// ctx then); an error that wraps context.DeadlineExceeded or [ErrTimeout]
// counts as a timed-out command, any other error as a failure to run it.
type Execer func(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (output []byte, exitCode int, err error)

// ErrTimeout may be returned (wrapped) by an Execer whose command ran out of
// time.
var ErrTimeout = errors.New("prober: command timed out")

// Result is the outcome of a probe.
type Result int

const (
	// Unknown means the probe could not be run (a runtime error, an
	// unsupported handler); it says nothing about the container.
	Unknown Result = iota
	// Success means the container passed the probe.
	Success
	// Failure means the container failed the probe.
	Failure
)

func (r Result) String() string {
	switch r {
	case Success:
		return "success"
	case Failure:
		return "failure"
	}
	return "unknown"
}

// userAgent is the User-Agent of HTTP and gRPC probes: upstream's, with the
// Kubernetes version tether serves.
const userAgent = "kube-probe/1.37"

// maxOutput bounds how much of a command's output or a response body is
// kept as the message, like upstream's 10 KiB.
const maxOutput = 10 << 10

// errNoAddress is the message of a network probe of a pod whose address is
// not known yet: it must not fall back to the node's own loopback.
const errNoAddress = "the pod has no IP address to probe yet"

// maxRedirects bounds the same-host redirects an HTTP probe follows.
const maxRedirects = 10

// Probe runs one attempt of probe p against container c of pod, whose
// runtime ID is containerID and whose address is podIP. It returns the result
// and a short message: the command's output, the response body or the reason
// for a failure ("HTTP probe failed with statuscode: 500", "dial tcp
// 10.244.1.5:8080: connect: connection refused").
//
// An exec probe's command has its $(VAR) references to the container's
// literal env values expanded; pod is not otherwise used. The attempt takes
// at most p.TimeoutSeconds (default 1). HTTPS probes do not verify the
// server's certificate, like upstream's: a probe checks liveness, not
// identity, and carries no secret. HTTP redirects are followed only to the
// same host; a redirect elsewhere ends the probe with a success, as
// upstream's does (it reports a warning).
func Probe(ctx context.Context, exec Execer, p *corev1.Probe, pod *corev1.Pod, c *corev1.Container, containerID string, podIP string) (Result, string) {
	if p == nil {
		return Unknown, "no probe"
	}
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second
	}
	h := &p.ProbeHandler
	switch {
	case h.Exec != nil:
		return probeExec(ctx, exec, containerID, staticExpand(h.Exec.Command, c), timeout)
	case h.HTTPGet != nil:
		return probeHTTP(ctx, h.HTTPGet, c, podIP, timeout)
	case h.TCPSocket != nil:
		return probeTCP(ctx, h.TCPSocket, c, podIP, timeout)
	case h.GRPC != nil:
		return probeGRPC(ctx, h.GRPC, podIP, timeout)
	}
	return Unknown, "probe has no handler"
}

// staticExpand expands $(VAR) in an exec probe's command against the
// container's env entries that have a literal value, as upstream does; the
// probe does not see envFrom, valueFrom or service variables.
func staticExpand(cmd []string, c *corev1.Container) []string {
	if c == nil {
		return cmd
	}
	var env []string
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	return podenv.ExpandArgs(cmd, env)
}

func probeExec(ctx context.Context, exec Execer, containerID string, cmd []string, timeout time.Duration) (Result, string) {
	if exec == nil {
		return Unknown, "exec probes are not supported: no Execer"
	}
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, code, err := exec(ectx, containerID, cmd, timeout)
	timedOut := errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		(ectx.Err() != nil && ctx.Err() == nil)
	if timedOut {
		return Failure, fmt.Sprintf("command %q timed out", strings.Join(cmd, " "))
	}
	if err != nil {
		return Unknown, fmt.Sprintf("exec probe: %v", err)
	}
	msg := truncate(string(out))
	if code != 0 {
		if strings.TrimSpace(msg) == "" {
			msg = fmt.Sprintf("command %q exited with code %d", strings.Join(cmd, " "), code)
		}
		return Failure, msg
	}
	return Success, msg
}

func probeHTTP(ctx context.Context, g *corev1.HTTPGetAction, c *corev1.Container, podIP string, timeout time.Duration) (Result, string) {
	port, err := resolvePort(g.Port, c)
	if err != nil {
		return Unknown, err.Error()
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	host := g.Host
	if host == "" {
		host = podIP
	}
	if host == "" {
		return Unknown, errNoAddress
	}
	u, err := url.Parse(g.Path)
	if err != nil {
		u = &url.URL{Path: g.Path}
	}
	u.Scheme = scheme
	u.Host = net.JoinHostPort(host, strconv.Itoa(port))

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Unknown, err.Error()
	}
	for _, hh := range g.HTTPHeaders {
		if http.CanonicalHeaderKey(hh.Name) == "Host" {
			req.Host = hh.Value
			continue
		}
		req.Header.Add(hh.Name, hh.Value)
	}
	// Defaults apply only where the probe sets no header of that name.
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", userAgent)
	}
	if _, ok := req.Header["Accept"]; !ok {
		req.Header.Set("Accept", "*/*")
	}

	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:              nil, // never through a proxy
			DialContext:        (&net.Dialer{Timeout: timeout}).DialContext,
			TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // probes check liveness, not identity (upstream does the same)
			DisableKeepAlives:  true,
			DisableCompression: true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Hostname() != via[0].URL.Hostname() {
				return http.ErrUseLastResponse
			}
			if len(via) >= maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return Failure, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOutput))
	if err != nil {
		return Failure, fmt.Sprintf("HTTP probe failed reading the response: %v", err)
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return Success, string(body)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return Success, fmt.Sprintf("Probe terminated redirects, Response body: %s", body)
	}
	return Failure, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
}

func probeTCP(ctx context.Context, t *corev1.TCPSocketAction, c *corev1.Container, podIP string, timeout time.Duration) (Result, string) {
	port, err := resolvePort(t.Port, c)
	if err != nil {
		return Unknown, err.Error()
	}
	host := t.Host
	if host == "" {
		host = podIP
	}
	if host == "" {
		return Unknown, errNoAddress
	}
	conn, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return Failure, err.Error()
	}
	conn.Close()
	return Success, ""
}

func probeGRPC(ctx context.Context, g *corev1.GRPCAction, podIP string, timeout time.Duration) (Result, string) {
	if g.Port <= 0 || g.Port > 65535 {
		return Unknown, fmt.Sprintf("invalid port number: %d", g.Port)
	}
	if podIP == "" {
		return Unknown, errNoAddress
	}
	service := ""
	if g.Service != nil {
		service = *g.Service
	}
	addr := net.JoinHostPort(podIP, strconv.Itoa(int(g.Port)))
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(userAgent),
	)
	if err != nil {
		return Failure, fmt.Sprintf("error: failed to connect service at %q: %v", addr, err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		if s, ok := status.FromError(err); ok {
			switch s.Code() {
			case codes.Unimplemented:
				return Failure, fmt.Sprintf("this server does not implement the grpc health protocol (grpc.health.v1.Health): %s", s.Message())
			case codes.DeadlineExceeded:
				return Failure, fmt.Sprintf("timeout: health rpc did not complete within %v", timeout)
			}
		}
		return Failure, fmt.Sprintf("error: health rpc probe failed: %v", err)
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return Failure, fmt.Sprintf("service unhealthy (responded with %q)", st.String())
	}
	return Success, "service is serving"
}

// resolvePort returns the port number p stands for in container c: a
// number, the name of one of c's ports, or a number written as a string.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	port := -1
	switch p.Type {
	case intstr.Int:
		port = p.IntValue()
	case intstr.String:
		if c != nil {
			for _, cp := range c.Ports {
				if cp.Name == p.StrVal {
					port = int(cp.ContainerPort)
					break
				}
			}
		}
		if port < 0 {
			n, err := strconv.Atoi(p.StrVal)
			if err != nil {
				name := ""
				if c != nil {
					name = c.Name
				}
				return 0, fmt.Errorf("couldn't find port %q in container %q", p.StrVal, name)
			}
			port = n
		}
	}
	if port <= 0 || port > 65535 {
		return 0, fmt.Errorf("invalid port number: %d", port)
	}
	return port, nil
}

func truncate(s string) string {
	if len(s) > maxOutput {
		return s[:maxOutput]
	}
	return s
}
