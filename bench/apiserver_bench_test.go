package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"tether/test/framework"
)

// The shape of the run. Every phase is bounded in time or count so the
// whole benchmark takes well under three minutes on two cores.
const (
	clients         = 32              // concurrent clients for GET and CREATE throughput
	timedPhase      = 5 * time.Second // duration of each timed phase
	listObjects     = 1000            // pods in the LIST namespace
	listRuns        = 50              // sequential LISTs
	listConcurrent  = 4               // clients in the concurrent LIST row
	listConcRuns    = 10              // LISTs per concurrent client
	createSeq       = 500             // sequential CREATEs with one client
	watchers        = 1000            // WATCH fan-out
	watchConns      = 20              // clientsets (HTTP/2 connections) the watchers share
	watchRounds     = 3               // updates observed by every watcher
	watchDeadline   = time.Second     // target: every watcher sees the update within this
	watchGiveUp     = 15 * time.Second
	cmValueBytes    = 128 // size of the one value in each created ConfigMap
	protobuf        = "application/vnd.kubernetes.protobuf"
	benchNS         = "bench"
	listNS          = "bench-list"
	watchNS         = "bench-watch"
	getName         = "get-target"
	watchName       = "watched"
	rawPrefix       = "/bench-raw/" // raw etcd writes stay outside /registry
	registryPrefix  = "/registry/"
	mib             = 1 << 20
	createP50Factor = 1.5
	getRate         = 5000 // req/s, the GET target
	noisyCores      = 0.1  // background load above which a row is marked
)

// BenchmarkAPIServer runs the API load generator once against an
// in-process control plane and prints the figures next to the raw etcd
// client's. It ignores b.N beyond one run.
func BenchmarkAPIServer(b *testing.B) {
	ctx := b.Context()
	out := os.Stdout
	// Measure the server as `tether server` runs it (cmd/tether sets GOGC
	// to 200 unless the environment sets it).
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(200))
	}

	cl := framework.StartCluster(b)
	startMem := readMem()

	ec, err := clientv3.New(clientv3.Config{
		Endpoints:   cl.ControlPlane.EtcdServers(),
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		b.Fatalf("etcd client for %v: %v", cl.ControlPlane.EtcdServers(), err)
	}
	defer ec.Close()

	cs := make([]*kubernetes.Clientset, clients)
	for i := range cs {
		cs[i] = newClient(b, cl.Admin, fmt.Sprintf("tether-bench/%d", i))
	}
	for _, ns := range []string{benchNS, listNS, watchNS} {
		if _, err := cs[0].CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatalf("create namespace %s: %v", ns, err)
		}
	}

	b.ResetTimer()
	var rows []row

	// GET one object.
	_, err = cs[0].CoreV1().ConfigMaps(benchNS).Create(ctx, configMap(getName, "x"), metav1.CreateOptions{})
	if err != nil {
		b.Fatalf("create %s: %v", getName, err)
	}
	getKey := registryPrefix + "configmaps/" + benchNS + "/" + getName
	if r, err := ec.Get(ctx, getKey); err != nil || r.Count != 1 {
		b.Fatalf("raw etcd Get(%q) = %v, %v; want the object the API server stored", getKey, r, err)
	}
	for _, c := range cs { // one request per client opens its connection
		if _, err := c.CoreV1().ConfigMaps(benchNS).Get(ctx, getName, metav1.GetOptions{}); err != nil {
			b.Fatalf("warm-up GET: %v", err)
		}
	}
	conns := establishedTo(cl.URL)
	stop := profile(b, "get")
	apiGet := runFor(ctx, clients, timedPhase, func(ctx context.Context, w, _ int) error {
		_, err := cs[w].CoreV1().ConfigMaps(benchNS).Get(ctx, getName, metav1.GetOptions{})
		return err
	})
	stop()
	etcdGet := runFor(ctx, clients, timedPhase, func(ctx context.Context, _, _ int) error {
		_, err := ec.Get(ctx, getKey)
		return err
	})
	rows = append(rows, row{op: "GET one ConfigMap, max rate", conc: clients, api: apiGet, etcd: etcdGet})
	// The same at the target rate: an unpaced closed loop measures the
	// latency of a saturated server, which says little about p99 at a
	// given load.
	stop = profile(b, "get-paced")
	apiGetPaced := runPaced(ctx, clients, getRate, timedPhase, func(ctx context.Context, w int) error {
		_, err := cs[w].CoreV1().ConfigMaps(benchNS).Get(ctx, getName, metav1.GetOptions{})
		return err
	})
	stop()
	etcdGetPaced := runPaced(ctx, clients, getRate, timedPhase, func(ctx context.Context, _ int) error {
		_, err := ec.Get(ctx, getKey)
		return err
	})
	getRateOK := apiGet.rate() >= getRate
	getP99OK := apiGetPaced.rate() >= 0.99*getRate && apiGetPaced.pct(0.99) <= 10*time.Millisecond
	rows = append(rows, row{op: "GET one ConfigMap, paced 5,000/s", conc: clients, api: apiGetPaced, etcd: etcdGetPaced})

	// GET from the watch cache (resourceVersion=0): what GET costs
	// without the etcd round trip. Informational.
	stop = profile(b, "get-cache")
	apiGetCache := runFor(ctx, clients, timedPhase, func(ctx context.Context, w, _ int) error {
		_, err := cs[w].CoreV1().ConfigMaps(benchNS).Get(ctx, getName, metav1.GetOptions{ResourceVersion: "0"})
		return err
	})
	stop()
	rows = append(rows, row{op: "GET one ConfigMap, rv=0 (cache)", conc: clients, api: apiGetCache, etcd: etcdGet})

	// LIST 1,000 pods.
	created := runN(clients, listObjects/clients+1, func(w, i int) error {
		n := w*(listObjects/clients+1) + i
		if n >= listObjects {
			return nil
		}
		_, err := cs[w].CoreV1().Pods(listNS).Create(ctx, pod(fmt.Sprintf("p-%04d", n)), metav1.CreateOptions{})
		return err
	})
	if created.errs > 0 {
		b.Fatalf("create %d pods: %d errors, first: %v", listObjects, created.errs, created.firstErr)
	}
	listKey := registryPrefix + "pods/" + listNS + "/"
	var listBytes int
	stop = profile(b, "list")
	apiList := runN(1, listRuns, func(_, _ int) error {
		l, err := cs[0].CoreV1().Pods(listNS).List(ctx, metav1.ListOptions{})
		if err == nil && len(l.Items) != listObjects {
			err = fmt.Errorf("LIST returned %d pods, want %d", len(l.Items), listObjects)
		}
		return err
	})
	stop()
	etcdList := runN(1, listRuns, func(_, _ int) error {
		r, err := ec.Get(ctx, listKey, clientv3.WithPrefix())
		if err == nil && r.Count != listObjects {
			err = fmt.Errorf("raw Range returned %d pods, want %d", r.Count, listObjects)
		}
		if err == nil {
			listBytes = 0
			for _, kv := range r.Kvs {
				listBytes += len(kv.Value)
			}
		}
		return err
	})
	listOK := apiList.pct(0.99) <= 100*time.Millisecond
	rows = append(rows, row{op: "LIST 1,000 pods", conc: 1, api: apiList, etcd: etcdList})
	apiListC := runN(listConcurrent, listConcRuns, func(w, _ int) error {
		_, err := cs[w].CoreV1().Pods(listNS).List(ctx, metav1.ListOptions{})
		return err
	})
	etcdListC := runN(listConcurrent, listConcRuns, func(_, _ int) error {
		_, err := ec.Get(ctx, listKey, clientv3.WithPrefix())
		return err
	})
	rows = append(rows, row{op: "LIST 1,000 pods", conc: listConcurrent, api: apiListC, etcd: etcdListC})

	// CREATE.
	value := strings.Repeat("v", cmValueBytes)
	stop = profile(b, "create")
	apiCreate := runN(1, createSeq, func(_, i int) error {
		_, err := cs[0].CoreV1().ConfigMaps(benchNS).Create(ctx, configMap(fmt.Sprintf("seq-%05d", i), value), metav1.CreateOptions{})
		return err
	})
	stop()
	stored, err := ec.Get(ctx, registryPrefix+"configmaps/"+benchNS+"/seq-00000")
	if err != nil || stored.Count != 1 {
		b.Fatalf("read back a created ConfigMap from etcd: %v, %v", stored, err)
	}
	rawValue := string(stored.Kvs[0].Value) // same size as what the server writes
	fsync0 := etcdDisk()
	etcdCreate := runN(1, createSeq, func(_, i int) error {
		_, err := ec.Put(ctx, fmt.Sprintf("%sseq/%05d", rawPrefix, i), rawValue)
		return err
	})
	fsync := etcdDisk().since(fsync0)
	createRatio := ratio(apiCreate.pct(0.5), etcdCreate.pct(0.5))
	createOK := createRatio <= createP50Factor
	rows = append(rows, row{op: "CREATE ConfigMap", conc: 1, api: apiCreate, etcd: etcdCreate})
	stop = profile(b, "create-32")
	apiCreateC := runFor(ctx, clients, timedPhase, func(ctx context.Context, w, i int) error {
		_, err := cs[w].CoreV1().ConfigMaps(benchNS).Create(ctx, configMap(fmt.Sprintf("c%02d-%06d", w, i), value), metav1.CreateOptions{})
		return err
	})
	stop()
	etcdCreateC := runFor(ctx, clients, timedPhase, func(ctx context.Context, w, i int) error {
		_, err := ec.Put(ctx, fmt.Sprintf("%sconc/%02d/%06d", rawPrefix, w, i), rawValue)
		return err
	})
	rows = append(rows, row{op: "CREATE ConfigMap", conc: clients, api: apiCreateC, etcd: etcdCreateC})

	// WATCH fan-out.
	apiWatch, err := watchAPI(ctx, b, cl.Admin)
	if err != nil {
		b.Fatalf("API watch fan-out: %v", err)
	}
	etcdWatch, err := watchEtcd(ctx, ec)
	if err != nil {
		b.Fatalf("etcd watch fan-out: %v", err)
	}
	watchOK := apiWatch.allWithin == watchRounds
	b.StopTimer()

	endMem := readMem()
	runtime.GC()
	gcMem := readMem()

	// Report.
	fmt.Fprintf(out, "\n== tether API server benchmark (%s, GOMAXPROCS=%d, NumCPU=%d, %s) ==\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "server %s over TLS with the admin client certificate, protobuf, no client rate limit, one HTTP/2 connection per client (%d established after warm-up)\n", cl.URL, conns)
	fmt.Fprintf(out, "raw etcd: clientv3 on the same embedded member (%s), one gRPC connection, same keys, value sizes and concurrency\n", strings.Join(cl.ControlPlane.EtcdServers(), ","))
	fmt.Fprintf(out, "load generator and server share the process and its %d CPUs; \"CPU/op\" is the whole process's CPU time per operation, \"bg\" the cores other processes used meanwhile (should be ~0)\n\n", runtime.GOMAXPROCS(0))

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tclients\ttether req/s\tp50\tp99\tCPU/op\tbg\t\tetcd req/s\tp50\tp99\tCPU/op\tbg\t\tp50 ×etcd\tp99 ×etcd\treq/s ÷etcd\t")
	noisy := false
	for _, r := range rows {
		op := r.op
		if r.api.noisy() || r.etcd.noisy() {
			op, noisy = "* "+op, true
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%.2f\t\t%.0f\t%s\t%s\t%s\t%.2f\t\t%.1f×\t%.1f×\t%.2f\t\n",
			op, r.conc,
			r.api.rate(), ms(r.api.pct(0.5)), ms(r.api.pct(0.99)), us(r.api.cpuPerOp()), r.api.background(),
			r.etcd.rate(), ms(r.etcd.pct(0.5)), ms(r.etcd.pct(0.99)), us(r.etcd.cpuPerOp()), r.etcd.background(),
			ratio(r.api.pct(0.5), r.etcd.pct(0.5)), ratio(r.api.pct(0.99), r.etcd.pct(0.99)), r.api.rate()/r.etcd.rate())
	}
	tw.Flush()
	if noisy {
		fmt.Fprintf(out, "* other processes used more than %.1f cores during this row: its figures are not comparable; re-run on an idle machine\n", noisyCores)
	}
	fmt.Fprintf(out, "(paced: %d clients on a fixed schedule, latency counted from the scheduled start)\n", clients)
	fmt.Fprintf(out, "(LIST: %d pods, %d KiB of protobuf in etcd; etcd rows only read the bytes, the server also decodes, filters and re-encodes)\n", listObjects, listBytes/1024)
	fmt.Fprintf(out, "(CREATE: during the sequential etcd puts the WAL fsync took %s and the backend commit %s on average: %s)\n", ms(fsync.walFsync), ms(fsync.commit), fsync.note())
	for _, r := range rows {
		if r.api.errs+r.etcd.errs > 0 {
			fmt.Fprintf(out, "ERRORS in %s ×%d: tether %d (first: %v), etcd %d (first: %v)\n", r.op, r.conc, r.api.errs, r.api.firstErr, r.etcd.errs, r.etcd.firstErr)
			b.Errorf("%s ×%d: %d tether errors, %d etcd errors", r.op, r.conc, r.api.errs, r.etcd.errs)
		}
	}

	fmt.Fprintf(out, "\nWATCH fan-out: %d watchers, %d updates of one object; time from issuing the update to each watcher's MODIFIED event\n", watchers, watchRounds)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\twatchers\tconnections\testablish\tupdate call\tp50\tp99\tmax\tseen ≤1s\trounds all ≤1s\t")
	for _, w := range []struct {
		name string
		r    watchResult
	}{{"tether", apiWatch}, {"etcd", etcdWatch}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d/%d\t\n", w.name, watchers, w.r.conns,
			w.r.establish.Round(time.Millisecond), ms(w.r.write), ms(w.r.pct(0.5)), ms(w.r.pct(0.99)), ms(w.r.max()),
			w.r.within, watchers*watchRounds, w.r.allWithin, watchRounds)
	}
	tw.Flush()
	fmt.Fprintf(out, "(p50 ×etcd %.1f×, max ×etcd %.1f×)\n", ratio(apiWatch.pct(0.5), etcdWatch.pct(0.5)), ratio(apiWatch.max(), etcdWatch.max()))

	fmt.Fprintf(out, "\nMemory (one process: etcd + API server + load generator)\n")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tVmRSS\tGo heap in use\tGo sys\t")
	fmt.Fprintf(tw, "after start\t%d MiB\t%d MiB\t%d MiB\t\n", startMem.rss/mib, startMem.heapInuse/mib, startMem.sys/mib)
	fmt.Fprintf(tw, "after benchmark\t%d MiB\t%d MiB\t%d MiB\t\n", endMem.rss/mib, endMem.heapInuse/mib, endMem.sys/mib)
	fmt.Fprintf(tw, "after benchmark + GC\t%d MiB\t%d MiB\t%d MiB\t\n", gcMem.rss/mib, gcMem.heapInuse/mib, gcMem.sys/mib)
	fmt.Fprintf(tw, "peak (VmHWM)\t%d MiB\t\t\t\n", gcMem.hwm/mib)
	tw.Flush()

	fmt.Fprintf(out, "\nTargets (2 cores)\n")
	for _, t := range []struct {
		name, figure string
		ok           bool
	}{
		{"GET ≥5,000 req/s with 32 clients", fmt.Sprintf("max %.0f req/s (p50 %s, p99 %s)", apiGet.rate(), ms(apiGet.pct(0.5)), ms(apiGet.pct(0.99))), getRateOK},
		{"GET p99 ≤10ms at 5,000 req/s, 32 clients", fmt.Sprintf("%.0f req/s done, p50 %s, p99 %s", apiGetPaced.rate(), ms(apiGetPaced.pct(0.5)), ms(apiGetPaced.pct(0.99))), getP99OK},
		{"CREATE p50 ≤1.5× raw etcd put", fmt.Sprintf("%s vs %s = %.2f×", ms(apiCreate.pct(0.5)), ms(etcdCreate.pct(0.5)), createRatio), createOK},
		{"LIST 1,000 pods p99 ≤100ms", fmt.Sprintf("p99 %s", ms(apiList.pct(0.99))), listOK},
		{"1,000 watchers all see an update within 1s", fmt.Sprintf("%d/%d rounds, max %s", apiWatch.allWithin, watchRounds, ms(apiWatch.max())), watchOK},
	} {
		verdict := "PASS"
		if !t.ok {
			verdict = "MISS"
		}
		fmt.Fprintf(out, "  %s  %-45s %s\n", verdict, t.name, t.figure)
	}
	fmt.Fprintln(out)

	b.ReportMetric(apiGet.rate(), "get_req/s")
	b.ReportMetric(msf(apiGetPaced.pct(0.99)), "get5k_p99_ms")
	b.ReportMetric(msf(apiList.pct(0.99)), "list_p99_ms")
	b.ReportMetric(createRatio, "create_p50_x_etcd")
	b.ReportMetric(apiCreateC.rate(), "create32_req/s")
	b.ReportMetric(msf(apiWatch.max()), "watch_max_ms")
	b.ReportMetric(float64(startMem.rss)/mib, "rss_start_MiB")
	b.ReportMetric(float64(endMem.rss)/mib, "rss_end_MiB")
}

// row is one line of the results table.
type row struct {
	op        string
	conc      int
	api, etcd sample
}

// sample is the outcome of one phase: every successful operation's latency.
type sample struct {
	lat      []time.Duration // sorted
	wall     time.Duration
	cpu      time.Duration // this process
	others   time.Duration // every other process on the machine
	errs     int
	firstErr error
}

func (s sample) rate() float64 {
	if s.wall <= 0 {
		return 0
	}
	return float64(len(s.lat)) / s.wall.Seconds()
}

// pct is the nearest-rank percentile p (0 < p ≤ 1).
func (s sample) pct(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(s.lat)))) - 1
	return s.lat[max(i, 0)]
}

// background is the CPU (in cores) other processes used during the phase:
// a figure taken while the machine was busy elsewhere is not comparable.
func (s sample) background() float64 {
	if s.wall <= 0 {
		return 0
	}
	return max(s.others.Seconds()/s.wall.Seconds(), 0)
}

// noisy reports whether other processes used more than noisyCores during
// the phase, allowing for the 10ms tick of /proc/stat on each CPU.
func (s sample) noisy() bool {
	slack := time.Duration(runtime.NumCPU()) * 20 * time.Millisecond
	return s.others > time.Duration(noisyCores*float64(s.wall))+slack
}

func (s sample) cpuPerOp() time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	return s.cpu / time.Duration(len(s.lat))
}

// collector gathers latencies and errors from many goroutines.
type collector struct {
	mu       sync.Mutex
	lat      []time.Duration
	errs     int
	firstErr error
}

func (c *collector) add(lat []time.Duration, errs int, firstErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lat = append(c.lat, lat...)
	c.errs += errs
	if c.firstErr == nil {
		c.firstErr = firstErr
	}
}

func (c *collector) sample(start time.Time, m0 meter) sample {
	wall := time.Since(start)
	m := readMeter()
	cpu := m.own - m0.own
	slices.Sort(c.lat)
	return sample{lat: c.lat, wall: wall, cpu: cpu, others: m.all - m0.all - cpu, errs: c.errs, firstErr: c.firstErr}
}

// meter reads the CPU time used by this process and by the whole machine.
type meter struct{ own, all time.Duration }

func readMeter() meter { return meter{own: cpuTime(), all: machineBusy()} }

// runFor calls op in a loop from workers goroutines until d has passed.
func runFor(ctx context.Context, workers int, d time.Duration, op func(ctx context.Context, worker, i int) error) sample {
	var c collector
	var wg sync.WaitGroup
	m0, start := readMeter(), time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			var lat []time.Duration
			var errs int
			var first error
			for i := 0; ; i++ {
				t := time.Now()
				if !t.Before(deadline) || ctx.Err() != nil {
					break
				}
				if err := op(ctx, w, i); err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			c.add(lat, errs, first)
		})
	}
	wg.Wait()
	return c.sample(start, m0)
}

// runPaced calls op rate times a second in total from workers goroutines,
// each on a fixed schedule, for d. Latency counts from the scheduled start,
// so a server that falls behind shows its queueing (no coordinated
// omission).
func runPaced(ctx context.Context, workers int, rate float64, d time.Duration, op func(ctx context.Context, worker int) error) sample {
	var c collector
	var wg sync.WaitGroup
	interval := time.Duration(float64(workers) / rate * float64(time.Second))
	m0, start := readMeter(), time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			var lat []time.Duration
			var errs int
			var first error
			offset := interval * time.Duration(w) / time.Duration(workers)
			for i := 0; ctx.Err() == nil; i++ {
				due := start.Add(offset + time.Duration(i)*interval)
				if !due.Before(deadline) {
					break
				}
				time.Sleep(time.Until(due))
				if err := op(ctx, w); err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(due))
			}
			c.add(lat, errs, first)
		})
	}
	wg.Wait()
	return c.sample(start, m0)
}

// runN calls op n times from each of workers goroutines.
func runN(workers, n int, op func(worker, i int) error) sample {
	var c collector
	var wg sync.WaitGroup
	m0, start := readMeter(), time.Now()
	for w := range workers {
		wg.Go(func() {
			lat := make([]time.Duration, 0, n)
			var errs int
			var first error
			for i := range n {
				t := time.Now()
				if err := op(w, i); err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			c.add(lat, errs, first)
		})
	}
	wg.Wait()
	return c.sample(start, m0)
}

// watchResult is the delivery latency of every (watcher, round) pair.
type watchResult struct {
	lat       []time.Duration // sorted; missing deliveries are absent
	within    int             // deliveries within watchDeadline
	allWithin int             // rounds in which every watcher was within watchDeadline
	establish time.Duration   // time to open all watchers
	write     time.Duration   // median latency of the update calls
	conns     int
}

func (r watchResult) pct(p float64) time.Duration {
	return sample{lat: r.lat}.pct(p)
}

func (r watchResult) max() time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[len(r.lat)-1]
}

// fanOut tracks the deliveries of watchRounds updates to watchers.
type fanOut struct {
	t0        [watchRounds]atomic.Int64 // unix nanos at which round r's update was issued
	delivered [watchRounds][watchers]atomic.Int64
	seen      [watchRounds]atomic.Int32
	done      [watchRounds]chan struct{}
}

func newFanOut() *fanOut {
	f := &fanOut{}
	for r := range f.done {
		f.done[r] = make(chan struct{})
	}
	return f
}

// see records that watcher w saw round r's update.
func (f *fanOut) see(w, r int) {
	if r < 0 || r >= watchRounds || f.delivered[r][w].Load() != 0 {
		return
	}
	f.delivered[r][w].Store(time.Now().UnixNano() - f.t0[r].Load())
	if f.seen[r].Add(1) == watchers {
		close(f.done[r])
	}
}

// run issues each round's update with write and waits for every watcher.
func (f *fanOut) run(ctx context.Context, write func(round int) error) (watchResult, error) {
	var res watchResult
	var writes []time.Duration
	for r := range watchRounds {
		start := time.Now()
		f.t0[r].Store(start.UnixNano())
		if err := write(r); err != nil {
			return res, fmt.Errorf("update %d: %w", r, err)
		}
		writes = append(writes, time.Since(start))
		select {
		case <-f.done[r]:
		case <-time.After(watchGiveUp):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		all := true
		for w := range watchers {
			d := time.Duration(f.delivered[r][w].Load())
			if d == 0 {
				all = false
				continue
			}
			res.lat = append(res.lat, d)
			if d <= watchDeadline {
				res.within++
			} else {
				all = false
			}
		}
		if all {
			res.allWithin++
		}
		time.Sleep(200 * time.Millisecond) // let the last round drain
	}
	slices.Sort(res.lat)
	slices.Sort(writes)
	res.write = writes[len(writes)/2]
	return res, nil
}

// watchAPI opens watchers on one ConfigMap through watchConns clientsets and
// measures how long each takes to see an update.
func watchAPI(ctx context.Context, b *testing.B, admin *rest.Config) (watchResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns := make([]*kubernetes.Clientset, watchConns)
	for i := range conns {
		conns[i] = newClient(b, admin, fmt.Sprintf("tether-bench-watch/%d", i))
	}
	cm, err := conns[0].CoreV1().ConfigMaps(watchNS).Create(ctx, configMap(watchName, "-1"), metav1.CreateOptions{})
	if err != nil {
		return watchResult{}, err
	}
	f := newFanOut()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	start := time.Now()
	for w := range watchers {
		wi, err := conns[w%watchConns].CoreV1().ConfigMaps(watchNS).Watch(ctx, metav1.ListOptions{
			FieldSelector:   "metadata.name=" + watchName,
			ResourceVersion: cm.ResourceVersion,
		})
		if err != nil {
			return watchResult{}, fmt.Errorf("open watcher %d: %w", w, err)
		}
		wg.Go(func() {
			defer wi.Stop()
			for ev := range wi.ResultChan() {
				if ev.Type != watch.Modified {
					continue
				}
				if c, ok := ev.Object.(*corev1.ConfigMap); ok {
					r, _ := strconv.Atoi(c.Data["v"])
					f.see(w, r)
				}
			}
		})
	}
	establish := time.Since(start)
	res, err := f.run(ctx, func(r int) error {
		cm.Data["v"] = strconv.Itoa(r)
		var err error
		cm, err = conns[0].CoreV1().ConfigMaps(watchNS).Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	res.establish, res.conns = establish, watchConns
	return res, err
}

// watchEtcd does the same with raw etcd watches on the key.
func watchEtcd(ctx context.Context, ec *clientv3.Client) (watchResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key := rawPrefix + watchName
	if _, err := ec.Put(ctx, key, "-1"); err != nil {
		return watchResult{}, err
	}
	f := newFanOut()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	start := time.Now()
	for w := range watchers {
		wc := ec.Watch(ctx, key, clientv3.WithCreatedNotify())
		first, ok := <-wc
		if !ok || !first.Created {
			return watchResult{}, fmt.Errorf("raw watcher %d not created: %v", w, first.Err())
		}
		wg.Go(func() {
			for resp := range wc {
				for _, ev := range resp.Events {
					r, _ := strconv.Atoi(string(ev.Kv.Value))
					f.see(w, r)
				}
			}
		})
	}
	establish := time.Since(start)
	res, err := f.run(ctx, func(r int) error {
		_, err := ec.Put(ctx, key, strconv.Itoa(r))
		return err
	})
	res.establish, res.conns = establish, 1
	return res, err
}

// profile writes a CPU profile of one phase to
// $TETHER_BENCH_PROFILE/<phase>.cpu.pprof if that variable names a
// directory, and the allocation profiles before and after it
// (<phase>.allocs-before.pprof, <phase>.allocs.pprof: read them with
// `go tool pprof -sample_index=alloc_space -base <before> <after>`). It
// returns the function that stops it.
func profile(b *testing.B, phase string) (stop func()) {
	dir := os.Getenv("TETHER_BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, phase+".cpu.pprof"))
	if err != nil {
		b.Fatalf("profile %s: %v", phase, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("profile %s: %v (is -cpuprofile set too?)", phase, err)
	}
	writeAllocs(b, filepath.Join(dir, phase+".allocs-before.pprof"))
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		writeAllocs(b, filepath.Join(dir, phase+".allocs.pprof"))
	}
}

// writeAllocs saves the allocation profile (totals since the process
// started) to path; the difference of two shows what one phase allocated.
func writeAllocs(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatalf("allocation profile: %v", err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		b.Fatalf("allocation profile %s: %v", path, err)
	}
}

// newClient returns an admin clientset with its own transport, hence its
// own HTTP/2 connection: client-go shares transports between configs with
// equal TLS settings, and a Proxy function makes a config uncacheable.
func newClient(b *testing.B, admin *rest.Config, userAgent string) *kubernetes.Clientset {
	b.Helper()
	c := rest.CopyConfig(admin)
	c.QPS, c.Burst = -1, 0 // no client-side rate limit
	c.ContentType = protobuf
	c.AcceptContentTypes = protobuf + ",application/json"
	c.UserAgent = userAgent
	c.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		b.Fatalf("client %s: %v", userAgent, err)
	}
	return cs
}

func configMap(name, v string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "bench"}},
		Data:       map[string]string{"v": v},
	}
}

func pod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "bench"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
}

// mem is a snapshot of the process's memory.
type mem struct {
	rss, hwm       uint64 // VmRSS, VmHWM
	heapInuse, sys uint64 // runtime.MemStats
}

func readMem() mem {
	var m mem
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.heapInuse, m.sys = ms.HeapInuse, ms.Sys
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.rss = kb << 10
		case "VmHWM":
			m.hwm = kb << 10
		}
	}
	return m
}

// cpuTime is the CPU time (user + system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// disk is the embedded etcd's disk latency, from its Prometheus metrics
// (registered in this process's default registry).
type disk struct {
	walFsync, commit time.Duration // mean
	walN, commitN    uint64
	walSum, commitS  float64
}

func etcdDisk() disk {
	var d disk
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return d
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil {
				continue
			}
			switch mf.GetName() {
			case "etcd_disk_wal_fsync_duration_seconds":
				d.walN, d.walSum = h.GetSampleCount(), h.GetSampleSum()
			case "etcd_disk_backend_commit_duration_seconds":
				d.commitN, d.commitS = h.GetSampleCount(), h.GetSampleSum()
			}
		}
	}
	return d
}

// since is the mean latency of the operations between d0 and d.
func (d disk) since(d0 disk) disk {
	mean := func(sum float64, n uint64) time.Duration {
		if n == 0 {
			return 0
		}
		return time.Duration(sum / float64(n) * float64(time.Second))
	}
	d.walFsync = mean(d.walSum-d0.walSum, d.walN-d0.walN)
	d.commit = mean(d.commitS-d0.commitS, d.commitN-d0.commitN)
	return d
}

func (d disk) note() string {
	if d.walFsync == 0 {
		return "no fsync recorded"
	}
	if d.walFsync < time.Millisecond {
		return "a fast disk, so the server's fixed CPU cost per create weighs more than on a disk where fsync takes milliseconds"
	}
	return "fsync dominates a put"
}

// machineBusy is the CPU time all processes have used, from /proc/stat
// (user, nice, system, irq, softirq, steal; in USER_HZ = 100 ticks).
func machineBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, _ := strconv.ParseUint(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// establishedTo counts this process's established TCP connections to the
// server at rawURL, from /proc/self/net/tcp. It returns -1 if it cannot tell.
func establishedTo(rawURL string) int {
	u, err := url.Parse(rawURL)
	if err != nil {
		return -1
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return -1
	}
	f, err := os.Open("/proc/self/net/tcp")
	if err != nil {
		return -1
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return -1
	}
	want := fmt.Sprintf(":%04X", port)
	n := 0
	for _, line := range strings.Split(string(data), "\n")[1:] {
		fields := strings.Fields(line)
		// sl local_address rem_address st ...; 01 is ESTABLISHED.
		if len(fields) > 3 && strings.HasSuffix(fields[2], want) && fields[3] == "01" {
			n++
		}
	}
	return n
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return math.Inf(1)
	}
	return float64(a) / float64(b)
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ms(d time.Duration) string {
	switch {
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0fms", msf(d))
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", msf(d))
	default:
		return fmt.Sprintf("%.2fms", msf(d))
	}
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }
