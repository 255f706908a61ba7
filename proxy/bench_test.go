package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"
)

// The shape of BenchmarkProxySync.
const (
	benchServices    = 1000
	benchFullRuns    = 5
	benchPartialRuns = 30
	benchFullTarget  = time.Second            // full sync of benchServices × 2 endpoints
	benchPartTarget  = 100 * time.Millisecond // one endpoint changed
)

// benchInput is n Services, each with its own ClusterIP and two ready
// endpoints; gen shifts the endpoints of Service i%n by gen so that each
// generation changes exactly one endpoint.
func benchInput(n, changed, gen int) Input {
	in := Input{
		ServiceCIDR: &net.IPNet{IP: net.IPv4(10, 96, 0, 0), Mask: net.CIDRMask(12, 32)},
		ClusterCIDR: &net.IPNet{IP: net.IPv4(10, 244, 0, 0), Mask: net.CIDRMask(16, 32)},
		NodeIPs:     []net.IP{net.IPv4(192, 0, 2, 1)},
	}
	for i := range n {
		name := fmt.Sprintf("svc-%04d", i)
		vip := fmt.Sprintf("10.96.%d.%d", 1+i/250, 1+i%250)
		in.Services = append(in.Services, makeService("bench", name, vip, 80))
		a := fmt.Sprintf("10.244.%d.%d", 1+(2*i)/250, 1+(2*i)%250)
		b := fmt.Sprintf("10.244.%d.%d", 1+(2*i+1)/250, 1+(2*i+1)%250)
		if i == changed && gen > 0 {
			b = fmt.Sprintf("10.245.%d.%d", gen/250, 1+gen%250)
		}
		in.EndpointSlices = append(in.EndpointSlices, makeSlice("bench", name, "a", 8080, readyEP(a), readyEP(b)))
	}
	return in
}

// BenchmarkBuildRules times rule generation alone (no kernel) for
// benchServices Services × 2 endpoints.
func BenchmarkBuildRules(b *testing.B) {
	in := benchInput(benchServices, 0, 0)
	b.ReportAllocs()
	for b.Loop() {
		rs := BuildRules(in)
		fake := knftables.NewFake(knftables.IPv4Family, "tether")
		rs.Apply(fake.NewTransaction(), nil)
	}
}

// benchResult is what the bench child reports.
type benchResult struct {
	Rules, Chains, FullOps int
	Build                  []time.Duration // BuildRules + Apply into a transaction, no kernel
	NFTFloor               []time.Duration // nft -f of a one-line transaction
	Full                   []time.Duration // Sync rebuilding the whole table
	Partial                []time.Duration // Sync with one endpoint changed
	PartialOps             int
	Noop                   []time.Duration // Sync with nothing changed
	RunReady               time.Duration   // Run start (informers on a fake clientset) → Ready
	Event                  []time.Duration // EndpointSlice update in the API → rules in the kernel, through Run
}

// BenchmarkProxySync measures syncs into a real kernel table in a
// throwaway network namespace: a full sync of 1,000 Services × 2
// endpoints, an incremental sync after one endpoint changed, and the same
// change end to end through Run's informers. It ignores b.N beyond one
// run and prints a table; misses against the targets are reported, never
// failed.
func BenchmarkProxySync(b *testing.B) {
	skipUnlessRoot(b)
	ns := "tpx" + randHex(b, 3) + "-bench"
	addNetns(b, ns)
	var res benchResult
	b.ResetTimer()
	runChild(b, ns, helperReq{Op: "bench", Table: "tether-bench", Services: benchServices}, &res)
	b.StopTimer()

	out := os.Stdout
	fmt.Fprintf(out, "\n== tether service proxy sync benchmark (%s, GOMAXPROCS=%d, NumCPU=%d, %s, %s) ==\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version(), nftVersion())
	fmt.Fprintf(out, "%d ClusterIP Services × 2 ready endpoints → %d rules and elements, %d per-service chains, a %d-operation full transaction;\n",
		benchServices, res.Rules, res.Chains, res.FullOps)
	fmt.Fprintf(out, "real nft into table ip tether-bench in a fresh network namespace; the floor is one exec of nft -f with a one-line transaction\n\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\truns\tp50\tmax\t")
	row := func(name string, d []time.Duration) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t\n", name, len(d), ms(pct(d, 0.5)), ms(pct(d, 1)))
	}
	row("nft exec floor (one-line transaction)", res.NFTFloor)
	row("BuildRules + transaction text (no kernel)", res.Build)
	row("full sync (whole table, atomically)", res.Full)
	row(fmt.Sprintf("incremental sync, one endpoint changed (%d ops)", res.PartialOps), res.Partial)
	row("sync with nothing changed", res.Noop)
	row("API update → rules in kernel, through Run", res.Event)
	tw.Flush()
	fmt.Fprintf(out, "(Run start with %d Services on a fake clientset → Ready: %s)\n", benchServices, ms(res.RunReady))

	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	full, part, ev := pct(res.Full, 0.5), pct(res.Partial, 0.5), pct(res.Event, 0.5)
	fmt.Fprintf(out, "\nTargets\n")
	fmt.Fprintf(out, "  %s  %-50s p50 %s, max %s (%.1f× the nft floor)\n", verdict(pct(res.Full, 1) <= benchFullTarget),
		"full sync, 1,000 Services × 2 endpoints ≤1s", ms(full), ms(pct(res.Full, 1)), float64(full)/float64(max(pct(res.NFTFloor, 0.5), 1)))
	fmt.Fprintf(out, "  %s  %-50s p50 %s, max %s (%.1f× the nft floor)\n", verdict(pct(res.Partial, 1) <= benchPartTarget),
		"incremental sync, one endpoint ≤100ms", ms(part), ms(pct(res.Partial, 1)), float64(part)/float64(max(pct(res.NFTFloor, 0.5), 1)))
	fmt.Fprintf(out, "  %s  %-50s p50 %s, max %s\n\n", verdict(pct(res.Event, 1) <= benchPartTarget),
		"API update → kernel through Run ≤100ms", ms(ev), ms(pct(res.Event, 1)))

	b.ReportMetric(msf(full), "full_ms")
	b.ReportMetric(msf(part), "partial_ms")
	b.ReportMetric(msf(ev), "event_ms")
}

// helperBench runs in the benchmark's network namespace.
func helperBench(req helperReq) error {
	ctx := context.Background()
	n := req.Services
	var res benchResult

	// The exec floor.
	floorNFT, err := knftables.New(knftables.IPv4Family, req.Table+"-floor")
	if err != nil {
		return err
	}
	for range 10 {
		tx := floorNFT.NewTransaction()
		tx.Add(&knftables.Table{})
		start := time.Now()
		if err := floorNFT.Run(ctx, tx); err != nil {
			return err
		}
		res.NFTFloor = append(res.NFTFloor, time.Since(start))
	}

	in := benchInput(n, 0, 0)
	for range 10 {
		start := time.Now()
		rs := BuildRules(in)
		tx := floorNFT.NewTransaction()
		rs.Apply(tx, nil)
		_ = tx.String()
		res.Build = append(res.Build, time.Since(start))
		res.Rules, res.Chains, res.FullOps = rs.Rules(), rs.Chains(), tx.NumOperations()
	}

	p, err := New(Config{
		Client:      fake.NewClientset(),
		NodeName:    "bench",
		ServiceCIDR: in.ServiceCIDR,
		ClusterCIDR: in.ClusterCIDR,
		NodeIPs:     in.NodeIPs,
		TableName:   req.Table,
	})
	if err != nil {
		return err
	}
	timed := func(in Input) (time.Duration, error) {
		start := time.Now()
		err := p.Sync(ctx, in)
		return time.Since(start), err
	}
	for range benchFullRuns {
		p.forget()
		d, err := timed(in)
		if err != nil {
			return err
		}
		res.Full = append(res.Full, d)
	}
	for gen := 1; gen <= benchPartialRuns; gen++ {
		cur := benchInput(n, (gen*37)%n, gen)
		prev := p.applied
		d, err := timed(cur)
		if err != nil {
			return err
		}
		res.Partial = append(res.Partial, d)
		tx := floorNFT.NewTransaction()
		p.applied.Apply(tx, prev)
		res.PartialOps = tx.NumOperations()
		in = cur
	}
	for range 5 {
		d, err := timed(in)
		if err != nil {
			return err
		}
		res.Noop = append(res.Noop, d)
	}
	out, err := exec.Command("nft", "list", "table", "ip", req.Table).Output()
	if err != nil {
		return err
	}
	if !strings.Contains(string(out), "svc-bench/svc-0999/tcp/80") {
		return fmt.Errorf("the kernel table lacks the last Service's chain")
	}

	// End to end through Run: informers on a fake clientset holding the
	// same objects, one EndpointSlice updated at a time.
	if err := Cleanup(ctx, req.Table); err != nil {
		return err
	}
	var objs []kruntime.Object
	for _, s := range in.Services {
		objs = append(objs, s)
	}
	for _, s := range in.EndpointSlices {
		objs = append(objs, s)
	}
	client := fake.NewClientset(objs...)
	p, err = New(Config{
		Client:      client,
		NodeName:    "bench",
		ServiceCIDR: in.ServiceCIDR,
		ClusterCIDR: in.ClusterCIDR,
		NodeIPs:     in.NodeIPs,
		TableName:   req.Table,
	})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Run(rctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		return fmt.Errorf("Run: %w", err)
	}
	res.RunReady = time.Since(start)
	for gen := 1; gen <= benchPartialRuns; gen++ {
		i := (gen * 53) % n
		sl := benchInput(n, i, gen+1000).EndpointSlices[i]
		p.mu.Lock()
		before := p.applied
		p.mu.Unlock()
		time.Sleep(2 * DefaultMinSyncInterval) // let each update stand alone
		start := time.Now()
		if _, err := client.DiscoveryV1().EndpointSlices("bench").Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
			return err
		}
		for {
			p.mu.Lock()
			cur := p.applied
			p.mu.Unlock()
			if cur != before && cur != nil && cur.chains[fmt.Sprintf("ep-bench/svc-%04d/tcp/80__%s/8080", i, sl.Endpoints[1].Addresses[0])] != nil {
				break
			}
			if time.Since(start) > 10*time.Second {
				return fmt.Errorf("update %d not applied after 10s", gen)
			}
			time.Sleep(200 * time.Microsecond)
		}
		res.Event = append(res.Event, time.Since(start))
	}
	cancel()
	if err := <-done; err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", msf(d)) }
func msf(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

func nftVersion() string {
	out, err := exec.Command("nft", "--version").Output()
	if err != nil {
		return "nft ?"
	}
	return strings.TrimSpace(string(out))
}
