package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"tether/pki"
	"tether/test/framework"
)

// The helpers in this file run tether and kubectl inside the network
// namespaces of a framework.Network. The server type of server_test.go does
// not fit there: it runs on the test's own loopback.

// hostProc is a long-running process inside a host's network namespace
// (`nsenter` replaces itself with the program, so signals reach it
// directly). Its stdout and stderr go, interleaved, to one log that tests
// can wait on line by line. It is stopped when the test ends.
type hostProc struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	started time.Time

	mu      sync.Mutex
	lines   []string
	at      []time.Time   // when each line arrived
	changed chan struct{} // closed and replaced when a line arrives

	exited  chan struct{} // closed once waitErr is set and the output read
	waitErr error
}

// startProc starts tether with args inside h. name labels it in the log.
// The process lives until t ends: pass the test, not a subtest, for a
// process that outlives the subtest that starts it.
func startProc(t *testing.T, h *framework.Host, name string, args ...string) *hostProc {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("%s: pipe: %v", name, err)
	}
	// Not t.Context(): it ends before the cleanups run, and exec would
	// SIGKILL the process instead of letting stop send SIGTERM first.
	cmd := h.Command(context.Background(), tetherBin, args...)
	cmd.Stdout, cmd.Stderr = w, w
	p := &hostProc{t: t, name: name, cmd: cmd, changed: make(chan struct{}), exited: make(chan struct{})}
	t.Logf("%s: $ nsenter --net=/var/run/netns/%s tether %s", name, h.Netns, strings.Join(args, " "))
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		t.Fatalf("%s: start: %v", name, err)
	}
	w.Close()
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.at = append(p.at, time.Now())
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		io.Copy(io.Discard, r)
	}()
	go func() {
		err := cmd.Wait()
		select {
		case <-read:
		case <-time.After(5 * time.Second): // a child may hold the pipe
		}
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s: output (last 60 lines):\n%s", name, lastLines(p.output(), 60))
		}
	})
	return p
}

// output returns everything the process printed so far.
func (p *hostProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLine waits until the process prints a line containing substr and
// returns it with the time from the start to its arrival. It fails when the
// process exits first or timeout passes.
func (p *hostProc) waitLine(substr string, timeout time.Duration) (string, time.Duration, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	// find looks at the lines not seen yet.
	find := func() (string, time.Duration, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for ; seen < len(p.lines); seen++ {
			if strings.Contains(p.lines[seen], substr) {
				return p.lines[seen], p.at[seen].Sub(p.started), true
			}
		}
		return "", 0, false
	}
	for {
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		if line, after, ok := find(); ok {
			return line, after, nil
		}
		select {
		case <-changed:
		case <-p.exited:
			if line, after, ok := find(); ok { // printed just before the exit
				return line, after, nil
			}
			return "", 0, fmt.Errorf("%s exited (%v) before printing %q", p.name, p.err(), substr)
		case <-deadline.C:
			return "", 0, fmt.Errorf("%s printed no line containing %q within %s", p.name, substr, timeout)
		}
	}
}

// err is the exit error; nil while running or after a zero exit.
func (p *hostProc) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// waitExit waits up to timeout for the process to exit and reports its
// exit error and whether it exited.
func (p *hostProc) waitExit(timeout time.Duration) (error, bool) {
	select {
	case <-p.exited:
		return p.err(), true
	case <-time.After(timeout):
		return nil, false
	}
}

// stop sends SIGTERM, then SIGKILL after stopGrace, and waits for the exit.
// It returns the exit error.
func (p *hostProc) stop() error {
	select {
	case <-p.exited:
		return p.err()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
		p.t.Errorf("%s did not exit within %s of SIGTERM; sending SIGKILL", p.name, stopGrace)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
	return p.err()
}

// runIn runs tether or another program to completion inside h and returns
// its stdout and stderr. The command is logged, its output only on failure
// unless verbose.
func runIn(t *testing.T, h *framework.Host, timeout time.Duration, verbose bool, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := h.Command(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: timed out after %s: %w", filepath.Base(name), timeout, err)
	}
	if verbose || err != nil {
		t.Logf("$ nsenter --net=/var/run/netns/%s %s %s (err=%v)\n%s%s", h.Netns, filepath.Base(name), strings.Join(args, " "), err, clip(out.String()), clip(errb.String()))
	}
	return out.String(), errb.String(), err
}

// netCluster is a `tether server` inside a host of a Network, with kubectl
// run inside the same host.
type netCluster struct {
	host       *framework.Host
	dataDir    string
	URL        string
	Kubeconfig string
	CA         *x509.Certificate // the server CA, from <data>/pki/server-ca.crt
	proc       *hostProc
	kubectlBin string
	cacheDir   string
}

// startNetServer runs `tether server --disable-agent` bound to and
// advertising h's address, on dataDir, and waits for its ready line.
func startNetServer(t *testing.T, h *framework.Host, dataDir string, extra ...string) *netCluster {
	t.Helper()
	c := &netCluster{host: h, dataDir: dataDir, kubectlBin: kubectlPath(t), cacheDir: filepath.Join(dataDir, "kubectl-cache")}
	args := append([]string{"server", "--disable-agent",
		"--bind-address", h.IP.String(), "--advertise-address", h.IP.String(),
		"--data-dir", dataDir}, extra...)
	c.proc = startProc(t, h, "server", args...)
	line, took, err := c.proc.waitLine(readyPrefix, readyTimeout)
	if err != nil {
		t.Fatalf("tether server: %v\noutput:\n%s", err, lastLines(c.proc.output(), 40))
	}
	c.URL = strings.TrimSpace(strings.TrimPrefix(line[strings.Index(line, readyPrefix):], readyPrefix))
	if want := "https://" + h.IP.String() + ":6443"; c.URL != want {
		t.Errorf("ready line URL = %q, want %q", c.URL, want)
	}
	t.Logf("server ready at %s after %s", c.URL, took.Round(time.Millisecond))
	c.Kubeconfig = filepath.Join(dataDir, "admin.kubeconfig")
	b, err := os.ReadFile(filepath.Join(dataDir, "pki", "server-ca.crt"))
	if err != nil {
		t.Fatalf("server CA: %v", err)
	}
	if c.CA, err = pki.ParseCertPEM(b); err != nil {
		t.Fatalf("server CA: %v", err)
	}
	return c
}

// tether runs a tether subcommand inside the server's host with the admin
// kubeconfig.
func (c *netCluster) tether(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runIn(t, c.host, kubectlTimeout, true, tetherBin, append(args, "--kubeconfig", c.Kubeconfig)...)
}

// joinCommand runs `tether token create` with args and returns the join
// command it printed as its last line, split into arguments, without the
// leading "tether".
func (c *netCluster) joinCommand(t *testing.T, args ...string) []string {
	t.Helper()
	out, errOut, err := c.tether(t, append([]string{"token", "create"}, args...)...)
	if err != nil {
		t.Fatalf("tether token create: %v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	last := strings.Fields(lines[len(lines)-1])
	if len(last) != 8 || last[0] != "tether" || last[1] != "agent" || last[2] != "--server" || last[4] != "--token" || last[6] != "--ca-cert-hash" {
		t.Fatalf("last line of tether token create = %q, want `tether agent --server … --token … --ca-cert-hash …`", lines[len(lines)-1])
	}
	if last[3] != c.URL {
		t.Errorf("join command --server = %q, want %q", last[3], c.URL)
	}
	if want := pki.Pin(c.CA); last[7] != want {
		t.Errorf("join command --ca-cert-hash = %q, want the pin of %s/pki/server-ca.crt %q", last[7], c.dataDir, want)
	}
	return last[1:]
}

// kubectl runs kubectl inside the server's host with the admin kubeconfig.
// Polls pass verbose=false to keep the log short.
func (c *netCluster) kubectl(t *testing.T, verbose bool, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	full := append([]string{"--kubeconfig", c.Kubeconfig, "--cache-dir", c.cacheDir}, args...)
	return runIn(t, c.host, kubectlTimeout, verbose, c.kubectlBin, full...)
}

// mustKubectl is kubectl (logged) that fails the test on a non-zero exit.
func (c *netCluster) mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := c.kubectl(t, true, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// nodes lists the Nodes with kubectl.
func (c *netCluster) nodes(t *testing.T) (map[string]*corev1.Node, error) {
	t.Helper()
	out, errOut, err := c.kubectl(t, false, "get", "nodes", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("kubectl get nodes: %v: %s", err, errOut)
	}
	var list corev1.NodeList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("kubectl get nodes -o json: %w", err)
	}
	m := make(map[string]*corev1.Node, len(list.Items))
	for i := range list.Items {
		m[list.Items[i].Name] = &list.Items[i]
	}
	return m, nil
}

// csr is a CertificateSigningRequest with its subject's common name.
type csr struct {
	*certificatesv1.CertificateSigningRequest
	CN string
}

// csrs lists the CertificateSigningRequests with kubectl.
func (c *netCluster) csrs(t *testing.T) []csr {
	t.Helper()
	out, errOut, err := c.kubectl(t, false, "get", "csr", "-o", "json")
	if err != nil {
		t.Fatalf("kubectl get csr: %v: %s", err, errOut)
	}
	var list certificatesv1.CertificateSigningRequestList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl get csr -o json: %v", err)
	}
	var res []csr
	for i := range list.Items {
		r := csr{CertificateSigningRequest: &list.Items[i]}
		if b, _ := pem.Decode(r.Spec.Request); b != nil {
			if req, err := x509.ParseCertificateRequest(b.Bytes); err == nil {
				r.CN = req.Subject.CommonName
			}
		}
		res = append(res, r)
	}
	return res
}

// condition returns the status of the node's condition of type typ, or ""
// if it has none.
func condition(n *corev1.Node, typ corev1.NodeConditionType) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

// hasTaint reports whether the node carries the taint key with effect.
func hasTaint(n *corev1.Node, key string, effect corev1.TaintEffect) bool {
	for _, tt := range n.Spec.Taints {
		if tt.Key == key && tt.Effect == effect {
			return true
		}
	}
	return false
}

// agentArgs is the join command with a data directory, node name and more.
func agentArgs(join []string, dataDir, nodeName string, extra ...string) []string {
	args := append([]string{}, join...)
	args = append(args, "--data-dir", dataDir, "--node-name", nodeName)
	return append(args, extra...)
}

// registeredAddr parses the address from the agent's last progress line
// "[5/5] node N registered; serving kubelet HTTPS on IP:PORT".
func registeredAddr(line string) (string, error) {
	const marker = "serving kubelet HTTPS on "
	i := strings.Index(line, marker)
	if i < 0 {
		return "", fmt.Errorf("line %q does not name the kubelet address", line)
	}
	addr := strings.TrimSpace(line[i+len(marker):])
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", fmt.Errorf("line %q: kubelet address: %w", line, err)
	}
	return addr, nil
}

// servingCert connects from h to addr and returns the certificate chain the
// kubelet presents. It verifies nothing: the caller does.
func servingCert(ctx context.Context, h *framework.Host, addr string) ([]*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := h.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // only to fetch the certificate; verified by the caller
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return tc.ConnectionState().PeerCertificates, nil
}

// verifyServing checks the kubelet serving certificate chain against the
// server CA and returns the leaf.
func verifyServing(chain []*x509.Certificate, ca *x509.Certificate) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificate presented")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return leaf, fmt.Errorf("serving certificate (serial %x, issuer %q) does not verify with the server CA %q: %w", leaf.SerialNumber, leaf.Issuer, ca.Subject, err)
	}
	if top := chains[0][len(chains[0])-1]; !top.Equal(ca) {
		return leaf, fmt.Errorf("serving certificate chains to %q, not the server CA", top.Subject)
	}
	return leaf, nil
}

// httpsGet makes one GET from inside h on a fresh connection, trusting
// roots and presenting the certificate getCert returns (if not nil). It
// returns the status code and body.
func httpsGet(ctx context.Context, h *framework.Host, url string, roots *x509.CertPool, getCert func() (*tls.Certificate, error)) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr := &http.Transport{
		DialContext:       h.Dial,
		DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{
			RootCAs: roots,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if getCert == nil {
					return &tls.Certificate{}, nil
				}
				return getCert()
			},
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// nodeCreds are the node's client credentials as its agent's kubeconfig
// names them: the server, the CA, and the certificate and key files, which
// the agent replaces on rotation.
type nodeCreds struct {
	Server   string
	Roots    *x509.CertPool
	CertFile string
	KeyFile  string
}

// loadNodeCreds reads the agent's kubeconfig in dataDir.
func loadNodeCreds(dataDir string) (*nodeCreds, error) {
	path := filepath.Join(dataDir, "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	caPEM := cfg.TLSClientConfig.CAData
	if len(caPEM) == 0 && cfg.TLSClientConfig.CAFile != "" {
		if caPEM, err = os.ReadFile(cfg.TLSClientConfig.CAFile); err != nil {
			return nil, err
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no CA certificate", path)
	}
	if cfg.TLSClientConfig.CertFile == "" || cfg.TLSClientConfig.KeyFile == "" {
		return nil, fmt.Errorf("%s does not name client certificate and key files (the agent rotates them)", path)
	}
	return &nodeCreds{Server: cfg.Host, Roots: roots, CertFile: cfg.TLSClientConfig.CertFile, KeyFile: cfg.TLSClientConfig.KeyFile}, nil
}

// keyPair reads the current client certificate and key from their files.
func (c *nodeCreds) keyPair() (*tls.Certificate, error) {
	kp, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("read the node's client key pair: %w", err)
	}
	return &kp, nil
}

// certFile parses the first certificate in a PEM file.
func certFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: no certificate", path)
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// shortTemp makes a short temporary directory (etcd's unix sockets limit
// path lengths) removed when the test ends, after the processes that use it
// have been stopped if they were started later.
func shortTemp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tj-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
