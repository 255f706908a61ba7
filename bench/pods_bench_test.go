package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"tether/internal/busyboximage"
	"tether/pki"
)

// The shape of the pods benchmark.
const (
	podStartRuns    = 50                     // pods created one at a time
	podStreamRuns   = 50                     // then this many more in a steady stream
	podStreamEvery  = 200 * time.Millisecond // one create every 200 ms (5 pods/s)
	podStartTarget  = time.Second            // target: p99 create → Running (watch)
	podStartSLO     = 5 * time.Second        // upstream's pod startup SLO (p99)
	podRunTimeout   = 2 * time.Minute        // give up on one pod after this
	podSettle       = 15 * time.Second       // after the last pod is Running, before measuring
	podWindow       = 30 * time.Second       // steady-state measurement window
	podAgentCPUGoal = 0.10                   // cores, agent, 100 pods, steady state
	podAgentRSSGoal = 150e6                  // bytes (150 MB), agent VmRSS, 100 pods
	podGrace        = 2                      // terminationGracePeriodSeconds of the pods
	podClusterCIDR  = "10.247.0.0/16"        // clear of the default 10.244.0.0/16 other clusters here use
	podServiceCIDR  = "10.111.0.0/16"
	podNamespace    = metav1.NamespaceDefault
	agentCIDRLine   = "has pod CIDR "
	agentPodsReady  = "pod workers ready"
)

// BenchmarkPods runs `tether server --disable-agent` and one `tether agent`
// as separate processes on this machine (its own bridge, cgroup parent,
// data directories and, through a private mount namespace, its own
// /run/netns), with tether.local/busybox:latest imported into the agent.
// It measures pod startup latency (create → Running seen by a client-go
// watch) for podStartRuns pods created one at a time and podStreamRuns more
// created at 5/s, then the agent's CPU and memory with 100 pods running,
// then deletes the pods and waits until the agent has removed everything.
// It ignores b.N beyond one run.
func BenchmarkPods(b *testing.B) {
	requirePodHost(b)
	ctx := b.Context()
	out := os.Stdout
	bin, buildNote := tetherBinary(b)
	n := startPodNode(b, bin)
	fmt.Fprintf(out, "pods: server pid %d at %s, agent pid %d (node %s, bridge %s, cgroup parent %s, pod CIDR %s; binary %s%s)\n",
		n.server.pid, n.url, n.agent.pid, n.node, n.bridge, n.cgroupParent, n.podCIDR, bin, buildNote)

	pw := newPodWatch()
	if err := pw.start(ctx, n.client); err != nil {
		b.Fatalf("pod watch: %v", err)
	}

	b.ResetTimer()
	// Phase 1: one pod at a time.
	seq := n.meter()
	for i := range podStartRuns {
		name := fmt.Sprintf("bench-%03d", i)
		pt, err := n.createPod(ctx, pw, name)
		if err == nil {
			err = pt.waitRunning(ctx, podRunTimeout)
		}
		if err != nil {
			b.Fatalf("pod %s: %v\n%s\nagent log:\n%s", name, err, n.podDebug(ctx, name), n.agent.tail(40))
		}
	}
	seqUse := n.meter().since(seq)

	// Phase 2: a steady stream to 100 pods.
	stream := n.meter()
	var streamed []*podTimes
	tick := time.NewTicker(podStreamEvery)
	for i := range podStreamRuns {
		name := fmt.Sprintf("bench-%03d", podStartRuns+i)
		pt, err := n.createPod(ctx, pw, name)
		if err != nil {
			b.Fatalf("pod %s: %v", name, err)
		}
		streamed = append(streamed, pt)
		<-tick.C
	}
	tick.Stop()
	for _, pt := range streamed {
		if err := pt.waitRunning(ctx, podRunTimeout); err != nil {
			b.Fatalf("pod %s: %v\n%s\nagent log:\n%s", pt.name, err, n.podDebug(ctx, pt.name), n.agent.tail(40))
		}
	}
	streamUse := n.meter().since(stream)
	total := podStartRuns + podStreamRuns

	// Phase 3: steady state.
	if !sleepCtx(ctx, podSettle) {
		b.Fatal(ctx.Err())
	}
	ss := n.meter()
	var rssMax uint64
	for end := time.Now().Add(podWindow); time.Now().Before(end); {
		if !sleepCtx(ctx, min(5*time.Second, time.Until(end))) {
			b.Fatal(ctx.Err())
		}
		rssMax = max(rssMax, readProcStat(n.agent.pid).rss)
	}
	steady := n.meter().since(ss)
	agentEnd := readProcStat(n.agent.pid)
	serverEnd := readProcStat(n.server.pid)
	shims := readShims(n.agentDir)
	stillRunning := pw.countRunning()
	b.StopTimer()

	// Phase 4: delete every pod; the agent stops and removes them.
	del := n.meter()
	delLat, delErr := n.deleteAll(ctx, pw)
	gone, goneErr := n.waitAgentClean(ctx, 2*time.Minute)
	delUse := n.meter().since(del)
	leftNetns := n.agentNetns()

	// Report.
	fmt.Fprintf(out, "\n== tether pods benchmark (%s, GOMAXPROCS=%d, NumCPU=%d, %s) ==\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "one node: `tether server --disable-agent` and `tether agent` as separate processes on 127.0.0.1; runc, CNI bridge %s over %s, cgroup v1 (cgroupfs) parent %s\n", n.bridge, n.podCIDR, n.cgroupParent)
	fmt.Fprintf(out, "pods: one container %s `sleep 3600` (present, IfNotPresent), the default service-account token volume (TokenRequest), terminationGracePeriodSeconds %d\n", busyboximage.Ref, podGrace)
	fmt.Fprintf(out, "latency: from just before the admin client's Create to the first watch event with phase Running and the container running; steps are the first watch event showing each\n\n")

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pods\tstep (time since the previous one)\tp50\tp99\tmax\t")
	for _, set := range []struct {
		name string
		pts  []*podTimes
	}{{fmt.Sprintf("%d one at a time", podStartRuns), pw.slice(0, podStartRuns)}, {fmt.Sprintf("%d at %.0f/s (%d→%d on the node)", podStreamRuns, float64(time.Second)/float64(podStreamEvery), podStartRuns, total), pw.slice(podStartRuns, total)}} {
		steps := []struct {
			name string
			f    func(*podTimes) time.Duration
		}{
			{"Create call returned", func(p *podTimes) time.Duration { return p.created.Sub(p.start) }},
			{"bound to the node (watch)", func(p *podTimes) time.Duration { return p.scheduled.Sub(p.created) }},
			{"kubelet status: IP or container (watch)", func(p *podTimes) time.Duration { return p.firstStatus.Sub(p.scheduled) }},
			{"Running (watch)", func(p *podTimes) time.Duration { return p.running.Sub(p.firstStatus) }},
			{"total: create → Running", func(p *podTimes) time.Duration { return p.running.Sub(p.start) }},
		}
		for k, st := range steps {
			s := durSample(set.pts, st.f)
			label := ""
			if k == 0 {
				label = set.name
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", label, st.name, ms(s.pct(0.5)), ms(s.pct(0.99)), ms(s.pct(1)))
		}
	}
	tw.Flush()
	fmt.Fprintf(out, "(p99 of %d samples is the slowest one; one at a time, in order: %s)\n", podStartRuns, joinMs(pw.slice(0, podStartRuns)))
	fmt.Fprintf(out, "(in the stream, in order: %s)\n", joinMs(pw.slice(podStartRuns, total)))
	fmt.Fprintf(out, "(agent CPU per pod started: %s one at a time, %s in the stream; its waited-for children (runc, CNI plugins, ip): %s and %s; server %s and %s; other processes %.2f and %.2f cores)\n",
		ms(seqUse.agent/time.Duration(podStartRuns)), ms(streamUse.agent/time.Duration(podStreamRuns)),
		ms(seqUse.agentChildren/time.Duration(podStartRuns)), ms(streamUse.agentChildren/time.Duration(podStreamRuns)),
		ms(seqUse.server/time.Duration(podStartRuns)), ms(streamUse.server/time.Duration(podStreamRuns)),
		seqUse.otherCores(), streamUse.otherCores())

	fmt.Fprintf(out, "\nSteady state: %d pods Running (watch), %s after the last one started, over %s\n", stillRunning, podSettle, steady.wall.Round(time.Second))
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\tCPU (% of one core)\tVmRSS\tRssAnon\tthreads\t")
	fmt.Fprintf(tw, "agent (utime+stime)\t%.2f %%\t%d MiB (max %d)\t%d MiB\t%d\t\n", 100*steady.cores(steady.agent), agentEnd.rss/mib, rssMax/mib, agentEnd.anon/mib, agentEnd.threads)
	fmt.Fprintf(tw, "agent's waited-for children\t%.2f %%\t\t\t\t\n", 100*steady.cores(steady.agentChildren))
	fmt.Fprintf(tw, "server\t%.2f %%\t%d MiB\t%d MiB\t%d\t\n", 100*steady.cores(steady.server), serverEnd.rss/mib, serverEnd.anon/mib, serverEnd.threads)
	fmt.Fprintf(tw, "%d shims (total)\t%.2f %%\t%d MiB\t%d MiB\t%d\t\n", shims.n, 100*steady.cores(steady.shims), shims.rss/mib, shims.anon/mib, shims.threads)
	tw.Flush()
	if shims.n > 0 {
		fmt.Fprintf(out, "(a shim: VmRSS %.1f MiB, RssAnon %.2f MiB, Pss %.2f MiB on average; shims total Pss %d MiB; other processes %.2f cores)\n",
			float64(shims.rss)/float64(shims.n)/mib, float64(shims.anon)/float64(shims.n)/mib, float64(shims.pss)/float64(shims.n)/mib, shims.pss/mib, steady.otherCores())
	}

	lines, warns, throttled := n.agent.out.summary()
	fmt.Fprintf(out, "(agent log: %d lines, %d warnings or errors, %d client-side throttling messages from the agent's client-go (QPS 20, burst 40; logged when a request waited over 1 s))\n", lines, warns, throttled)
	for _, line := range n.agent.out.matching("client-side throttling", 3) {
		fmt.Fprintf(out, "  %s\n", line)
	}

	d := durSampleOf(delLat)
	fmt.Fprintf(out, "\nDeletion of %d pods (grace %ds, busybox sleep ignores SIGTERM as PID 1): Delete → gone from the API p50 %s, p99 %s; containers, netns and cgroups gone %s after the first Delete; agent CPU %s\n",
		len(delLat), podGrace, ms(d.pct(0.5)), ms(d.pct(0.99)), gone.Round(10*time.Millisecond), ms(delUse.agent))
	if delErr != nil {
		b.Errorf("delete pods: %v", delErr)
	}
	if goneErr != nil {
		b.Errorf("agent cleanup: %v", goneErr)
	}
	if leftNetns > 0 {
		b.Errorf("%d pod network namespaces left in the agent's /run/netns after every pod was deleted", leftNetns)
	}

	seqS := durSample(pw.slice(0, podStartRuns), func(p *podTimes) time.Duration { return p.running.Sub(p.start) })
	streamS := durSample(pw.slice(podStartRuns, total), func(p *podTimes) time.Duration { return p.running.Sub(p.start) })
	agentCores := steady.cores(steady.agent)
	fmt.Fprintf(out, "\nTargets (2 cores, shared by server, agent, shims and this process)\n")
	for _, t := range []struct {
		name, figure string
		ok           bool
	}{
		{"pod startup p99 ≤1s (one at a time)", fmt.Sprintf("p50 %s, p99 %s, max %s; p99 = %.2f× the target, %.2f× upstream's 5 s SLO", ms(seqS.pct(0.5)), ms(seqS.pct(0.99)), ms(seqS.pct(1)), ratio(seqS.pct(0.99), podStartTarget), ratio(seqS.pct(0.99), podStartSLO)), seqS.pct(0.99) <= podStartTarget},
		{"pod startup p99 ≤1s (stream, 5/s)", fmt.Sprintf("p50 %s, p99 %s, max %s; p99 = %.2f× the target", ms(streamS.pct(0.5)), ms(streamS.pct(0.99)), ms(streamS.pct(1)), ratio(streamS.pct(0.99), podStartTarget)), streamS.pct(0.99) <= podStartTarget},
		{"agent CPU ≤10% of a core, 100 pods", fmt.Sprintf("%.2f %% (%.2f× the target)", 100*agentCores, agentCores/podAgentCPUGoal), agentCores <= podAgentCPUGoal},
		{"agent RSS ≤150 MB, 100 pods", fmt.Sprintf("%.0f MB (%d MiB; %.2f× the target)", float64(agentEnd.rss)/1e6, agentEnd.rss/mib, float64(agentEnd.rss)/podAgentRSSGoal), float64(agentEnd.rss) <= podAgentRSSGoal},
	} {
		verdict := "PASS"
		if !t.ok {
			verdict = "MISS"
		}
		fmt.Fprintf(out, "  %s  %-40s %s\n", verdict, t.name, t.figure)
	}
	fmt.Fprintln(out)

	b.ReportMetric(msf(seqS.pct(0.5)), "start_p50_ms")
	b.ReportMetric(msf(seqS.pct(0.99)), "start_p99_ms")
	b.ReportMetric(msf(streamS.pct(0.99)), "stream_p99_ms")
	b.ReportMetric(100*agentCores, "agent_cpu_%")
	b.ReportMetric(float64(agentEnd.rss)/mib, "agent_rss_MiB")
	b.ReportMetric(float64(shims.rss)/mib, "shims_rss_MiB")
}

// requirePodHost skips unless this machine can run the pods benchmark.
func requirePodHost(b *testing.B) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("skipping: the pods benchmark runs containers and needs root")
	}
	for _, bin := range []string{"runc", "ip", "unshare", "busybox", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("skipping: %s is not installed (hack/install-deps.sh installs it)", bin)
		}
	}
}

// podNode is the server and the agent of BenchmarkPods.
type podNode struct {
	dir, agentDir         string
	node, bridge          string
	cgroupParent, podCIDR string
	url                   string
	server, agent         *podProc
	client                kubernetes.Interface
	ipForward             []byte // /proc/sys/net/ipv4/ip_forward before the run
	cleanupOnce           sync.Once
	uids                  sync.Map // pod UIDs seen
	firstDelete           time.Time
	b                     *testing.B
}

// startPodNode starts the server and the agent, imports the busybox image
// into the agent, waits until the Node is Ready with a pod CIDR, the
// agent's pod workers run and the default service account exists, and
// registers the cleanup.
func startPodNode(b *testing.B, bin string) *podNode {
	b.Helper()
	ctx := b.Context()
	dir, err := os.MkdirTemp("", "tpb-")
	if err != nil {
		b.Fatal(err)
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	suffix := hex.EncodeToString(rnd[:])
	n := &podNode{
		dir:          dir,
		agentDir:     filepath.Join(dir, "agent"),
		node:         "bench-pods-" + suffix,
		bridge:       "tb" + suffix,
		cgroupParent: "/tether-bench-" + suffix,
		b:            b,
	}
	if n.ipForward, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(n.cleanup)

	// The image, before the agent starts.
	tarball := filepath.Join(dir, "busybox.tar")
	if err := busyboximage.WriteTarball(tarball); err != nil {
		b.Skipf("skipping: cannot build the busybox image: %v", err)
	}
	if out, err := exec.Command(bin, "image", "import", "--data-dir", n.agentDir, tarball).CombinedOutput(); err != nil {
		b.Fatalf("tether image import: %v\n%s", err, out)
	}

	// The server.
	port, kubeletPort := freePort(b), freePort(b)
	n.server = startPodProc(b, "server", filepath.Join(dir, "server.log"), nil, bin, "server", "--disable-agent",
		"--bind-address", "127.0.0.1", "--secure-port", port, "--data-dir", filepath.Join(dir, "server"),
		"--cluster-cidr", podClusterCIDR, "--service-cluster-ip-range", podServiceCIDR)
	line, err := n.server.waitLine(ctx, serverReadyLine, 2*time.Minute)
	if err != nil {
		b.Fatalf("tether server: %v\n%s", err, n.server.tail(20))
	}
	n.url = strings.TrimSpace(strings.TrimPrefix(line, serverReadyLine))
	admin, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "server", "admin.kubeconfig"))
	if err != nil {
		b.Fatalf("admin kubeconfig: %v", err)
	}
	admin.QPS, admin.Burst = -1, 0
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		b.Fatal(err)
	}
	n.client = client
	ca, err := pki.ParseCertPEM(admin.CAData)
	if err != nil {
		b.Fatalf("server CA: %v", err)
	}
	token := joinToken(ctx, b, client, "bench: BenchmarkPods")

	// The agent, in a mount namespace of its own with an empty /run/netns:
	// the pods' network namespaces (tether-<uid>) are then visible only to
	// it, so neither it nor another agent on this machine (an e2e run,
	// `make run`) takes the other's namespaces for orphans, and they go
	// away with it. Everything else it makes (bridge, cgroups, runc state
	// under its data dir) is on the host as usual.
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		b.Fatal(err)
	}
	wrapper := `mount -t tmpfs -o mode=0755 tether-bench-netns /run/netns && exec "$0" "$@"`
	n.agent = startPodProc(b, "agent", filepath.Join(dir, "agent.log"), nil,
		"unshare", "--mount", "--propagation", "private", "--", "sh", "-c", wrapper,
		bin, "agent", "--server", n.url, "--token", token, "--ca-cert-hash", pki.Pin(ca),
		"--data-dir", n.agentDir, "--node-name", n.node, "--node-ip", "127.0.0.1", "--kubelet-port", kubeletPort,
		"--pod-bridge", n.bridge, "--disable-proxy", "--cgroup-parent", n.cgroupParent, "--pod-log-dir", filepath.Join(dir, "logs"))
	line, err = n.agent.waitLine(ctx, agentCIDRLine, 2*time.Minute)
	if err != nil {
		b.Fatalf("tether agent: %v\n%s", err, n.agent.tail(30))
	}
	_, n.podCIDR, _ = strings.Cut(line, agentCIDRLine)
	n.podCIDR = strings.TrimSpace(n.podCIDR)
	if _, err := n.agent.waitLine(ctx, agentPodsReady, time.Minute); err != nil {
		b.Fatalf("tether agent: %v\n%s", err, n.agent.tail(30))
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", n.agent.pid)); strings.TrimSpace(string(comm)) != "tether" {
		b.Fatalf("agent pid %d is %q, not tether", n.agent.pid, comm)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		node, err := client.CoreV1().Nodes().Get(ctx, n.node, metav1.GetOptions{})
		_, saErr := client.CoreV1().ServiceAccounts(podNamespace).Get(ctx, "default", metav1.GetOptions{})
		if err == nil && isNodeReady(node) && saErr == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("node %s Ready and service account default/default: %v, %v", n.node, err, saErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return n
}

// benchPod is one pod of BenchmarkPods.
func benchPod(name string) *corev1.Pod {
	grace := int64(podGrace)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: podNamespace, Labels: map[string]string{"app": "bench-pods"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "c", Image: busyboximage.Ref, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sleep", "3600"},
			}},
		},
	}
}

func (n *podNode) createPod(ctx context.Context, pw *podWatch, name string) (*podTimes, error) {
	pt := pw.register(name)
	pt.start = time.Now()
	p, err := n.client.CoreV1().Pods(podNamespace).Create(ctx, benchPod(name), metav1.CreateOptions{})
	pt.created = time.Now()
	if err != nil {
		return pt, fmt.Errorf("create: %w", err)
	}
	n.uids.Store(string(p.UID), true)
	return pt, nil
}

// podDebug describes a pod that did not start: its phase, conditions,
// container states and events.
func (n *podNode) podDebug(ctx context.Context, name string) string {
	var sb strings.Builder
	p, err := n.client.CoreV1().Pods(podNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Sprintf("get pod %s: %v", name, err)
	}
	fmt.Fprintf(&sb, "pod %s (uid %s) on %q: phase %q, IP %q\n", name, p.UID, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
	for _, c := range p.Status.Conditions {
		fmt.Fprintf(&sb, "  condition %s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	for _, c := range p.Status.ContainerStatuses {
		fmt.Fprintf(&sb, "  container %s: %+v\n", c.Name, c.State)
	}
	evs, err := n.client.CoreV1().Events(podNamespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err == nil {
		for _, e := range evs.Items {
			fmt.Fprintf(&sb, "  event %s %s: %s\n", e.Type, e.Reason, e.Message)
		}
	}
	fmt.Fprintf(&sb, "  runc containers of the node: %d; shims: %d", len(n.runcList()), len(shimPids(n.agentDir)))
	return sb.String()
}

// deleteAll deletes every pod and waits until the watch has seen each gone;
// it returns each pod's Delete → gone time.
func (n *podNode) deleteAll(ctx context.Context, pw *podWatch) ([]time.Duration, error) {
	pts := pw.slice(0, len(pw.order))
	var errs []error
	n.firstDelete = time.Now()
	for _, pt := range pts {
		pt.deleteStart = time.Now()
		if err := n.client.CoreV1().Pods(podNamespace).Delete(ctx, pt.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s: %w", pt.name, err))
		}
	}
	var lat []time.Duration
	timeout := time.After(2 * time.Minute)
	for _, pt := range pts {
		select {
		case <-pt.goneCh:
			lat = append(lat, pt.goneAt().Sub(pt.deleteStart))
		case <-timeout:
			return lat, errors.Join(append(errs, fmt.Errorf("pod %s not gone 2m after Delete", pt.name))...)
		case <-ctx.Done():
			return lat, ctx.Err()
		}
	}
	return lat, errors.Join(errs...)
}

// waitAgentClean waits until the agent has no runc container, no pod
// network namespace and no pod cgroup left; it returns the time since the
// first Delete.
func (n *podNode) waitAgentClean(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	first := n.firstDelete
	if first.IsZero() {
		first = start
	}
	for {
		ctrs := n.runcList()
		netns := n.agentNetns()
		cgroups := n.podCgroups()
		if len(ctrs) == 0 && netns == 0 && cgroups == 0 {
			return time.Since(first), nil
		}
		if time.Since(start) > timeout || ctx.Err() != nil {
			return time.Since(first), fmt.Errorf("after %s: %d runc containers, %d pod netns, %d pod cgroups left", timeout, len(ctrs), netns, cgroups)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *podNode) runcRoot() string { return filepath.Join(n.agentDir, "containers", "runc") }

func (n *podNode) runcList() []string {
	out, _ := exec.Command("runc", "--root", n.runcRoot(), "list", "-q").Output()
	return strings.Fields(string(out))
}

// agentNetns counts the pod network namespaces in the agent's /run/netns
// (-1 if it cannot tell).
func (n *podNode) agentNetns() int {
	if n.agent == nil || n.agent.hasExited() {
		return 0
	}
	out, err := exec.Command("nsenter", "--mount=/proc/"+strconv.Itoa(n.agent.pid)+"/ns/mnt", "ls", "/run/netns").Output()
	if err != nil {
		return -1
	}
	c := 0
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "tether-") {
			c++
		}
	}
	return c
}

// podCgroups counts the pod cgroups under the cgroup parent (memory
// controller).
func (n *podNode) podCgroups() int {
	entries, err := os.ReadDir(filepath.Join("/sys/fs/cgroup/memory", n.cgroupParent))
	if err != nil {
		return 0
	}
	c := 0
	for _, e := range entries {
		if e.IsDir() {
			c++
		}
	}
	return c
}

// cleanup stops the processes and removes whatever the run left on the
// host: runc containers, the bridge, the cgroups, network namespaces of
// its pods, the data directories; it restores ip_forward.
func (n *podNode) cleanup() {
	n.cleanupOnce.Do(func() {
		b := n.b
		if keep := os.Getenv("TETHER_BENCH_PODS_KEEP"); keep != "" && n.dir != "" {
			// For a closer look: the server's audit log (every request
			// with its timestamps) and the agent's and server's logs.
			_ = os.MkdirAll(keep, 0o755)
			for _, f := range []string{"server/audit.log", "server.log", "agent.log"} {
				if data, err := os.ReadFile(filepath.Join(n.dir, f)); err == nil {
					_ = os.WriteFile(filepath.Join(keep, filepath.Base(f)), data, 0o644)
				}
			}
		}
		if n.client != nil && n.agent != nil && !n.agent.hasExited() {
			// A run that failed midway: delete what is there and give the
			// agent a moment to stop it.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = n.client.CoreV1().Pods(podNamespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{LabelSelector: "app=bench-pods"})
			for ctx.Err() == nil && len(n.runcList()) > 0 {
				time.Sleep(200 * time.Millisecond)
			}
			cancel()
		}
		for _, p := range []*podProc{n.agent, n.server} {
			if p != nil {
				if err := p.stop(); err != nil {
					b.Errorf("stop the %s: %v\n%s", p.name, err, p.tail(20))
				}
			}
		}
		for _, id := range n.runcList() {
			b.Logf("cleanup: runc container %s was left; killing it", id)
			_ = exec.Command("runc", "--root", n.runcRoot(), "kill", id, "KILL").Run()
			time.Sleep(100 * time.Millisecond)
			_ = exec.Command("runc", "--root", n.runcRoot(), "delete", "-f", id).Run()
		}
		for _, s := range shimPids(n.agentDir) {
			b.Logf("cleanup: shim pid %d was left; killing it", s)
			_ = syscall.Kill(s, syscall.SIGKILL)
		}
		if n.bridge != "" {
			if _, err := net.InterfaceByName(n.bridge); err == nil {
				if out, err := exec.Command("ip", "link", "del", n.bridge).CombinedOutput(); err != nil {
					b.Errorf("cleanup: ip link del %s: %v: %s", n.bridge, err, out)
				}
			}
		}
		// The agent made its netns in its own /run/netns, which went with
		// it; these would only exist had it used the host's.
		n.uids.Range(func(k, _ any) bool {
			name := "tether-" + k.(string)
			if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
				_ = exec.Command("ip", "netns", "delete", name).Run()
			}
			return true
		})
		if n.cgroupParent != "" {
			entries, _ := os.ReadDir("/sys/fs/cgroup")
			for _, e := range entries {
				removeCgroupDir(filepath.Join("/sys/fs/cgroup", e.Name(), n.cgroupParent))
			}
		}
		if len(n.ipForward) > 0 {
			if cur, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); !bytes.Equal(cur, n.ipForward) {
				_ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", n.ipForward, 0o644)
			}
		}
		if n.dir != "" {
			os.RemoveAll(n.dir)
		}
	})
}

// removeCgroupDir removes a cgroup directory and its children, deepest
// first.
func removeCgroupDir(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupDir(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir)
}

// podUse is the CPU the processes used between two meter readings.
type podUse struct {
	wall                         time.Duration
	agent, agentChildren, server time.Duration
	shims, own, all              time.Duration
}

func (u podUse) cores(d time.Duration) float64 { return d.Seconds() / u.wall.Seconds() }
func (u podUse) otherCores() float64 {
	return max(u.cores(u.all-u.agent-u.agentChildren-u.server-u.shims-u.own), 0)
}

type podMeter struct {
	t                            time.Time
	agent, agentChildren, server time.Duration
	shims, own, all              time.Duration
}

func (n *podNode) meter() podMeter {
	a, ac := procTimes(n.agent.pid)
	s, sc := procTimes(n.server.pid)
	var shims time.Duration
	for _, pid := range shimPids(n.agentDir) {
		u, c := procTimes(pid)
		shims += u + c
	}
	return podMeter{t: time.Now(), agent: a, agentChildren: ac, server: s + sc, shims: shims, own: cpuTime(), all: machineBusy()}
}

func (m podMeter) since(m0 podMeter) podUse {
	return podUse{
		wall: m.t.Sub(m0.t), agent: m.agent - m0.agent, agentChildren: m.agentChildren - m0.agentChildren,
		server: m.server - m0.server, shims: max(m.shims-m0.shims, 0), own: m.own - m0.own, all: m.all - m0.all,
	}
}

// procTimes returns a process's utime+stime and its waited-for children's
// cutime+cstime.
func procTimes(pid int) (self, children time.Duration) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 15 {
		return 0, 0
	}
	v := func(i int) time.Duration {
		x, _ := strconv.ParseUint(f[i], 10, 64)
		return time.Duration(x) * clockTick
	}
	return v(11) + v(12), v(13) + v(14)
}

// shimPids lists the `tether shim run <dir>` processes of the agent whose
// data directory is agentDir.
func shimPids(agentDir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	prefix := filepath.Join(agentDir, "containers") + "/"
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if len(args) >= 4 && args[1] == "shim" && args[2] == "run" && strings.HasPrefix(args[3], prefix) {
			pids = append(pids, pid)
		}
	}
	return pids
}

type shimMem struct {
	n, threads     int
	rss, anon, pss uint64
}

func readShims(agentDir string) shimMem {
	var m shimMem
	for _, pid := range shimPids(agentDir) {
		s := readProcStat(pid)
		if s.readError != nil {
			continue
		}
		m.n++
		m.rss += s.rss
		m.anon += s.anon
		m.threads += s.threads
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
			for line := range strings.Lines(string(data)) {
				if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
					kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
					m.pss += kb << 10
				}
			}
		}
	}
	return m
}

// freePort returns a free TCP port on 127.0.0.1.
func freePort(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// podProc is a process of BenchmarkPods: its stdout and stderr go to a log
// file and are scanned for lines.
type podProc struct {
	name    string
	pid     int
	cmd     *exec.Cmd
	logPath string
	out     *procLines
	exited  chan struct{}
	waitErr error
	once    sync.Once
	stopErr error
}

func startPodProc(b *testing.B, name, logPath string, env []string, argv ...string) *podProc {
	b.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	p := &podProc{name: name, logPath: logPath, out: &procLines{w: f}, exited: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	p.pid = p.cmd.Process.Pid
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p
}

func (p *podProc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitLine waits for a line of output containing s.
func (p *podProc) waitLine(ctx context.Context, s string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if line, ok := p.out.find(s); ok {
			return line, nil
		}
		select {
		case <-p.exited:
			if line, ok := p.out.find(s); ok {
				return line, nil
			}
			return "", fmt.Errorf("%s exited (%v) before printing %q", p.name, p.waitErr, s)
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not print %q within %s", p.name, s, timeout)
		}
	}
}

// stop sends SIGTERM, waits 30 s, then kills.
func (p *podProc) stop() error {
	p.once.Do(func() {
		if p.hasExited() {
			p.stopErr = fmt.Errorf("had already exited: %v", p.waitErr)
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			p.stopErr = errors.New("did not exit within 30s of SIGTERM; killed")
		}
	})
	return p.stopErr
}

func (p *podProc) tail(n int) string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procLines writes a process's output to w and keeps the lines (up to a
// limit) for waitLine.
type procLines struct {
	mu      sync.Mutex
	w       *os.File
	partial []byte
	lines   []string
}

func (l *procLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(p)
	l.partial = append(l.partial, p...)
	consumed := 0
	for {
		i := bytes.IndexByte(l.partial[consumed:], '\n')
		if i < 0 {
			break
		}
		if len(l.lines) < 20000 {
			l.lines = append(l.lines, string(l.partial[consumed:consumed+i]))
		}
		consumed += i + 1
	}
	l.partial = append(l.partial[:0], l.partial[consumed:]...)
	return len(p), nil
}

// summary counts the lines, the warnings and errors, and client-go's
// client-side throttling messages.
func (l *procLines) summary() (lines, warns, throttled int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			warns++
		}
		if strings.Contains(line, "client-side throttling") {
			throttled++
		}
	}
	return len(l.lines), warns, throttled
}

// matching returns up to max lines containing s.
func (l *procLines) matching(s string, max int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) && len(out) < max {
			out = append(out, line)
		}
	}
	return out
}

func (l *procLines) find(s string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return line, true
		}
	}
	return "", false
}

// podWatch notes, from an admin informer on the benchmark's namespace,
// when each pod was first seen bound, with a status from the kubelet,
// Running, and gone.
type podWatch struct {
	mu    sync.Mutex
	pods  map[string]*podTimes
	order []string
}

type podTimes struct {
	name                                  string
	start, created                        time.Time // before and after Create
	scheduled, firstStatus, running, gone time.Time
	deleteStart                           time.Time
	runningCh, goneCh                     chan struct{}
	mu                                    *sync.Mutex
}

func newPodWatch() *podWatch { return &podWatch{pods: map[string]*podTimes{}} }

func (pw *podWatch) start(ctx context.Context, client kubernetes.Interface) error {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(podNamespace))
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { pw.observe(obj, false) },
		UpdateFunc: func(_, obj any) { pw.observe(obj, false) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			pw.observe(obj, true)
		},
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("informer %v did not sync", typ)
		}
	}
	return nil
}

func (pw *podWatch) register(name string) *podTimes {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pt := &podTimes{name: name, runningCh: make(chan struct{}), goneCh: make(chan struct{}), mu: &pw.mu}
	pw.pods[name] = pt
	pw.order = append(pw.order, name)
	return pt
}

func (pw *podWatch) observe(obj any, deleted bool) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	now := time.Now()
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pt := pw.pods[p.Name]
	if pt == nil {
		return
	}
	if deleted {
		if pt.gone.IsZero() {
			pt.gone = now
			close(pt.goneCh)
		}
		return
	}
	if pt.scheduled.IsZero() && p.Spec.NodeName != "" {
		pt.scheduled = now
	}
	if pt.firstStatus.IsZero() && (p.Status.PodIP != "" || len(p.Status.ContainerStatuses) > 0) {
		pt.firstStatus = now
	}
	if pt.running.IsZero() && podRunning(p) {
		pt.running = now
		close(pt.runningCh)
	}
}

func podRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running == nil {
			return false
		}
	}
	return true
}

func (pw *podWatch) countRunning() int {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	n := 0
	for _, pt := range pw.pods {
		if !pt.running.IsZero() && pt.gone.IsZero() {
			n++
		}
	}
	return n
}

// slice returns the pods registered i-th to j-th.
func (pw *podWatch) slice(i, j int) []*podTimes {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	var out []*podTimes
	for _, name := range pw.order[i:min(j, len(pw.order))] {
		out = append(out, pw.pods[name])
	}
	return out
}

func (pt *podTimes) waitRunning(ctx context.Context, timeout time.Duration) error {
	select {
	case <-pt.runningCh:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("not Running %s after Create", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (pt *podTimes) goneAt() time.Time {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.gone
}

// durSample is f of each pod, as a sorted sample.
func durSample(pts []*podTimes, f func(*podTimes) time.Duration) sample {
	var lat []time.Duration
	for _, pt := range pts {
		pt.mu.Lock()
		d := f(pt)
		pt.mu.Unlock()
		lat = append(lat, d)
	}
	return durSampleOf(lat)
}

func durSampleOf(lat []time.Duration) sample {
	s := sample{lat: slices.Clone(lat)}
	slices.Sort(s.lat)
	return s
}

func joinMs(pts []*podTimes) string {
	var each []string
	for _, pt := range pts {
		pt.mu.Lock()
		each = append(each, ms(pt.running.Sub(pt.start)))
		pt.mu.Unlock()
	}
	return strings.Join(each, " ")
}
