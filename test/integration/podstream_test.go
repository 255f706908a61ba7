package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	clientspdy "k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/exec"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"

	"tether/pki"
	"tether/test/framework"
)

// TestPodStreams covers path P5: the API server's pod subresources that
// reach a kubelet (log, exec, attach, port-forward), against fake kubelets
// serving real TLS on loopback. The API server must present its own client
// certificate and must verify every kubelet's serving certificate.
func TestPodStreams(t *testing.T) {
	c := framework.StartCluster(t)
	client := fastClient(t, c)
	p := c.ControlPlane.PKI()

	// The good kubelet: a serving certificate from the cluster server CA
	// for 127.0.0.1, client certificates required from the client CA.
	good := startFakeKubelet(t, p.ServerCA, p.ClientCA, net.ParseIP("127.0.0.1"))
	createKubeletNode(t, client, "good-node", good.port())

	ns := createNamespace(t, client, "podstream")
	pod := newPod("web", "busybox:1.36")
	pod.Spec.NodeName = "good-node"
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}

	t.Run("Logs", func(t *testing.T) { testPodLogs(t, client, good, ns) })
	t.Run("LogsFollow", func(t *testing.T) { testPodLogsFollow(t, client, good, ns) })
	t.Run("LogErrors", func(t *testing.T) { testPodLogErrors(t, client, ns) })
	t.Run("ExecSPDY", func(t *testing.T) { testExecSPDY(t, c, good, ns) })
	t.Run("ExecWebSocket", func(t *testing.T) { testExecWebSocket(t, c, good, ns) })
	t.Run("Attach", func(t *testing.T) { testAttach(t, c, good, ns) })
	t.Run("PortForward", func(t *testing.T) { testPortForward(t, c, good, ns) })
	t.Run("NoNode", func(t *testing.T) { testPodStreamsNoNode(t, c, client, ns) })
	t.Run("UntrustedKubelet", func(t *testing.T) { testUntrustedKubelets(t, c, client) })
	t.Run("Unreachable", func(t *testing.T) { testUnreachableKubelet(t, client) })
	t.Run("CreateRequired", func(t *testing.T) { testStreamCreateRequired(t, c, client, good, ns) })
}

func testPodLogs(t *testing.T, client kubernetes.Interface, k *fakeKubelet, ns string) {
	before := len(k.requests())
	tail := int64(7)
	body, err := client.CoreV1().Pods(ns).GetLogs("web", &corev1.PodLogOptions{TailLines: &tail, Timestamps: true}).DoRaw(t.Context())
	if err != nil {
		t.Fatalf("GetLogs: %v", err)
	}
	if got, want := string(body), "log of "+ns+"/web/c0\n"; got != want {
		t.Errorf("GetLogs = %q, want %q", got, want)
	}
	reqs := k.requests()[before:]
	if len(reqs) != 1 {
		t.Fatalf("kubelet saw %d requests, want 1: %v", len(reqs), reqs)
	}
	r := reqs[0]
	if want := "/containerLogs/" + ns + "/web/c0"; r.Path != want {
		t.Errorf("kubelet path = %q, want %q", r.Path, want)
	}
	if want := (url.Values{"tailLines": {"7"}, "timestamps": {"true"}}); r.Query.Encode() != want.Encode() {
		t.Errorf("kubelet query = %q, want %q (only the options that are set)", r.Query.Encode(), want.Encode())
	}
	if r.User != "kube-apiserver-kubelet-client" {
		t.Errorf("kubelet saw client certificate CN %q, want kube-apiserver-kubelet-client", r.User)
	}
}

func testPodLogsFollow(t *testing.T, client kubernetes.Interface, k *fakeKubelet, ns string) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := client.CoreV1().Pods(ns).GetLogs("web", &corev1.PodLogOptions{Container: "c0", Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatalf("GetLogs follow: %v", err)
	}
	defer stream.Close()
	rd := bufio.NewReader(stream)
	// The first line must arrive while the kubelet still holds the
	// stream open: the server flushes every write when following.
	line, err := rd.ReadString('\n')
	if err != nil || line != "line 1\n" {
		t.Fatalf("first followed line = %q, %v; want %q", line, err, "line 1\n")
	}
	k.releaseFollow()
	rest, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("read rest of the followed log: %v", err)
	}
	if string(rest) != "line 2\n" {
		t.Errorf("rest of the followed log = %q, want %q", rest, "line 2\n")
	}
}

func testPodLogErrors(t *testing.T, client kubernetes.Interface, ns string) {
	multi := newPod("multi", "busybox:1.36", "busybox:1.36", "gone:1")
	multi.Spec.Containers[2].Name = "gone"
	multi.Spec.NodeName = "good-node"
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), multi, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	neg, one := int64(-1), int64(1)
	now := metav1.Now()
	for _, tc := range []struct {
		name string
		pod  string
		opts corev1.PodLogOptions
		code int32
		msg  string
	}{
		{"container required", "multi", corev1.PodLogOptions{}, 400, "a container name must be specified for pod multi, choose one of: [c0 c1 gone]"},
		{"unknown container", "multi", corev1.PodLogOptions{Container: "nope"}, 400, "container nope is not valid for pod multi"},
		{"negative tail", "web", corev1.PodLogOptions{TailLines: &neg}, 422, "tailLines"},
		{"both since", "web", corev1.PodLogOptions{SinceSeconds: &one, SinceTime: &now}, 422, "at most one of `sinceTime` or `sinceSeconds`"},
		{"kubelet 404 passes through", "multi", corev1.PodLogOptions{Container: "gone"}, 404, "container gone is not running"},
		{"no such pod", "missing", corev1.PodLogOptions{}, 404, `pods "missing" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := logsError(t.Context(), client, ns, tc.pod, &tc.opts)
			if statusCode(err) != tc.code || !strings.Contains(fmt.Sprint(err), tc.msg) {
				t.Errorf("GetLogs(%s, %+v) = %d %v, want %d containing %q", tc.pod, tc.opts, statusCode(err), err, tc.code, tc.msg)
			}
		})
	}
}

// logsError reads a log as kubectl does (a stream) and returns the error,
// decoded from the server's Status.
func logsError(ctx context.Context, client kubernetes.Interface, ns, pod string, opts *corev1.PodLogOptions) error {
	rc, err := client.CoreV1().Pods(ns).GetLogs(pod, opts).Stream(ctx)
	if err != nil {
		return err
	}
	rc.Close()
	return nil
}

// subresourceURL is the URL of a pod subresource with options encoded as
// client-go (and kubectl) encode them.
func subresourceURL(t *testing.T, client kubernetes.Interface, ns, pod, sub string, opts runtime.Object) *url.URL {
	t.Helper()
	return client.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name(pod).SubResource(sub).
		VersionedParams(opts, scheme.ParameterCodec).URL()
}

// runExec runs a command through executor and returns stdout and the
// error of the stream.
func runExec(ctx context.Context, e remotecommand.Executor, stdin string) (string, string, error) {
	var stdout, stderr bytes.Buffer
	opts := remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}
	if stdin != "" {
		opts.Stdin = strings.NewReader(stdin)
	}
	err := e.StreamWithContext(ctx, opts)
	return stdout.String(), stderr.String(), err
}

func testExecSPDY(t *testing.T, c *framework.Cluster, k *fakeKubelet, ns string) {
	client := fastClient(t, c)
	before := len(k.requests())
	u := subresourceURL(t, client, ns, "web", "exec", &corev1.PodExecOptions{Command: []string{"exit", "3"}, Stdout: true, Stderr: true})
	e, err := remotecommand.NewSPDYExecutor(c.Admin, http.MethodPost, u)
	if err != nil {
		t.Fatalf("NewSPDYExecutor: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stdout, stderr, err := runExec(ctx, e, "")
	var exitErr exec.CodeExitError
	if !errors.As(err, &exitErr) || exitErr.Code != 3 {
		t.Fatalf("exec exit 3 over SPDY: err = %v, want exit code 3", err)
	}
	if stdout != "ran exit 3\n" || stderr != "to stderr\n" {
		t.Errorf("exec stdout, stderr = %q, %q; want %q, %q", stdout, stderr, "ran exit 3\n", "to stderr\n")
	}
	reqs := k.requests()[before:]
	if len(reqs) != 1 {
		t.Fatalf("kubelet saw %d requests, want 1: %v", len(reqs), reqs)
	}
	r := reqs[0]
	if want := "/exec/" + ns + "/web/c0"; r.Path != want {
		t.Errorf("kubelet path = %q, want %q", r.Path, want)
	}
	if want := (url.Values{"command": {"exit", "3"}, "output": {"1"}, "error": {"1"}}); r.Query.Encode() != want.Encode() {
		t.Errorf("kubelet query = %q, want %q", r.Query.Encode(), want.Encode())
	}
	if r.User != "kube-apiserver-kubelet-client" {
		t.Errorf("kubelet saw client certificate CN %q, want kube-apiserver-kubelet-client", r.User)
	}
}

func testExecWebSocket(t *testing.T, c *framework.Cluster, k *fakeKubelet, ns string) {
	client := fastClient(t, c)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		command []string
		stdin   string
		stdout  string
		code    int
	}{
		{"stdin echoed", []string{"cat"}, "hello through v5\n", "ran cat\nhello through v5\n", 0},
		{"exit code", []string{"exit", "5"}, "", "ran exit 5\n", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(k.requests())
			u := subresourceURL(t, client, ns, "web", "exec", &corev1.PodExecOptions{
				Command: tc.command, Stdin: tc.stdin != "", Stdout: true, Stderr: true,
			})
			e, err := remotecommand.NewWebSocketExecutor(c.Admin, http.MethodGet, u.String())
			if err != nil {
				t.Fatalf("NewWebSocketExecutor: %v", err)
			}
			stdout, _, err := runExec(ctx, e, tc.stdin)
			var exitErr exec.CodeExitError
			switch {
			case tc.code == 0 && err != nil:
				t.Fatalf("exec over WebSocket v5: %v", err)
			case tc.code != 0 && (!errors.As(err, &exitErr) || exitErr.Code != tc.code):
				t.Fatalf("exec over WebSocket v5: err = %v, want exit code %d", err, tc.code)
			}
			if stdout != tc.stdout {
				t.Errorf("stdout = %q, want %q", stdout, tc.stdout)
			}
			// The translator reached the kubelet over SPDY, with the API
			// server's client certificate.
			reqs := k.requests()[before:]
			if len(reqs) != 1 || reqs[0].Protocol != "v4.channel.k8s.io" || reqs[0].User != "kube-apiserver-kubelet-client" {
				t.Errorf("kubelet requests = %+v, want one SPDY v4 exec from kube-apiserver-kubelet-client", reqs)
			}
		})
	}
}

func testAttach(t *testing.T, c *framework.Cluster, k *fakeKubelet, ns string) {
	client := fastClient(t, c)
	before := len(k.requests())
	u := subresourceURL(t, client, ns, "web", "attach", &corev1.PodAttachOptions{Stdout: true, Stderr: true})
	e, err := remotecommand.NewSPDYExecutor(c.Admin, http.MethodPost, u)
	if err != nil {
		t.Fatalf("NewSPDYExecutor: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stdout, _, err := runExec(ctx, e, "")
	if err != nil || stdout != "attached\n" {
		t.Fatalf("attach = %q, %v; want %q", stdout, err, "attached\n")
	}
	reqs := k.requests()[before:]
	if len(reqs) != 1 || reqs[0].Path != "/attach/"+ns+"/web/c0" || reqs[0].Query.Encode() != "error=1&output=1" {
		t.Errorf("kubelet requests = %+v, want one /attach/%s/web/c0?error=1&output=1", reqs, ns)
	}
}

func testPortForward(t *testing.T, c *framework.Cluster, k *fakeKubelet, ns string) {
	client := fastClient(t, c)
	u := client.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name("web").SubResource("portforward").URL()
	spdyDialer := func(t *testing.T) httpstream.Dialer {
		transport, upgrader, err := clientspdy.RoundTripperFor(c.Admin)
		if err != nil {
			t.Fatalf("spdy.RoundTripperFor: %v", err)
		}
		return clientspdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	}
	wsDialer := func(t *testing.T) httpstream.Dialer {
		d, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, c.Admin)
		if err != nil {
			t.Fatalf("NewSPDYOverWebsocketDialer: %v", err)
		}
		return d
	}
	for _, tc := range []struct {
		name   string
		dialer func(*testing.T) httpstream.Dialer
	}{
		{"SPDY", spdyDialer},
		{"WebSocketTunnel", wsDialer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(k.requests())
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			ready := make(chan struct{})
			fw, err := portforward.NewOnAddressesForStreamingWithContext(ctx, tc.dialer(t), []string{"127.0.0.1"}, []string{"0:8080"}, ready, io.Discard, io.Discard)
			if err != nil {
				t.Fatalf("portforward: %v", err)
			}
			done := make(chan error, 1)
			go func() { done <- fw.ForwardPorts() }()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("ForwardPorts: %v", err)
			case <-ctx.Done():
				t.Fatal("port forward not ready")
			}
			defer func() { cancel(); <-done }()
			ports, err := fw.GetPorts()
			if err != nil || len(ports) != 1 {
				t.Fatalf("GetPorts = %v, %v", ports, err)
			}
			conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))))
			if err != nil {
				t.Fatalf("dial forwarded port: %v", err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := conn.Write([]byte("ping\n")); err != nil {
				t.Fatalf("write forwarded port: %v", err)
			}
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil || line != "8080: ping\n" {
				t.Fatalf("echo through port-forward = %q, %v; want %q", line, err, "8080: ping\n")
			}
			reqs := k.requests()[before:]
			if len(reqs) != 1 || reqs[0].Path != "/portForward/"+ns+"/web" || reqs[0].Protocol != "portforward.k8s.io" {
				t.Errorf("kubelet requests = %+v, want one SPDY /portForward/%s/web", reqs, ns)
			}
		})
	}
}

func testPodStreamsNoNode(t *testing.T, c *framework.Cluster, client kubernetes.Interface, ns string) {
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), newPod("pending", "busybox:1.36"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	var code int
	body, err := client.CoreV1().Pods(ns).GetLogs("pending", &corev1.PodLogOptions{}).Do(t.Context()).StatusCode(&code).Raw()
	if err != nil || code != http.StatusOK || len(body) != 0 {
		t.Errorf("logs of a pod without node = %d %q %v, want 200 and an empty body", code, body, err)
	}
	for _, sub := range []string{"exec", "attach", "portforward"} {
		t.Run(sub, func(t *testing.T) {
			req := client.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name("pending").SubResource(sub)
			switch sub {
			case "exec":
				req = req.VersionedParams(&corev1.PodExecOptions{Command: []string{"true"}, Stdout: true}, scheme.ParameterCodec)
			case "attach":
				req = req.VersionedParams(&corev1.PodAttachOptions{Stdout: true}, scheme.ParameterCodec)
			}
			err := req.Do(t.Context()).Error()
			if statusCode(err) != 400 || !strings.Contains(err.Error(), "pod pending does not have a host assigned") {
				t.Errorf("POST pods/%s of a pod without node = %d %v, want 400 naming the pod", sub, statusCode(err), err)
			}
		})
	}
}

func testUntrustedKubelets(t *testing.T, c *framework.Cluster, client kubernetes.Interface) {
	p := c.ControlPlane.PKI()
	otherCA, err := pki.NewCA("some-other-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		ca     *pki.CA
		ip     string
		reason string
	}{
		{"other CA", otherCA, "127.0.0.1", "certificate signed by unknown authority"},
		{"other address", p.ServerCA, "127.0.0.2", "certificate is valid for 127.0.0.2, not 127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := startFakeKubelet(t, tc.ca, p.ClientCA, net.ParseIP(tc.ip))
			node := "untrusted-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			createKubeletNode(t, client, node, k.port())
			ns := createNamespace(t, client, "untrusted")
			pod := newPod("web", "busybox:1.36")
			pod.Spec.NodeName = node
			if _, err := client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create pod: %v", err)
			}
			want := fmt.Sprintf("the kubelet certificate for node %s (address 127.0.0.1:%d) is not valid: ", node, k.port())

			err := logsError(t.Context(), client, ns, "web", &corev1.PodLogOptions{})
			if statusCode(err) != http.StatusBadGateway || !strings.Contains(fmt.Sprint(err), want) || !strings.Contains(fmt.Sprint(err), tc.reason) {
				t.Errorf("logs from an untrusted kubelet = %d %v, want 502 %q… %q", statusCode(err), err, want, tc.reason)
			}

			u := subresourceURL(t, client, ns, "web", "exec", &corev1.PodExecOptions{Command: []string{"true"}, Stdout: true})
			e, err := remotecommand.NewSPDYExecutor(c.Admin, http.MethodPost, u)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = runExec(t.Context(), e, "")
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("SPDY exec on an untrusted kubelet = %v, want an error containing %q", err, want)
			}
			// A WebSocket is refused before the upgrade, with the same
			// explanation (kubectl then retries over SPDY and shows it).
			ws, err := remotecommand.NewWebSocketExecutor(c.Admin, http.MethodGet, u.String())
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = runExec(t.Context(), ws, "")
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("WebSocket exec on an untrusted kubelet = %v, want an error containing %q", err, want)
			}
			if reqs := k.requests(); len(reqs) != 0 {
				t.Errorf("the untrusted kubelet received %d HTTP requests, want none (TLS must fail first): %+v", len(reqs), reqs)
			}
		})
	}
}

func testUnreachableKubelet(t *testing.T, client kubernetes.Interface) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	createKubeletNode(t, client, "gone-node", int32(port))
	ns := createNamespace(t, client, "unreachable")
	pod := newPod("web", "busybox:1.36")
	pod.Spec.NodeName = "gone-node"
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	err = logsError(t.Context(), client, ns, "web", &corev1.PodLogOptions{})
	want := fmt.Sprintf("the kubelet of node gone-node is unreachable at 127.0.0.1:%d", port)
	if statusCode(err) != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("logs from an unreachable kubelet = %d %v, want 503 containing %q", statusCode(err), err, want)
	}
}

// testStreamCreateRequired checks that get on pods/exec (enough for RBAC
// to pass a WebSocket upgrade, which is a GET) is not enough to exec.
func testStreamCreateRequired(t *testing.T, c *framework.Cluster, client kubernetes.Interface, k *fakeKubelet, ns string) {
	ctx := t.Context()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "exec-get-only"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Verbs: []string{"get"},
			Resources: []string{"pods", "pods/exec", "pods/attach", "pods/portforward", "pods/log"},
		}},
	}
	if _, err := client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "exec-get-only"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "viewer"}},
	}
	if _, err := client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role binding: %v", err)
	}
	viewerCfg, _ := clientCert(t, c, c.ControlPlane.PKI().ClientCA, "viewer")
	viewer := newIdentity(t, "viewer", viewerCfg)
	viewerClient := kubernetes.NewForConfigOrDie(viewerCfg)

	// get pods/log is what logs need.
	framework.Eventually(t, 10*time.Second, func() (bool, error) {
		_, err := viewerClient.CoreV1().Pods(ns).GetLogs("web", &corev1.PodLogOptions{}).DoRaw(ctx)
		if statusCode(err) == http.StatusForbidden {
			return false, nil // the role binding is not in the RBAC cache yet
		}
		return err == nil, err
	})

	before := len(k.requests())
	for _, sub := range []string{"exec", "attach", "portforward"} {
		t.Run(sub, func(t *testing.T) {
			path := "/api/v1/namespaces/" + ns + "/pods/web/" + sub
			proto := "v5.channel.k8s.io"
			switch sub {
			case "exec":
				path += "?command=true&stdout=true"
			case "attach":
				path += "?stdout=true"
			case "portforward":
				proto = "SPDY/3.1+portforward.k8s.io"
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(viewerCfg.Host, "/")+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			req.Header.Set("Sec-WebSocket-Protocol", proto)
			resp, err := viewer.client.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := fmt.Sprintf(`User \"viewer\" cannot create resource \"pods/%s\"`, sub)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), want) {
				t.Errorf("WebSocket GET pods/%s with only get = %d %s, want 403 containing %s", sub, resp.StatusCode, body, want)
			}
		})
	}
	if reqs := k.requests()[before:]; len(reqs) != 0 {
		t.Errorf("the kubelet received %d requests from forbidden streams, want none: %+v", len(reqs), reqs)
	}
}

// createKubeletNode registers a node whose kubelet is at 127.0.0.1:port.
func createKubeletNode(t *testing.T, client kubernetes.Interface, name string, port int32) {
	t.Helper()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeHostName, Address: name},
				{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: port}},
		},
	}
	if _, err := client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
}

// kubeletRequest is one request a fake kubelet received.
type kubeletRequest struct {
	Method, Path string
	Query        url.Values
	// User is the CN of the client certificate.
	User string
	// Protocol is the negotiated streaming protocol of an upgrade.
	Protocol string
}

// fakeKubelet is the HTTPS side of a kubelet: /containerLogs, /exec,
// /attach and /portForward, with a serving certificate from a given CA and
// client certificates required from the cluster client CA.
type fakeKubelet struct {
	srv    *httptest.Server
	follow chan struct{}

	mu   sync.Mutex
	reqs []kubeletRequest
}

func startFakeKubelet(t *testing.T, servingCA, clientCA *pki.CA, ip net.IP) *fakeKubelet {
	t.Helper()
	certPEM, keyPEM, err := servingCA.NewKeyAndCert(pki.CertRequest{
		CommonName: "system:node:fake", IPAddresses: []net.IP{ip},
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: time.Hour,
	})
	if err != nil {
		t.Fatalf("serving certificate: %v", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AddCert(clientCA.Cert)
	k := &fakeKubelet{follow: make(chan struct{}, 1)}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(k.serve))
	k.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clients,
		MinVersion:   tls.VersionTLS12,
	}
	k.srv.Config.ErrorLog = nil
	k.srv.StartTLS()
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKubelet) port() int32 {
	return int32(k.srv.Listener.Addr().(*net.TCPAddr).Port)
}

func (k *fakeKubelet) requests() []kubeletRequest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]kubeletRequest(nil), k.reqs...)
}

// releaseFollow lets a followed log write its second line and end.
func (k *fakeKubelet) releaseFollow() { k.follow <- struct{}{} }

func (k *fakeKubelet) record(req *http.Request, protocol string) {
	r := kubeletRequest{Method: req.Method, Path: req.URL.Path, Query: req.URL.Query(), Protocol: protocol}
	if req.TLS != nil && len(req.TLS.PeerCertificates) > 0 {
		r.User = req.TLS.PeerCertificates[0].Subject.CommonName
	}
	k.mu.Lock()
	k.reqs = append(k.reqs, r)
	k.mu.Unlock()
}

func (k *fakeKubelet) serve(w http.ResponseWriter, req *http.Request) {
	parts := strings.Split(strings.TrimPrefix(req.URL.Path, "/"), "/")
	switch {
	case parts[0] == "containerLogs" && len(parts) == 4 && req.Method == http.MethodGet:
		k.record(req, "")
		k.serveLogs(w, req, parts[1], parts[2], parts[3])
	case (parts[0] == "exec" || parts[0] == "attach") && len(parts) == 4:
		k.serveExec(w, req, parts[0])
	case parts[0] == "portForward" && len(parts) == 3:
		k.servePortForward(w, req)
	default:
		k.record(req, "")
		http.NotFound(w, req)
	}
}

func (k *fakeKubelet) serveLogs(w http.ResponseWriter, req *http.Request, ns, pod, container string) {
	if container == "gone" {
		http.Error(w, "container gone is not running", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	if req.URL.Query().Get("follow") != "true" {
		fmt.Fprintf(w, "log of %s/%s/%s\n", ns, pod, container)
		return
	}
	fmt.Fprint(w, "line 1\n")
	w.(http.Flusher).Flush()
	select {
	case <-k.follow:
	case <-req.Context().Done():
		return
	}
	fmt.Fprint(w, "line 2\n")
}

// serveExec is a small remote-command server (protocol v4): it writes
// "ran <command>" to stdout, copies stdin to stdout, writes "to stderr" on
// stderr, and ends with the exit code of "exit N". attach writes
// "attached".
func (k *fakeKubelet) serveExec(w http.ResponseWriter, req *http.Request, verb string) {
	protocol, err := httpstream.Handshake(req, w, []string{"v4.channel.k8s.io"})
	k.record(req, protocol)
	if err != nil {
		return
	}
	q := req.URL.Query()
	want := map[string]bool{corev1.StreamTypeError: true}
	if q.Get("input") == "1" {
		want[corev1.StreamTypeStdin] = true
	}
	if q.Get("output") == "1" {
		want[corev1.StreamTypeStdout] = true
	}
	if q.Get("error") == "1" {
		want[corev1.StreamTypeStderr] = true
	}
	if q.Get("tty") == "1" {
		want[corev1.StreamTypeResize] = true
	}
	type newStream struct {
		s     httpstream.Stream
		reply <-chan struct{}
	}
	streamCh := make(chan newStream, 8)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, req, func(s httpstream.Stream, reply <-chan struct{}) error {
		streamCh <- newStream{s, reply}
		return nil
	})
	if conn == nil {
		return
	}
	defer conn.Close()
	streams := map[string]httpstream.Stream{}
	timeout := time.After(10 * time.Second)
	for len(streams) < len(want) {
		select {
		case ns := <-streamCh:
			<-ns.reply
			streams[ns.s.Headers().Get(corev1.StreamType)] = ns.s
		case <-timeout:
			return
		}
	}
	out := streams[corev1.StreamTypeStdout]
	cmd := q["command"]
	if verb == "attach" {
		io.WriteString(out, "attached\n")
	} else {
		fmt.Fprintf(out, "ran %s\n", strings.Join(cmd, " "))
	}
	if in := streams[corev1.StreamTypeStdin]; in != nil {
		io.Copy(out, in)
	}
	if errOut := streams[corev1.StreamTypeStderr]; errOut != nil {
		if verb == "exec" {
			io.WriteString(errOut, "to stderr\n")
		}
		errOut.Close()
	}
	out.Close()
	status := streams[corev1.StreamTypeError]
	if len(cmd) == 2 && cmd[0] == "exit" {
		st := metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status:   metav1.StatusFailure, Reason: "NonZeroExitCode",
			Message: "command terminated with non-zero exit code",
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: cmd[1]}}},
		}
		json.NewEncoder(status).Encode(st)
	}
	status.Close()
	// Let the client read everything before the connection goes.
	select {
	case <-conn.CloseChan():
	case <-time.After(5 * time.Second):
	}
}

// servePortForward answers every data stream with "<port>: " followed by
// what it receives.
func (k *fakeKubelet) servePortForward(w http.ResponseWriter, req *http.Request) {
	protocol, err := httpstream.Handshake(req, w, []string{"portforward.k8s.io"})
	k.record(req, protocol)
	if err != nil {
		return
	}
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, req, func(s httpstream.Stream, reply <-chan struct{}) error {
		if s.Headers().Get(corev1.StreamType) != corev1.StreamTypeData {
			return nil // the error stream stays quiet
		}
		go func() {
			<-reply
			port := s.Headers().Get(corev1.PortHeader)
			rd := bufio.NewReader(s)
			for {
				line, err := rd.ReadString('\n')
				if err != nil {
					s.Close()
					return
				}
				fmt.Fprintf(s, "%s: %s", port, line)
			}
		}()
		return nil
	})
	if conn == nil {
		return
	}
	defer conn.Close()
	select {
	case <-conn.CloseChan():
	case <-req.Context().Done():
	}
}
