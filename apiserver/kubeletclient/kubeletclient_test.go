package kubeletclient

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
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"tether/pki"
	"tether/tunnel"
)

// testPKI is a cluster's two CAs and the API server's kubelet identity.
type testPKI struct {
	serverCA, clientCA *pki.CA
	identity           *pki.Identity
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	serverCA, err := pki.NewCA("test-server-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := pki.NewCA("test-client-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(clientCA, time.Hour, User)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{serverCA: serverCA, clientCA: clientCA, identity: id}
}

// nodes is a NodeGetter over a fixed set of nodes.
type nodes map[string]*corev1.Node

func (n nodes) Get(_ context.Context, name string) (*corev1.Node, error) {
	if node, ok := n[name]; ok {
		return node, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, name)
}

func node(name string, port int32, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Addresses:       addrs,
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: port}},
		},
	}
}

func addr(t corev1.NodeAddressType, a string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: t, Address: a}
}

func TestLocation(t *testing.T) {
	p := newTestPKI(t)
	known := nodes{
		"both":     node("both", 0, addr(corev1.NodeHostName, "both.example"), addr(corev1.NodeInternalIP, "10.0.0.5")),
		"hostonly": node("hostonly", 11250, addr(corev1.NodeHostName, "hostonly.example"), addr(corev1.NodeExternalIP, "203.0.113.9")),
		"ipv6":     node("ipv6", 0, addr(corev1.NodeInternalIP, "fd00::5")),
		"external": node("external", 0, addr(corev1.NodeExternalIP, "203.0.113.9")),
	}
	for _, tc := range []struct {
		name      string
		types     []corev1.NodeAddressType
		node      string
		wantHost  string
		wantCode  int32
		wantInErr string
	}{
		{name: "internal IP first by default", node: "both", wantHost: "10.0.0.5:10250"},
		{name: "host name when no internal IP", node: "hostonly", wantHost: "hostonly.example:11250"},
		{name: "IPv6 bracketed", node: "ipv6", wantHost: "[fd00::5]:10250"},
		{name: "preference order", types: []corev1.NodeAddressType{corev1.NodeHostName, corev1.NodeInternalIP}, node: "both", wantHost: "both.example:10250"},
		{name: "no preferred address", node: "external", wantCode: 503, wantInErr: "node external has no address of the types [InternalIP Hostname]"},
		{name: "unknown node", node: "nope", wantCode: 404, wantInErr: `nodes "nope" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{Nodes: known, ServerCA: p.serverCA.CertPEM(), ClientCertificate: p.identity.GetClientCertificate, PreferredAddressTypes: tc.types})
			if err != nil {
				t.Fatal(err)
			}
			u, rt, err := c.Location(t.Context(), tc.node)
			if tc.wantCode != 0 {
				var st apierrors.APIStatus
				if !errors.As(err, &st) || st.Status().Code != tc.wantCode || !strings.Contains(err.Error(), tc.wantInErr) {
					t.Fatalf("Location(%s) error = %v, want %d containing %q", tc.node, err, tc.wantCode, tc.wantInErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Location(%s): %v", tc.node, err)
			}
			if u.Scheme != "https" || u.Host != tc.wantHost || u.Path != "" {
				t.Errorf("Location(%s) = %s, want https://%s", tc.node, u, tc.wantHost)
			}
			tr := rt.(*http.Transport)
			host, _, _ := net.SplitHostPort(tc.wantHost)
			if tr.TLSClientConfig.InsecureSkipVerify || tr.TLSClientConfig.ServerName != host || tr.TLSClientConfig.RootCAs == nil {
				t.Errorf("transport TLS: insecure=%v serverName=%q roots=%v, want verified against the server CA as %q",
					tr.TLSClientConfig.InsecureSkipVerify, tr.TLSClientConfig.ServerName, tr.TLSClientConfig.RootCAs != nil, host)
			}
			if tr.Proxy != nil {
				t.Errorf("transport uses a proxy; kubelets are reached directly")
			}
		})
	}
}

func TestLocationReusesTransport(t *testing.T) {
	p := newTestPKI(t)
	n := node("n1", 0, addr(corev1.NodeInternalIP, "10.0.0.1"))
	c, err := New(Config{Nodes: nodes{"n1": n}, ServerCA: p.serverCA.CertPEM(), ClientCertificate: p.identity.GetClientCertificate})
	if err != nil {
		t.Fatal(err)
	}
	_, first, _ := c.Location(t.Context(), "n1")
	_, again, _ := c.Location(t.Context(), "n1")
	if first != again {
		t.Errorf("second Location returned a new transport; connections would not be reused")
	}
	n.Status.Addresses[0].Address = "10.0.0.2"
	_, moved, _ := c.Location(t.Context(), "n1")
	if moved == first || moved.(*http.Transport).TLSClientConfig.ServerName != "10.0.0.2" {
		t.Errorf("after the node's address changed the transport still verifies %q", moved.(*http.Transport).TLSClientConfig.ServerName)
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{PreferredAddressTypes: []corev1.NodeAddressType{"Bogus", corev1.NodeHostName, corev1.NodeHostName}})
	for _, want := range []string{"no node getter", "no client certificate", "server CA bundle holds no certificate", `unknown node address type "Bogus"`, `"Hostname" is listed twice`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(bad config) = %v, want it to mention %q", err, want)
		}
	}
}

// startKubelet starts an HTTPS server on 127.0.0.1 with a serving
// certificate from ca for ips, requiring client certificates from
// clientCA. It answers with the CN of the client certificate.
func startKubelet(t *testing.T, ca, clientCA *pki.CA, ips ...net.IP) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{
		CommonName: "system:node:n1", IPAddresses: ips,
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.Cert)
	hits := new(atomic.Int32)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = nil
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, hits
}

func serverPort(srv *httptest.Server) int32 {
	return int32(srv.Listener.Addr().(*net.TCPAddr).Port)
}

// get sends GET / to the kubelet of node n1 and maps errors as the API
// server does.
func get(t *testing.T, c *Client) (string, error) {
	t.Helper()
	u, rt, err := c.Location(t.Context(), "n1")
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: rt}).Get(u.String())
	if err != nil {
		return "", c.StatusError("n1", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestVerifiesKubeletCertificate(t *testing.T) {
	p := newTestPKI(t)
	otherCA, err := pki.NewCA("other-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	loopback := net.ParseIP("127.0.0.1")
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedPort := int32(refused.Addr().(*net.TCPAddr).Port)
	refused.Close()

	for _, tc := range []struct {
		name     string
		ca       *pki.CA
		ips      []net.IP
		closed   bool
		wantCode int32
		wantMsg  string
	}{
		{name: "cluster CA, right address", ca: p.serverCA, ips: []net.IP{loopback}},
		{name: "another CA", ca: otherCA, ips: []net.IP{loopback}, wantCode: 502,
			wantMsg: "the kubelet certificate for node n1 (address 127.0.0.1:%d) is not valid: x509: certificate signed by unknown authority"},
		{name: "cluster CA, another node's address", ca: p.serverCA, ips: []net.IP{net.ParseIP("127.0.0.2")}, wantCode: 502,
			wantMsg: "the kubelet certificate for node n1 (address 127.0.0.1:%d) is not valid: x509: certificate is valid for 127.0.0.2, not 127.0.0.1"},
		{name: "nothing listening", closed: true, wantCode: 503,
			wantMsg: "the kubelet of node n1 is unreachable at 127.0.0.1:%d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port, hits := refusedPort, new(atomic.Int32)
			if !tc.closed {
				var srv *httptest.Server
				srv, hits = startKubelet(t, tc.ca, p.clientCA, tc.ips...)
				port = serverPort(srv)
			}
			c, err := New(Config{
				Nodes:             nodes{"n1": node("n1", port, addr(corev1.NodeInternalIP, "127.0.0.1"))},
				ServerCA:          p.serverCA.CertPEM(),
				ClientCertificate: p.identity.GetClientCertificate,
			})
			if err != nil {
				t.Fatal(err)
			}
			body, err := get(t, c)
			if tc.wantCode == 0 {
				if err != nil || body != User {
					t.Fatalf("GET = %q, %v; want the kubelet to see user %q", body, err, User)
				}
				return
			}
			want := fmt.Sprintf(tc.wantMsg, port)
			var st apierrors.APIStatus
			if !errors.As(err, &st) || st.Status().Code != tc.wantCode || !strings.Contains(st.Status().Message, want) {
				t.Fatalf("GET error = %v, want %d %q", err, tc.wantCode, want)
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the kubelet served %d requests, want none", n)
			}
		})
	}
}

func TestInsecureSkipTLSVerifyWarns(t *testing.T) {
	p := newTestPKI(t)
	otherCA, err := pki.NewCA("other-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := startKubelet(t, otherCA, p.clientCA, net.ParseIP("127.0.0.1"))
	var logs bytes.Buffer
	c, err := New(Config{
		Nodes:                 nodes{"n1": node("n1", serverPort(srv), addr(corev1.NodeInternalIP, "127.0.0.1"))},
		ClientCertificate:     p.identity.GetClientCertificate,
		InsecureSkipTLSVerify: true,
		Logger:                slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if body, err := get(t, c); err != nil || body != User {
			t.Fatalf("GET with verification off = %q, %v", body, err)
		}
	}
	if n := strings.Count(logs.String(), "WITHOUT verifying"); n != 2 {
		t.Errorf("logged %d warnings for 2 insecure connections, want 2:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "node=n1") {
		t.Errorf("warning does not name the node:\n%s", logs.String())
	}
}

func TestStatusErrorKeepsAPIErrors(t *testing.T) {
	c := &Client{}
	in := apierrors.NewBadRequest("nope")
	if got := c.StatusError("n1", nil, in); got != error(in) {
		t.Errorf("StatusError(API error) = %v, want it unchanged", got)
	}
	if got := c.StatusError("n1", nil, nil); got != nil {
		t.Errorf("StatusError(nil) = %v, want nil", got)
	}
	got := c.StatusError("n1", nil, errors.New("boom"))
	var st apierrors.APIStatus
	if !errors.As(got, &st) || st.Status().Code != 502 || !strings.Contains(got.Error(), "node n1") {
		t.Errorf("StatusError(other) = %v, want a 502 naming the node", got)
	}
}

func TestValidateAddressTypes(t *testing.T) {
	for _, tc := range []struct {
		in []corev1.NodeAddressType
		ok bool
	}{
		{DefaultPreferredAddressTypes, true},
		{[]corev1.NodeAddressType{corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeInternalIP, corev1.NodeExternalDNS, corev1.NodeExternalIP}, true},
		{nil, false},
		{[]corev1.NodeAddressType{"internalip"}, false},
	} {
		if err := ValidateAddressTypes(tc.in); (err == nil) != tc.ok {
			t.Errorf("ValidateAddressTypes(%v) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

// fakeTunnels says which nodes have a tunnel; it dials nothing.
type fakeTunnels map[string]bool

func (f fakeTunnels) Connected(node string) bool { return f[node] }
func (f fakeTunnels) DialNode(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("fakeTunnels dials nothing")
}

// A node reached only through its tunnel is refused while the tunnel is
// down, before anything is dialled; other nodes are not affected.
func TestTunnelOnly(t *testing.T) {
	p := newTestPKI(t)
	direct := node("direct", 10250, addr(corev1.NodeInternalIP, "10.0.0.1"))
	tunnelled := node("behind-nat", 10250, addr(corev1.NodeInternalIP, "10.0.0.2"))
	tunnelled.Annotations = map[string]string{tunnel.EgressAnnotation: tunnel.EgressTunnel}
	for _, tc := range []struct {
		name    string
		tunnels Tunnels
		node    string
		wantErr bool
	}{
		{"no annotation, no tunnels", nil, "direct", false},
		{"tunnel-only, no tunnel server", nil, "behind-nat", true},
		{"tunnel-only, tunnel down", fakeTunnels{"direct": true}, "behind-nat", true},
		{"tunnel-only, tunnel up", fakeTunnels{"behind-nat": true}, "behind-nat", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{Nodes: nodes{"direct": direct, "behind-nat": tunnelled}, ServerCA: p.serverCA.CertPEM(),
				ClientCertificate: p.identity.GetClientCertificate, Tunnels: tc.tunnels})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.Location(t.Context(), tc.node)
			switch {
			case tc.wantErr && !apierrors.IsServiceUnavailable(err):
				t.Fatalf("Location(%s) = %v, want a 503", tc.node, err)
			case tc.wantErr && !strings.Contains(err.Error(), "its tunnel is not connected"):
				t.Errorf("Location(%s) = %v, want it to say the tunnel is not connected", tc.node, err)
			case !tc.wantErr && err != nil:
				t.Fatalf("Location(%s) = %v, want no error", tc.node, err)
			}
		})
	}
}
