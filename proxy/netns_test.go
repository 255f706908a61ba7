package proxy

// Helpers for the root tests: throwaway network namespaces, and the test
// binary re-executed inside one of them (under nsenter) to run a server, a
// client, a Proxier or a benchmark there. The child's nft and ip commands
// then act on that namespace only.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

const (
	helperEnv = "TETHER_PROXY_TEST_HELPER"
	netnsDir  = "/run/netns"
)

func TestMain(m *testing.M) {
	if req := os.Getenv(helperEnv); req != "" {
		os.Exit(runHelper(req))
	}
	os.Exit(m.Run())
}

// helperReq is what a child process is asked to do.
type helperReq struct {
	Op string // serve, serve1, dial, until, latency, proxy, cleanup, bench

	// serve, dial, until
	Addr  string
	Name  string
	Count int
	Want  string // until: the reply every connection must get, or "refused"

	// proxy, cleanup, bench
	Table       string
	ServiceCIDR string
	ClusterCIDR string
	NodeIPs     []string
	Services    int // bench

	// latency
	Direct []string // the pods' own addresses, used in turn
	VIP    string
}

// dialResult is the answer of a "dial" child: the reply of every
// successful connection and the error of every failed one.
type dialResult struct {
	Replies []string
	Errs    []string
	Took    time.Duration
}

func runHelper(raw string) int {
	var req helperReq
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var err error
	switch req.Op {
	case "serve":
		err = helperServe(req)
	case "dial":
		err = json.NewEncoder(os.Stdout).Encode(helperDial(req))
	case "until":
		err = helperUntil(req)
	case "serve1":
		err = helperServeOne(req)
	case "latency":
		err = helperLatency(req)
	case "proxy":
		err = helperProxy(req)
	case "cleanup":
		err = Cleanup(context.Background(), req.Table)
	case "bench":
		err = helperBench(req)
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// helperServe answers every connection with "<name> <client address>".
func helperServe(req helperReq) error {
	ln, err := net.Listen("tcp4", req.Addr)
	if err != nil {
		return err
	}
	fmt.Println("READY")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		fmt.Fprintf(c, "%s %s\n", req.Name, host)
		c.Close()
	}
}

func helperDial(req helperReq) dialResult {
	var res dialResult
	start := time.Now()
	for range max(req.Count, 1) {
		reply, err := func() (string, error) {
			c, err := net.DialTimeout("tcp4", req.Addr, 2*time.Second)
			if err != nil {
				return "", err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			return strings.TrimSpace(line), err
		}()
		if err != nil {
			res.Errs = append(res.Errs, err.Error())
		} else {
			res.Replies = append(res.Replies, reply)
		}
	}
	res.Took = time.Since(start)
	return res
}

// helperUntil says READY, then dials Count connections at a time until
// every one of a round gets req.Want, and prints the wall-clock time that
// round started (JSON). It gives up after 10 seconds.
func helperUntil(req helperReq) error {
	fmt.Println("READY")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		res := helperDial(req)
		ok := len(res.Errs) == 0
		for _, r := range res.Replies {
			ok = ok && r == req.Want
		}
		if req.Want == "refused" {
			ok = len(res.Replies) == 0
			for _, e := range res.Errs {
				ok = ok && isRefused(e)
			}
		}
		if ok {
			return json.NewEncoder(os.Stdout).Encode(start)
		}
	}
	return fmt.Errorf("no round of %d connections to %s all got %q within 10s", req.Count, req.Addr, req.Want)
}

// proxyState is a desired set of API objects, sent to a "proxy" child as
// one JSON line on its stdin.
type proxyState struct {
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
}

// helperProxy runs a Proxier on a fake clientset. Each line on stdin is a
// proxyState the clientset is made to match; the child answers READY once
// the first sync is done and APPLIED after each state is written to the
// clientset. It stops (leaving its rules) at end of input.
func helperProxy(req helperReq) error {
	client := fake.NewClientset()
	cfg := Config{
		Client:          client,
		NodeName:        "proxy-test",
		TableName:       req.Table,
		MinSyncInterval: 10 * time.Millisecond,
	}
	for _, s := range req.NodeIPs {
		cfg.NodeIPs = append(cfg.NodeIPs, net.ParseIP(s))
	}
	var err error
	if _, cfg.ServiceCIDR, err = net.ParseCIDR(req.ServiceCIDR); err != nil {
		return err
	}
	if _, cfg.ClusterCIDR, err = net.ParseCIDR(req.ClusterCIDR); err != nil {
		return err
	}
	p, err := New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(nil, 16<<20)

	// The first state is in place before Run starts, so that Ready means
	// its rules are in the kernel.
	started := false
	for in.Scan() {
		var st proxyState
		if err := json.Unmarshal(in.Bytes(), &st); err != nil {
			return err
		}
		if err := matchState(ctx, client, st); err != nil {
			return err
		}
		if !started {
			started = true
			go func() { done <- p.Run(ctx) }()
			select {
			case <-p.Ready():
				fmt.Println("READY")
			case err := <-done:
				return fmt.Errorf("Run ended before Ready: %w", err)
			}
			continue
		}
		fmt.Println("APPLIED")
	}
	cancel()
	if started {
		return <-done
	}
	return nil
}

// matchState makes the fake clientset hold exactly st.
func matchState(ctx context.Context, client *fake.Clientset, st proxyState) error {
	svcs, _ := client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	for _, s := range svcs.Items {
		if !slices.ContainsFunc(st.Services, func(w *corev1.Service) bool { return w.Namespace == s.Namespace && w.Name == s.Name }) {
			if err := client.CoreV1().Services(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
				return err
			}
		}
	}
	sls, _ := client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	for _, s := range sls.Items {
		if !slices.ContainsFunc(st.EndpointSlices, func(w *discoveryv1.EndpointSlice) bool { return w.Namespace == s.Namespace && w.Name == s.Name }) {
			if err := client.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
				return err
			}
		}
	}
	for _, s := range st.Services {
		if _, err := client.CoreV1().Services(s.Namespace).Update(ctx, s, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
			_, err = client.CoreV1().Services(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
			if err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	for _, s := range st.EndpointSlices {
		if _, err := client.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx, s, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
			_, err = client.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
			if err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	return nil
}

// Parent side.

func skipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces and nftables)")
	}
	for _, bin := range []string{"nft", "ip", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not found: %v", bin, err)
		}
	}
	if testing.Short() {
		t.Skip("skipping in -short mode: needs network namespaces")
	}
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// addNetns creates a network namespace with lo up, deleted at cleanup.
func addNetns(t testing.TB, name string) {
	t.Helper()
	mustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Logf("cleanup: ip netns delete %s: %v: %s", name, err, out)
		}
	})
	mustRun(t, "ip", "-n", name, "link", "set", "lo", "up")
}

// child starts the test binary inside netns to do req.
func child(t testing.TB, netns string, req helperReq) *exec.Cmd {
	t.Helper()
	raw, _ := json.Marshal(req)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+filepath.Join(netnsDir, netns), exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	return cmd
}

// runChild runs a child to completion and decodes its JSON output into v.
func runChild(t testing.TB, netns string, req helperReq, v any) {
	t.Helper()
	cmd := child(t, netns, req)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper %s in %s: %v\nstderr: %s", req.Op, netns, err, stderr.String())
	}
	if v != nil {
		if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
			t.Fatalf("helper %s in %s: bad output %q: %v", req.Op, netns, stdout.String(), err)
		}
	}
}

// serveIn starts a server in netns answering "<name> <client ip>".
func serveIn(t testing.TB, netns, addr, name string) {
	t.Helper()
	cmd := child(t, netns, helperReq{Op: "serve", Addr: addr, Name: name})
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "READY" {
		t.Fatalf("server in %s: got %q, %v; stderr: %s", netns, line, err, stderr.String())
	}
}

func dialFrom(t testing.TB, netns, addr string, count int) dialResult {
	t.Helper()
	var res dialResult
	runChild(t, netns, helperReq{Op: "dial", Addr: addr, Count: count}, &res)
	return res
}

// changeTook starts a child in netns that dials addr until every
// connection of a round gets want (a reply, or "refused"), then calls
// change and reports how long after it the first such round started.
func changeTook(t testing.TB, netns, addr, want string, change func()) time.Duration {
	t.Helper()
	cmd := child(t, netns, helperReq{Op: "until", Addr: addr, Want: want, Count: 10})
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); strings.TrimSpace(line) != "READY" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("until child in %s: %q, %v; stderr: %s", netns, line, err, stderr.String())
	}
	start := time.Now()
	change()
	rest, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("until child in %s: %v; stderr: %s", netns, err, stderr.String())
	}
	var at time.Time
	if err := json.Unmarshal(rest, &at); err != nil {
		t.Fatalf("until child in %s: bad output %q: %v", netns, rest, err)
	}
	return max(at.Sub(start), 0)
}

// proxyChild is a Proxier running in a child process.
type proxyChild struct {
	t     testing.TB
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	errb  *bytes.Buffer
	ended bool
}

func startProxy(t testing.TB, netns string, req helperReq, first proxyState) *proxyChild {
	t.Helper()
	req.Op = "proxy"
	cmd := child(t, netns, req)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	pc := &proxyChild{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), errb: &bytes.Buffer{}}
	cmd.Stderr = pc.errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !pc.ended {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	pc.send(first, "READY")
	return pc
}

// send writes st to the child and waits for its answer.
func (pc *proxyChild) send(st proxyState, want string) {
	pc.t.Helper()
	raw, _ := json.Marshal(st)
	if _, err := pc.in.Write(append(raw, '\n')); err != nil {
		pc.t.Fatalf("proxy child: %v; stderr: %s", err, pc.errb)
	}
	line, err := pc.out.ReadString('\n')
	if strings.TrimSpace(line) != want {
		pc.t.Fatalf("proxy child answered %q, %v, want %s; stderr: %s", line, err, want, pc.errb)
	}
}

// stop ends the child's input and waits for it to exit.
func (pc *proxyChild) stop() {
	pc.t.Helper()
	pc.in.Close()
	if err := pc.cmd.Wait(); err != nil {
		pc.t.Fatalf("proxy child: %v; stderr: %s", err, pc.errb)
	}
	pc.ended = true
}

// isRefused tells a connection refused (RST or ICMP port unreachable)
// from a timeout or any other error.
func isRefused(msg string) bool {
	return strings.Contains(msg, syscall.ECONNREFUSED.Error())
}
