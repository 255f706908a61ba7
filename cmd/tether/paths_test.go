package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"tether/kubelet"
	"tether/pki"
)

// sampleReport is a report with a passing, a failing (on one node) and a
// skipped path.
func sampleReport() *pathsReport {
	r := newPathsReport("https://10.0.0.1:6443")
	p1 := r.path("P1")
	p1.Port, p1.Identity, p1.CA, p1.Verified = "6443", "admin [system:masters] (x509)", "kubeconfig CA (tether-server-ca)", "yes"
	p1.set(resultPass, "TLS 1.3, /readyz ok")
	p5 := r.path("P5")
	p5.Port = "10250"
	p5.node("node-1", resultPass, "log read (20 bytes)")
	p5.node("node-2", resultFail, "502 the kubelet certificate for node node-2 is not valid:\nx509: unknown authority")
	p5.settle("logs read", "no node")
	r.path("P8").set(resultSkip, "not available yet")
	for _, p := range r.Paths {
		if p.Result == "" {
			p.set(resultSkip, "not checked")
		}
	}
	return r
}

func TestPathsTable(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().writeTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	// A header, one row per path P0–P10, one row per node of P5.
	if want := 1 + len(pathNames) + 2; len(lines) != want {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), want, out)
	}
	if f := strings.Fields(lines[0]); strings.Join(f, " ") != "PATH DESCRIPTION PORT IDENTITY CA VERIFIED CHECK REASON" {
		t.Errorf("header %q", lines[0])
	}
	// The CHECK column lines up in every row, node rows included.
	col := strings.Index(lines[0], "CHECK") // the header is ASCII
	for _, l := range lines[1:] {
		r := []rune(l)
		if len(r) < col+4 {
			t.Fatalf("row %q is shorter than the CHECK column", l)
		}
		if res := string(r[col : col+4]); res != "PASS" && res != "FAIL" && res != "SKIP" {
			t.Errorf("row %q: %q under CHECK", l, res)
		}
	}
	find := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(strings.TrimLeft(l, " "), prefix) {
				return l
			}
		}
		t.Fatalf("no row starting with %q:\n%s", prefix, out)
		return ""
	}
	p1 := find("P1 ")
	for _, want := range []string{"client → apiserver", "6443", "admin [system:masters] (x509)", "kubeconfig CA (tether-server-ca)", "yes", "PASS", "TLS 1.3, /readyz ok"} {
		if !strings.Contains(p1, want) {
			t.Errorf("P1 row %q lacks %q", p1, want)
		}
	}
	// A multi-line reason stays on its row; a failed path names its node.
	if p5 := find("P5 "); !strings.Contains(p5, "FAIL") || !strings.Contains(p5, "node-2: 502 the kubelet certificate for node node-2 is not valid: x509: unknown authority") {
		t.Errorf("P5 row %q", p5)
	}
	if n2 := find("node-2"); !strings.HasPrefix(n2, " ") || !strings.Contains(n2, "FAIL") {
		t.Errorf("node-2 row %q, want indented, FAIL", n2)
	}
	if n1 := find("node-1"); !strings.Contains(n1, "PASS") || !strings.Contains(n1, "log read (20 bytes)") {
		t.Errorf("node-1 row %q", n1)
	}
	if p8 := find("P8 "); !strings.Contains(p8, "SKIP") || !strings.Contains(p8, "not available yet") {
		t.Errorf("P8 row %q", p8)
	}
	// Paths not checked show dashes for what they use.
	if p0 := strings.Fields(find("P0 ")); len(p0) < 8 || p0[5] != "-" || p0[6] != "-" {
		t.Errorf("P0 row %q, want - for port, identity, CA, verified", p0)
	}
}

func TestPathsJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().writeJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Server string
		Paths  []pathCheck
		Failed []string
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if got.Server != "https://10.0.0.1:6443" || len(got.Paths) != len(pathNames) {
		t.Errorf("server %q, %d paths", got.Server, len(got.Paths))
	}
	if strings.Join(got.Failed, ",") != "P5 (node-2)" {
		t.Errorf("failed %v, want [P5 (node-2)]", got.Failed)
	}
	if p := got.Paths[5]; p.ID != "P5" || p.Result != resultFail || len(p.Nodes) != 2 || p.Nodes[1].Node != "node-2" {
		t.Errorf("P5 %+v", p)
	}
	if strings.Contains(buf.String(), `\u003e`) || !strings.Contains(buf.String(), "→") {
		t.Errorf("JSON escapes what it need not:\n%s", buf.String())
	}
	// No failure: an empty list, not null.
	buf.Reset()
	if err := newPathsReport("x").writeJSON(&buf); err != nil || !strings.Contains(buf.String(), `"failed": []`) {
		t.Errorf("empty report: %v\n%s", err, buf.String())
	}
}

func TestPathsExitError(t *testing.T) {
	r := newPathsReport("x")
	for _, p := range r.Paths {
		p.set(resultPass, "ok")
	}
	r.path("P8").set(resultSkip, "not available yet")
	if err := r.exitError(); err != nil {
		t.Errorf("only PASS and SKIP: %v, want nil", err)
	}
	r.path("P1").fail("insecure-skip-tls-verify")
	r.path("P5").set(resultPass, "")
	r.path("P5").node("node-1", resultPass, "ok")
	r.path("P5").node("node-2", resultFail, "502")
	r.path("P5").node("node-3", resultFail, "503")
	r.path("P5").node("node-4", resultSkip, "not probed")
	r.path("P5").settle("", "")
	err := r.exitError()
	if err == nil || err.Error() != "2 paths failed: P1, P5 (node-2, node-3)" {
		t.Errorf("exit error %v, want 2 paths failed: P1, P5 (node-2, node-3)", err)
	}
	r = newPathsReport("x")
	r.path("P7").node("n", resultFail, "got 200")
	r.path("P7").settle("", "")
	if err := r.exitError(); err == nil || err.Error() != "1 path failed: P7 (n)" {
		t.Errorf("exit error %v", err)
	}
}

func TestPathSettle(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before pathResult
		nodes  []pathResult
		want   pathResult
	}{
		{"all pass", "", []pathResult{resultPass, resultPass}, resultPass},
		{"pass and skip", "", []pathResult{resultPass, resultSkip}, resultPass},
		{"all skip", "", []pathResult{resultSkip}, resultSkip},
		{"no nodes", "", nil, resultSkip},
		{"one fails", "", []pathResult{resultPass, resultFail}, resultFail},
		{"failed before, nodes pass", resultFail, []pathResult{resultPass}, resultFail},
		{"passed before, no nodes", resultPass, nil, resultPass},
		{"passed before, a node fails", resultPass, []pathResult{resultFail}, resultFail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &pathCheck{ID: "P9"}
			if tc.before != "" {
				p.set(tc.before, "before")
			}
			for i, res := range tc.nodes {
				p.node("n"+strconv.Itoa(i), res, "r%d", i)
			}
			p.settle("passed", "skipped")
			if p.Result != tc.want {
				t.Errorf("result %s (%s), want %s", p.Result, p.Reason, tc.want)
			}
		})
	}
	// A path failed for itself and on a node keeps both reasons.
	p := &pathCheck{}
	p.fail("endpoint 1.2.3.4:6443 is not a known API server")
	p.node("n1", resultFail, "probe pod failed")
	p.settle("", "")
	if p.Reason != "endpoint 1.2.3.4:6443 is not a known API server; n1: probe pod failed" {
		t.Errorf("reason %q", p.Reason)
	}
	// Recording a node twice replaces the first outcome.
	p = &pathCheck{}
	p.node("n1", resultFail, "first")
	p.node("n1", resultPass, "second")
	if len(p.Nodes) != 1 || p.Nodes[0].Result != resultPass {
		t.Errorf("nodes %+v", p.Nodes)
	}
}

func pathsNode(name string, created time.Time, ready corev1.ConditionStatus, annotations map[string]string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created), Annotations: annotations},
		Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, Reason: "KubeletStopped", Message: "no heartbeat"}}},
	}
}

func pathsLease(name string, renewed time.Time) *coordinationv1.Lease {
	t := metav1.NewMicroTime(renewed)
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease}, Spec: coordinationv1.LeaseSpec{RenewTime: &t}}
}

func TestPathsKubeletClients(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	valid := map[string]string{kubelet.ClientCertExpiryAnnotation: now.Add(20 * time.Hour).Format(time.RFC3339)}
	expired := map[string]string{kubelet.ClientCertExpiryAnnotation: now.Add(-time.Minute).Format(time.RFC3339)}
	old := now.Add(-time.Hour)
	nodes := []*corev1.Node{
		pathsNode("good", old, corev1.ConditionTrue, valid),
		pathsNode("stale-lease", old, corev1.ConditionTrue, valid),
		pathsNode("not-ready", old, corev1.ConditionUnknown, valid),
		pathsNode("expired", old, corev1.ConditionTrue, expired),
		pathsNode("new", now.Add(-5*time.Second), corev1.ConditionTrue, nil),
		pathsNode("unreported", old, corev1.ConditionTrue, nil),
		pathsNode("no-lease", old, corev1.ConditionTrue, valid),
	}
	client := fake.NewClientset(
		pathsLease("good", now.Add(-3*time.Second)),
		pathsLease("stale-lease", now.Add(-time.Minute)),
		pathsLease("not-ready", now.Add(-time.Second)),
		pathsLease("expired", now.Add(-time.Second)),
		pathsLease("new", now.Add(-time.Second)),
		pathsLease("unreported", now.Add(-time.Second)),
	)
	r := &pathsRunner{client: client, now: func() time.Time { return now }, report: newPathsReport("x"), apiPort: "6443"}
	for _, n := range nodes {
		r.nodes = append(r.nodes, *n)
	}
	r.checkKubeletClients(t.Context())
	p := r.report.path("P2")
	want := map[string]struct {
		res    pathResult
		reason string
	}{
		"good":        {resultPass, "Ready, lease renewed 3s ago, client cert expires in 20h"},
		"stale-lease": {resultFail, "lease last renewed 60s ago (want < 40s)"},
		"not-ready":   {resultFail, "Ready=Unknown (KubeletStopped: no heartbeat)"},
		"expired":     {resultFail, "client certificate expired 60s ago"},
		"new":         {resultPass, "client cert expiry not reported yet (joined 5s ago)"},
		"unreported":  {resultFail, "no client certificate expiry reported"},
		"no-lease":    {resultFail, "lease:"},
	}
	for name, w := range want {
		c, ok := p.nodeResult(name)
		if !ok || c.Result != w.res || !strings.Contains(c.Reason, w.reason) {
			t.Errorf("%s: %+v, want %s with %q", name, c, w.res, w.reason)
		}
	}
	if p.Result != resultFail || p.Port != "6443" {
		t.Errorf("P2 %s port %s, want FAIL on 6443", p.Result, p.Port)
	}
	if got := strings.Join(r.report.failed(), ","); got != "P2 (stale-lease, not-ready, expired, unreported, no-lease)" {
		t.Errorf("failed %s", got)
	}
}

// kubeletServer is a TLS server on loopback with a certificate from ca
// for 127.0.0.1 that answers every request with code.
func kubeletServer(t *testing.T, ca *pki.CA, code int) (host, port string) {
	t.Helper()
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{CommonName: "system:node:n", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	host, port, _ = net.SplitHostPort(srv.Listener.Addr().String())
	return host, port
}

func TestPathsKubelets(t *testing.T) {
	serverCA, err := pki.NewCA("tether-server-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := pki.NewCA("impostor-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closedPort, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()

	now := time.Now()
	annotations := map[string]string{kubelet.ServingCertExpiryAnnotation: now.Add(time.Hour).Format(time.RFC3339)}
	node := func(name, host, port string) corev1.Node {
		n := pathsNode(name, now.Add(-time.Hour), corev1.ConditionTrue, annotations)
		p, _ := strconv.Atoi(port)
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "ignored"}, {Type: corev1.NodeInternalIP, Address: host}}
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(p)
		return *n
	}
	h, secure := kubeletServer(t, serverCA, http.StatusUnauthorized)
	_, open := kubeletServer(t, serverCA, http.StatusOK)
	_, impostor := kubeletServer(t, otherCA, http.StatusUnauthorized)
	pool := x509.NewCertPool()
	pool.AddCert(serverCA.Cert)
	r := &pathsRunner{now: time.Now, report: newPathsReport("x"), serverCA: pool, nodes: []corev1.Node{
		node("secure", h, secure), node("open", h, open), node("impostor", h, impostor), node("away", h, closedPort),
	}}
	r.checkKubelets(context.Background())
	p6, p7 := r.report.path("P6"), r.report.path("P7")
	for _, tc := range []struct {
		p      *pathCheck
		node   string
		res    pathResult
		reason string
	}{
		{p7, "secure", resultPass, "anonymous GET /pods at 127.0.0.1:" + secure + ": 401"},
		{p6, "secure", resultPass, "verifies for 127.0.0.1 (issuer tether-server-ca"},
		{p7, "open", resultFail, "got 200 OK, want 401"},
		{p6, "open", resultPass, "verifies"},
		{p7, "impostor", resultFail, "certificate signed by unknown authority"},
		{p6, "impostor", resultFail, "is not valid for the server CA"},
		{p7, "away", resultSkip, "not reachable from here"},
		{p6, "away", resultPass, "serving cert expires in 59m (not checked live"},
	} {
		c, ok := tc.p.nodeResult(tc.node)
		if !ok || c.Result != tc.res || !strings.Contains(c.Reason, tc.reason) {
			t.Errorf("%s %s: %+v, want %s with %q", tc.p.ID, tc.node, c, tc.res, tc.reason)
		}
	}
	if got := strings.Join(r.report.failed(), ","); got != "P6 (impostor),P7 (open, impostor)" {
		t.Errorf("failed %s", got)
	}
}

func TestProbeNodes(t *testing.T) {
	ready := func(name string) corev1.Node { return *pathsNode(name, time.Now(), corev1.ConditionTrue, nil) }
	cordoned, tainted, noExec, preferNo := ready("cordoned"), ready("tainted"), ready("noexec"), ready("prefer")
	cordoned.Spec.Unschedulable = true
	tainted.Spec.Taints = []corev1.Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}}
	noExec.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute}}
	preferNo.Spec.Taints = []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectPreferNoSchedule}}
	ok, skipped := probeNodes([]corev1.Node{ready("a"), *pathsNode("down", time.Now(), corev1.ConditionFalse, nil), cordoned, tainted, noExec, preferNo})
	var names []string
	for _, n := range ok {
		names = append(names, n.Name)
	}
	if strings.Join(names, ",") != "a,prefer" {
		t.Errorf("probed %v, want a and prefer", names)
	}
	for name, want := range map[string]string{"down": "not Ready", "cordoned": "cordoned", "tainted": "node-role.kubernetes.io/control-plane", "noexec": "unreachable"} {
		if !strings.Contains(skipped[name], want) {
			t.Errorf("%s skipped with %q, want it to mention %q", name, skipped[name], want)
		}
	}
}

func TestResolveKubectl(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "kubectl")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := resolveKubectl(script); err == nil || !strings.Contains(err.Error(), "not an ELF binary") {
		t.Errorf("a shell script: %v, want not an ELF binary", err)
	}
	if sh, err := exec.LookPath("sh"); err == nil {
		if _, err := resolveKubectl(sh); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
			// busybox-static or a static sh would be accepted: only a
			// dynamic one must be refused.
			t.Logf("sh at %s: %v", sh, err)
		}
	}
	// A static binary behind a symlink resolves to the binary.
	if testing.Short() {
		t.Skip("skipping the static binary (it is built with go build) in -short mode")
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module static\n\ngo 1.26\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644)
	static := filepath.Join(dir, "static")
	build := exec.Command("go", "build", "-o", static, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build a static test binary: %v\n%s", err, out)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(static, link); err != nil {
		t.Fatal(err)
	}
	got, err := resolveKubectl(link)
	if err != nil || got != static {
		t.Errorf("resolveKubectl(symlink) = %q, %v; want %q", got, err, static)
	}
	t.Setenv("PATH", dir)
	if _, err := resolveKubectl(""); err == nil || !strings.Contains(err.Error(), "not an ELF binary") {
		t.Errorf("kubectl from $PATH (the script): %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := resolveKubectl(""); err == nil || !strings.Contains(err.Error(), "--kubectl") {
		t.Errorf("no kubectl in $PATH: %v, want a hint to pass --kubectl", err)
	}
}

func TestPathsHelpers(t *testing.T) {
	if got := whoamiUser("W1127 warning: cache dir not writable\nsystem:serviceaccount:ns:default\n"); got != "system:serviceaccount:ns:default" {
		t.Errorf("whoamiUser = %q", got)
	}
	if got := probePodName("node-1", 0); got != "probe-node-1" {
		t.Errorf("probePodName(node-1) = %q", got)
	}
	if got := probePodName("a.b.example.com", 3); got != "probe-3" {
		t.Errorf("probePodName(a.b.example.com) = %q, want probe-3 (not a DNS label)", got)
	}
	if got := probePodName(strings.Repeat("n", 60), 1); got != "probe-1" {
		t.Errorf("probePodName(long) = %q", got)
	}
	if got := shortPin("sha256:" + strings.Repeat("ab", 32)); got != "sha256:abababababab…" {
		t.Errorf("shortPin = %q", got)
	}
	now := time.Now()
	n := pathsNode("n", now.Add(-time.Hour), corev1.ConditionTrue, map[string]string{"a": "tomorrow"})
	if msg, ok := certExpiry(n, "a", "client", now); ok || !strings.Contains(msg, "not RFC 3339") {
		t.Errorf("certExpiry(bad value) = %q %v", msg, ok)
	}
}

func TestPathsOptions(t *testing.T) {
	for _, args := range [][]string{
		{"paths", "-o", "yaml"},
		{"paths", "--timeout", "0s"},
		{"paths", "--image", ""},
	} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), args, &out, &errOut); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"paths", "--kubeconfig", filepath.Join(t.TempDir(), "missing")}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing kubeconfig: %v", err)
	}
}

// fakeAPIServer answers /version, /readyz and SelfSubjectReviews like an
// API server, over TLS with a certificate from ca.
func fakeAPIServer(t *testing.T, ca *pki.CA) *httptest.Server {
	t.Helper()
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{CommonName: "kube-apiserver", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/version":
			w.Write([]byte(`{"gitVersion":"v1.37.2+tether.dev"}`))
		case "/readyz":
			w.Write([]byte("ok"))
		case "/apis/authentication.k8s.io/v1/selfsubjectreviews":
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(`{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1","status":{"userInfo":{"username":"admin","groups":["system:masters","system:authenticated"]}}}`))
		default:
			http.NotFound(w, r)
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestPathsClient(t *testing.T) {
	ca, err := pki.NewCA("tether-server-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := fakeAPIServer(t, ca)
	check := func(cfg *rest.Config) *pathCheck {
		t.Helper()
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := &pathsRunner{cfg: cfg, client: client, now: time.Now, report: newPathsReport(cfg.Host)}
		if !r.checkClient(t.Context()) {
			t.Errorf("checkClient reports the API server unreachable")
		}
		return r.report.path("P1")
	}

	p := check(&rest.Config{Host: srv.URL, BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{CAData: ca.CertPEM()}})
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	if p.Result != resultPass || p.Verified != "yes" || p.Port != port || p.CA != "kubeconfig CA (tether-server-ca)" ||
		p.Identity != "admin [system:masters] (token)" || !strings.Contains(p.Reason, "TLS 1.3, /version v1.37.2+tether.dev, /readyz ok") {
		t.Errorf("verified kubeconfig: %+v", p)
	}

	p = check(&rest.Config{Host: srv.URL, BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	if p.Result != resultFail || p.Verified != "no" || !strings.Contains(p.Reason, "insecure-skip-tls-verify") {
		t.Errorf("insecure kubeconfig: %+v, want FAIL naming insecure-skip-tls-verify, verified no", p)
	}

	// A server whose certificate is not from the kubeconfig's CA: P1
	// fails and the other paths are skipped.
	other, _ := pki.NewCA("other", time.Hour)
	cfg := &rest.Config{Host: srv.URL, BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{CAData: other.CertPEM()}}
	client, _ := kubernetes.NewForConfig(cfg)
	var errOut bytes.Buffer
	r := &pathsRunner{cfg: cfg, client: client, now: time.Now, report: newPathsReport(cfg.Host), stderr: &errOut, o: &pathsOptions{}}
	r.run(t.Context())
	if p := r.report.path("P1"); p.Result != resultFail || !strings.Contains(p.Reason, "certificate") {
		t.Errorf("wrong CA: P1 %+v", p)
	}
	if p := r.report.path("P5"); p.Result != resultSkip || !strings.Contains(p.Reason, "see P1") {
		t.Errorf("wrong CA: P5 %+v, want SKIP pointing at P1", p)
	}
	if err := r.report.exitError(); err == nil || err.Error() != "1 path failed: P1" {
		t.Errorf("exit error %v", err)
	}
}
