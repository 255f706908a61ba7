package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"tether/test/framework"
)

// staticKubectl is the kubectl binary the machine carries (static, so a
// busybox pod can run it from a hostPath mount).
func staticKubectl(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("skipping: kubectl is not installed")
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// kubectlPod runs the machine's kubectl inside a pod on node, in-cluster:
// through the kubernetes Service's VIP, with the pod's token and CA.
func (c *podCluster) kubectlPod(name, node, kubectl, script string) *corev1.Pod {
	p := c.pod(name, node, script)
	p.Spec.RestartPolicy = corev1.RestartPolicyNever
	file := corev1.HostPathFile
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "kubectl", VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: kubectl, Type: &file}}})
	p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "kubectl", MountPath: "/kubectl", ReadOnly: true})
	return p
}

// finished waits for a pod to end and returns its log.
func (c *podCluster) finished(t *testing.T, name string, timeout time.Duration) (*corev1.Pod, string) {
	t.Helper()
	p := c.waitPod(t, name, timeout, func(p *corev1.Pod) (bool, error) {
		return settled(p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, fmt.Errorf("phase %s", p.Status.Phase))
	})
	log, _ := c.logFile(p, "c", 0)
	return p, strings.Join(logContent(log), "\n")
}

func TestServices(t *testing.T) {
	requirePodRuntime(t)
	kubectlPath(t)
	kubectl := staticKubectl(t)
	c := startPodCluster(t)
	n1, n2 := c.nodes[0], c.nodes[1]
	ctx := t.Context()
	top := t // the restarted agent outlives its subtest

	t.Run("in-cluster kubectl reaches the apiserver through the VIP", func(t *testing.T) {
		for _, n := range c.nodes {
			name := "whoami-" + n.name
			c.create(t, c.kubectlPod(name, n.name, kubectl, "/kubectl auth whoami -o jsonpath='{.status.userInfo.username}'; echo; /kubectl get pods"))
			p, log := c.finished(t, name, 60*time.Second)
			if !strings.HasPrefix(log, "system:serviceaccount:default:default\n") {
				t.Fatalf("%s on %s: log %q, want system:serviceaccount:default:default first", name, n.name, log)
			}
			if p.Status.Phase != corev1.PodFailed || !strings.Contains(log, "forbidden") {
				t.Errorf("%s: get pods without a RoleBinding: phase %s, log %q; want Failed with forbidden", name, p.Status.Phase, log)
			}
		}
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "default-view", Namespace: "default"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "default", Namespace: "default"}}}
		if _, err := c.client.RbacV1().RoleBindings("default").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.create(t, c.kubectlPod("lister", n2.name, kubectl, "/kubectl get pods -o name"))
		p, log := c.finished(t, "lister", 60*time.Second)
		if p.Status.Phase != corev1.PodSucceeded || !strings.Contains(log, "pod/whoami-node-1") {
			t.Errorf("get pods with view: phase %s, log %q; want the pods listed", p.Status.Phase, log)
		}
	})

	// Two backends on different nodes that answer with their own name and
	// are ready while /tmp/ready exists.
	for i, n := range []*podNode{n1, n2} {
		name := fmt.Sprintf("web-%d", i+1)
		p := c.pod(name, n.name, fmt.Sprintf("mkdir -p /www && echo %s > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www", name))
		p.Labels = map[string]string{"app": "web"}
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/tmp/ready"}}},
			PeriodSeconds: 1, FailureThreshold: 1,
		}
		c.create(t, p)
	}
	svc, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vip := net.JoinHostPort(svc.Spec.ClusterIP, "80")
	nodePort := strconv.Itoa(int(svc.Spec.Ports[0].NodePort))
	t.Logf("service web: %s, node port %s", vip, nodePort)
	readyBackends := func() (map[string]bool, error) {
		slices, err := c.client.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return nil, err
		}
		ready := map[string]bool{}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready && e.TargetRef != nil {
					ready[e.TargetRef.Name] = true
				}
			}
		}
		return ready, nil
	}
	framework.Eventually(t, 60*time.Second, func() (bool, error) {
		r, err := readyBackends()
		return settled(err == nil && r["web-1"] && r["web-2"], fmt.Errorf("ready backends %v (%v)", r, err))
	})

	t.Run("ClusterIP reaches both backends from a pod", func(t *testing.T) {
		script := fmt.Sprintf("for i in $(seq 1 100); do timeout 3 wget -qO- http://%s/ || echo FAIL; done", vip)
		cl := c.pod("client", n1.name, script)
		cl.Spec.RestartPolicy = corev1.RestartPolicyNever
		c.create(t, cl)
		_, log := c.finished(t, "client", 90*time.Second)
		counts := map[string]int{}
		for _, l := range strings.Split(log, "\n") {
			counts[l]++
		}
		if counts["web-1"] == 0 || counts["web-2"] == 0 || counts["FAIL"] > 0 || counts["web-1"]+counts["web-2"] != 100 {
			t.Errorf("100 requests to %s: %v; want both backends and no failures", vip, counts)
		}
		t.Logf("100 requests through the VIP: %v", counts)
	})

	t.Run("the API server proxies to pods, the Service and kubelets (P8)", func(t *testing.T) {
		// The server's host runs no agent, so nothing gave it routes to
		// the nodes' pod networks: add the host-gw routes an agent adds.
		for _, n := range c.nodes {
			node, err := c.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, errOut, err := runIn(t, c.host, 10*time.Second, true, "ip", "route", "replace", node.Spec.PodCIDR, "via", n.host.IP.String()); err != nil {
				t.Fatalf("route to %s's pods: %v %s", n.name, err, errOut)
			}
		}
		raw := func(path string) string {
			t.Helper()
			return strings.TrimSpace(c.mustKubectl(t, "get", "--raw", path))
		}
		for path, want := range map[string]string{
			"/api/v1/namespaces/default/pods/web-1/proxy/":                "web-1", // the first container port
			"/api/v1/namespaces/default/pods/web-1:http/proxy/index.html": "web-1", // a port name
			"/api/v1/namespaces/default/pods/http:web-2:8080/proxy/?x=1":  "web-2",
			"/api/v1/namespaces/default/services/web/proxy/":              "web-",
			"/api/v1/namespaces/default/services/http:web:80/proxy/":      "web-",
			"/api/v1/nodes/node-1/proxy/healthz":                          "ok", // the kubelet
			"/api/v1/nodes/https:node-2:10250/proxy/healthz":              "ok",
		} {
			if got := raw(path); !strings.HasPrefix(got, want) {
				t.Errorf("GET %s = %q, want %s…", path, got, want)
			}
		}
		seen := map[string]int{}
		for range 20 {
			seen[raw("/api/v1/namespaces/default/services/web/proxy/index.html")]++
		}
		if seen["web-1"] == 0 || seen["web-2"] == 0 || seen["web-1"]+seen["web-2"] != 20 {
			t.Errorf("20 requests through services/web/proxy: %v, want both backends", seen)
		}
		if got := raw("/api/v1/nodes/node-2/proxy/pods"); !strings.Contains(got, `"name":"web-2"`) {
			t.Errorf("node-2's kubelet /pods through nodes/proxy lacks web-2: %s", clip(got))
		}
		// https: is verified: web-1 speaks plain HTTP, so there is no
		// certificate to trust, and the proxy says so instead of
		// carrying on.
		for path, want := range map[string]string{
			"/api/v1/namespaces/default/pods/https:web-1:8080/proxy/": "pod default/web-1",
			"/api/v1/namespaces/default/pods/web-1:nope/proxy/":       "no container port named",
			"/api/v1/namespaces/default/services/web:81/proxy/":       "has no port",
			"/api/v1/namespaces/default/pods/ftp:web-1:8080/proxy/":   "invalid scheme",
		} {
			out, errOut, err := c.kubectl(t, true, "get", "--raw", path)
			if err == nil || !strings.Contains(errOut, want) {
				t.Errorf("GET %s: %v %q %q; want an error naming %q", path, err, out, errOut, want)
			}
		}

		// kubectl proxy, as operators use it.
		pctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cmd := c.host.Command(pctx, c.kubectlBin, "--kubeconfig", c.Kubeconfig, "proxy", "--port=0")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer cancel()
		line, err := bufioLine(stdout, 10*time.Second)
		if err != nil {
			t.Fatalf("kubectl proxy: %v", err)
		}
		_, port, ok := strings.Cut(strings.TrimSpace(line), "127.0.0.1:")
		if !ok {
			t.Fatalf("kubectl proxy printed %q, want its address", line)
		}
		tr := &http.Transport{DialContext: c.host.Dial, DisableKeepAlives: true}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://127.0.0.1:" + port + "/api/v1/namespaces/default/services/web:80/proxy/")
		if err != nil {
			t.Fatalf("through kubectl proxy: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "web-") {
			t.Errorf("through kubectl proxy: %s %q, want 200 from a backend", resp.Status, body)
		}
	})

	get := func(ctx context.Context, h *framework.Host, addr string) (string, error) {
		tr := &http.Transport{DialContext: h.Dial, DisableKeepAlives: true}
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b)), err
	}

	t.Run("NodePort reaches the backends from the node's address", func(t *testing.T) {
		seen := map[string]int{}
		for i := 0; i < 40; i++ {
			body, err := get(ctx, c.host, net.JoinHostPort(n1.host.IP.String(), nodePort))
			if err != nil {
				t.Fatalf("GET node-1:%s from the server's host: %v", nodePort, err)
			}
			seen[body]++
		}
		if seen["web-1"] == 0 || seen["web-2"] == 0 {
			t.Errorf("40 requests to node-1's node port: %v, want both backends", seen)
		}
	})

	t.Run("a backend that turns not ready leaves within 2s", func(t *testing.T) {
		start := time.Now()
		if _, _, err := c.kubectlEnv(t, nil, nil, "exec", "web-2", "--", "rm", "/tmp/ready"); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, 10*time.Second, func() (bool, error) {
			r, err := readyBackends()
			return settled(err == nil && r["web-1"] && !r["web-2"], fmt.Errorf("ready backends %v (%v)", r, err))
		})
		// From node-1 itself (the output hook), only web-1 answers once
		// its service proxy has applied the change (it follows the
		// EndpointSlice by a few milliseconds).
		var took time.Duration
		framework.Eventually(t, 10*time.Second, func() (bool, error) {
			for i := 0; i < 20; i++ {
				body, err := get(ctx, n1.host, vip)
				if err != nil || body != "web-1" {
					return false, fmt.Errorf("request %d to %s after web-2 turned not ready: %q %v", i, vip, body, err)
				}
			}
			took = time.Since(start)
			return true, nil
		})
		t.Logf("web-2 out of the VIP's rotation %s after its readiness file was removed (probe period 1s)", took.Round(time.Millisecond))
		if took > 3*time.Second {
			t.Errorf("removal took %s, want within 2s of readiness changing (plus the 1s probe period)", took)
		}
	})

	t.Run("an agent restart keeps the VIP answering", func(t *testing.T) {
		stop := make(chan struct{})
		done := make(chan time.Duration)
		go func() {
			var worst, gap time.Duration
			var failedAt time.Time
			for {
				select {
				case <-stop:
					done <- max(worst, gap)
					return
				default:
				}
				_, err := get(ctx, n1.host, vip)
				switch {
				case err != nil && failedAt.IsZero():
					failedAt = time.Now()
				case err != nil:
					gap = time.Since(failedAt)
				case !failedAt.IsZero():
					worst, gap, failedAt = max(worst, time.Since(failedAt)), 0, time.Time{}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		if err := n1.proc.stop(); err != nil {
			t.Logf("agent stop: %v", err)
		}
		n1.proc = startProc(top, n1.host, "agent node-1 (restarted)", n1.args...)
		if _, _, err := n1.proc.waitLine("proxy: services programmed", 30*time.Second); err != nil {
			t.Fatalf("restarted agent: %v", err)
		}
		time.Sleep(time.Second)
		close(stop)
		if worst := <-done; worst > time.Second {
			t.Errorf("connections to the VIP failed for %s during the agent restart, want at most 1s", worst)
		}
		// Delete the pods while this agent still runs (cleanups run last
		// first), so that it removes their containers.
		top.Cleanup(func() { c.cleanup(top) })
	})

	t.Run("deleting the Service removes its rules", func(t *testing.T) {
		if err := c.client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, 10*time.Second, func() (bool, error) {
			start := time.Now()
			_, err := get(ctx, n1.host, vip)
			var opErr *net.OpError
			refused := err != nil && errors.As(err, &opErr) && time.Since(start) < time.Second
			return settled(refused, fmt.Errorf("request to the deleted VIP: %v after %s, want refused at once", err, time.Since(start)))
		})
	})
}

// bufioLine reads the first line of r within timeout.
func bufioLine(r io.Reader, timeout time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		ch <- result{line, err}
	}()
	select {
	case res := <-ch:
		return res.line, res.err
	case <-time.After(timeout):
		return "", fmt.Errorf("no line within %s", timeout)
	}
}
