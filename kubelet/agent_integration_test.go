package kubelet_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tether/apiserver/authn/revocation"
	"tether/controlplane"
	"tether/kubelet"
	"tether/kubelet/bootstrap"
	"tether/pki"
	"tether/test/framework"
)

// TestAgent joins a node to an in-process control plane (with its
// cluster-info signer, CSR approver and CSR signer) with a bootstrap token
// and the CA pin, and checks what it registers, its heartbeats, its
// serving certificate, a restart that reuses the credentials, and that a
// revoked certificate stops it.
func TestAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	c := framework.StartCluster(t)
	token := newToken(t, c)
	pin := pki.Pin(c.ControlPlane.PKI().ServerCA.Cert)
	dir := t.TempDir()
	const node = "node-a"

	t.Run("wrong pin", func(t *testing.T) {
		other, err := pki.NewCA("impostor", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		a := newAgent(t, kubelet.Config{Server: c.URL, Token: token, CACertHashes: []string{pki.Pin(other.Cert)}, DataDir: t.TempDir(), NodeName: "node-pin"})
		err = a.run(t.Context())
		if !errors.Is(err, bootstrap.ErrCAPinMismatch) || !strings.Contains(err.Error(), pin) {
			t.Errorf("Run with a wrong pin = %v, want ErrCAPinMismatch naming %s", err, pin)
		}
		csrs, err := c.Client.CertificatesV1().CertificateSigningRequests().List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(csrs.Items) != 0 {
			t.Errorf("%d CSRs exist after a join with a wrong pin, want none", len(csrs.Items))
		}
	})

	first := newAgent(t, kubelet.Config{Server: c.URL, Token: token, CACertHashes: []string{pin}, DataDir: dir, NodeName: node})
	first.start(t)
	out := first.progress.String()
	for i := 1; i <= bootstrap.Steps; i++ {
		if !strings.Contains(out, fmt.Sprintf("[%d/%d]", i, bootstrap.Steps)) {
			t.Errorf("progress lacks step %d/%d:\n%s", i, bootstrap.Steps, out)
		}
	}
	if !strings.Contains(out, "verified the CA pin "+pin) || !strings.Contains(out, "serving kubelet HTTPS on "+first.addr) {
		t.Errorf("progress does not name the pin and the kubelet address:\n%s", out)
	}

	t.Run("node", func(t *testing.T) {
		n, err := c.Client.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get node: %v", err)
		}
		want := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: node}}
		if !slices.Equal(n.Status.Addresses, want) {
			t.Errorf("addresses = %v, want %v", n.Status.Addresses, want)
		}
		if got := n.Status.DaemonEndpoints.KubeletEndpoint.Port; fmt.Sprint(got) != first.port() {
			t.Errorf("kubelet port = %d, want %s", got, first.port())
		}
		if n.Labels["kubernetes.io/hostname"] != node || n.Labels["kubernetes.io/os"] != "linux" {
			t.Errorf("labels = %v", n.Labels)
		}
		if !strings.HasPrefix(n.Status.NodeInfo.KubeletVersion, "v1.37.2-tether.") || !strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "runc://") {
			t.Errorf("nodeInfo = %+v", n.Status.NodeInfo)
		}
		if q := n.Status.Capacity[corev1.ResourcePods]; q.Value() != kubelet.MaxPods {
			t.Errorf("pods capacity = %s, want %d", q.String(), kubelet.MaxPods)
		}
		if !ready(n) {
			t.Errorf("conditions = %v, want Ready=True", n.Status.Conditions)
		}
	})

	t.Run("heartbeats", func(t *testing.T) {
		leases := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
		l, err := leases.Get(t.Context(), node, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get lease: %v", err)
		}
		if *l.Spec.HolderIdentity != node || *l.Spec.LeaseDurationSeconds != kubelet.LeaseDurationSeconds ||
			len(l.OwnerReferences) != 1 || l.OwnerReferences[0].Kind != "Node" || l.OwnerReferences[0].Name != node {
			t.Errorf("lease = %+v", l)
		}
		n0, err := c.Client.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		hb0 := heartbeat(n0)
		framework.Eventually(t, 10*time.Second, func() (bool, error) {
			l2, err := leases.Get(t.Context(), node, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			n, err := c.Client.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if !l2.Spec.RenewTime.After(l.Spec.RenewTime.Time) {
				return false, fmt.Errorf("lease renew time still %s", l2.Spec.RenewTime)
			}
			if !heartbeat(n).After(hb0) {
				return false, fmt.Errorf("Ready heartbeat still %s", hb0)
			}
			return true, nil
		})
	})

	t.Run("serving certificate", func(t *testing.T) {
		roots := x509.NewCertPool()
		roots.AddCert(c.ControlPlane.PKI().ServerCA.Cert)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		var resp *http.Response
		framework.Eventually(t, 20*time.Second, func() (bool, error) {
			var err error
			resp, err = client.Get("https://" + first.addr + "/healthz")
			return err == nil, err
		})
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// The handshake verified the serving certificate; the request
		// itself is anonymous, which the kubelet API refuses.
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous GET /healthz = %d %q, want 401", resp.StatusCode, body)
		}
		leaf := resp.TLS.PeerCertificates[0]
		var ips []string
		for _, ip := range leaf.IPAddresses {
			ips = append(ips, ip.String())
		}
		if !slices.Equal(ips, []string{"127.0.0.1"}) || !slices.Equal(leaf.DNSNames, []string{node}) {
			t.Errorf("serving certificate SANs = IPs %v DNS %v, want [127.0.0.1] [%s] (the Node's addresses)", ips, leaf.DNSNames, node)
		}
		if leaf.Subject.CommonName != "system:node:"+node {
			t.Errorf("serving certificate CN = %q", leaf.Subject.CommonName)
		}
		// The Node shows when its certificates expire.
		want := leaf.NotAfter.UTC().Format(time.RFC3339)
		framework.Eventually(t, 30*time.Second, func() (bool, error) {
			n, err := c.Client.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return n.Annotations[kubelet.ServingCertExpiryAnnotation] == want && n.Annotations[kubelet.ClientCertExpiryAnnotation] != "", nil
		})
	})

	t.Run("csrs", func(t *testing.T) {
		csrs, err := c.Client.CertificatesV1().CertificateSigningRequests().List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range csrs.Items {
			if r.Spec.ExpirationSeconds != nil {
				t.Errorf("CSR %s asks for expirationSeconds %d, want it unset", r.Name, *r.Spec.ExpirationSeconds)
			}
			got = append(got, r.Spec.SignerName+" by "+r.Spec.Username)
		}
		slices.Sort(got)
		tokenID, _, _ := strings.Cut(token, ".")
		want := []string{
			certificatesv1.KubeAPIServerClientKubeletSignerName + " by system:bootstrap:" + tokenID,
			certificatesv1.KubeletServingSignerName + " by system:node:" + node,
		}
		if !slices.Equal(got, want) {
			t.Errorf("CSRs = %q, want %q", got, want)
		}
	})

	first.stop(t)

	// A restart needs no token: it reuses the stored credentials.
	second := newAgent(t, kubelet.Config{DataDir: dir, NodeName: node})
	second.start(t)
	if out := second.progress.String(); !strings.Contains(out, "using existing credentials in "+dir) || strings.Contains(out, "[1/5]") {
		t.Errorf("progress on restart = %q, want it to reuse the credentials without joining", out)
	}

	// Revoking the node's certificate stops the agent with a message that
	// says so.
	creds, err := bootstrap.LoadCredentials(dir)
	if err != nil || creds == nil {
		t.Fatalf("LoadCredentials: %v", err)
	}
	if err := revocation.Add(t.Context(), c.Client, "test revokes "+node, creds.Certificate.SerialNumber); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	err, ok := second.wait(20 * time.Second)
	if !ok {
		t.Fatal("agent still running 20s after its certificate was revoked")
	}
	if !errors.Is(err, kubelet.ErrCertificateRejected) || !strings.Contains(err.Error(), "revoked") || !strings.Contains(err.Error(), "--rejoin") {
		t.Errorf("Run after revocation = %v, want ErrCertificateRejected saying it was revoked and how to rejoin", err)
	}
	t.Logf("after revocation: %v", err)
}

// TestAgentRotatesCertificates runs an agent against a server that signs
// certificates for 15 seconds: the agent must renew both its certificates
// twice, online, and never be refused (a refused request stops the agent).
func TestAgentRotatesCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	c := framework.StartCluster(t, func(cfg *controlplane.Config) { cfg.ClusterSigningDuration = 15 * time.Second })
	const node = "node-r"
	a := newAgent(t, kubelet.Config{
		Server: c.URL, Token: newToken(t, c), CACertHashes: []string{pki.Pin(c.ControlPlane.PKI().ServerCA.Cert)},
		DataDir: t.TempDir(), NodeName: node,
	})
	a.start(t)
	count := func(signer string) int {
		csrs, err := c.Client.CertificatesV1().CertificateSigningRequests().List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range csrs.Items {
			if r.Spec.SignerName == signer && r.Spec.Username == "system:node:"+node {
				n++
			}
		}
		return n
	}
	// The node's client CSRs are all renewals (it joined with the token);
	// its first serving CSR is not.
	deadline := time.Now().Add(60 * time.Second)
	for count(certificatesv1.KubeAPIServerClientKubeletSignerName) < 2 || count(certificatesv1.KubeletServingSignerName) < 3 {
		if err, stopped := a.wait(200 * time.Millisecond); stopped {
			t.Fatalf("agent stopped while rotating: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s: %d client and %d serving CSRs by the node, want 2 and 3",
				count(certificatesv1.KubeAPIServerClientKubeletSignerName), count(certificatesv1.KubeletServingSignerName))
		}
	}
	// Still alive and heartbeating with a rotated certificate.
	l0, err := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(t.Context(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 5*time.Second, func() (bool, error) {
		l, err := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(t.Context(), node, metav1.GetOptions{})
		return err == nil && l.Spec.RenewTime.After(l0.Spec.RenewTime.Time), err
	})
	a.stop(t)
}

// testAgent is an Agent under test with its progress output and address.
type testAgent struct {
	*kubelet.Agent
	progress *syncBuffer
	addr     string
	cancel   context.CancelFunc
	exited   chan struct{} // closed when Run has returned
	err      error         // Run's result
}

// newAgent creates an agent on a loopback listener with fast heartbeats.
func newAgent(t *testing.T, cfg kubelet.Config) *testAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ta := &testAgent{progress: &syncBuffer{}, addr: ln.Addr().String()}
	cfg.Listener = ln
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.StatusReportInterval = time.Second
	cfg.Progress = ta.progress
	cfg.Logger = testLogger(t)
	if ta.Agent, err = kubelet.New(cfg); err != nil {
		ln.Close()
		t.Fatalf("kubelet.New: %v", err)
	}
	return ta
}

func (a *testAgent) port() string {
	_, p, _ := net.SplitHostPort(a.addr)
	return p
}

// run runs the agent until it returns.
func (a *testAgent) run(ctx context.Context) error { return a.Run(ctx) }

// start runs the agent until the test ends and waits until it is ready.
func (a *testAgent) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.exited = cancel, make(chan struct{})
	go func() {
		a.err = a.Run(ctx)
		close(a.exited)
	}()
	t.Cleanup(func() {
		cancel()
		if _, ok := a.wait(30 * time.Second); !ok {
			t.Errorf("agent did not stop within 30s")
		}
	})
	select {
	case <-a.Ready():
	case <-a.exited:
		t.Fatalf("agent stopped before it was ready: %v\nprogress:\n%s", a.err, a.progress.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("agent not ready after 60s\nprogress:\n%s", a.progress.String())
	}
}

// wait waits up to timeout for Run to return and returns its result; ok is
// false if it is still running.
func (a *testAgent) wait(timeout time.Duration) (err error, ok bool) {
	select {
	case <-a.exited:
		return a.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// stop stops the agent and checks that Run returned nil.
func (a *testAgent) stop(t *testing.T) {
	t.Helper()
	a.cancel()
	err, ok := a.wait(30 * time.Second)
	if !ok {
		t.Fatal("agent did not stop within 30s")
	}
	if err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func heartbeat(n *corev1.Node) time.Time {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastHeartbeatTime.Time
		}
	}
	return time.Time{}
}

// newToken creates a bootstrap token; the server's bootstrap signer signs
// cluster-info for it.
func newToken(t *testing.T, c *framework.Cluster) string {
	t.Helper()
	token, err := bootstrap.CreateToken(t.Context(), c.Client, 10*time.Minute, "test")
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return token
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("TETHER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
