package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// The shape of BenchmarkServiceLatency.
const (
	latencyConns   = 10000 // per path
	latencyWarmup  = 500   // pairs, not counted
	latencyVIP     = "10.96.0.10"
	latencyTarget  = 200 * time.Microsecond // added p99
	latencyBasePrt = 10000                  // first client port; one fresh port per connection
)

// latencyResult is what a "latency" child reports: one duration per
// connection (dial + read one byte + close), per path, in the order made.
type latencyResult struct {
	Direct, VIP       []time.Duration
	DirectHits, VHits map[string]int // reply byte → connections
	Errs              []string
	Took              time.Duration
}

// BenchmarkServiceLatency measures what a ClusterIP adds to short TCP
// connections. On the node of newTestNet (pods p1 and p2 and a client pod
// on one bridge), a real Proxier programs benchServices Services × 2
// endpoints plus the measured Service (VIP 10.96.0.10:80 → p1 and p2
// :8080); the pods answer each connection with one byte and close it. The
// client makes latencyConns connections to the pods' own addresses and
// latencyConns to the VIP, one at a time, interleaved pair by pair (ABBA)
// so drift hits both alike. The direct figures are the limit measured in
// the same run; the VIP's excess over them is the result. A missed target
// is reported, never failed.
func BenchmarkServiceLatency(b *testing.B) {
	skipUnlessRoot(b)
	n := newTestNet(b)
	serveOneIn(b, n.p1, ":8080", "1")
	serveOneIn(b, n.p2, ":8080", "2")

	st := proxyState{}
	in := benchInput(benchServices, 0, 0)
	st.Services = append(in.Services, makeService("lat", "target", latencyVIP, 80))
	st.EndpointSlices = append(in.EndpointSlices, makeSlice("lat", "target", "a", 8080, readyEP("10.244.0.2"), readyEP("10.244.0.3")))
	const table = "tether-lat"
	syncStart := time.Now()
	pc := startProxy(b, n.node, helperReq{
		Table:       table,
		ServiceCIDR: "10.96.0.0/12",
		ClusterCIDR: "10.244.0.0/16",
		NodeIPs:     []string{"192.0.2.1"},
	}, st)
	ready := time.Since(syncStart)
	vips := strings.Count(mustRun(b, "ip", "netns", "exec", n.node, "nft", "list", "map", "ip", table, mapServiceIPs), ": goto svc-")
	if vips != benchServices+1 {
		b.Fatalf("service-ips holds %d VIPs, want %d", vips, benchServices+1)
	}
	brnf := strings.TrimSpace(readIn(b, n.node, "/proc/sys/net/bridge/bridge-nf-call-iptables"))

	load := strings.Join(strings.Fields(readIn(b, n.node, "/proc/loadavg"))[:3], " ")
	var res latencyResult
	b.ResetTimer()
	runChild(b, n.client, helperReq{
		Op:     "latency",
		Direct: []string{"10.244.0.2:8080", "10.244.0.3:8080"},
		VIP:    latencyVIP + ":80",
		Count:  latencyConns,
	}, &res)
	b.StopTimer()
	ct := strings.TrimSpace(readIn(b, n.node, "/proc/sys/net/netfilter/nf_conntrack_count"))
	pc.stop()
	if len(res.Errs) > 0 {
		b.Fatalf("%d connections failed, e.g. %v", len(res.Errs), res.Errs[:min(len(res.Errs), 5)])
	}
	if len(res.Direct) != latencyConns || len(res.VIP) != latencyConns || res.VHits["1"] == 0 || res.VHits["2"] == 0 {
		b.Fatalf("got %d direct and %d VIP connections (VIP replies %v), want %d each and both pods behind the VIP",
			len(res.Direct), len(res.VIP), res.VHits, latencyConns)
	}

	out := os.Stdout
	fmt.Fprintf(out, "\n== tether service proxy latency benchmark (%s, GOMAXPROCS=%d, NumCPU=%d, %s, %s) ==\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version(), nftVersion())
	fmt.Fprintf(out, "%d sequential TCP connections per path (dial + read 1 byte + close, a fresh client port each) from a client pod\n", latencyConns)
	fmt.Fprintf(out, "to two backend pods on the same bridge, directly and through ClusterIP %s:80, interleaved pair by pair (ABBA),\n", latencyVIP)
	fmt.Fprintf(out, "after %d warm-up pairs; a real Proxier holds %d Services × 2 endpoints (%d VIPs in %s; proxy child start,\n",
		latencyWarmup, benchServices+1, vips, mapServiceIPs)
	fmt.Fprintf(out, "fake API loaded, → Ready %s); node netns bridge-nf-call-iptables=%s, conntrack entries after the run %s;\n", ms(ready), brnf, ct)
	fmt.Fprintf(out, "load average before the run %s; the connections took %s\n\n", load, res.Took.Round(time.Millisecond))

	qs := []float64{0.5, 0.9, 0.99, 0.999, 1}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tconns\tp50\tp90\tp99\tp99.9\tmax\tmean\t")
	row := func(name string, d []time.Duration) {
		fmt.Fprintf(tw, "%s\t%d\t", name, len(d))
		for _, q := range qs {
			fmt.Fprintf(tw, "%s\t", us(pct(d, q)))
		}
		fmt.Fprintf(tw, "%s\t\n", us(mean(d)))
	}
	row("pod IP directly (the limit)", res.Direct)
	row("ClusterIP VIP (DNAT)", res.VIP)
	fmt.Fprintf(tw, "added by the VIP\t\t")
	for _, q := range qs {
		fmt.Fprintf(tw, "%+.1fµs\t", usf(pct(res.VIP, q)-pct(res.Direct, q)))
	}
	fmt.Fprintf(tw, "%+.1fµs\t\n", usf(mean(res.VIP)-mean(res.Direct)))
	fmt.Fprintf(tw, "VIP ÷ pod IP\t\t")
	for _, q := range qs {
		fmt.Fprintf(tw, "%.2f×\t", float64(pct(res.VIP, q))/float64(max(pct(res.Direct, q), 1)))
	}
	fmt.Fprintf(tw, "%.2f×\t\n", float64(mean(res.VIP))/float64(max(mean(res.Direct), 1)))
	tw.Flush()
	fmt.Fprintf(out, "(replies: direct %v, VIP %v)\n", res.DirectHits, res.VHits)

	added := pct(res.VIP, 0.99) - pct(res.Direct, 0.99)
	verdict := "PASS"
	if added > latencyTarget {
		verdict = "MISS"
	}
	fmt.Fprintf(out, "\nTargets\n")
	fmt.Fprintf(out, "  %s  %-50s %+.1fµs (VIP p99 %s vs pod IP p99 %s)\n\n", verdict,
		"p99 added by the VIP ≤0.2ms", usf(added), us(pct(res.VIP, 0.99)), us(pct(res.Direct, 0.99)))

	b.ReportMetric(usf(pct(res.Direct, 0.99)), "direct_p99_µs")
	b.ReportMetric(usf(pct(res.VIP, 0.99)), "vip_p99_µs")
	b.ReportMetric(usf(added), "added_p99_µs")
}

// helperServeOne answers every connection with the first byte of
// req.Name and closes it.
func helperServeOne(req helperReq) error {
	ln, err := net.Listen("tcp4", req.Addr)
	if err != nil {
		return err
	}
	fmt.Println("READY")
	reply := []byte(req.Name[:1])
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		_, _ = c.Write(reply)
		c.Close()
	}
}

// helperLatency makes req.Count connections to req.VIP and as many to the
// addresses in req.Direct (in turn), interleaved ABBA, after latencyWarmup
// uncounted pairs. Every connection binds a port of its own, so no
// 4-tuple is used twice: the pods' TIME_WAIT sockets and the node's
// conntrack entries never meet a reused one. The collector is off while
// it measures.
func helperLatency(req helperReq) error {
	res := latencyResult{DirectHits: map[string]int{}, VHits: map[string]int{}}
	port := latencyBasePrt
	var buf [1]byte
	conn := func(addr string) (time.Duration, error) {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{Port: port}}
		port++
		start := time.Now()
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			return 0, err
		}
		_ = c.SetDeadline(start.Add(2 * time.Second))
		_, err = io.ReadFull(c, buf[:])
		c.Close()
		return time.Since(start), err
	}
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	res.Direct = make([]time.Duration, 0, req.Count)
	res.VIP = make([]time.Duration, 0, req.Count)
	start := time.Now()
	for i := -latencyWarmup; i < req.Count; i++ {
		direct := req.Direct[(i+latencyWarmup)%len(req.Direct)]
		order := []bool{false, true} // VIP?
		if i%2 != 0 {
			order = []bool{true, false}
		}
		for _, vip := range order {
			addr := direct
			if vip {
				addr = req.VIP
			}
			d, err := conn(addr)
			if err != nil {
				res.Errs = append(res.Errs, fmt.Sprintf("%s: %v", addr, err))
				continue
			}
			if i < 0 {
				continue
			}
			if vip {
				res.VIP = append(res.VIP, d)
				res.VHits[string(buf[:])]++
			} else {
				res.Direct = append(res.Direct, d)
				res.DirectHits[string(buf[:])]++
			}
		}
	}
	res.Took = time.Since(start)
	return json.NewEncoder(os.Stdout).Encode(res)
}

// serveOneIn starts a one-byte server in netns.
func serveOneIn(t testing.TB, netns, addr, name string) {
	t.Helper()
	cmd := child(t, netns, helperReq{Op: "serve1", Addr: addr, Name: name})
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "READY" {
		t.Fatalf("server in %s: got %q, %v; stderr: %s", netns, line, err, stderr.String())
	}
}

// readIn reads a file (a sysctl) as seen from inside netns.
func readIn(t testing.TB, netns, path string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", netns, "cat", path).CombinedOutput()
	if err != nil {
		return "?"
	}
	return string(out)
}

func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var s time.Duration
	for _, x := range d {
		s += x
	}
	return s / time.Duration(len(d))
}

func us(d time.Duration) string { return fmt.Sprintf("%.1fµs", usf(d)) }
func usf(d time.Duration) float64 {
	return float64(d) / float64(time.Microsecond)
}
