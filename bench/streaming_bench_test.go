package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"

	"tether/internal/busyboximage"
)

// The shape of the streaming benchmark.
const (
	streamBytes       = 100 << 20 // pushed each way through the echo, per path
	streamChunk       = 32 << 10  // one Write of the sender
	streamExecRuns    = 100       // `echo hi` execs per executor (and runc execs)
	streamExecWarmup  = 3         // execs per executor before measuring
	streamLogLines    = 100       // followed log lines measured
	streamPFTarget    = 0.80      // port-forward MiB/s ÷ direct TLS over loopback
	streamExecTarget  = 50 * time.Millisecond
	streamLogTarget   = 200 * time.Millisecond
	streamEchoPort    = 8080
	streamXferTimeout = 3 * time.Minute // one 100 MiB transfer
)

// BenchmarkStreaming measures the streaming subresources through the
// apiserver to the kubelet (P5) on the one-node cluster of BenchmarkPods
// (`tether server --disable-agent` and `tether agent` as separate
// processes): port-forward throughput with client-go's SPDY dialer, its
// SPDY-over-WebSocket tunnel and `kubectl port-forward`, against a Go TLS
// echo on loopback in the same run; exec first-byte and round-trip latency
// with client-go's SPDY and WebSocket executors, against `runc exec` of the
// same container; and `logs -f` line latency. It ignores b.N beyond one
// run.
func BenchmarkStreaming(b *testing.B) {
	requirePodHost(b)
	ctx := b.Context()
	out := os.Stdout
	bin, buildNote := tetherBinary(b)
	n := startPodNode(b, bin)
	kubeconfig := filepath.Join(n.dir, "server", "admin.kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		b.Fatalf("admin kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	fmt.Fprintf(out, "streaming: server pid %d at %s, agent pid %d (node %s, bridge %s, cgroup parent %s; binary %s%s)\n",
		n.server.pid, n.url, n.agent.pid, n.node, n.bridge, n.cgroupParent, bin, buildNote)

	// The pods.
	pw := newPodWatch()
	if err := pw.start(ctx, n.client); err != nil {
		b.Fatalf("pod watch: %v", err)
	}
	pods := []*corev1.Pod{
		streamPod("echo", "nc", "-ll", "-p", strconv.Itoa(streamEchoPort), "-e", "cat"),
		streamPod("sleeper", "sleep", "3600"),
		// A line with its own wall-clock time in microseconds (adjtimex
		// reads the clock; busybox date has no %N) at irregular intervals
		// of 20–120 ms, so the writes do not lock in phase with anything
		// that polls.
		streamPod("ticker", "sh", "-c", `while :; do adjtimex | awk '/tv_sec/ {s=$2} /tv_usec/ {printf "%d%06d\n", s, $2}'; usleep $((20000 + RANDOM % 100000)); done`),
	}
	podTimes := map[string]*podTimes{}
	for _, p := range pods {
		podTimes[p.Name] = pw.register(p.Name)
		created, err := n.client.CoreV1().Pods(podNamespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			b.Fatalf("create pod %s: %v", p.Name, err)
		}
		n.uids.Store(string(created.UID), true)
	}
	for _, p := range pods {
		if err := podTimes[p.Name].waitRunning(ctx, podRunTimeout); err != nil {
			b.Fatalf("pod %s: %v\n%s\nagent log:\n%s", p.Name, err, n.podDebug(ctx, p.Name), n.agent.tail(40))
		}
	}
	echo, err := n.client.CoreV1().Pods(podNamespace).Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	sleeper, err := n.client.CoreV1().Pods(podNamespace).Get(ctx, "sleeper", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}

	pfURL := n.client.CoreV1().RESTClient().Post().Resource("pods").Namespace(podNamespace).Name("echo").SubResource("portforward").URL()
	spdyRT, spdyUp, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		b.Fatal(err)
	}
	spdyDialer := spdy.NewDialer(spdyUp, &http.Client{Transport: spdyRT}, http.MethodPost, pfURL)
	wsDialer, err := portforward.NewSPDYOverWebsocketDialer(pfURL, cfg)
	if err != nil {
		b.Fatal(err)
	}

	// The echo listens once nc has started; wait for it through the pod IP.
	echoAddr := net.JoinHostPort(echo.Status.PodIP, strconv.Itoa(streamEchoPort))
	if err := waitEcho(ctx, echoAddr, 30*time.Second); err != nil {
		b.Fatalf("echo pod at %s: %v", echoAddr, err)
	}

	b.ResetTimer()

	// 1. Port-forward throughput.
	direct, directState, err := startTLSEcho()
	if err != nil {
		b.Fatalf("direct TLS echo: %v", err)
	}
	defer direct.Close()
	apiState, err := probeTLS(cfg)
	if err != nil {
		b.Fatalf("TLS to the apiserver: %v", err)
	}
	pattern := make([]byte, 1<<20)
	rand.Read(pattern)
	type xfer struct {
		name, note string
		d          time.Duration
		use        podUse
		err        error
	}
	var xfers []xfer
	run := func(name, note string, dial func() (net.Conn, error)) xfer {
		// Warm up: a 1 MiB round on its own connection (for the forwarders,
		// the first stream on the tunnel), then the measured one.
		x := xfer{name: name, note: note}
		if c, err := dial(); err != nil {
			x.err = err
		} else if _, err := echoThrough(c, pattern, 1<<20); err != nil {
			x.err = fmt.Errorf("warm-up: %w", err)
		}
		if x.err == nil {
			c, err := dial()
			if err != nil {
				x.err = err
			} else {
				m := n.meter()
				x.d, x.err = echoThrough(c, pattern, streamBytes)
				x.use = n.meter().since(m)
			}
		}
		if x.err != nil {
			b.Errorf("port-forward %s: %v", name, x.err)
		}
		xfers = append(xfers, x)
		return x
	}
	dialDirect := func() (net.Conn, error) {
		return tls.Dial("tcp", direct.Addr().String(), &tls.Config{RootCAs: directState.pool, ServerName: "localhost"})
	}
	d1 := run("direct TLS over loopback (the limit)", "Go echo on 127.0.0.1", dialDirect)
	run("plain TCP to the pod IP", "no TLS, no apiserver: what the echo itself does", func() (net.Conn, error) {
		return net.DialTimeout("tcp", echoAddr, 5*time.Second)
	})
	relay, err := startRelayChain(echoAddr, directState)
	if err != nil {
		b.Fatalf("relay chain: %v", err)
	}
	defer relay.Close()
	run("the same hops, no SPDY: TCP→TLS→TLS→TCP relays", "in this process, to the pod IP", func() (net.Conn, error) {
		return net.Dial("tcp", relay.Addr().String())
	})
	for _, f := range []struct {
		name string
		d    httpstream.Dialer
	}{{"client-go SPDY (portforward.New)", spdyDialer}, {"client-go WebSocket tunnel", wsDialer}} {
		local, stop, err := startForwarder(ctx, f.d)
		if err != nil {
			b.Errorf("port-forward %s: %v", f.name, err)
			xfers = append(xfers, xfer{name: f.name, err: err})
			continue
		}
		run(f.name, "→ apiserver → kubelet → pod", func() (net.Conn, error) { return net.Dial("tcp", local) })
		stop()
	}
	kubectlNote := "kubectl " + kubectlVersion()
	if _, err := exec.LookPath("kubectl"); err != nil {
		fmt.Fprintf(out, "streaming: kubectl is not installed; no kubectl port-forward figure\n")
	} else if local, stop, err := startKubectlForward(ctx, kubeconfig, n.dir); err != nil {
		b.Errorf("kubectl port-forward: %v", err)
		xfers = append(xfers, xfer{name: "kubectl port-forward", err: err})
	} else {
		run("kubectl port-forward", kubectlNote, func() (net.Conn, error) { return net.Dial("tcp", local) })
		stop()
	}
	d2 := run("direct TLS over loopback, again", "after the others", dialDirect)
	limit := d1.d
	if d2.err == nil && (d1.err != nil || d2.d < limit) {
		limit = d2.d
	}

	// 2. Exec latency.
	execURL := n.client.CoreV1().RESTClient().Post().Resource("pods").Namespace(podNamespace).Name("sleeper").SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "c", Command: []string{"echo", "hi"}, Stdout: true, Stderr: true}, scheme.ParameterCodec).URL()
	spdyExec, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, execURL)
	if err != nil {
		b.Fatal(err)
	}
	wsExec, err := remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, execURL.String())
	if err != nil {
		b.Fatal(err)
	}
	type execRow struct {
		name            string
		first, roundTrp sample
		use             podUse
		err             error
	}
	var execRows []execRow
	for _, e := range []struct {
		name string
		ex   remotecommand.Executor
	}{{"client-go SPDY executor", spdyExec}, {"client-go WebSocket executor (v5)", wsExec}} {
		r := execRow{name: e.name}
		for range streamExecWarmup {
			if _, _, err := execOnce(ctx, e.ex); err != nil {
				r.err = fmt.Errorf("warm-up: %w", err)
				break
			}
		}
		var first, rt []time.Duration
		m := n.meter()
		for i := 0; r.err == nil && i < streamExecRuns; i++ {
			f, d, err := execOnce(ctx, e.ex)
			if err != nil {
				r.err = fmt.Errorf("exec %d: %w", i, err)
				break
			}
			first, rt = append(first, f), append(rt, d)
		}
		r.use = n.meter().since(m)
		r.first, r.roundTrp = durSampleOf(first), durSampleOf(rt)
		if r.err != nil {
			b.Errorf("exec %s: %v", e.name, r.err)
		}
		execRows = append(execRows, r)
	}
	// The limit: runc exec of the same container, from this process.
	runcRow := execRow{name: "runc exec (the limit)"}
	if id := containerID(sleeper); id == "" {
		runcRow.err = errors.New("the sleeper pod has no container ID")
	} else {
		var first, rt []time.Duration
		var m podMeter
		var c0 time.Duration
		for i := range streamExecWarmup + streamExecRuns {
			if i == streamExecWarmup {
				m, c0 = n.meter(), childrenCPU()
			}
			f, d, err := runcExecOnce(ctx, n.runcRoot(), id)
			if err != nil {
				runcRow.err = fmt.Errorf("runc exec %d: %w", i, err)
				break
			}
			if i >= streamExecWarmup {
				first, rt = append(first, f), append(rt, d)
			}
		}
		runcRow.use = n.meter().since(m)
		// runc is this process's child here: count it where the agent's
		// runc goes, and leave "other processes" to the rest.
		runcRow.use.agentChildren = childrenCPU() - c0
		runcRow.use.all -= runcRow.use.agentChildren
		runcRow.first, runcRow.roundTrp = durSampleOf(first), durSampleOf(rt)
	}
	if runcRow.err != nil {
		b.Errorf("%s: %v", runcRow.name, runcRow.err)
	}
	execRows = append(execRows, runcRow)

	// 3. logs -f line latency.
	logs, logErr := followLogLatency(ctx, n, streamLogLines)
	if logErr != nil {
		b.Errorf("logs -f: %v", logErr)
	}
	b.StopTimer()

	// Cleanup: delete the pods and wait until the agent has removed them.
	n.firstDelete = time.Now()
	for _, p := range pods {
		if err := n.client.CoreV1().Pods(podNamespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			b.Errorf("delete pod %s: %v", p.Name, err)
		}
	}
	for _, p := range pods {
		select {
		case <-podTimes[p.Name].goneCh:
		case <-time.After(2 * time.Minute):
			b.Errorf("pod %s not gone 2m after Delete", p.Name)
		}
	}
	if _, err := n.waitAgentClean(ctx, 2*time.Minute); err != nil {
		b.Errorf("agent cleanup: %v", err)
	}

	// Report.
	fmt.Fprintf(out, "\n== tether streaming benchmark (%s, GOMAXPROCS=%d, NumCPU=%d, %s) ==\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "one node: `tether server --disable-agent` and `tether agent` as separate processes on 127.0.0.1; pods from %s\n", busyboximage.Ref)
	fmt.Fprintf(out, "TLS: this process → apiserver %s; direct echo %s (both ECDSA P-256 leaf certificates)\n\n", apiState, directState.desc)

	fmt.Fprintf(out, "Port-forward to `nc -ll -p %d -e cat` in pod echo: %d MiB written and read back at once on one connection (time to the last byte back)\n", streamEchoPort, streamBytes>>20)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tMiB/s each way\ttime\t÷ direct TLS\tmachine cores busy\tCPU/MiB: machine\tserver\tagent\tthis process\t")
	mibs := func(d time.Duration) float64 { return float64(streamBytes>>20) / d.Seconds() }
	perMiB := func(d time.Duration) string { return us(d / time.Duration(streamBytes>>20)) }
	for _, x := range xfers {
		if x.err != nil {
			fmt.Fprintf(tw, "%s\tfailed: %v\t\t\t\t\t\t\t\n", x.name, x.err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t\n", x.name, mibs(x.d), x.d.Round(time.Millisecond), ratio(limit, x.d),
			x.use.cores(x.use.all), perMiB(x.use.all), perMiB(x.use.server), perMiB(x.use.agent+x.use.agentChildren), perMiB(x.use.own))
	}
	tw.Flush()
	fmt.Fprintf(out, "(the limit is the faster of the two direct runs; machine = all CPU time in /proc/stat, kernel softirq (loopback TCP), the pod's nc/cat, kubectl and other users of the machine included; server, agent and this process from /proc/<pid>/stat and getrusage, in 10 ms ticks)\n")

	fmt.Fprintf(out, "\nExec `echo hi` in pod sleeper, %d times per executor after %d warm-ups, one at a time; first byte = Stream start → first stdout byte, round trip = Stream start → Stream returned\n", streamExecRuns, streamExecWarmup)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "executor\tfirst byte p50\tp99\tround trip p50\tp99\tmax\tCPU/exec: server\tagent (+ runc)\tthis process\tother processes (cores)\t")
	for _, r := range execRows {
		if r.err != nil && len(r.roundTrp.lat) == 0 {
			fmt.Fprintf(tw, "%s\tfailed: %v\t\t\t\t\t\t\t\n", r.name, r.err)
			continue
		}
		k := time.Duration(len(r.roundTrp.lat))
		srv, ag, own, other := "", "", "", ""
		if r.use.wall > 0 {
			srv = ms(r.use.server / k)
			ag = fmt.Sprintf("%s + %s", ms(r.use.agent/k), ms(r.use.agentChildren/k))
			own = ms(r.use.own / k)
			other = fmt.Sprintf("%.2f", r.use.otherCores())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name, ms(r.first.pct(0.5)), ms(r.first.pct(0.99)),
			ms(r.roundTrp.pct(0.5)), ms(r.roundTrp.pct(0.99)), ms(r.roundTrp.pct(1)), srv, ag, own, other)
	}
	tw.Flush()

	fmt.Fprintf(out, "\nlogs -f (pods/log?follow=true&timestamps=true) of pod ticker, which prints its wall-clock time every 20–120 ms; %d lines\n", len(logs.fromPod.lat))
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "from\tp50\tp99\tmax\t")
	if len(logs.fromPod.lat) > 0 {
		fmt.Fprintf(tw, "the pod's clock reading (adjtimex) → line read here\t%s\t%s\t%s\t\n", ms(logs.fromPod.pct(0.5)), ms(logs.fromPod.pct(0.99)), ms(logs.fromPod.pct(1)))
		fmt.Fprintf(tw, "the log file's timestamp (shim) → line read here\t%s\t%s\t%s\t\n", ms(logs.fromShim.pct(0.5)), ms(logs.fromShim.pct(0.99)), ms(logs.fromShim.pct(1)))
		fmt.Fprintf(tw, "the pod's clock reading → the log file's timestamp\t%s\t%s\t%s\t\n", ms(logs.podToShim.pct(0.5)), ms(logs.podToShim.pct(0.99)), ms(logs.podToShim.pct(1)))
	}
	tw.Flush()

	// Targets.
	fmt.Fprintf(out, "\nTargets (2 cores, shared by server, agent, pods, kubectl and this process)\n")
	type target struct {
		name, figure string
		ok           bool
	}
	var targets []target
	var hops time.Duration
	for _, x := range xfers {
		if strings.HasPrefix(x.name, "the same hops") && x.err == nil {
			hops = x.d
		}
	}
	for _, x := range xfers {
		if !strings.HasPrefix(x.name, "client-go") && !strings.HasPrefix(x.name, "kubectl") {
			continue
		}
		name := "port-forward ≥80% of direct TLS, " + strings.TrimSuffix(strings.TrimPrefix(x.name, "client-go "), " (portforward.New)")
		if x.err != nil {
			targets = append(targets, target{name, "failed: " + x.err.Error(), false})
			continue
		}
		fig := fmt.Sprintf("%.0f MiB/s vs %.0f MiB/s = %.0f %%", mibs(x.d), mibs(limit), 100*ratio(limit, x.d))
		if hops > 0 {
			fig += fmt.Sprintf(" (%.0f %% of the same hops without SPDY)", 100*ratio(hops, x.d))
		}
		targets = append(targets, target{name, fig, ratio(limit, x.d) >= streamPFTarget})
	}
	for _, r := range execRows[:2] {
		name := "exec p99 ≤50ms, " + strings.TrimPrefix(r.name, "client-go ")
		if r.err != nil {
			targets = append(targets, target{name, "failed: " + r.err.Error(), false})
			continue
		}
		targets = append(targets, target{name, fmt.Sprintf("round trip p99 %s (p50 %s), first byte p99 %s; %.2f× the target; runc exec alone p50 %s", ms(r.roundTrp.pct(0.99)), ms(r.roundTrp.pct(0.5)), ms(r.first.pct(0.99)), ratio(r.roundTrp.pct(0.99), streamExecTarget), ms(runcRow.roundTrp.pct(0.5))), r.roundTrp.pct(0.99) <= streamExecTarget})
	}
	if logErr != nil {
		targets = append(targets, target{"logs -f line p99 ≤200ms", "failed: " + logErr.Error(), false})
	} else {
		targets = append(targets, target{"logs -f line p99 ≤200ms", fmt.Sprintf("p99 %s (p50 %s, max %s) from the pod's clock; %.2f× the target", ms(logs.fromPod.pct(0.99)), ms(logs.fromPod.pct(0.5)), ms(logs.fromPod.pct(1)), ratio(logs.fromPod.pct(0.99), streamLogTarget)), logs.fromPod.pct(0.99) <= streamLogTarget})
	}
	for _, t := range targets {
		verdict := "PASS"
		if !t.ok {
			verdict = "MISS"
		}
		fmt.Fprintf(out, "  %s  %-45s %s\n", verdict, t.name, t.figure)
	}
	fmt.Fprintln(out)

	for _, x := range xfers {
		if x.err == nil {
			switch {
			case strings.HasPrefix(x.name, "client-go SPDY"):
				b.ReportMetric(mibs(x.d), "pf_spdy_MiB/s")
			case strings.HasPrefix(x.name, "client-go WebSocket"):
				b.ReportMetric(mibs(x.d), "pf_ws_MiB/s")
			case strings.HasPrefix(x.name, "kubectl"):
				b.ReportMetric(mibs(x.d), "pf_kubectl_MiB/s")
			}
		}
	}
	if limit > 0 {
		b.ReportMetric(mibs(limit), "direct_tls_MiB/s")
	}
	if len(execRows[0].roundTrp.lat) > 0 {
		b.ReportMetric(msf(execRows[0].roundTrp.pct(0.99)), "exec_spdy_p99_ms")
	}
	if len(execRows[1].roundTrp.lat) > 0 {
		b.ReportMetric(msf(execRows[1].roundTrp.pct(0.99)), "exec_ws_p99_ms")
	}
	if len(logs.fromPod.lat) > 0 {
		b.ReportMetric(msf(logs.fromPod.pct(0.99)), "logs_p99_ms")
	}
}

// streamPod is a pod of BenchmarkStreaming. It carries BenchmarkPods'
// label, so podNode's cleanup deletes it after a failed run.
func streamPod(name string, cmd ...string) *corev1.Pod {
	grace := int64(podGrace)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: podNamespace, Labels: map[string]string{"app": "bench-pods"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "c", Image: busyboximage.Ref, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: cmd,
			}},
		},
	}
}

// containerID is the runtime's ID of a pod's first container (without the
// "<runtime>://" prefix).
func containerID(p *corev1.Pod) string {
	if len(p.Status.ContainerStatuses) == 0 {
		return ""
	}
	id := p.Status.ContainerStatuses[0].ContainerID
	if _, rest, ok := strings.Cut(id, "://"); ok {
		return rest
	}
	return id
}

// waitEcho waits until a TCP echo at addr answers.
func waitEcho(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 5)
			if _, err = c.Write([]byte("ping\n")); err == nil {
				_, err = io.ReadFull(c, buf)
			}
			c.Close()
			if err == nil && string(buf) == "ping\n" {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no echo within %s: %v", timeout, err)
}

// echoThrough writes total bytes of pattern (repeated) to c while reading
// them back, checks every byte, and returns the time until the last one
// came back. It closes c.
func echoThrough(c net.Conn, pattern []byte, total int) (time.Duration, error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(streamXferTimeout))
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		for sent := 0; sent < total; {
			off := sent % len(pattern)
			n := min(streamChunk, total-sent, len(pattern)-off)
			if _, err := c.Write(pattern[off : off+n]); err != nil {
				werr <- err
				return
			}
			sent += n
		}
		werr <- nil
	}()
	buf := make([]byte, 256<<10)
	for got := 0; got < total; {
		n, err := c.Read(buf[:min(len(buf), total-got)])
		for k := 0; k < n; {
			off := (got + k) % len(pattern)
			m := min(n-k, len(pattern)-off)
			if !bytes.Equal(buf[k:k+m], pattern[off:off+m]) {
				return 0, fmt.Errorf("byte %d: the echo differs", got+k)
			}
			k += m
		}
		got += n
		if err != nil && got < total {
			return 0, fmt.Errorf("after %d of %d bytes back: %w", got, total, err)
		}
	}
	d := time.Since(start)
	return d, <-werr
}

// tlsEcho is the direct TLS echo server: Go's default TLS settings (the
// apiserver's and the kubelet's are the same apart from the TLS 1.2 cipher
// list) with an ECDSA P-256 certificate, as pki issues.
type tlsEcho struct {
	pool *x509.CertPool
	cert tls.Certificate
	desc string
}

func startTLSEcho() (net.Listener, tlsEcho, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tlsEcho{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, tlsEcho{}, err
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		return nil, tlsEcho{}, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	// One handshake to learn the parameters.
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		ln.Close()
		return nil, tlsEcho{}, err
	}
	d := tlsDesc(c.ConnectionState())
	c.Close()
	return ln, tlsEcho{pool: pool, cert: cert, desc: d}, nil
}

// probeTLS describes the TLS connection this process's admin client gets
// from the apiserver.
func probeTLS(cfg *rest.Config) (string, error) {
	tc, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return "", err
	}
	host := strings.TrimPrefix(cfg.Host, "https://")
	c, err := tls.Dial("tcp", host, tc)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return tlsDesc(c.ConnectionState()), nil
}

func tlsDesc(cs tls.ConnectionState) string {
	return fmt.Sprintf("%s %s %s", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), cs.CurveID)
}

// startForwarder runs a client-go PortForwarder on 127.0.0.1:<free> to the
// echo pod's port and returns its address and a function that stops it.
func startForwarder(ctx context.Context, d httpstream.Dialer) (string, func(), error) {
	fctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesWithContext(fctx, d, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(streamEchoPort)}, ready, io.Discard, io.Discard)
	if err != nil {
		cancel()
		return "", nil, err
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		return "", nil, fmt.Errorf("ForwardPorts: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		return "", nil, errors.New("not ready within 30s")
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		cancel()
		return "", nil, fmt.Errorf("GetPorts: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))), func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}, nil
}

var kubectlForwarding = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> `)

// startKubectlForward runs `kubectl port-forward pod/echo :8080` with the
// admin kubeconfig and returns its local address and a function that stops
// it.
func startKubectlForward(ctx context.Context, kubeconfig, dir string) (string, func(), error) {
	logPath := filepath.Join(dir, "kubectl-port-forward.log")
	f, err := os.Create(logPath)
	if err != nil {
		return "", nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		f.Close()
		return "", nil, err
	}
	cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "-n", podNamespace, "port-forward", "--address", "127.0.0.1", "pod/echo", ":"+strconv.Itoa(streamEchoPort))
	cmd.Stdout, cmd.Stderr = pw, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		f.Close()
		return "", nil, err
	}
	pw.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		pr.Close()
	}
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := kubectlForwarding.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case port <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case p := <-port:
		return net.JoinHostPort("127.0.0.1", p), stop, nil
	case <-exited:
		data, _ := os.ReadFile(logPath)
		stop()
		return "", nil, fmt.Errorf("kubectl exited: %s", bytes.TrimSpace(data))
	case <-time.After(30 * time.Second):
		stop()
		return "", nil, errors.New("kubectl printed no forwarding address within 30s")
	case <-ctx.Done():
		stop()
		return "", nil, ctx.Err()
	}
}

func kubectlVersion() string {
	out, err := exec.Command("kubectl", "version", "--client", "-o", "json").Output()
	if err != nil {
		return "(version unknown)"
	}
	if m := regexp.MustCompile(`"gitVersion":\s*"([^"]+)"`).FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return "(version unknown)"
}

// firstByte is an io.Writer that notes when it was first written to.
type firstByte struct {
	at  atomic.Pointer[time.Time]
	buf bytes.Buffer
	mu  sync.Mutex
}

func (f *firstByte) Write(p []byte) (int, error) {
	if len(p) > 0 && f.at.Load() == nil {
		now := time.Now()
		f.at.CompareAndSwap(nil, &now)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.Write(p)
}

// execOnce runs the executor's command (echo hi) and returns the time to
// the first stdout byte and to the end of the stream.
func execOnce(ctx context.Context, ex remotecommand.Executor) (first, total time.Duration, err error) {
	var stdout, stderr firstByte
	start := time.Now()
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	total = time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("%w (stderr %q)", err, stderr.buf.String())
	}
	if got := stdout.buf.String(); got != "hi\n" {
		return 0, 0, fmt.Errorf("stdout %q, want \"hi\\n\"", got)
	}
	return stdout.at.Load().Sub(start), total, nil
}

// runcExecOnce runs `runc exec <id> echo hi` as the kubelet's runtime does
// and returns the time to the first stdout byte and to its exit.
func runcExecOnce(ctx context.Context, root, id string) (first, total time.Duration, err error) {
	var stdout, stderr firstByte
	cmd := exec.CommandContext(ctx, "runc", "--root", root, "exec", id, "echo", "hi")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	total = time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %s", err, stderr.buf.String())
	}
	if got := stdout.buf.String(); got != "hi\n" {
		return 0, 0, fmt.Errorf("stdout %q", got)
	}
	return stdout.at.Load().Sub(start), total, nil
}

type logLatency struct {
	fromPod, fromShim, podToShim sample
}

// followLogLatency follows pod ticker's log with timestamps and, for each
// line written after the stream opened, takes the time from the clock
// reading in the line, and from the log file's timestamp, to its arrival
// here.
func followLogLatency(ctx context.Context, n *podNode, lines int) (logLatency, error) {
	var ll logLatency
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	opened := time.Now()
	rc, err := n.client.CoreV1().Pods(podNamespace).GetLogs("ticker", &corev1.PodLogOptions{Container: "c", Follow: true, Timestamps: true}).Stream(sctx)
	if err != nil {
		return ll, err
	}
	defer rc.Close()
	var fromPod, fromShim, podToShim []time.Duration
	br := bufio.NewReader(rc)
	bad := 0
	for len(fromPod) < lines {
		line, err := br.ReadString('\n')
		now := time.Now()
		if err != nil {
			return ll, fmt.Errorf("after %d lines: %w", len(fromPod), err)
		}
		ts, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		shimT, terr := time.Parse(time.RFC3339Nano, ts)
		usec, verr := strconv.ParseInt(val, 10, 64)
		if !ok || terr != nil || verr != nil {
			if bad++; bad > 10 {
				return ll, fmt.Errorf("unexpected log lines, such as %q", line)
			}
			continue
		}
		podT := time.UnixMicro(usec)
		if podT.Before(opened) {
			continue // written before the stream opened: replayed, not followed
		}
		fromPod = append(fromPod, now.Sub(podT))
		fromShim = append(fromShim, now.Sub(shimT))
		podToShim = append(podToShim, shimT.Sub(podT))
	}
	ll.fromPod, ll.fromShim, ll.podToShim = durSampleOf(fromPod), durSampleOf(fromShim), durSampleOf(podToShim)
	return ll, nil
}

// startRelayChain is the port-forward path's hops without SPDY, WebSocket,
// HTTP or the API: a plain TCP listener (as the local forwarder) relays
// each connection over TLS to a second relay (as the apiserver), which
// relays it over another TLS connection to a third (as the kubelet), which
// relays it over TCP to the pod's echo. All three run in this process with
// the direct echo's TLS settings and io.Copy.
func startRelayChain(echoAddr string, st tlsEcho) (net.Listener, error) {
	cert := st.cert
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	clientTLS := &tls.Config{RootCAs: st.pool, ServerName: "localhost"}
	kubelet, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		return nil, err
	}
	apiserver, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		kubelet.Close()
		return nil, err
	}
	local, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		kubelet.Close()
		apiserver.Close()
		return nil, err
	}
	go relayTo(kubelet, func() (net.Conn, error) { return net.Dial("tcp", echoAddr) })
	go relayTo(apiserver, func() (net.Conn, error) { return tls.Dial("tcp", kubelet.Addr().String(), clientTLS) })
	go relayTo(local, func() (net.Conn, error) { return tls.Dial("tcp", apiserver.Addr().String(), clientTLS) })
	return &multiListener{Listener: local, others: []net.Listener{apiserver, kubelet}}, nil
}

// relayTo accepts connections on ln and copies each both ways to a
// connection from dial, passing half-closes on, until ln is closed.
func relayTo(ln net.Listener, dial func() (net.Conn, error)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := dial()
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			cp := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
				done <- struct{}{}
			}
			go cp(up, c)
			go cp(c, up)
			<-done
			<-done
		}()
	}
}

type multiListener struct {
	net.Listener
	others []net.Listener
}

func (m *multiListener) Close() error {
	for _, l := range m.others {
		l.Close()
	}
	return m.Listener.Close()
}

// childrenCPU is the CPU time (user + system) of this process's waited-for
// children.
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
