package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	clienttesting "k8s.io/client-go/testing"
	utilexec "k8s.io/utils/exec"

	"tether/pki"
)

const testNode = "node-a"

// policy says who may do what on nodes/<subresource> of testNode:
// user → verb → subresources.
var policy = map[string]map[string][]string{
	"admin":  {"get": {"proxy", "metrics", "stats", "pods", "healthz", "log"}, "create": {"proxy"}, "delete": {"proxy"}},
	"getter": {"get": {"proxy"}},
	"viewer": {"get": {"healthz", "pods"}},
}

// tokens are the bearer tokens the fake API server's TokenReview accepts.
var tokens = map[string]authenticationv1.UserInfo{
	"admin-token":     {Username: "admin", UID: "u-admin", Groups: []string{"admins"}},
	"getter-token":    {Username: "getter"},
	"viewer-token":    {Username: "viewer"},
	"sar-error-token": {Username: "sar-error"},
}

// env is a running server with its CAs, fake API and fake runtime.
type env struct {
	url        string
	serverCA   *pki.CA
	clientCA   *pki.CA
	containers *fakeContainers
	api        *fake.Clientset

	tokenReviews atomic.Int32
	mu           sync.Mutex
	sars         []authorizationv1.SubjectAccessReviewSpec
}

func (e *env) lastSARs() []authorizationv1.SubjectAccessReviewSpec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]authorizationv1.SubjectAccessReviewSpec(nil), e.sars...)
}

func newCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issuePEM(t *testing.T, ca *pki.CA, req pki.CertRequest) (certPEM, keyPEM []byte) {
	t.Helper()
	req.Validity = time.Hour
	certPEM, keyPEM, err := ca.NewKeyAndCert(req)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func issueTLS(t *testing.T, ca *pki.CA, req pki.CertRequest) *tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(issuePEM(t, ca, req))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

type envOption func(*Config)

// startEnv starts a Server on loopback with a fake API and runtime.
func startEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{
		serverCA:   newCA(t, "server-ca"),
		clientCA:   newCA(t, "client-ca"),
		containers: newFakeContainers(t),
		api:        fake.NewClientset(),
	}
	e.api.PrependReactor("create", "tokenreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
		e.tokenReviews.Add(1)
		tr := a.(clienttesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		if u, ok := tokens[tr.Spec.Token]; ok {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: u}
		} else {
			tr.Status = authenticationv1.TokenReviewStatus{Error: "invalid token"}
		}
		return true, tr, nil
	})
	e.api.PrependReactor("create", "subjectaccessreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
		sar := a.(clienttesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		e.mu.Lock()
		e.sars = append(e.sars, sar.Spec)
		e.mu.Unlock()
		if sar.Spec.User == "sar-error" {
			return true, nil, errors.New("authorization backend unavailable")
		}
		ra := sar.Spec.ResourceAttributes
		if ra != nil && ra.Resource == "nodes" && ra.Name == testNode && ra.Group == "" {
			for _, sub := range policy[sar.Spec.User][ra.Verb] {
				if sub == ra.Subresource {
					sar.Status.Allowed = true
				}
			}
		}
		return true, sar, nil
	})

	serving := issueTLS(t, e.serverCA, pki.CertRequest{CommonName: "system:node:" + testNode, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	pool := x509.NewCertPool()
	pool.AddCert(e.clientCA.Cert)
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_test_total", Help: "A test counter."}))
	cfg := Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serving, nil },
		NodeName:       testNode,
		ClientCA:       func() *x509.CertPool { return pool },
		Client:         e.api,
		Containers:     e.containers,
		Metrics:        reg,
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	e.url = "https://" + ln.Addr().String()
	return e
}

// restConfig is a client-go config for the server as user (a client
// certificate from the client CA), or with a bearer token if user ends in
// "-token".
func (e *env) restConfig(t *testing.T, user string) *rest.Config {
	t.Helper()
	cfg := &rest.Config{Host: e.url, TLSClientConfig: rest.TLSClientConfig{CAData: e.serverCA.CertPEM()}}
	if strings.HasSuffix(user, "-token") {
		cfg.BearerToken = user
		return cfg
	}
	cfg.CertData, cfg.KeyData = issuePEM(t, e.clientCA, pki.CertRequest{CommonName: user, Organization: []string{"testers"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return cfg
}

// httpClient is a plain client trusting the server CA, presenting cert if
// not nil.
func (e *env) httpClient(cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(e.serverCA.Cert)
	cfg := &tls.Config{RootCAs: pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

func (e *env) clientCert(t *testing.T, user string) *tls.Certificate {
	return issueTLS(t, e.clientCA, pki.CertRequest{CommonName: user, Organization: []string{"testers"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// fakeContainers is an in-memory pod manager: pod default/web (uid
// "uid-web") with container "app", whose current instance is "app-2" and
// previous one "app-1".
type fakeContainers struct {
	pods []*corev1.Pod
	logs map[string]string // container ID → log path
	dir  string

	mu      sync.Mutex
	current string // ID of app's current instance
}

func newFakeContainers(t *testing.T) *fakeContainers {
	dir := t.TempDir()
	return &fakeContainers{
		pods: []*corev1.Pod{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", UID: "uid-web"},
			Spec:       corev1.PodSpec{NodeName: testNode, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
		}},
		logs:    map[string]string{"app-1": dir + "/app-1.log", "app-2": dir + "/app-2.log"},
		dir:     dir,
		current: "app-2",
	}
}

func (f *fakeContainers) setCurrent(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current = id
}

func (f *fakeContainers) Pods() []*corev1.Pod { return f.pods }

func (f *fakeContainers) Container(ns, pod, uid, container string, previous bool) (string, string, error) {
	if ns != "default" || pod != "web" || (uid != "" && uid != "uid-web") {
		return "", "", fmt.Errorf("pod %s/%s: %w", ns, pod, ErrPodNotFound)
	}
	if container != "app" {
		return "", "", fmt.Errorf("container %q: %w", container, ErrContainerNotFound)
	}
	f.mu.Lock()
	id := f.current
	f.mu.Unlock()
	if previous {
		id = "app-1"
	}
	return id, f.logs[id], nil
}

// Exec runs a pretend command:
//
//	echo ARGS…    writes ARGS to stdout
//	cat           copies stdin to stdout
//	warn ARGS…    writes ARGS to stderr
//	fail          writes "bye" to stdout and exits with code 3
//	tty           writes "tty=<bool>" and the first resize to stdout
func (f *fakeContainers) Exec(ctx context.Context, id string, cmd []string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan TerminalSize) error {
	if id != "app-2" {
		return fmt.Errorf("exec in %q: not running", id)
	}
	switch cmd[0] {
	case "echo":
		fmt.Fprintln(stdout, strings.Join(cmd[1:], " "))
	case "cat":
		if _, err := io.Copy(stdout, stdin); err != nil {
			return err
		}
	case "warn":
		fmt.Fprintln(stderr, strings.Join(cmd[1:], " "))
	case "fail":
		fmt.Fprintln(stdout, "bye")
		return utilexec.CodeExitError{Err: errors.New("exit status 3"), Code: 3}
	case "tty":
		select {
		case size := <-resize:
			fmt.Fprintf(stdout, "tty=%v %dx%d\n", tty, size.Width, size.Height)
		case <-time.After(5 * time.Second):
			fmt.Fprintf(stdout, "tty=%v no resize\n", tty)
		case <-ctx.Done():
		}
	default:
		return utilexec.CodeExitError{Err: fmt.Errorf("%s: not found", cmd[0]), Code: 127}
	}
	return nil
}

// Attach echoes stdin to stdout with a prefix.
func (f *fakeContainers) Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan TerminalSize) error {
	fmt.Fprintf(stdout, "attached to %s\n", id)
	if stdin != nil {
		_, err := io.Copy(stdout, stdin)
		return err
	}
	return nil
}

// PortForward dials the port on loopback (the "pod network").
func (f *fakeContainers) PortForward(ctx context.Context, ns, pod string, uid types.UID, port int32, stream io.ReadWriteCloser) error {
	if ns != "default" || pod != "web" || uid != "uid-web" {
		return fmt.Errorf("pod %s/%s (%s): %w", ns, pod, uid, ErrPodNotFound)
	}
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		return fmt.Errorf("dial port %d: %w", port, err)
	}
	defer conn.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(conn, stream)
		conn.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		io.Copy(stream, conn)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

// echoServer listens on loopback and echoes every connection until EOF.
func echoServer(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
