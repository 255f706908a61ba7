package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/sys/unix"

	"tether/pki"
	"tether/test/framework"
)

// kubectlEnv runs kubectl inside the server's host with extra environment
// variables and stdin.
func (c *podCluster) kubectlEnv(t *testing.T, env []string, stdin io.Reader, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), kubectlTimeout)
	defer cancel()
	full := append([]string{"--kubeconfig", c.Kubeconfig, "--cache-dir", c.cacheDir}, args...)
	cmd := c.host.Command(ctx, c.kubectlBin, full...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	t.Logf("$ %s kubectl %s (err=%v)\n%s%s", strings.Join(env, " "), strings.Join(args, " "), err, clip(out.String()), clip(errb.String()))
	return out.String(), errb.String(), err
}

// spdyOnly makes kubectl skip its websocket attempts.
var spdyOnly = []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false", "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"}

func TestStreaming(t *testing.T) {
	requirePodRuntime(t)
	kubectlPath(t)
	c := startPodCluster(t)
	n1, n2 := c.nodes[0], c.nodes[1]

	// A pod that counts, a pod that crashes after printing its run, an echo
	// server on node-2, and a pod with stdin for attach.
	c.create(t, c.pod("counter", n1.name, `i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.3; done`))
	crash := c.pod("crasher", n1.name, `echo "run at $(date +%s%N)"; sleep 1; exit 1`)
	c.create(t, crash)
	c.create(t, c.pod("echo", n2.name, "exec nc -ll -p 8080 -e cat"))
	attach := c.pod("attached", n1.name, "cat")
	attach.Spec.Containers[0].Stdin = true
	c.create(t, attach)
	for _, name := range []string{"counter", "echo", "attached"} {
		c.waitPod(t, name, 30*time.Second, running)
	}

	t.Run("logs", func(t *testing.T) {
		framework.Eventually(t, 10*time.Second, func() (bool, error) {
			out, _, err := c.kubectlEnv(t, nil, nil, "logs", "counter")
			return settled(err == nil && strings.Contains(out, "line 3\n"), fmt.Errorf("logs so far %q: %v", out, err))
		})
		out, _, err := c.kubectlEnv(t, nil, nil, "logs", "counter", "--tail=2", "-c", "c")
		if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || len(lines) != 2 || !strings.HasPrefix(lines[0], "line ") {
			t.Errorf("logs --tail=2: %q %v, want two lines", out, err)
		}
		out, _, err = c.kubectlEnv(t, nil, nil, "logs", "counter", "--tail=1", "--timestamps")
		if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z line \d+\n$`).MatchString(out) || err != nil {
			t.Errorf("logs --timestamps: %q %v", out, err)
		}
		out, _, err = c.kubectlEnv(t, nil, nil, "logs", "counter", "--since=1h")
		if err != nil || !strings.Contains(out, "line 0\n") {
			t.Errorf("logs --since=1h: %q %v, want the whole log", out, err)
		}
		out, _, err = c.kubectlEnv(t, nil, nil, "logs", "counter", "--since=1s")
		if err != nil || strings.Contains(out, "line 0\n") {
			t.Errorf("logs --since=1s: %q %v, want only the last second", out, err)
		}

		// -f: each new line arrives within a second of being written.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		cmd := c.host.Command(ctx, c.kubectlBin, "--kubeconfig", c.Kubeconfig, "logs", "-f", "counter", "--tail=1")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		sc := bufio.NewScanner(stdout)
		var gaps []time.Duration
		last := time.Now()
		for i := 0; i < 6 && sc.Scan(); i++ {
			gaps = append(gaps, time.Since(last))
			last = time.Now()
		}
		cancel()
		if len(gaps) < 6 {
			t.Fatalf("logs -f delivered %d lines", len(gaps))
		}
		for _, g := range gaps[2:] {
			if g > time.Second {
				t.Errorf("logs -f: %s between lines written every 0.3s, want under 1s (gaps %v)", g, gaps)
			}
		}

		// --previous: the log of the instance before the current one.
		p := c.waitPod(t, "crasher", 30*time.Second, func(p *corev1.Pod) (bool, error) {
			if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount >= 1 {
				return true, nil
			}
			return false, errors.New("not restarted yet")
		})
		prev, _, err := c.kubectlEnv(t, nil, nil, "logs", "crasher", "--previous")
		if err != nil || !strings.HasPrefix(prev, "run at ") {
			t.Fatalf("logs --previous: %q %v", prev, err)
		}
		cur, _, _ := c.kubectlEnv(t, nil, nil, "logs", "crasher")
		if cur == prev {
			t.Errorf("logs and logs --previous both %q after %d restarts, want different runs", cur, p.Status.ContainerStatuses[0].RestartCount)
		}
	})

	for _, mode := range []struct {
		name string
		env  []string
	}{{"websocket", nil}, {"spdy", spdyOnly}} {
		t.Run("exec/"+mode.name, func(t *testing.T) {
			out, _, err := c.kubectlEnv(t, mode.env, nil, "exec", "counter", "--", "echo", "hi")
			if err != nil || out != "hi\n" {
				t.Errorf("exec echo hi: %q %v", out, err)
			}
			out, errOut, err := c.kubectlEnv(t, mode.env, nil, "exec", "counter", "--", "sh", "-c", "echo to-err >&2")
			if err != nil || out != "" || !strings.Contains(errOut, "to-err") {
				t.Errorf("exec stderr: out %q err %q %v", out, errOut, err)
			}
			out, _, err = c.kubectlEnv(t, mode.env, strings.NewReader("from stdin\n"), "exec", "-i", "counter", "--", "cat")
			if err != nil || out != "from stdin\n" {
				t.Errorf("exec -i cat: %q %v", out, err)
			}
			_, errOut, err = c.kubectlEnv(t, mode.env, nil, "exec", "counter", "--", "sh", "-c", "exit 3")
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Errorf("exec exit 3: kubectl %v (stderr %q), want exit status 3", err, errOut)
			}
		})
	}

	t.Run("exec -it under a pty with a resize", func(t *testing.T) {
		ptm, pts, err := openPTY(24, 80)
		if err != nil {
			t.Skipf("skipping: no pty: %v", err)
		}
		defer ptm.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := c.host.Command(ctx, c.kubectlBin, "--kubeconfig", c.Kubeconfig, "exec", "-it", "counter", "--", "sh")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pts.Close()
		defer cmd.Wait()
		var (
			mu     sync.Mutex
			screen bytes.Buffer
		)
		shown := func() []byte {
			mu.Lock()
			defer mu.Unlock()
			return bytes.Clone(screen.Bytes())
		}
		read := make(chan struct{}, 1)
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := ptm.Read(buf)
				if n > 0 {
					mu.Lock()
					screen.Write(buf[:n])
					mu.Unlock()
					select {
					case read <- struct{}{}:
					default:
					}
				}
				if err != nil {
					return
				}
			}
		}()
		expect := func(what *regexp.Regexp) {
			t.Helper()
			deadline := time.After(10 * time.Second)
			for !what.Match(shown()) {
				select {
				case <-read:
				case <-deadline:
					t.Fatalf("the terminal never showed %s; it shows %q", what, shown())
				}
			}
		}
		// Type only once the shell prompts (before that, kubectl may not
		// have put the terminal in raw mode yet). The shell in the
		// container has a tty of the client's size.
		expect(regexp.MustCompile(`# `))
		fmt.Fprint(ptm, "tty; stty size\r")
		expect(regexp.MustCompile(`/dev/pts/\d+\s+24 80`))
		// The client's window changes: kubectl sends the new size.
		if err := setWinsize(ptm, 40, 120); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		fmt.Fprint(ptm, "stty size\r")
		expect(regexp.MustCompile(`40 120`))
		fmt.Fprint(ptm, "exit 7\r")
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Errorf("kubectl exec -it ... exit 7: %v, want exit status 7", err)
		}
	})

	t.Run("attach", func(t *testing.T) {
		// Output of the attached process reaches kubectl: attach to the
		// counter and read lines until the timeout ends it.
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		cmd := c.host.Command(ctx, c.kubectlBin, "--kubeconfig", c.Kubeconfig, "attach", "counter")
		out, _ := cmd.Output()
		if !regexp.MustCompile(`line \d+\n`).Match(out) {
			t.Errorf("attach counter printed %q, want its lines", out)
		}
		// Stdin reaches the process: cat echoes it back.
		ctx2, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel2()
		cmd = c.host.Command(ctx2, c.kubectlBin, "--kubeconfig", c.Kubeconfig, "attach", "-i", "attached")
		in, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer cancel2()
		got := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "ping") {
					got <- sc.Text()
					return
				}
			}
			got <- ""
		}()
		// The session may take a moment to open: write until echoed.
		for i := 0; i < 20; i++ {
			fmt.Fprintln(in, "ping")
			select {
			case line := <-got:
				if line == "" {
					t.Fatal("attach -i ended without echoing ping")
				}
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
		t.Error("attach -i: ping never came back")
	})

	t.Run("cp", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "in.bin")
		data := make([]byte, 1<<20)
		rand.Read(data)
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.kubectlEnv(t, nil, nil, "cp", src, "counter:/tmp/in.bin"); err != nil {
			t.Fatalf("kubectl cp into the pod: %v", err)
		}
		dst := filepath.Join(dir, "out.bin")
		if _, _, err := c.kubectlEnv(t, nil, nil, "cp", "counter:/tmp/in.bin", dst); err != nil {
			t.Fatalf("kubectl cp out of the pod: %v", err)
		}
		back, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(back, data) {
			t.Errorf("cp round trip: %d bytes back (err %v), want the same 1 MiB", len(back), err)
		}
	})

	for _, mode := range []struct {
		name string
		env  []string
	}{{"websocket", nil}, {"spdy", spdyOnly}} {
		t.Run("port-forward/"+mode.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			cmd := c.host.Command(ctx, c.kubectlBin, "--kubeconfig", c.Kubeconfig, "port-forward", "pod/echo", ":8080")
			cmd.Env = append(os.Environ(), mode.env...)
			stdout, _ := cmd.StdoutPipe()
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			defer cancel()
			sc := bufio.NewScanner(stdout)
			var local string
			for sc.Scan() {
				if m := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 8080`).FindStringSubmatch(sc.Text()); m != nil {
					local = "127.0.0.1:" + m[1]
					break
				}
			}
			if local == "" {
				t.Fatalf("kubectl port-forward printed no local port; stderr %q", stderr.String())
			}
			go io.Copy(io.Discard, stdout)
			// A connection to a closed port of the pod fails on its own...
			const size = 100 << 20
			start := time.Now()
			sum, n, err := echoThrough(ctx, c, local, size)
			took := time.Since(start)
			if err != nil || n != size {
				t.Fatalf("100 MiB through port-forward: %d bytes back, %v\nkubectl stderr: %s", n, err, stderr.String())
			}
			if !sum {
				t.Fatal("100 MiB through port-forward: the bytes came back changed")
			}
			t.Logf("port-forward (%s): 100 MiB each way in %s (%.0f MiB/s)", mode.name, took.Round(time.Millisecond), float64(size>>20)/took.Seconds())
			// ...and a second connection on the same session still works.
			if _, n, err := echoThrough(ctx, c, local, 1<<10); err != nil || n != 1<<10 {
				t.Errorf("second connection on the same port-forward: %d bytes, %v", n, err)
			}
		})
	}

	t.Run("kubelet API", func(t *testing.T) {
		kubelet := "https://" + net.JoinHostPort(n1.host.IP.String(), "10250")
		roots := x509.NewCertPool()
		roots.AddCert(c.CA)
		code, _, err := httpsGet(t.Context(), c.host, kubelet+"/pods", roots, nil)
		if err != nil || code != http.StatusUnauthorized {
			t.Errorf("anonymous GET /pods = %d %v, want 401", code, err)
		}
		// A client certificate from another CA fails the handshake.
		other, err := pki.NewCA("impostor-client-ca", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := other.NewKeyAndCert(pki.CertRequest{CommonName: "kube-apiserver-kubelet-client", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		pair, _ := tls.X509KeyPair(certPEM, keyPEM)
		if code, _, err := httpsGet(t.Context(), c.host, kubelet+"/pods", roots, func() (*tls.Certificate, error) { return &pair, nil }); err == nil {
			t.Errorf("GET /pods with a client certificate from another CA = %d, want a TLS failure", code)
		}

		// A service account with only get on nodes/proxy may read through
		// the proxy subresource but may not exec, neither by websocket GET
		// nor by SPDY POST.
		ctx := t.Context()
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "get-nodes-proxy"},
			Rules: []rbacv1.PolicyRule{{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"nodes/proxy", "nodes/pods"}}}}
		if _, err := c.client.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "get-nodes-proxy"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "get-nodes-proxy"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: "default"}}}
		if _, err := c.client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tr, err := c.client.CoreV1().ServiceAccounts("default").CreateToken(ctx, "reader", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The upgrade requests are sent by hand from inside the server's
		// host (client-go's executors would dial from the test's own
		// network namespace): authorization decides before any upgrade.
		execPath := kubelet + "/exec/default/counter/c?command=id&output=1"
		websocketGET := map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
			"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "v5.channel.k8s.io"}
		spdyPOST := map[string]string{"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v4.channel.k8s.io"}
		for name, req := range map[string]struct {
			method  string
			headers map[string]string
		}{"websocket GET": {http.MethodGet, websocketGET}, "SPDY POST": {http.MethodPost, spdyPOST}} {
			code, body, err := upgradeRequest(ctx, c.host, req.method, execPath, roots, tr.Status.Token, req.headers)
			if err != nil || code != http.StatusForbidden {
				t.Errorf("exec by %s with only get nodes/proxy = %d %q (err %v), want 403", name, code, body, err)
			}
		}
		// system:kubelet-api-admin may exec: the upgrade is accepted.
		if _, err := c.client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kubelet-admin"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		admin := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "sa-kubelet-api-admin"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kubelet-admin", Namespace: "default"}}}
		if _, err := c.client.RbacV1().ClusterRoleBindings().Create(ctx, admin, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		adminToken, err := c.client.CoreV1().ServiceAccounts("default").CreateToken(ctx, "kubelet-admin", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, 10*time.Second, func() (bool, error) {
			code, body, err := upgradeRequest(ctx, c.host, http.MethodPost, execPath, roots, adminToken.Status.Token, spdyPOST)
			return settled(err == nil && code == http.StatusSwitchingProtocols, fmt.Errorf("exec by system:kubelet-api-admin = %d %q (err %v), want 101", code, body, err))
		})
		// The same token may read /pods (get nodes/pods).
		code, body, err := bearerGet(ctx, c.host, kubelet+"/pods", roots, tr.Status.Token)
		if err != nil || code != http.StatusOK || !strings.Contains(string(body), `"counter"`) {
			t.Errorf("GET /pods with get nodes/pods = %d %v %.100q, want 200 listing counter", code, err, body)
		}
	})

	t.Run("impostor at the node's address", func(t *testing.T) {
		// node-2's agent goes away; an impostor takes its address and port.
		if err := n2.proc.stop(); err != nil {
			t.Logf("agent stop: %v", err)
		}
		other, err := pki.NewCA("impostor-ca", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := other.NewKeyAndCert(pki.CertRequest{CommonName: "system:node:node-2", IPAddresses: []net.IP{n2.host.IP},
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		foreign, _ := tls.X509KeyPair(certPEM, keyPEM)
		// A valid cluster certificate, but node-1's.
		n1Cert, err := os.ReadFile(filepath.Join(n1.dataDir, "pki", "kubelet-server-current.pem"))
		if err != nil {
			t.Fatalf("node-1's serving certificate: %v", err)
		}
		stolen, err := tls.X509KeyPair(n1Cert, n1Cert)
		if err != nil {
			t.Fatalf("node-1's serving certificate: %v", err)
		}
		for name, cert := range map[string]tls.Certificate{"certificate from another CA": foreign, "cluster certificate of node-1": stolen} {
			t.Run(name, func(t *testing.T) {
				ln, err := n2.host.Listen("tcp", net.JoinHostPort(n2.host.IP.String(), "10250"))
				if err != nil {
					t.Fatal(err)
				}
				var requests, clientCerts atomic.Int32
				srv := &http.Server{
					Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }),
					TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert,
						VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
							if len(raw) > 0 {
								clientCerts.Add(1)
							}
							return nil
						}},
					ErrorLog: nil,
				}
				go srv.ServeTLS(ln, "", "")
				defer srv.Close()
				_, errOut, err := c.kubectlEnv(t, nil, nil, "logs", "echo")
				if err == nil || !strings.Contains(errOut, "node-2") || !strings.Contains(strings.ToLower(errOut), "certificate") {
					t.Errorf("kubectl logs through the impostor: err %v, stderr %q; want a 502 naming node-2's kubelet certificate", err, errOut)
				}
				_, errOut, err = c.kubectlEnv(t, nil, nil, "exec", "echo", "--", "true")
				if err == nil || !strings.Contains(errOut, "node-2") {
					t.Errorf("kubectl exec through the impostor: err %v, stderr %q; want a failure naming node-2", err, errOut)
				}
				if n := requests.Load(); n != 0 {
					t.Errorf("the impostor received %d requests", n)
				}
				if n := clientCerts.Load(); n != 0 {
					t.Errorf("the impostor received the API server's client certificate %d times", n)
				}
			})
		}
	})
}

// echoThrough sends size random bytes through an echo server at addr (in the
// server's host) and reads them back, reporting whether they came back
// unchanged.
func echoThrough(ctx context.Context, c *podCluster, addr string, size int) (bool, int, error) {
	conn, err := c.host.Dial(ctx, "tcp", addr)
	if err != nil {
		return false, 0, err
	}
	defer conn.Close()
	want := sha256.New()
	errc := make(chan error, 1)
	go func() {
		src := io.TeeReader(io.LimitReader(rand.Reader, int64(size)), want)
		_, err := io.Copy(conn, src)
		errc <- err
	}()
	got := sha256.New()
	n, err := io.CopyN(got, conn, int64(size))
	if werr := <-errc; err == nil {
		err = werr
	}
	return bytes.Equal(got.Sum(nil), want.Sum(nil)), int(n), err
}

// bearerGet makes one GET from inside h with a bearer token.
func bearerGet(ctx context.Context, h *framework.Host, url string, roots *x509.CertPool, token string) (int, []byte, error) {
	tr := &http.Transport{DialContext: h.Dial, TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// upgradeRequest sends one request with upgrade headers from inside h and
// returns the status code (101 when the kubelet accepted the upgrade) and
// the start of the body.
func upgradeRequest(ctx context.Context, h *framework.Host, method, rawURL string, roots *x509.CertPool, token string, headers map[string]string) (int, []byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := h.Dial(ctx, "tcp", u.Host)
	if err != nil {
		return 0, nil, err
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{RootCAs: roots, ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}})
	if err := conn.HandshakeContext(ctx); err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if err := req.Write(conn); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, 512)
	n, _ := io.ReadAtLeast(resp.Body, body, 1)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		n = 0
	}
	return resp.StatusCode, body[:n], nil
}

// openPTY opens a pseudo-terminal pair with the given window size.
func openPTY(rows, cols uint16) (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, err
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	if err := setWinsize(master, rows, cols); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// setWinsize sets a terminal's window size; the session's foreground
// process (kubectl) gets SIGWINCH.
func setWinsize(f *os.File, rows, cols uint16) error {
	return unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}
