package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"tether/internal/busyboximage"
	"tether/test/framework"
)

// podCluster is a server and two nodes, each in its own network namespace,
// with a registry on the server's host that holds the busybox image.
type podCluster struct {
	*netCluster
	client   kubernetes.Interface
	image    string // the busybox image in the registry
	registry string // host:port of the registry
	nodes    []*podNode
}

type podNode struct {
	name    string
	host    *framework.Host
	dataDir string
	args    []string
	proc    *hostProc
	cidr    *net.IPNet
}

// requirePodRuntime skips unless the machine can run pods.
func requirePodRuntime(t *testing.T) {
	t.Helper()
	framework.RequireRoot(t)
	for _, bin := range []string{"runc", "busybox", "/usr/lib/cni/bridge"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s is not installed (hack/install-deps.sh installs it)", bin)
		}
	}
}

// startPodCluster starts the server, a registry holding busybox and two
// agents, and waits until both Nodes are Ready with pod CIDRs.
func startPodCluster(t *testing.T) *podCluster {
	t.Helper()
	network := framework.NewNetwork(t)
	srvHost := network.AddHost("srv")
	hosts := []*framework.Host{network.AddHost("n1"), network.AddHost("n2")}
	tmp := shortTemp(t)
	c := &podCluster{netCluster: startNetServer(t, srvHost, filepath.Join(tmp, "srv"))}

	// The registry listens inside the server's namespace, so the nodes
	// reach it over the test network (plain HTTP: --insecure-registry).
	ln, err := srvHost.Listen("tcp", net.JoinHostPort(srvHost.IP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c.registry = ln.Addr().String()
	c.image = c.registry + "/tether/busybox:1"
	img, err := busyboximage.Image()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(c.image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	push := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return srvHost.Dial(ctx, network, addr)
	}
	tr := &http.Transport{DialContext: push}
	if err := remote.Write(ref, img, remote.WithTransport(tr)); err != nil {
		t.Fatalf("push %s: %v", c.image, err)
	}

	// An admin client-go client that dials from inside the server's host.
	restCfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	restCfg.Dial = push
	restCfg.QPS, restCfg.Burst = 50, 100
	if c.client, err = kubernetes.NewForConfig(restCfg); err != nil {
		t.Fatal(err)
	}

	join := c.joinCommand(t)
	for i, h := range hosts {
		n := &podNode{name: fmt.Sprintf("node-%d", i+1), host: h, dataDir: filepath.Join(tmp, fmt.Sprintf("n%d", i+1))}
		n.args = agentArgs(join, n.dataDir, n.name, "--insecure-registry", c.registry, "--pod-log-dir", filepath.Join(tmp, "logs"))
		n.proc = startProc(t, h, "agent "+n.name, n.args...)
		c.nodes = append(c.nodes, n)
	}
	t.Cleanup(func() { c.cleanup(t) })
	framework.Eventually(t, 60*time.Second, func() (bool, error) {
		for _, n := range c.nodes {
			node, err := c.client.CoreV1().Nodes().Get(t.Context(), n.name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if condition(node, corev1.NodeReady) != corev1.ConditionTrue || node.Spec.PodCIDR == "" {
				return false, fmt.Errorf("node %s not Ready with a pod CIDR yet", n.name)
			}
			_, n.cidr, _ = net.ParseCIDR(node.Spec.PodCIDR)
			if _, _, err := n.proc.waitLine("pods: node "+n.name+" has pod CIDR", 0); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	return c
}

// cleanup deletes every pod so the agents stop and remove their containers,
// then removes whatever is left (the agents may be gone already).
func (c *podCluster) cleanup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pods, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	var netns []string
	if err == nil {
		for _, p := range pods.Items {
			netns = append(netns, "/var/run/netns/tether-"+string(p.UID))
		}
		for _, p := range pods.Items {
			_ = c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		}
		for ctx.Err() == nil {
			if l, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) == 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// The agents stop the containers of the deleted pods; whatever is
	// still there after that was leaked.
	for _, n := range c.nodes {
		root := filepath.Join(n.dataDir, "containers", "runc")
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			if out, _ := exec.Command("runc", "--root", root, "list", "-q").Output(); len(strings.TrimSpace(string(out))) == 0 {
				break
			}
		}
		removeLeftovers(t, n)
	}
	for _, path := range netns {
		if _, err := os.Stat(path); err == nil {
			t.Logf("cleanup: network namespace %s was left behind", path)
			_ = exec.Command("ip", "netns", "delete", filepath.Base(path)).Run()
		}
	}
}

// removeLeftovers kills and deletes any container still in a node's runc
// state and removes its pod network namespaces and cgroups.
func removeLeftovers(t *testing.T, n *podNode) {
	// Pod network namespaces this node's CNI cache knows (a pod deleted
	// while its agent was stopped keeps its namespace).
	if entries, err := os.ReadDir("/var/run/netns"); err == nil {
		var cached []string
		_ = filepath.WalkDir(filepath.Join(n.dataDir, "cni"), func(path string, _ os.DirEntry, err error) error {
			if err == nil {
				cached = append(cached, path)
			}
			return nil
		})
		for _, e := range entries {
			uid, ok := strings.CutPrefix(e.Name(), "tether-")
			if !ok {
				continue
			}
			for _, path := range cached {
				if strings.Contains(path, uid) {
					t.Logf("cleanup: network namespace %s of %s was left behind", e.Name(), n.name)
					_ = exec.Command("ip", "netns", "delete", e.Name()).Run()
					break
				}
			}
		}
	}
	root := filepath.Join(n.dataDir, "containers", "runc")
	out, _ := exec.Command("runc", "--root", root, "list", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		t.Logf("cleanup: container %s of %s was left running", id, n.name)
		_ = exec.Command("runc", "--root", root, "kill", id, "KILL").Run()
		time.Sleep(100 * time.Millisecond)
		_ = exec.Command("runc", "--root", root, "delete", "-f", id).Run()
	}
	for _, ctl := range []string{"memory", "cpu", "cpuacct", "pids", "freezer", "blkio", "devices", "cpuset", "systemd", "unified"} {
		dir := filepath.Join("/sys/fs/cgroup", ctl, "tether", n.name)
		_ = filepath.Walk(dir, func(string, os.FileInfo, error) error { return nil })
		removeCgroupTree(dir)
	}
}

// removeCgroupTree removes a cgroup directory and its children, deepest
// first (cgroup directories are removed with rmdir only).
func removeCgroupTree(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir)
}

// pod is a busybox pod running script on node.
func (c *podCluster) pod(name, node, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"kubernetes.io/hostname": node},
			Containers: []corev1.Container{{
				Name: "c", Image: c.image, Command: []string{"sh", "-c", script},
			}},
		},
	}
}

func (c *podCluster) create(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	created, err := c.client.CoreV1().Pods(p.Namespace).Create(t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", p.Name, err)
	}
	return created
}

// waitPod polls the pod until ok says it is done.
func (c *podCluster) waitPod(t *testing.T, name string, timeout time.Duration, ok func(*corev1.Pod) (bool, error)) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	framework.Eventually(t, timeout, func() (bool, error) {
		p, err := c.client.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = p
		return ok(p)
	})
	return last
}

// settled is (true, nil) when ok, else (false, err): framework.Eventually
// stops only on a nil error.
func settled(ok bool, err error) (bool, error) {
	if ok {
		return true, nil
	}
	return false, err
}

func running(p *corev1.Pod) (bool, error) {
	if p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil {
		return true, nil
	}
	return false, fmt.Errorf("phase %s, containers %+v", p.Status.Phase, p.Status.ContainerStatuses)
}

// logFile reads the CRI log of a pod's container instance.
func (c *podCluster) logFile(p *corev1.Pod, container string, restart int) (string, error) {
	path := filepath.Join(filepath.Dir(c.nodes[0].dataDir), "logs", fmt.Sprintf("%s_%s_%s", p.Namespace, p.Name, p.UID), container, fmt.Sprintf("%d.log", restart))
	b, err := os.ReadFile(path)
	return string(b), err
}

// logContent is the content of the log lines, without the CRI prefix.
func logContent(log string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimRight(log, "\n"), "\n") {
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			out = append(out, f[3])
		}
	}
	return out
}

func TestPods(t *testing.T) {
	requirePodRuntime(t)
	kubectlPath(t)
	c := startPodCluster(t)
	n1, n2 := c.nodes[0], c.nodes[1]
	top := t // the restarted agent outlives its subtest

	// node-2 gets the image as a tarball, as an air-gapped node would.
	tarball := filepath.Join(t.TempDir(), "busybox.tar")
	if err := busyboximage.WriteTarball(tarball); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := runIn(t, n2.host, time.Minute, true, tetherBin, "image", "import", "--data-dir", n2.dataDir, tarball); err != nil {
		t.Fatalf("tether image import: %v\n%s%s", err, out, errOut)
	}
	out, _, err := runIn(t, n2.host, time.Minute, true, tetherBin, "image", "ls", "--data-dir", n2.dataDir)
	if err != nil || !strings.Contains(out, "tether.local/busybox") {
		t.Fatalf("tether image ls after import: %v\n%s", err, out)
	}

	t.Run("running within 5s with a pod IP from the node's CIDR", func(t *testing.T) {
		start := time.Now()
		p := c.create(t, c.pod("hello", n1.name, "echo hello; sleep 3600"))
		p = c.waitPod(t, "hello", 30*time.Second, running)
		took := time.Since(start)
		t.Logf("hello Running %s after create (image pulled over HTTP from %s)", took.Round(time.Millisecond), c.registry)
		if took > 5*time.Second {
			t.Errorf("hello Running after %s, want within 5s", took)
		}
		if ip := net.ParseIP(p.Status.PodIP); ip == nil || !n1.cidr.Contains(ip) {
			t.Errorf("podIP %q not in %s's pod CIDR %s", p.Status.PodIP, n1.name, n1.cidr)
		}
		if p.Status.HostIP != n1.host.IP.String() {
			t.Errorf("hostIP %q, want %s", p.Status.HostIP, n1.host.IP)
		}
		framework.Eventually(t, 5*time.Second, func() (bool, error) {
			log, err := c.logFile(p, "c", 0)
			if err != nil {
				return false, err
			}
			if l := logContent(log); len(l) == 0 || l[0] != "hello" {
				return false, fmt.Errorf("log %q", log)
			}
			return true, nil
		})
	})

	t.Run("pod on node-1 reaches a pod on node-2", func(t *testing.T) {
		srv := c.pod("web", n2.name, "mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www")
		srv.Spec.Containers[0].Image = "tether.local/busybox:latest"
		srv.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
		c.create(t, srv)
		web := c.waitPod(t, "web", 30*time.Second, running)
		if ip := net.ParseIP(web.Status.PodIP); ip == nil || !n2.cidr.Contains(ip) {
			t.Fatalf("web podIP %q not in %s's pod CIDR %s", web.Status.PodIP, n2.name, n2.cidr)
		}
		cl := c.pod("client", n1.name, fmt.Sprintf("for i in $(seq 1 20); do timeout 3 wget -qO- http://%s:8080/ && exit 0; sleep 0.5; done; exit 1", web.Status.PodIP))
		cl.Spec.RestartPolicy = corev1.RestartPolicyNever
		c.create(t, cl)
		p := c.waitPod(t, "client", 30*time.Second, func(p *corev1.Pod) (bool, error) {
			return settled(p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, fmt.Errorf("phase %s", p.Status.Phase))
		})
		log, _ := c.logFile(p, "c", 0)
		if p.Status.Phase != corev1.PodSucceeded || !strings.Contains(log, "pong") {
			t.Fatalf("client phase %s, log %q; want Succeeded with pong", p.Status.Phase, log)
		}
	})

	t.Run("exit code 3 restarts with back-off", func(t *testing.T) {
		c.create(t, c.pod("crash", n1.name, "echo crashing; exit 3"))
		p := c.waitPod(t, "crash", 40*time.Second, func(p *corev1.Pod) (bool, error) {
			if len(p.Status.ContainerStatuses) == 0 {
				return false, errors.New("no container status")
			}
			cs := p.Status.ContainerStatuses[0]
			if cs.RestartCount >= 2 && cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" {
				return true, nil
			}
			return false, fmt.Errorf("restarts %d, state %+v", cs.RestartCount, cs.State)
		})
		cs := p.Status.ContainerStatuses[0]
		if lt := cs.LastTerminationState.Terminated; lt == nil || lt.ExitCode != 3 || lt.Reason != "Error" {
			t.Errorf("lastState %+v, want terminated with exit code 3, reason Error", cs.LastTerminationState)
		}
		if p.Status.Phase != corev1.PodRunning {
			t.Errorf("phase %s, want Running (restartPolicy Always)", p.Status.Phase)
		}
	})

	t.Run("over its memory limit is OOMKilled", func(t *testing.T) {
		p := c.pod("oom", n1.name, "head -c 200m /dev/zero | tail")
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
		c.create(t, p)
		p = c.waitPod(t, "oom", 30*time.Second, func(p *corev1.Pod) (bool, error) {
			if len(p.Status.ContainerStatuses) > 0 {
				if term := p.Status.ContainerStatuses[0].State.Terminated; term != nil {
					return true, nil
				}
			}
			return false, fmt.Errorf("phase %s", p.Status.Phase)
		})
		term := p.Status.ContainerStatuses[0].State.Terminated
		if term.Reason != "OOMKilled" || term.ExitCode != 137 {
			t.Errorf("terminated %+v, want reason OOMKilled, exit code 137", term)
		}
		if p.Status.Phase != corev1.PodFailed {
			t.Errorf("phase %s, want Failed", p.Status.Phase)
		}
	})

	t.Run("service-account token valid until the pod is deleted", func(t *testing.T) {
		p := c.pod("token", n1.name, "cat /var/run/secrets/kubernetes.io/serviceaccount/token; echo; "+
			"cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; "+
			"cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt; env; sleep 3600")
		grace := int64(1)
		p.Spec.TerminationGracePeriodSeconds = &grace
		p = c.create(t, p)
		p = c.waitPod(t, "token", 30*time.Second, running)
		var lines []string
		framework.Eventually(t, 5*time.Second, func() (bool, error) {
			log, err := c.logFile(p, "c", 0)
			lines = logContent(log)
			return settled(err == nil && len(lines) > 3 && strings.Contains(log, "KUBERNETES_SERVICE_HOST="), fmt.Errorf("log %q: %v", log, err))
		})
		token := lines[0]
		if lines[1] != "default" {
			t.Errorf("namespace file %q, want default", lines[1])
		}
		ca, _ := os.ReadFile(filepath.Join(c.dataDir, "pki", "server-ca.crt"))
		if got := strings.Join(lines[2:2+strings.Count(strings.TrimSpace(string(ca)), "\n")+1], "\n"); got != strings.TrimSpace(string(ca)) {
			t.Errorf("ca.crt in the pod differs from the server CA:\n%s", got)
		}
		for _, want := range []string{"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443", "KUBERNETES_SERVICE_PORT_HTTPS=443"} {
			found := false
			for _, l := range lines {
				found = found || l == want
			}
			if !found {
				t.Errorf("environment lacks %s", want)
			}
		}
		review := func() *authenticationv1.TokenReview {
			r, err := c.client.AuthenticationV1().TokenReviews().Create(t.Context(),
				&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		r := review()
		if !r.Status.Authenticated || r.Status.User.Username != "system:serviceaccount:default:default" {
			t.Fatalf("TokenReview of the pod's token: %+v", r.Status)
		}
		if got := r.Status.User.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != "token" {
			t.Errorf("token's pod-name %v, want [token]", got)
		}
		if got := r.Status.User.Extra["authentication.kubernetes.io/pod-uid"]; len(got) != 1 || got[0] != string(p.UID) {
			t.Errorf("token's pod-uid %v, want [%s]", got, p.UID)
		}
		if err := c.client.CoreV1().Pods("default").Delete(t.Context(), "token", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, 45*time.Second, func() (bool, error) {
			_, err := c.client.CoreV1().Pods("default").Get(t.Context(), "token", metav1.GetOptions{})
			return settled(apierrors.IsNotFound(err), fmt.Errorf("pod still there: %v", err))
		})
		framework.Eventually(t, 15*time.Second, func() (bool, error) {
			r := review()
			return settled(!r.Status.Authenticated, fmt.Errorf("token still authenticates as %s", r.Status.User.Username))
		})
	})

	t.Run("deleting a pod stops it within its grace period and removes its traces", func(t *testing.T) {
		p := c.pod("doomed", n1.name, "sleep 3600")
		grace := int64(2)
		p.Spec.TerminationGracePeriodSeconds = &grace
		p = c.create(t, p)
		p = c.waitPod(t, "doomed", 30*time.Second, running)
		id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "runc://")
		start := time.Now()
		if err := c.client.CoreV1().Pods("default").Delete(t.Context(), "doomed", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, 20*time.Second, func() (bool, error) {
			_, err := c.client.CoreV1().Pods("default").Get(t.Context(), "doomed", metav1.GetOptions{})
			return settled(apierrors.IsNotFound(err), fmt.Errorf("pod still there: %v", err))
		})
		took := time.Since(start)
		t.Logf("pod gone %s after delete (grace 2s; sh ignores SIGTERM)", took.Round(time.Millisecond))
		if took > 2*time.Second+3*time.Second {
			t.Errorf("pod gone after %s, want within its 2s grace period plus 3s", took)
		}
		framework.Eventually(t, 10*time.Second, func() (bool, error) {
			var left []string
			if _, err := os.Stat("/var/run/netns/tether-" + string(p.UID)); err == nil {
				left = append(left, "netns")
			}
			if _, err := os.Stat(fmt.Sprintf("/sys/fs/cgroup/memory/tether/%s/pod%s", n1.name, p.UID)); err == nil {
				left = append(left, "memory cgroup")
			}
			if _, err := c.logFile(p, "c", 0); err == nil {
				left = append(left, "log file")
			}
			out, _ := exec.Command("runc", "--root", filepath.Join(n1.dataDir, "containers", "runc"), "list", "-q").Output()
			if strings.Contains(string(out), id) {
				left = append(left, "runc state")
			}
			return settled(len(left) == 0, fmt.Errorf("left behind: %v", left))
		})
	})

	t.Run("a missing image shows ErrImagePull with the registry's message", func(t *testing.T) {
		p := c.pod("noimage", n1.name, "true")
		p.Spec.Containers[0].Image = c.registry + "/tether/does-not-exist:1"
		c.create(t, p)
		p = c.waitPod(t, "noimage", 30*time.Second, func(p *corev1.Pod) (bool, error) {
			if len(p.Status.ContainerStatuses) > 0 {
				if w := p.Status.ContainerStatuses[0].State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
					return true, nil
				}
			}
			return false, fmt.Errorf("status %+v", p.Status.ContainerStatuses)
		})
		msg := p.Status.ContainerStatuses[0].State.Waiting.Message
		if !strings.Contains(strings.ToLower(msg), "unknown") && !strings.Contains(strings.ToLower(msg), "not found") {
			t.Errorf("waiting message %q does not carry the registry's answer", msg)
		}
	})

	t.Run("more memory than any node has stays Pending with FailedScheduling", func(t *testing.T) {
		p := c.pod("huge", "", "true")
		p.Spec.NodeSelector = nil
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("100Ti")}
		c.create(t, p)
		framework.Eventually(t, 20*time.Second, func() (bool, error) {
			evs, err := c.client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=huge"})
			if err != nil {
				return false, err
			}
			for _, e := range evs.Items {
				if e.Reason == "FailedScheduling" && strings.Contains(e.Message, "Insufficient memory") {
					return true, nil
				}
			}
			return false, fmt.Errorf("no FailedScheduling event naming Insufficient memory in %d events", len(evs.Items))
		})
		got, err := c.client.CoreV1().Pods("default").Get(t.Context(), "huge", metav1.GetOptions{})
		if err != nil || got.Status.Phase != corev1.PodPending || got.Spec.NodeName != "" {
			t.Errorf("huge: %v phase %s node %q, want Pending and unbound", err, got.Status.Phase, got.Spec.NodeName)
		}
	})

	t.Run("an agent restart adopts running containers", func(t *testing.T) {
		before := c.waitPod(t, "hello", 10*time.Second, running)
		id := before.Status.ContainerStatuses[0].ContainerID
		if err := n1.proc.stop(); err != nil {
			t.Logf("agent stop: %v", err)
		}
		n1.proc = startProc(top, n1.host, "agent node-1 (restarted)", n1.args...)
		// Cleanups run last-registered first: delete the pods while this
		// agent still runs, so that it removes their containers.
		top.Cleanup(func() { c.cleanup(top) })
		if _, _, err := n1.proc.waitLine("[5/5]", 30*time.Second); err != nil {
			t.Fatalf("restarted agent: %v", err)
		}
		time.Sleep(3 * time.Second) // let the workers sync
		after := c.waitPod(t, "hello", 10*time.Second, running)
		cs := after.Status.ContainerStatuses[0]
		if cs.ContainerID != id || cs.RestartCount != 0 {
			t.Errorf("after the agent restart: container %s restarts %d, want the same container %s with 0 restarts", cs.ContainerID, cs.RestartCount, id)
		}
	})
}
