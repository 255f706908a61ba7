package e2e

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tether/test/framework"
)

// TestTunnel runs node-2 behind a firewall that drops every connection
// from the server's host (as NAT would), with `tether agent --tunnel`:
// the API server's connections to node-2 (path P10) ride the tunnel the
// agent keeps open, for logs, exec, the kubelet and pod proxies, and the
// node's allow-list refuses anything else.
func TestTunnel(t *testing.T) {
	requirePodRuntime(t)
	kubectlPath(t)
	c := startPodCluster(t)
	n1, n2 := c.nodes[0], c.nodes[1]
	top := t

	// node-2 accepts no connection from the server's host; its own
	// connections out (to the API server) still work.
	if err := n2.proc.stop(); err != nil {
		t.Logf("agent stop: %v", err)
	}
	for _, cmd := range [][]string{
		{"add", "table", "inet", "tunneltest"},
		{"add", "chain", "inet", "tunneltest", "input", "{ type filter hook input priority 0; }"},
		{"add", "rule", "inet", "tunneltest", "input", "ip", "saddr", c.host.IP.String(), "ct", "state", "new", "drop"},
	} {
		if _, errOut, err := runIn(t, n2.host, 10*time.Second, true, "nft", cmd...); err != nil {
			t.Fatalf("firewall node-2: nft %v: %v %s", cmd, err, errOut)
		}
	}
	kubeletAddr := net.JoinHostPort(n2.host.IP.String(), "10250")
	dctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	if conn, err := c.host.Dial(dctx, "tcp", kubeletAddr); err == nil {
		conn.Close()
		cancel()
		t.Fatalf("the server's host still connects to node-2's kubelet at %s", kubeletAddr)
	}
	cancel()
	n2.args = append(n2.args, "--tunnel")
	n2.proc = startProc(top, n2.host, "agent node-2 (tunnel)", n2.args...)
	if _, _, err := n2.proc.waitLine("tunnel to the API server up", 30*time.Second); err != nil {
		t.Fatalf("agent with --tunnel: %v", err)
	}
	// Pods are deleted while the restarted agent still runs.
	top.Cleanup(func() { c.cleanup(top) })

	raw := func(path string) string {
		t.Helper()
		return strings.TrimSpace(c.mustKubectl(t, "get", "--raw", path))
	}
	t.Run("the kubelet through the tunnel", func(t *testing.T) {
		if got := raw("/api/v1/nodes/node-2/proxy/healthz"); got != "ok" {
			t.Errorf("node-2's kubelet /healthz = %q, want ok", got)
		}
		// node-1 keeps no tunnel and is reached directly.
		if got := raw("/api/v1/nodes/" + n1.name + "/proxy/healthz"); got != "ok" {
			t.Errorf("node-1's kubelet /healthz = %q, want ok", got)
		}
	})

	web := c.pod("tweb", n2.name, "mkdir -p /www && echo tunnelled > /www/index.html && echo started && exec httpd -f -p 8080 -h /www")
	web.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	c.create(t, web)
	c.waitPod(t, "tweb", 60*time.Second, func(p *corev1.Pod) (bool, error) {
		return settled(p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", fmt.Errorf("phase %s", p.Status.Phase))
	})

	t.Run("logs, exec and the pod proxy through the tunnel", func(t *testing.T) {
		framework.Eventually(t, 10*time.Second, func() (bool, error) {
			out, errOut, err := c.kubectl(t, false, "logs", "tweb")
			return settled(err == nil && strings.Contains(out, "started"), fmt.Errorf("logs: %q %q %v", out, errOut, err))
		})
		out, errOut, err := c.kubectlEnv(t, nil, nil, "exec", "tweb", "--", "sh", "-c", "echo $((6*7))")
		if err != nil || strings.TrimSpace(out) != "42" {
			t.Errorf("exec through the tunnel: %q %q %v, want 42", out, errOut, err)
		}
		// The server's host has no route to node-2's pods: only the
		// tunnel gets there.
		if got := raw("/api/v1/namespaces/default/pods/tweb/proxy/"); got != "tunnelled" {
			t.Errorf("pods/tweb/proxy = %q, want tunnelled", got)
		}
	})

	t.Run("the tunnel comes back after the API server restarts", func(t *testing.T) {
		// SIGTERM, with both agents' watches and node-2's tunnel open: the
		// server ends them and exits at once (stop fails the test after
		// 10 s).
		stopStart := time.Now()
		if err := c.proc.stop(); err != nil {
			t.Logf("server stop: %v", err)
		}
		t.Logf("the server stopped %s after SIGTERM", time.Since(stopStart).Round(time.Millisecond))
		start := time.Now()
		c.proc = startProc(top, c.host, "server (restarted)", "server", "--disable-agent",
			"--bind-address", c.host.IP.String(), "--advertise-address", c.host.IP.String(), "--data-dir", c.dataDir)
		if _, _, err := c.proc.waitLine(readyPrefix, readyTimeout); err != nil {
			t.Fatalf("restarted server: %v", err)
		}
		// At the end, the pods are deleted, then the agents stop, then
		// this server (cleanups run last first).
		top.Cleanup(func() {
			for _, n := range c.nodes {
				n.proc.stop()
			}
		})
		top.Cleanup(func() { c.cleanup(top) })
		// Until the agent is back, the server would connect directly, and
		// node-2 drops that: an answer means the tunnel is up again.
		framework.Eventually(t, 60*time.Second, func() (bool, error) {
			out, errOut, err := c.kubectl(t, false, "get", "--raw", "/api/v1/nodes/node-2/proxy/healthz", "--request-timeout=3s")
			return settled(err == nil && strings.TrimSpace(out) == "ok", fmt.Errorf("healthz: %q %q %v", out, errOut, err))
		})
		t.Logf("node-2 reachable through its tunnel %s after the server was restarted", time.Since(start).Round(time.Millisecond))
	})

	t.Run("tether paths checks P10 on node-2", func(t *testing.T) {
		node, err := c.client.CoreV1().Nodes().Get(t.Context(), n2.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := node.Annotations["tether.dev/egress"]; got != "tunnel" {
			t.Errorf("node-2's annotation tether.dev/egress = %q, want tunnel", got)
		}
		out, errOut, _ := runIn(t, c.host, 3*time.Minute, false, tetherBin, "paths", "--kubeconfig", c.Kubeconfig, "--image", c.image)
		p10 := regexp.MustCompile(`(?m)^P10\s.*$`).FindString(out)
		node2 := regexp.MustCompile(`(?m)^\s+node-2\s.*$`).FindAllString(out, -1)
		if !strings.Contains(p10, "PASS") || !slices.ContainsFunc(node2, func(l string) bool { return strings.Contains(l, "through its tunnel") && strings.Contains(l, "PASS") }) {
			t.Errorf("tether paths: P10 row %q and node-2 rows %q; want PASS through its tunnel\n%s%s", p10, node2, out, errOut)
		}
	})

	t.Run("a tunnel that is down is reported, not waited for", func(t *testing.T) {
		if err := n2.proc.stop(); err != nil {
			t.Logf("agent stop: %v", err)
		}
		start := time.Now()
		_, errOut, err := c.kubectl(t, true, "get", "--raw", "/api/v1/nodes/node-2/proxy/healthz")
		if err == nil || !strings.Contains(errOut, "its tunnel is not connected") {
			t.Errorf("node-2's kubelet with its agent stopped: %v %q; want the tunnel named as down", err, errOut)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("the answer took %s; want it at once, not after a connection timeout", took)
		}
		_, errOut, err = c.kubectl(t, true, "get", "--raw", "/api/v1/namespaces/default/pods/tweb/proxy/")
		if err == nil || !strings.Contains(errOut, "its tunnel is not connected") {
			t.Errorf("pods/tweb/proxy with node-2's agent stopped: %v %q; want the tunnel named as down", err, errOut)
		}
		n2.proc = startProc(top, n2.host, "agent node-2 (tunnel, again)", n2.args...)
		if _, _, err := n2.proc.waitLine("tunnel to the API server up", 30*time.Second); err != nil {
			t.Fatalf("agent with --tunnel: %v", err)
		}
		top.Cleanup(func() { c.cleanup(top) })
	})

	t.Run("the node's allow-list refuses other destinations", func(t *testing.T) {
		// node-2's address on another port is neither its kubelet nor a pod.
		_, errOut, err := c.kubectl(t, true, "get", "--raw", "/api/v1/nodes/node-2:22/proxy/")
		if err == nil || !strings.Contains(errOut, "does not let the API server reach") {
			t.Errorf("node-2:22 through the tunnel: %v %q, want the allow-list's refusal", err, errOut)
		}
	})
}
