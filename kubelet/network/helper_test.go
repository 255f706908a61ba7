package network

// The root tests never change the host's network: every Network call runs
// in a child process (this test binary in helper mode) entered into a
// throwaway "node" network namespace with `nsenter --net`, the way an agent
// runs on a multi-node test machine. Each call is a new process and so a new
// Network on the same DataDir, which also exercises re-adoption.
//
// nsenter --net (unlike `ip netns exec`) keeps the host's mount namespace,
// so the pod namespaces outlive the helper and the test can enter them.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const helperEnv = "TETHER_NETWORK_TEST_HELPER"

type helperReq struct {
	Op     string        `json:"op"` // setup, teardown, podip, pods, routes, serve, dial
	Config helperConfig  `json:"config"`
	UID    string        `json:"uid,omitempty"`
	UIDs   []string      `json:"uids,omitempty"`
	Routes []helperRoute `json:"routes,omitempty"`
	Addr   string        `json:"addr,omitempty"`
	Name   string        `json:"name,omitempty"`
}

type helperConfig struct {
	PodCIDR string `json:"podCIDR"`
	Bridge  string `json:"bridge"`
	Prefix  string `json:"prefix"`
	DataDir string `json:"dataDir"`
}

func (c helperConfig) network() Config {
	return Config{
		PodCIDR:     c.PodCIDR,
		Bridge:      c.Bridge,
		NetNSPrefix: c.Prefix,
		DataDir:     c.DataDir,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

type helperRoute struct {
	Dst string `json:"dst"`
	Via string `json:"via"`
}

type helperResp struct {
	NetNS string        `json:"netns,omitempty"`
	IP    string        `json:"ip,omitempty"`
	IPs   []string      `json:"ips,omitempty"`
	Found bool          `json:"found,omitempty"`
	Pods  []string      `json:"pods,omitempty"`
	Took  time.Duration `json:"took,omitempty"`
	Reply string        `json:"reply,omitempty"`
	Err   string        `json:"err,omitempty"`
}

// runHelper performs one request in this process's network namespace and
// prints the response as JSON. "serve" prints READY and serves until killed.
func runHelper(raw string) int {
	var req helperReq
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		fmt.Fprintln(os.Stderr, "bad helper request:", err)
		return 2
	}
	resp := doHelper(req)
	_ = json.NewEncoder(os.Stdout).Encode(resp)
	return 0
}

func doHelper(req helperReq) (resp helperResp) {
	fail := func(err error) helperResp { return helperResp{Err: err.Error()} }
	ctx := context.Background()

	switch req.Op {
	case "serve":
		ln, err := net.Listen("tcp", req.Addr)
		if err != nil {
			return fail(err)
		}
		fmt.Println("READY")
		for {
			c, err := ln.Accept()
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(c, "hello from %s\n", req.Name)
			c.Close()
		}
	case "dial":
		c, err := net.DialTimeout("tcp", req.Addr, 3*time.Second)
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return fail(err)
		}
		return helperResp{Reply: strings.TrimSpace(string(b))}
	}

	n, err := New(req.Config.network())
	if err != nil {
		return fail(err)
	}
	switch req.Op {
	case "setup":
		start := time.Now()
		path, ip, err := n.SetupPod(ctx, req.UID, "default", "pod-"+req.UID)
		if err != nil {
			return fail(err)
		}
		return helperResp{NetNS: path, IP: ip.String(), Took: time.Since(start)}
	case "teardown":
		if err := n.TeardownPod(ctx, req.UID); err != nil {
			return fail(err)
		}
		return helperResp{}
	case "podip":
		ip, ok := n.PodIP(req.UID)
		if !ok {
			return helperResp{}
		}
		return helperResp{IP: ip.String(), Found: true}
	case "pods":
		pods, err := n.Pods()
		if err != nil {
			return fail(err)
		}
		return helperResp{Pods: pods}
	case "setupmany":
		// Concurrent SetupPod calls, as from several pod workers.
		var wg sync.WaitGroup
		ips := make([]string, len(req.UIDs))
		errs := make([]error, len(req.UIDs))
		for i, uid := range req.UIDs {
			wg.Go(func() {
				_, ip, err := n.SetupPod(ctx, uid, "default", uid)
				ips[i], errs[i] = ip.String(), err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fail(err)
		}
		return helperResp{IPs: ips}
	case "lifecycle":
		// What an agent does over its lifetime, all in this one process:
		// set up, restart (a new Network), adopt, tear down.
		_, ip1, err := n.SetupPod(ctx, req.UID, "default", req.UID)
		if err != nil {
			return fail(err)
		}
		n2, err := New(req.Config.network())
		if err != nil {
			return fail(err)
		}
		_, ip2, err := n2.SetupPod(ctx, req.UID, "default", req.UID)
		if err != nil {
			return fail(err)
		}
		if !ip1.Equal(ip2) {
			return fail(fmt.Errorf("re-adopted IP %s, want %s", ip2, ip1))
		}
		if err := n2.TeardownPod(ctx, req.UID); err != nil {
			return fail(err)
		}
		if ip, ok := n2.PodIP(req.UID); ok {
			return fail(fmt.Errorf("PodIP after teardown = %s", ip))
		}
		return helperResp{IP: ip1.String()}
	case "routes":
		var routes []Route
		for _, r := range req.Routes {
			_, dst, err := net.ParseCIDR(r.Dst)
			if err != nil {
				return fail(err)
			}
			routes = append(routes, Route{Dst: dst, Via: net.ParseIP(r.Via)})
		}
		if err := n.SyncRoutes(routes); err != nil {
			return fail(err)
		}
		return helperResp{}
	}
	return fail(fmt.Errorf("unknown op %q", req.Op))
}

// skipUnlessRoot skips tests that need root, iproute2, nsenter and the CNI
// plugins.
func skipUnlessRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, bridges and veths")
	}
	for _, bin := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s in PATH: %v", bin, err)
		}
	}
	for _, p := range requiredPlugins {
		if _, err := os.Stat(filepath.Join(DefaultCNIBinDir, p)); err != nil {
			t.Skipf("needs the CNI plugins in %s (Debian: containernetworking-plugins): %v", DefaultCNIBinDir, err)
		}
	}
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testNode is a throwaway network namespace standing for one node, with its
// own bridge, netns prefix and CNI data dir.
type testNode struct {
	t    *testing.T
	ns   string // the node's netns name
	cfg  helperConfig
	exe  string
	pods map[string]string // uid -> pod netns name, for checks
}

func newTestNode(t *testing.T, podCIDR string) *testNode {
	t.Helper()
	id := randHex(t, 3)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{
		t:  t,
		ns: "tnt" + id + "-node",
		cfg: helperConfig{
			PodCIDR: podCIDR,
			Bridge:  "tbr" + id,
			Prefix:  "tnt" + id + "-pod-",
			DataDir: filepath.Join(t.TempDir(), "cni"),
		},
		exe: exe,
	}
	mustRun(t, "ip", "netns", "add", n.ns)
	t.Cleanup(n.cleanup)
	mustRun(t, "ip", "-n", n.ns, "link", "set", "lo", "up")
	return n
}

// cleanup deletes every pod netns with the node's prefix and the node
// netns (which takes the bridge and the host-side veths with it).
func (n *testNode) cleanup() {
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), n.cfg.Prefix) {
			if out, err := exec.Command("ip", "netns", "delete", e.Name()).CombinedOutput(); err != nil {
				n.t.Logf("cleanup: ip netns delete %s: %v: %s", e.Name(), err, out)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "delete", n.ns).CombinedOutput(); err != nil {
		n.t.Logf("cleanup: ip netns delete %s: %v: %s", n.ns, err, out)
	}
}

// call runs one helper request inside the node's network namespace.
func (n *testNode) call(req helperReq) helperResp {
	n.t.Helper()
	req.Config = n.cfg
	return runHelperIn(n.t, n.ns, req)
}

func runHelperIn(t *testing.T, netns string, req helperReq) helperResp {
	t.Helper()
	raw, _ := json.Marshal(req)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+filepath.Join(netnsDir, netns), exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper %s in %s: %v\nstderr: %s", req.Op, netns, err, stderr.String())
	}
	var resp helperResp
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		t.Fatalf("helper %s in %s: bad output %q: %v\nstderr: %s", req.Op, netns, stdout.String(), err, stderr.String())
	}
	if testing.Verbose() && stderr.Len() > 0 {
		t.Logf("helper %s in %s logs:\n%s", req.Op, netns, strings.TrimSpace(stderr.String()))
	}
	return resp
}

func (n *testNode) setup(uid string) (netnsPath string, ip net.IP) {
	n.t.Helper()
	resp := n.call(helperReq{Op: "setup", UID: uid})
	if resp.Err != "" {
		n.t.Fatalf("SetupPod(%s) on %s: %s", uid, n.ns, resp.Err)
	}
	n.t.Logf("SetupPod(%s) on %s = %s, %s in %v", uid, n.ns, resp.NetNS, resp.IP, resp.Took.Round(time.Millisecond))
	return resp.NetNS, net.ParseIP(resp.IP)
}

func (n *testNode) teardown(uid string) {
	n.t.Helper()
	if resp := n.call(helperReq{Op: "teardown", UID: uid}); resp.Err != "" {
		n.t.Fatalf("TeardownPod(%s) on %s: %s", uid, n.ns, resp.Err)
	}
}

func (n *testNode) syncRoutes(routes ...helperRoute) error {
	n.t.Helper()
	if routes == nil {
		routes = []helperRoute{}
	}
	if resp := n.call(helperReq{Op: "routes", Routes: routes}); resp.Err != "" {
		return fmt.Errorf("%s", resp.Err)
	}
	return nil
}

// serve starts a TCP server answering "hello from <name>" inside netns.
func serve(t *testing.T, netnsPath, addr, name string) {
	t.Helper()
	raw, _ := json.Marshal(helperReq{Op: "serve", Addr: addr, Name: name})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+netnsPath, exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
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
		t.Fatalf("server in %s: got %q, %v; stderr: %s", netnsPath, line, err, stderr.String())
	}
}

// dial connects from inside netnsPath to addr and returns the reply.
func dial(t *testing.T, netnsPath, addr string) (string, error) {
	t.Helper()
	resp := runHelperIn(t, strings.TrimPrefix(netnsPath, netnsDir+"/"), helperReq{Op: "dial", Addr: addr})
	if resp.Err != "" {
		return "", fmt.Errorf("%s", resp.Err)
	}
	return resp.Reply, nil
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ipJSON runs `ip -json <args>` and decodes the output into v.
func ipJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := mustRun(t, "ip", append([]string{"-json"}, args...)...)
	if strings.TrimSpace(out) == "" {
		out = "[]"
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("ip -json %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

type ipAddrInfo struct {
	IfName    string   `json:"ifname"`
	Flags     []string `json:"flags"`
	OperState string   `json:"operstate"`
	AddrInfo  []struct {
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
	} `json:"addr_info"`
}

func (a ipAddrInfo) has(ip string) bool {
	for _, ai := range a.AddrInfo {
		if ai.Local == ip {
			return true
		}
	}
	return false
}

func (a ipAddrInfo) up() bool {
	for _, f := range a.Flags {
		if f == "UP" {
			return true
		}
	}
	return false
}
