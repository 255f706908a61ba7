package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"tether/internal/memlimit"
	"tether/kubelet"
	"tether/kubelet/bootstrap"
	"tether/pki"
	"tether/test/framework"
)

// The shape of the node benchmarks.
const (
	joinRuns    = 20              // sequential joins in BenchmarkJoin
	joinTarget  = 2 * time.Second // target: p99 agent start → Node Ready
	joinTimeout = time.Minute     // give up on one join after this

	hollowConcurrency = 20               // joins in flight while the fleet grows
	hollowSettle      = 20 * time.Second // after the last join, before measuring
	hollowWindow      = 30 * time.Second // steady-state measurement window
	hollowBudget      = 8 * time.Minute  // whole hollow run, the binary's build aside
	hollowJoinTimeout = 2 * time.Minute  // one hollow join
	hollowCPUTarget   = 0.5              // cores, at the largest N
	hollowRSSTarget   = 500e6            // bytes (500 MB), at the largest N
	nodeTokenTTL      = time.Hour
	serverReadyLine   = "tether server is ready at "
	// hollowClusterCIDR holds a /24 for each of 1,024 nodes: the default
	// 10.244.0.0/16 has room for 256, and the node IPAM controller then
	// warns and records an Event for every other node on each of its
	// status updates, which is load of its own.
	hollowClusterCIDR = "10.128.0.0/14"
	clockTick         = 10 * time.Millisecond // USER_HZ = 100
)

// hollowSizes are the fleet sizes measured, cumulatively.
var hollowSizes = []int{100, 500, 1000}

// BenchmarkJoin joins joinRuns real node agents, one after the other, to an
// in-process control plane (with its real CSR approver and signer) and
// measures the time from starting an agent to an admin watch seeing its
// Node with Ready=True, with the agent's own steps in between. It ignores
// b.N beyond one run.
func BenchmarkJoin(b *testing.B) {
	ctx := b.Context()
	out := os.Stdout
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(200))
	}

	cl := framework.StartCluster(b)
	token := joinToken(ctx, b, cl.Client, "bench: BenchmarkJoin")
	pin := pki.Pin(cl.ControlPlane.PKI().ServerCA.Cert)
	rw := startReadyWatch(ctx, b, cl.Client)
	dirs := b.TempDir()

	b.ResetTimer()
	m0, t0 := readMeter(), time.Now()
	var results []joinResult
	var stops []func() error
	for i := range joinRuns {
		name := fmt.Sprintf("join-%02d", i)
		r, stop := joinOnce(ctx, rw, kubelet.Config{
			Server:       cl.URL,
			Token:        token,
			CACertHashes: []string{pin},
			DataDir:      filepath.Join(dirs, name),
			NodeName:     name,
			NodeIP:       net.IPv4(127, 0, 0, 1),
		})
		results = append(results, r)
		stops = append(stops, stop)
	}
	m1, wall := readMeter(), time.Since(t0)
	b.StopTimer()
	// Stop the agents once their serving certificates have had time to
	// arrive, so that none is stopped in the middle of its CSR.
	time.Sleep(time.Second)
	for i, stop := range stops {
		if err := stop(); err != nil && results[i].err == nil {
			results[i].err = fmt.Errorf("Run after stop: %w", err)
		}
	}

	// Report.
	fmt.Fprintf(out, "\n== tether node join benchmark (%s, GOMAXPROCS=%d, NumCPU=%d, %s) ==\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "%d sequential joins of a real kubelet.Agent (own data dir, ECDSA key, client CSR, kubelet HTTPS on 127.0.0.1:0) against an in-process control plane at %s\n", joinRuns, cl.URL)
	fmt.Fprintf(out, "(embedded etcd, real CSR approver and signer); one bootstrap token whose cluster-info signature exists before the first join; the agents keep running (heartbeats every %s) until the last has joined\n", kubelet.DefaultHeartbeatInterval)
	fmt.Fprintf(out, "times are from agent start; steps are the agent's progress lines; Ready is the first admin-informer event with Ready=True\n\n")

	var failed []joinResult
	var ok []joinResult
	for _, r := range results {
		if r.err != nil {
			failed = append(failed, r)
		} else {
			ok = append(ok, r)
		}
	}
	step := func(f func(r joinResult) time.Duration) sample {
		var s sample
		for _, r := range ok {
			s.lat = append(s.lat, f(r))
		}
		slices.Sort(s.lat)
		return s
	}
	stepNames := [bootstrap.Steps + 1]string{"",
		"1 cluster-info fetched, JWS and CA pin verified",
		"2 key generated, client CSR submitted",
		"3 CSR approved and signed",
		"4 kubeconfig, key and certificate written",
		"5 Node registered, Lease written (agent Ready)",
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step (time since the previous one)\tp50\tp99\tmax\t")
	for k := 1; k <= bootstrap.Steps; k++ {
		s := step(func(r joinResult) time.Duration { return r.steps[k] - r.steps[k-1] })
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", stepNames[k], ms(s.pct(0.5)), ms(s.pct(0.99)), ms(s.pct(1)))
	}
	agentReady := step(func(r joinResult) time.Duration { return r.agentReady })
	watchReady := step(func(r joinResult) time.Duration { return r.watchReady })
	fmt.Fprintf(tw, "total: agent start → agent Ready()\t%s\t%s\t%s\t\n", ms(agentReady.pct(0.5)), ms(agentReady.pct(0.99)), ms(agentReady.pct(1)))
	fmt.Fprintf(tw, "total: agent start → Node Ready=True seen by admin watch\t%s\t%s\t%s\t\n", ms(watchReady.pct(0.5)), ms(watchReady.pct(0.99)), ms(watchReady.pct(1)))
	tw.Flush()
	var each []string
	for _, r := range ok {
		each = append(each, ms(r.watchReady))
	}
	fmt.Fprintf(out, "(each join, in order: %s)\n", strings.Join(each, " "))
	own := m1.own - m0.own
	fmt.Fprintf(out, "(p99 of %d samples is the slowest; this process (server + agents) used %.0f ms CPU per join; other processes used %.2f cores meanwhile)\n",
		len(ok), msf(own/time.Duration(max(len(results), 1))), max((m1.all-m0.all-own).Seconds()/wall.Seconds(), 0))
	for _, r := range failed {
		fmt.Fprintf(out, "FAILED join %s: %v\n", r.name, r.err)
		b.Errorf("join %s: %v", r.name, r.err)
	}

	verdict := "PASS"
	if len(failed) > 0 || watchReady.pct(0.99) > joinTarget {
		verdict = "MISS"
	}
	fmt.Fprintf(out, "\nTargets (2 cores)\n")
	fmt.Fprintf(out, "  %s  %-45s p50 %s, p99 %s, max %s (%d/%d joined)\n\n", verdict, "join (agent start → Node Ready) p99 ≤2s",
		ms(watchReady.pct(0.5)), ms(watchReady.pct(0.99)), ms(watchReady.pct(1)), len(ok), len(results))

	b.ReportMetric(msf(watchReady.pct(0.5)), "join_p50_ms")
	b.ReportMetric(msf(watchReady.pct(0.99)), "join_p99_ms")
}

// joinResult is one join of BenchmarkJoin.
type joinResult struct {
	name  string
	steps [bootstrap.Steps + 1]time.Duration // progress step k, since start
	// agentReady is when Agent.Ready was closed, watchReady when the admin
	// informer first saw the Node Ready.
	agentReady, watchReady time.Duration
	err                    error
}

// joinOnce starts one agent and waits until it is Ready and the admin
// watch has seen its Node Ready. The agent keeps running; stop stops it
// and reports how Run ended.
func joinOnce(ctx context.Context, rw *readyWatch, cfg kubelet.Config) (res joinResult, stop func() error) {
	res.name = cfg.NodeName
	stop = func() error { return nil }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		res.err = err
		return res, stop
	}
	steps := &stepClock{}
	cfg.Listener, cfg.Progress = ln, steps
	a, err := kubelet.New(cfg)
	if err != nil {
		ln.Close()
		res.err = err
		return res, stop
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	start := time.Now()
	steps.begin(start)
	go func() { done <- a.Run(actx) }()
	stop = func() error {
		cancel()
		select {
		case err := <-done:
			done <- err
			return err
		case <-time.After(30 * time.Second):
			return errors.New("agent did not stop within 30s")
		}
	}

	readyCh, watchCh := a.Ready(), rw.seen(cfg.NodeName)
	timeout := time.After(joinTimeout)
	for (readyCh != nil || watchCh != nil) && res.err == nil {
		select {
		case <-readyCh:
			res.agentReady, readyCh = time.Since(start), nil
		case <-watchCh:
			res.watchReady, watchCh = rw.at(cfg.NodeName).Sub(start), nil
		case err := <-done:
			res.err = fmt.Errorf("agent stopped before it was Ready: %v; progress:\n%s", err, steps.text())
			done <- err
		case <-timeout:
			res.err = fmt.Errorf("not Ready after %s; progress:\n%s", joinTimeout, steps.text())
		case <-ctx.Done():
			res.err = ctx.Err()
		}
	}
	res.steps = steps.since()
	return res, stop
}

// stepClock is an agent's Progress writer that notes when each numbered
// step ("[k/N] …") was printed.
type stepClock struct {
	mu    sync.Mutex
	start time.Time
	at    [bootstrap.Steps + 1]time.Time
	buf   bytes.Buffer
}

func (s *stepClock) begin(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start, s.at[0] = t, t
}

func (s *stepClock) Write(p []byte) (int, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var k, n int
	if _, err := fmt.Sscanf(string(p), "[%d/%d]", &k, &n); err == nil && k >= 1 && k <= bootstrap.Steps && s.at[k].IsZero() {
		s.at[k] = now
	}
	fmt.Fprintf(&s.buf, "%8s %s", ms(now.Sub(s.start)), p)
	return len(p), nil
}

// since returns each step's time since the start; a step not printed gets
// the previous step's time.
func (s *stepClock) since() [bootstrap.Steps + 1]time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d [bootstrap.Steps + 1]time.Duration
	for k := 1; k <= bootstrap.Steps; k++ {
		if s.at[k].IsZero() {
			d[k] = d[k-1]
			continue
		}
		d[k] = s.at[k].Sub(s.start)
	}
	return d
}

func (s *stepClock) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// readyWatch notes when an admin informer first sees each Node Ready=True.
type readyWatch struct {
	mu      sync.Mutex
	readyAt map[string]time.Time
	waiters map[string]chan struct{}
}

func startReadyWatch(ctx context.Context, b *testing.B, client kubernetes.Interface) *readyWatch {
	b.Helper()
	rw := &readyWatch{readyAt: map[string]time.Time{}, waiters: map[string]chan struct{}{}}
	f := informers.NewSharedInformerFactory(client, 0)
	inf := f.Core().V1().Nodes().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { rw.observe(obj) },
		UpdateFunc: func(_, obj any) { rw.observe(obj) },
	}); err != nil {
		b.Fatalf("node informer: %v", err)
	}
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			b.Fatalf("node informer %v did not sync", typ)
		}
	}
	return rw
}

func (rw *readyWatch) observe(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok || !isNodeReady(n) {
		return
	}
	now := time.Now()
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if _, seen := rw.readyAt[n.Name]; seen {
		return
	}
	rw.readyAt[n.Name] = now
	if c, ok := rw.waiters[n.Name]; ok {
		close(c)
	}
}

// seen returns a channel closed once the Node name has been seen Ready.
func (rw *readyWatch) seen(name string) <-chan struct{} {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	c, ok := rw.waiters[name]
	if !ok {
		c = make(chan struct{})
		rw.waiters[name] = c
		if _, seen := rw.readyAt[name]; seen {
			close(c)
		}
	}
	return c
}

func (rw *readyWatch) at(name string) time.Time {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.readyAt[name]
}

func isNodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// joinToken creates a bootstrap token and waits until the server has signed
// cluster-info for it, so that no join waits for the signature.
func joinToken(ctx context.Context, b *testing.B, client kubernetes.Interface, desc string) string {
	b.Helper()
	token, err := bootstrap.CreateToken(ctx, client, nodeTokenTTL, desc)
	if err != nil {
		b.Fatalf("CreateToken: %v", err)
	}
	id, _, _ := strings.Cut(token, ".")
	deadline := time.Now().Add(30 * time.Second)
	for {
		cm, err := client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
		if err == nil && cm.Data[bootstrapapi.JWSSignatureKeyPrefix+id] != "" {
			return token
		}
		if time.Now().After(deadline) {
			b.Fatalf("cluster-info not signed for token %s after 30s (last error: %v)", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkHollowNodes runs `tether server` as a separate process and, in
// this process, a growing fleet of real node agents (each its own key, its
// client and serving certificates through the CSR API, its own TLS
// connection, a Lease renewed every 10 s, the Node's status every minute).
// At each fleet size it measures the server process's CPU and memory in
// steady state from /proc. It ignores b.N beyond one run.
func BenchmarkHollowNodes(b *testing.B) {
	ctx := b.Context()
	out := os.Stdout
	bin, buildTime := tetherBinary(b)
	begin := time.Now()
	srv := startTetherServer(b, bin)
	fmt.Fprintf(out, "hollow: server pid %d ready at %s (binary %s%s)\n", srv.pid, srv.url, bin, buildTime)

	admin, err := clientcmd.BuildConfigFromFlags("", srv.kubeconfig)
	if err != nil {
		b.Fatalf("admin kubeconfig: %v", err)
	}
	admin.QPS, admin.Burst = -1, 0
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		b.Fatalf("admin client: %v", err)
	}
	ca, err := pki.ParseCertPEM(admin.CAData)
	if err != nil {
		b.Fatalf("server CA in %s: %v", srv.kubeconfig, err)
	}
	token := joinToken(ctx, b, client, "bench: BenchmarkHollowNodes")
	fleet := newHollowFleet(b, srv.url, token, pki.Pin(ca))

	b.ResetTimer()
	var rows []hollowRow
	lg0 := readLoadGen()
	steady := func(r *hollowRow) {
		g0 := scrapeGoStats(ctx, client)
		warn0 := fleet.warn.n.Load()
		if r.win, err = measureTetherServer(ctx, srv, hollowWindow); err != nil {
			b.Fatalf("measure the server at N=%d: %v", r.n, err)
		}
		r.warnings = fleet.warn.n.Load() - warn0
		r.gostats = scrapeGoStats(ctx, client)
		r.gcCPU = r.gostats.gcCPU - g0.gcCPU
		r.etcdDB = etcdDBSize(srv.dataDir)
		r.health = fleet.health(ctx, client)
		r.lg = readLoadGen()
	}

	// The idle server, for reference.
	if !sleepCtx(ctx, 10*time.Second) {
		b.Fatal(ctx.Err())
	}
	idle := hollowRow{n: 0}
	steady(&idle)
	rows = append(rows, idle)
	fmt.Fprintf(out, "hollow: N=0: server %.1f%% of a core, RSS %d MiB\n", 100*idle.win.serverCores(), idle.win.end.rss/mib)

	var stopped string
	for _, n := range hollowSizes {
		// Estimate the next stage from the join rate so far.
		remaining := hollowBudget - time.Since(begin)
		need := hollowSettle + hollowWindow + 30*time.Second
		if last := rows[len(rows)-1]; last.join.rate() > 0 {
			need += time.Duration(float64(n-last.n) / last.join.rate() * float64(time.Second))
		}
		if need > remaining {
			stopped = fmt.Sprintf("stopped before N=%d: it would take about %s and %s of the %s budget remain", n, need.Round(time.Second), remaining.Round(time.Second), hollowBudget)
			break
		}
		r := hollowRow{n: n}
		jw, err := srv.beginWindow()
		if err != nil {
			b.Fatal(err)
		}
		r.join = fleet.grow(ctx, n)
		if r.joinWin, err = srv.endWindow(jw); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(out, "hollow: N=%d: %d joins in %s (%.1f nodes/s, p50 %s, p99 %s), %d failed\n",
			n, len(r.join.lat)+r.join.errs, r.join.wall.Round(100*time.Millisecond), r.join.rate(), ms(r.join.pct(0.5)), ms(r.join.pct(0.99)), r.join.errs)
		if r.join.errs > 0 {
			b.Errorf("N=%d: %d joins failed, first: %v", n, r.join.errs, r.join.firstErr)
		}
		r.servingIssued, r.servingWait = waitServingCerts(ctx, client, fleet.size()-int(fleet.failed.Load()), 2*time.Minute)
		if !sleepCtx(ctx, hollowSettle) {
			b.Fatal(ctx.Err())
		}
		steady(&r)
		rows = append(rows, r)
		fmt.Fprintf(out, "hollow: N=%d: server %.1f%% of a core, RSS %d MiB, %.0f req/s; %d/%d Ready, %d fresh leases\n",
			n, 100*r.win.serverCores(), r.win.end.rss/mib, r.win.audit.rate(), r.health.ready, n, r.health.freshLeases)
	}

	// An optional profile of the server at the largest N, outside the
	// measured windows: perf samples the separate process.
	var perfNote string
	if dir := os.Getenv("TETHER_BENCH_PERF"); dir != "" {
		perfNote = perfRecord(ctx, srv.pid, dir, 20*time.Second)
	}
	if dir := os.Getenv("TETHER_BENCH_HEAP"); dir != "" {
		perfNote += heapProfile(ctx, client, dir)
	}
	events := eventSummary(ctx, client)
	b.StopTimer()

	// Report.
	last := rows[len(rows)-1]
	fmt.Fprintf(out, "\n== tether hollow-node benchmark (%s, GOMAXPROCS=%d, NumCPU=%d, %s) ==\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())
	gogc := "GOGC=200 as the binary sets it"
	if v := os.Getenv("GOGC"); v != "" {
		gogc = "GOGC=" + v + " from the environment"
	}
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		gogc += ", GOMEMLIMIT=" + v + " from the environment"
	} else {
		gogc += fmt.Sprintf(", soft memory limit max(%d MiB, non-heap + 1.25 × live heap) as the binary sets it", memlimit.Floor>>20)
	}
	fmt.Fprintf(out, "server: `tether server --disable-agent --cluster-cidr %s` as its own process (pid %d; embedded etcd, audit log on, %s) at %s\n", hollowClusterCIDR, srv.pid, gogc, srv.url)
	fmt.Fprintf(out, "nodes: real kubelet.Agents in the benchmark process, joined %d at a time through the real CSR flow (client + serving CSR each), one bootstrap token;\n", hollowConcurrency)
	fmt.Fprintf(out, "       each has its own ECDSA keys, its own HTTP/2+TLS connection, a kubelet HTTPS listener on 127.0.0.1:0, Lease renewal and Node GET every %s, status update every %s\n",
		kubelet.DefaultHeartbeatInterval, kubelet.DefaultStatusReportInterval)
	fmt.Fprintf(out, "server CPU = Δ(utime+stime) of the server's /proc/<pid>/stat; steady state is a %s window %s after the last join; RSS = VmRSS at the window's end; req/s from the server's audit log\n",
		hollowWindow, hollowSettle)
	fmt.Fprintf(out, "etcd runs inside the server process: its share is included and cannot be told apart from /proc\n")

	fmt.Fprintf(out, "\nJoining (agent start → Agent.Ready; server figures over the whole join phase)\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "N\tjoins\ttime\tnodes/s\tp50\tp99\tfailed\tserving certs issued\t\tserver CPU\treq/s\tby controllers\t\tload gen\tbg\t")
	for _, r := range rows[1:] {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%.1f\t%s\t%s\t%d\t%d (+%s)\t\t%.0f%%\t%.0f\t%.0f\t\t%.2f\t%.2f\t\n", r.n, len(r.join.lat)+r.join.errs,
			r.join.wall.Round(100*time.Millisecond), r.join.rate(), ms(r.join.pct(0.5)), ms(r.join.pct(0.99)), r.join.errs,
			r.servingIssued, r.servingWait.Round(100*time.Millisecond),
			100*r.joinWin.serverCores(), r.joinWin.audit.rate(), r.joinWin.audit.rateBy(controllerUser), r.joinWin.ownCores(), r.joinWin.otherCores())
	}
	tw.Flush()

	fmt.Fprintf(out, "\nSteady state\n")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "N\tserver CPU\tof it GC\t\tRSS\tanon\tfile\tpeak\theap live\theap goal\tgoroutines\tetcd db\t\treq/s\t4xx/5xx\t\tload gen\tbg\t\tReady\tfresh leases\tagent warnings\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%.1f%%\t%.1f%%\t\t%d MiB\t%d MiB\t%d MiB\t%d MiB\t%s\t%s\t%s\t%s\t\t%.0f\t%d\t\t%.2f\t%.2f\t\t%d\t%d\t%d\t\n", r.n,
			100*r.win.serverCores(), 100*r.gcCPU.Seconds()/r.win.wall.Seconds(),
			r.win.end.rss/mib, r.win.end.anon/mib, r.win.end.file/mib, r.win.end.hwm/mib,
			mibOrDash(r.gostats.heapLive), mibOrDash(r.gostats.heapGoal), countOrDash(r.gostats.goroutines), mibOrDash(float64(r.etcdDB)),
			r.win.audit.rate(), r.win.audit.failed, r.win.ownCores(), r.win.otherCores(), r.health.ready, r.health.freshLeases, r.warnings)
	}
	tw.Flush()
	fmt.Fprintf(out, "(server CPU and its GC in %% of one core; GC from the server's go_cpu_classes_gc_total metric; anon/file = RssAnon/RssFile (file: the binary's own text and read-only data, then etcd's mmapped bbolt db);\n")
	fmt.Fprintf(out, " heap live/goal and goroutines from the server's /metrics after the window; \"load gen\" the cores this process used, \"bg\" the cores every other process used;\n")
	fmt.Fprintf(out, " Ready and fresh leases (renewed in the last %s) as the server reports them after the window)\n", 2*kubelet.DefaultHeartbeatInterval)
	if stopped != "" {
		fmt.Fprintf(out, "NOTE: %s\n", stopped)
	}
	if last.health.exited > 0 {
		fmt.Fprintf(out, "NOTE: %d agents stopped (first: %v)\n", last.health.exited, fleet.firstExit())
	}
	if msgs := fleet.warn.messages(); len(msgs) > 0 {
		fmt.Fprintf(out, "agent warnings (%d in all), the first ones:\n  %s\n", fleet.warn.n.Load(), strings.Join(msgs, "\n  "))
	}

	fmt.Fprintf(out, "\nRequests to the server at N=%d in steady state, per second (audit log)\n", last.n)
	printAuditMix(out, last.win.audit, 10)
	if last.n > 0 {
		fmt.Fprintf(out, "\nRequests to the server while joining up to N=%d, per second (audit log)\n", last.n)
		printAuditMix(out, last.joinWin.audit, 14)
	}

	if n := fleet.size(); n > 0 {
		lg := last.lg
		fmt.Fprintf(out, "\nLoad generator cost per agent (after GC, %d agents): %.1f goroutines, %.0f KiB Go heap, %.0f KiB RSS\n", n,
			float64(lg.goroutines-lg0.goroutines)/float64(n), float64(lg.heap-lg0.heap)/float64(n)/1024, float64(lg.rss-lg0.rss)/float64(n)/1024)
	}
	fmt.Fprintf(out, "Events in the cluster by reason: %s\n", events)
	fmt.Fprintf(out, "server log: %s\n", srv.logSummary())
	if perfNote != "" {
		fmt.Fprintf(out, "%s\n", perfNote)
	}

	big := hollowSizes[len(hollowSizes)-1]
	fmt.Fprintf(out, "\nTargets at N=%d (2 cores, shared with the load generator)\n", big)
	for _, t := range []struct {
		name, figure string
		ok           bool
	}{
		{fmt.Sprintf("server CPU ≤%.0f%% of one core", 100*hollowCPUTarget), fmt.Sprintf("%.1f%% at N=%d", 100*last.win.serverCores(), last.n), last.win.serverCores() <= hollowCPUTarget},
		{"server RSS ≤500 MB", fmt.Sprintf("%.0f MB (%d MiB) at N=%d, peak %d MiB", float64(last.win.end.rss)/1e6, last.win.end.rss/mib, last.n, last.win.end.hwm/mib), last.win.end.rss <= hollowRSSTarget},
	} {
		verdict := "PASS"
		if !t.ok || last.n < big {
			verdict = "MISS"
		}
		fmt.Fprintf(out, "  %s  %-45s %s\n", verdict, t.name, t.figure)
	}
	fmt.Fprintln(out)

	b.ReportMetric(100*last.win.serverCores(), "server_cpu_%")
	b.ReportMetric(float64(last.win.end.rss)/mib, "server_rss_MiB")
	b.ReportMetric(float64(last.n), "nodes")
}

// controllerUser is the controller manager's identity.
const controllerUser = "system:kube-controller-manager"

// hollowRow is one fleet size's figures.
type hollowRow struct {
	n             int
	join          sample       // join latencies (agent start → Ready) of this stage
	joinWin       serverWindow // the server while this stage joined
	servingIssued int
	servingWait   time.Duration
	win           serverWindow // the server in steady state
	gostats       goStats      // the server's Go runtime after the window
	gcCPU         time.Duration
	etcdDB        int64
	health        fleetHealth
	warnings      int64
	lg            loadGen
}

// goStats are figures from the server's Go runtime metrics; -1 when
// unknown.
type goStats struct {
	heapLive, heapGoal, goroutines float64
	gcCPU                          time.Duration
}

// scrapeGoStats reads the server's /metrics with the admin client.
func scrapeGoStats(ctx context.Context, client *kubernetes.Clientset) goStats {
	g := goStats{heapLive: -1, heapGoal: -1, goroutines: -1}
	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return g
	}
	for line := range strings.Lines(string(raw)) {
		name, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_gc_heap_live_bytes":
			g.heapLive = f
		case "go_gc_heap_goal_bytes":
			g.heapGoal = f
		case "go_sched_goroutines_goroutines":
			g.goroutines = f
		case "go_cpu_classes_gc_total_cpu_seconds_total":
			g.gcCPU = time.Duration(f * float64(time.Second))
		}
	}
	return g
}

// etcdDBSize is the size of the embedded etcd's bbolt file under dataDir.
func etcdDBSize(dataDir string) int64 {
	var size int64 = -1
	filepath.WalkDir(filepath.Join(dataDir, "etcd"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "db" {
			if fi, err := d.Info(); err == nil {
				size = fi.Size()
			}
		}
		return nil
	})
	return size
}

func mibOrDash(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB", v/mib)
}

func countOrDash(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// eventSummary counts the cluster's Events by reporting component and
// reason, occurrences included.
func eventSummary(ctx context.Context, client kubernetes.Interface) string {
	evs, err := client.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return err.Error()
	}
	count := map[string]int{}
	for _, e := range evs.Items {
		n := max(int(e.Count), 1)
		if e.Series != nil {
			n = max(n, int(e.Series.Count))
		}
		who := e.ReportingController
		if who == "" {
			who = e.Source.Component
		}
		count[who+" "+e.Reason] += n
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return count[b] - count[a] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, count[k]))
	}
	return fmt.Sprintf("%d objects; %s", len(evs.Items), strings.Join(parts, ", "))
}

// printAuditMix prints the n most frequent kinds of request in m.
func printAuditMix(out io.Writer, m auditMix, n int) {
	if m.rotated {
		fmt.Fprintf(out, "(the audit log rotated during the window: no request counts)\n")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "who\tverb\tresource\treq/s\t")
	for _, k := range m.top(n) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t\n", k.who, k.verb, k.resource, float64(m.count[k])/m.wall.Seconds())
	}
	fmt.Fprintf(tw, "all\t\t\t%.1f\t\n", m.rate())
	tw.Flush()
}

// loadGen is this process's footprint, after a GC.
type loadGen struct {
	goroutines int
	heap, rss  uint64
}

func readLoadGen() loadGen {
	runtime.GC()
	m := readMem()
	return loadGen{goroutines: runtime.NumGoroutine(), heap: m.heapInuse, rss: m.rss}
}

// hollowFleet is the set of agents the benchmark runs.
type hollowFleet struct {
	server, token, pin, dir string
	ctx                     context.Context
	warn                    *warnCounter

	mu     sync.Mutex
	nodes  []*hollowNode
	failed atomic.Int64
}

// hollowNode is one running agent.
type hollowNode struct {
	name string
	done chan struct{}
	err  error // Run's result, once done is closed
}

func newHollowFleet(b *testing.B, server, token, pin string) *hollowFleet {
	dir, err := os.MkdirTemp("", "tether-hollow-agents-")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &hollowFleet{server: server, token: token, pin: pin, dir: dir, ctx: ctx, warn: &warnCounter{}}
	b.Cleanup(func() {
		cancel()
		deadline := time.After(time.Minute)
		f.mu.Lock()
		nodes := f.nodes
		f.mu.Unlock()
		for _, n := range nodes {
			select {
			case <-n.done:
			case <-deadline:
				b.Errorf("agents still running a minute after they were stopped")
				return
			}
		}
		os.RemoveAll(dir)
	})
	return f
}

func (f *hollowFleet) size() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.nodes)
}

// grow starts agents until the fleet has target, hollowConcurrency joins at
// a time, and returns their join latencies (start → Ready).
func (f *hollowFleet) grow(ctx context.Context, target int) sample {
	var c collector
	var wg sync.WaitGroup
	sem := make(chan struct{}, hollowConcurrency)
	m0, start := readMeter(), time.Now()
	for i := f.size(); i < target && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d, err := f.join(ctx, i)
			if err != nil {
				f.failed.Add(1)
				c.add(nil, 1, err)
				return
			}
			c.add([]time.Duration{d}, 0, nil)
		})
	}
	wg.Wait()
	return c.sample(start, m0)
}

// join starts agent i and waits until it is Ready.
func (f *hollowFleet) join(ctx context.Context, i int) (time.Duration, error) {
	name := fmt.Sprintf("hollow-%04d", i)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	a, err := kubelet.New(kubelet.Config{
		Server:       f.server,
		Token:        f.token,
		CACertHashes: []string{f.pin},
		DataDir:      filepath.Join(f.dir, name),
		NodeName:     name,
		NodeIP:       net.IPv4(127, 0, 0, 1),
		Listener:     ln,
		Logger:       slog.New(&warnHandler{c: f.warn}),
	})
	if err != nil {
		ln.Close()
		return 0, err
	}
	n := &hollowNode{name: name, done: make(chan struct{})}
	f.mu.Lock()
	f.nodes = append(f.nodes, n)
	f.mu.Unlock()
	start := time.Now()
	go func() {
		n.err = a.Run(f.ctx)
		close(n.done)
	}()
	select {
	case <-a.Ready():
		return time.Since(start), nil
	case <-n.done:
		return 0, fmt.Errorf("%s stopped before it was Ready: %v", name, n.err)
	case <-time.After(hollowJoinTimeout):
		return 0, fmt.Errorf("%s not Ready after %s", name, hollowJoinTimeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// firstExit is the error of the first agent that stopped.
func (f *hollowFleet) firstExit() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.nodes {
		select {
		case <-n.done:
			return n.err
		default:
		}
	}
	return nil
}

// fleetHealth is what the server says about the fleet, and how many agents
// have stopped.
type fleetHealth struct {
	ready, freshLeases, exited int
}

func (f *hollowFleet) health(ctx context.Context, client kubernetes.Interface) fleetHealth {
	var h fleetHealth
	if nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"}); err == nil {
		for i := range nodes.Items {
			if strings.HasPrefix(nodes.Items[i].Name, "hollow-") && isNodeReady(&nodes.Items[i]) {
				h.ready++
			}
		}
	}
	if leases, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{ResourceVersion: "0"}); err == nil {
		for _, l := range leases.Items {
			if strings.HasPrefix(l.Name, "hollow-") && l.Spec.RenewTime != nil && time.Since(l.Spec.RenewTime.Time) <= 2*kubelet.DefaultHeartbeatInterval {
				h.freshLeases++
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.nodes {
		select {
		case <-n.done:
			h.exited++
		default:
		}
	}
	return h
}

// waitServingCerts waits until want kubelet-serving CSRs carry a
// certificate, so that the join burst is over before measuring.
func waitServingCerts(ctx context.Context, client kubernetes.Interface, want int, timeout time.Duration) (int, time.Duration) {
	start := time.Now()
	issued := 0
	for time.Since(start) < timeout && ctx.Err() == nil {
		csrs, err := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err == nil {
			issued = 0
			for _, r := range csrs.Items {
				if r.Spec.SignerName == "kubernetes.io/kubelet-serving" && strings.HasPrefix(r.Spec.Username, "system:node:hollow-") && len(r.Status.Certificate) > 0 {
					issued++
				}
			}
			if issued >= want {
				break
			}
		}
		sleepCtx(ctx, time.Second)
	}
	return issued, time.Since(start)
}

// warnCounter counts the warnings and errors the agents log and keeps the
// first few.
type warnCounter struct {
	n     atomic.Int64
	mu    sync.Mutex
	first []string
}

func (c *warnCounter) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.first)
}

// warnHandler is a slog.Handler that feeds a warnCounter.
type warnHandler struct {
	c     *warnCounter
	attrs []slog.Attr
}

func (h *warnHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnHandler) Handle(_ context.Context, r slog.Record) error {
	if h.c.n.Add(1) > 5 {
		return nil
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %s", r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&sb, " %s", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&sb, " %s", a)
		return true
	})
	h.c.mu.Lock()
	h.c.first = append(h.c.first, sb.String())
	h.c.mu.Unlock()
	return nil
}

func (h *warnHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &warnHandler{c: h.c, attrs: append(slices.Clone(h.attrs), attrs...)}
}

func (h *warnHandler) WithGroup(string) slog.Handler { return h }

// tetherBinary returns $TETHER_BIN, or builds cmd/tether into a temporary
// directory, and says how.
func tetherBinary(b *testing.B) (string, string) {
	b.Helper()
	if bin := os.Getenv("TETHER_BIN"); bin != "" {
		return bin, ", from TETHER_BIN"
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		b.Fatalf("find the module root (go env GOMOD): %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(b.TempDir(), "tether")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/tether")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./cmd/tether: %v\n%s", err, out)
	}
	return bin, fmt.Sprintf(", built in %s", time.Since(start).Round(100*time.Millisecond))
}

// tetherProc is a `tether server` process.
type tetherProc struct {
	pid                      int
	url, dataDir, kubeconfig string
	auditLog, logPath        string
	cmd                      *exec.Cmd
	exited                   chan struct{}
	waitErr                  error
	readyLine                *lineWatch
	logFile                  *os.File
	stopOnce                 sync.Once
	stopErr                  error
}

// startTetherServer starts `tether server` on a free loopback port with a
// fresh data directory, waits for its ready line, and stops it when the
// benchmark ends.
func startTetherServer(b *testing.B, bin string) *tetherProc {
	b.Helper()
	dir, err := os.MkdirTemp("", "tether-hollow-")
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	p := &tetherProc{
		dataDir:    filepath.Join(dir, "server"),
		kubeconfig: filepath.Join(dir, "server", "admin.kubeconfig"),
		auditLog:   filepath.Join(dir, "server", "audit.log"),
		logPath:    filepath.Join(dir, "server.log"),
		exited:     make(chan struct{}),
		readyLine:  &lineWatch{prefix: serverReadyLine, found: make(chan string, 1)},
	}
	if p.logFile, err = os.Create(p.logPath); err != nil {
		b.Fatal(err)
	}
	args := []string{"server", "--disable-agent", "--bind-address", "127.0.0.1", "--secure-port", port, "--data-dir", p.dataDir, "--cluster-cidr", hollowClusterCIDR}
	if os.Getenv("TETHER_BENCH_HEAP") != "" {
		args = append(args, "--profiling")
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.readyLine
	p.cmd.Stderr = p.logFile
	// The server must not outlive the benchmark, even if it crashes.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", bin, err)
	}
	p.pid = p.cmd.Process.Pid
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	b.Cleanup(func() {
		if err := p.stop(); err != nil {
			b.Errorf("stop the server: %v", err)
		}
		p.logFile.Close()
		os.RemoveAll(dir)
	})
	select {
	case line := <-p.readyLine.found:
		p.url = strings.TrimSpace(strings.TrimPrefix(line, serverReadyLine))
	case <-p.exited:
		b.Fatalf("tether server exited before it was ready: %v\n%s", p.waitErr, p.logTail(20))
	case <-time.After(2 * time.Minute):
		b.Fatalf("tether server not ready after 2m\n%s", p.logTail(20))
	}
	return p
}

// stop sends SIGTERM, waits 30 s for the process to exit, then kills it.
func (p *tetherProc) stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.exited:
			p.stopErr = fmt.Errorf("the server had already exited: %v", p.waitErr)
			return
		default:
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			p.stopErr = err
			return
		}
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
			p.stopErr = errors.New("did not exit within 30s of SIGTERM; killed")
		}
	})
	return p.stopErr
}

func (p *tetherProc) logTail(n int) string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logSummary counts the server's log lines, and its warnings and errors
// by message.
func (p *tetherProc) logSummary() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	total := 0
	bad := map[string]int{}
	for line := range strings.Lines(string(data)) {
		total++
		level := ""
		switch {
		case strings.Contains(line, "level=WARN"):
			level = "WARN"
		case strings.Contains(line, "level=ERROR"):
			level = "ERROR"
		default:
			continue
		}
		msg := "?"
		if _, rest, ok := strings.Cut(line, " msg="); ok {
			if q, err := strconv.QuotedPrefix(rest); err == nil {
				msg, _ = strconv.Unquote(q)
			} else {
				msg, _, _ = strings.Cut(rest, " ")
			}
		}
		bad[level+" "+msg]++
	}
	keys := make([]string, 0, len(bad))
	n := 0
	for k, c := range bad {
		keys = append(keys, k)
		n += c
	}
	slices.SortFunc(keys, func(a, b string) int { return bad[b] - bad[a] })
	s := fmt.Sprintf("%d lines, %d warnings or errors", total, n)
	for i, k := range keys {
		if i == 5 {
			s += ", …"
			break
		}
		s += fmt.Sprintf("; %q ×%d", k, bad[k])
	}
	return s
}

// lineWatch is an io.Writer that reports the first line with prefix.
type lineWatch struct {
	prefix string
	found  chan string
	mu     sync.Mutex
	buf    []byte
	done   bool
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if strings.HasPrefix(line, w.prefix) {
			w.found <- line
			w.done, w.buf = true, nil
			break
		}
	}
	return len(p), nil
}

// procStat is a process's CPU time and memory from /proc.
type procStat struct {
	cpu                  time.Duration
	rss, hwm, anon, file uint64 // VmRSS, VmHWM, RssAnon, RssFile
	threads              int
	readError            error
}

func readProcStat(pid int) procStat {
	var s procStat
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		s.readError = err
		return s
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15, num_threads 20.
	i := bytes.LastIndexByte(data, ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 18 {
		s.readError = fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
		return s
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	s.cpu = time.Duration(utime+stime) * clockTick
	s.threads, _ = strconv.Atoi(f[17])
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		s.readError = err
		return s
	}
	for line := range strings.Lines(string(status)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			s.rss = kb << 10
		case "VmHWM":
			s.hwm = kb << 10
		case "RssAnon":
			s.anon = kb << 10
		case "RssFile":
			s.file = kb << 10
		}
	}
	return s
}

// serverWindow is one measurement of the server process.
type serverWindow struct {
	wall               time.Duration
	server, own, other time.Duration // CPU time used in the window
	end                procStat
	audit              auditMix
}

func (w serverWindow) serverCores() float64 { return w.server.Seconds() / w.wall.Seconds() }
func (w serverWindow) ownCores() float64    { return w.own.Seconds() / w.wall.Seconds() }
func (w serverWindow) otherCores() float64  { return max(w.other.Seconds()/w.wall.Seconds(), 0) }

// windowStart is where a measurement of the server began.
type windowStart struct {
	proc procStat
	m    meter
	t    time.Time
	off  int64 // audit log size, -1 if unknown
}

func (p *tetherProc) beginWindow() (windowStart, error) {
	ws := windowStart{off: -1}
	if fi, err := os.Stat(p.auditLog); err == nil {
		ws.off = fi.Size()
	}
	ws.proc, ws.m, ws.t = readProcStat(p.pid), readMeter(), time.Now()
	return ws, ws.proc.readError
}

// endWindow measures the server's CPU since ws, its memory now, and the
// requests it answered meanwhile.
func (p *tetherProc) endWindow(ws windowStart) (serverWindow, error) {
	var w serverWindow
	p1, m1 := readProcStat(p.pid), readMeter()
	w.wall = time.Since(ws.t)
	if p1.readError != nil {
		return w, p1.readError
	}
	w.end = p1
	w.server = p1.cpu - ws.proc.cpu
	w.own = m1.own - ws.m.own
	w.other = m1.all - ws.m.all - w.own - w.server
	w.audit = readAuditMix(p.auditLog, ws.off)
	w.audit.wall = w.wall
	return w, nil
}

// measureTetherServer measures the server over d.
func measureTetherServer(ctx context.Context, p *tetherProc, d time.Duration) (serverWindow, error) {
	ws, err := p.beginWindow()
	if err != nil {
		return serverWindow{}, err
	}
	if !sleepCtx(ctx, d) {
		return serverWindow{}, ctx.Err()
	}
	return p.endWindow(ws)
}

// auditKey classifies a request.
type auditKey struct{ who, verb, resource string }

// auditMix counts the requests the audit log recorded after an offset.
type auditMix struct {
	count   map[auditKey]int
	total   int
	failed  int // responses with a status ≥ 400
	rotated bool
	wall    time.Duration
}

func (m auditMix) rate() float64 {
	if m.wall <= 0 {
		return 0
	}
	return float64(m.total) / m.wall.Seconds()
}

// rateBy is the rate of requests by one client.
func (m auditMix) rateBy(who string) float64 {
	if m.wall <= 0 {
		return 0
	}
	n := 0
	for k, c := range m.count {
		if k.who == who {
			n += c
		}
	}
	return float64(n) / m.wall.Seconds()
}

// top returns the n most frequent kinds of request.
func (m auditMix) top(n int) []auditKey {
	keys := make([]auditKey, 0, len(m.count))
	for k := range m.count {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b auditKey) int {
		if c := m.count[b] - m.count[a]; c != 0 {
			return c
		}
		return strings.Compare(a.who+a.verb+a.resource, b.who+b.verb+b.resource)
	})
	return keys[:min(n, len(keys))]
}

func readAuditMix(path string, off int64) auditMix {
	m := auditMix{count: map[auditKey]int{}}
	f, err := os.Open(path)
	if err != nil || off < 0 {
		m.rotated = true
		return m
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() < off {
		m.rotated = true
		return m
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		m.rotated = true
		return m
	}
	var ev struct {
		Stage     string `json:"stage"`
		Verb      string `json:"verb"`
		ObjectRef *struct {
			Resource    string `json:"resource"`
			Subresource string `json:"subresource"`
		} `json:"objectRef"`
		User struct {
			Username string `json:"username"`
		} `json:"user"`
		ResponseStatus *struct {
			Code int `json:"code"`
		} `json:"responseStatus"`
	}
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for s.Scan() {
		ev.ObjectRef, ev.ResponseStatus = nil, nil
		if json.Unmarshal(s.Bytes(), &ev) != nil || ev.Stage != "ResponseComplete" {
			continue
		}
		k := auditKey{who: auditWho(ev.User.Username), verb: ev.Verb, resource: "-"}
		if ev.ObjectRef != nil {
			k.resource = ev.ObjectRef.Resource
			if ev.ObjectRef.Subresource != "" {
				k.resource += "/" + ev.ObjectRef.Subresource
			}
		}
		m.count[k]++
		m.total++
		if ev.ResponseStatus != nil && ev.ResponseStatus.Code >= 400 {
			m.failed++
		}
	}
	return m
}

// auditWho names the kind of client behind a user name.
func auditWho(user string) string {
	switch {
	case strings.HasPrefix(user, "system:node:"):
		return "nodes"
	case strings.HasPrefix(user, "system:bootstrap:"):
		return "bootstrap tokens"
	case user == "":
		return "-"
	}
	return user
}

// perfRecord samples the server process with perf for d and writes the
// report's top entries next to the data, returning a note that says where.
func perfRecord(ctx context.Context, pid int, dir string, d time.Duration) string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "perf: " + err.Error()
	}
	data := filepath.Join(dir, "server.perf.data")
	rec := exec.CommandContext(ctx, "perf", "record", "-F", "499", "-g", "-p", strconv.Itoa(pid), "-o", data, "--", "sleep", strconv.Itoa(int(d.Seconds())))
	if out, err := rec.CombinedOutput(); err != nil {
		return fmt.Sprintf("perf record: %v\n%s", err, out)
	}
	report := filepath.Join(dir, "server.perf.txt")
	rep := exec.CommandContext(ctx, "perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio", "-g", "none", "--percent-limit", "0.5")
	out, err := rep.Output()
	if err != nil {
		return fmt.Sprintf("perf report: %v", err)
	}
	if err := os.WriteFile(report, out, 0o644); err != nil {
		return "perf: " + err.Error()
	}
	return fmt.Sprintf("perf profile of the server over %s after the last window: %s (report %s)", d, data, report)
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// heapProfile saves the server's heap profile (it runs with --profiling)
// to dir/heap.pb.gz and returns a line saying where it is.
func heapProfile(ctx context.Context, client kubernetes.Interface, dir string) string {
	data, err := client.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/heap").DoRaw(ctx)
	if err != nil {
		return fmt.Sprintf("heap profile: %v\n", err)
	}
	path := filepath.Join(dir, "heap.pb.gz")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Sprintf("heap profile: %v\n", err)
	}
	return fmt.Sprintf("heap profile of the server at the largest N: %s (go tool pprof -sample_index=inuse_space %s)\n", path, path)
}
