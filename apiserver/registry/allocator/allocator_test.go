package allocator

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"tether/apiserver/storage"
	"tether/apiserver/storage/storagetest"
)

// startEtcd runs an embedded etcd member for the test and returns its
// backend.
func startEtcd(t *testing.T) storage.Backend {
	t.Helper()
	return storagetest.Start(t).Backend()
}

// newClient returns a client of b, closed when the test ends.
func newClient(t *testing.T, b storage.Backend) *clientv3.Client {
	t.Helper()
	c, err := NewClient(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newIPs(t *testing.T, c *clientv3.Client, cidr string) *IPRange {
	t.Helper()
	r, err := NewIPRange(NewSet(c, "/test/ips/"), mustCIDR(t, cidr))
	if err != nil {
		t.Fatalf("NewIPRange(%s) = %v", cidr, err)
	}
	return r
}

func owner(name string) Owner {
	return Owner{Namespace: "default", Name: name, UID: types.UID("uid-" + name)}
}

func TestNewIPRange(t *testing.T) {
	tests := []struct {
		cidr    string
		size    uint64
		static  uint64
		wantErr bool
	}{
		{"10.96.0.0/12", 1<<20 - 2, 256, false},
		{"10.0.0.0/24", 254, 16, false},
		{"10.0.0.0/29", 6, 0, false},
		{"10.0.0.0/30", 2, 0, false},
		{"10.0.0.0/31", 0, 0, true},
		{"10.0.0.0/32", 0, 0, true},
		{"fd00::/108", 1<<20 - 1, 256, false},
		{"fd00::/64", 1 << maxHostBits, 256, false},
		{"fd00::/127", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			r, err := NewIPRange(nil, mustCIDR(t, tt.cidr))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NewIPRange(%s) = nil error, want one", tt.cidr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewIPRange(%s) = %v", tt.cidr, err)
			}
			if r.o.size != tt.size || r.o.static != tt.static {
				t.Errorf("NewIPRange(%s): size, static = %d, %d; want %d, %d", tt.cidr, r.o.size, r.o.static, tt.size, tt.static)
			}
		})
	}
}

func TestIPRangeAddresses(t *testing.T) {
	tests := []struct {
		cidr     string
		first    string
		in       []string
		excluded []string
	}{
		{"10.96.0.0/12", "10.96.0.1", []string{"10.96.0.10", "10.111.255.254", "10.100.1.0"}, []string{"10.96.0.0", "10.111.255.255", "10.112.0.1", "10.95.255.255", "fd00::1"}},
		{"10.0.0.0/29", "10.0.0.1", []string{"10.0.0.6"}, []string{"10.0.0.0", "10.0.0.7", "10.0.0.8"}},
		{"fd00::/108", "fd00::1", []string{"fd00::f:ffff", "fd00::10"}, []string{"fd00::", "fd00::10:0", "10.0.0.1"}},
		{"fd00:1:2:3::/64", "fd00:1:2:3::1", []string{"fd00:1:2:3::10", "fd00:1:2:3:4000::"}, []string{"fd00:1:2:3::", "fd00:1:2:3:4000::1", "fd00:1:2:4::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			r, err := NewIPRange(nil, mustCIDR(t, tt.cidr))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.First().String(); got != tt.first {
				t.Errorf("First() = %s, want %s", got, tt.first)
			}
			for _, s := range tt.in {
				ip := netip.MustParseAddr(s)
				off, ok := r.offset(ip)
				if !ok {
					t.Errorf("Contains(%s) = false, want true", s)
					continue
				}
				if got := r.addr(off); got != ip {
					t.Errorf("addr(offset(%s)) = %s", s, got)
				}
			}
			for _, s := range tt.excluded {
				if r.Contains(netip.MustParseAddr(s)) {
					t.Errorf("Contains(%s) = true, want false", s)
				}
			}
		})
	}
}

func TestIPRangeReserve(t *testing.T) {
	c := newClient(t, startEtcd(t))
	r := newIPs(t, c, "10.96.0.0/12")
	ctx := t.Context()
	a, b := owner("a"), owner("b")
	ip := netip.MustParseAddr("10.96.0.10")

	if created, err := r.Reserve(ctx, ip, a); !created || err != nil {
		t.Fatalf("Reserve(%s, a) = %v, %v; want true, nil", ip, created, err)
	}
	if created, err := r.Reserve(ctx, ip, a); created || err != nil {
		t.Errorf("Reserve(%s, a) again = %v, %v; want false, nil", ip, created, err)
	}
	if _, err := r.Reserve(ctx, ip, b); !errors.Is(err, ErrAllocated) {
		t.Errorf("Reserve(%s, b) = %v, want ErrAllocated", ip, err)
	}
	if err := r.Check(ctx, ip, b); !errors.Is(err, ErrAllocated) {
		t.Errorf("Check(%s, b) = %v, want ErrAllocated", ip, err)
	}
	if err := r.Check(ctx, ip, a); err != nil {
		t.Errorf("Check(%s, a) = %v, want nil", ip, err)
	}
	for _, s := range []string{"10.96.0.0", "10.111.255.255", "192.168.0.1"} {
		var re *RangeError
		if _, err := r.Reserve(ctx, netip.MustParseAddr(s), a); !errors.As(err, &re) || re.Range != "10.96.0.0/12" {
			t.Errorf("Reserve(%s) = %v, want a RangeError naming 10.96.0.0/12", s, err)
		}
	}
	rec, found, err := r.Set().Get(ctx, ip.String())
	if err != nil || !found || rec.Owner != a || time.Since(rec.Time) > time.Minute {
		t.Errorf("Get(%s) = %+v, %v, %v; want a's fresh record", ip, rec, found, err)
	}

	// Only the owner releases.
	if err := r.Release(ctx, ip, b); err != nil {
		t.Fatal(err)
	}
	if err := r.Check(ctx, ip, b); !errors.Is(err, ErrAllocated) {
		t.Errorf("after Release by b: Check(%s, b) = %v, want ErrAllocated", ip, err)
	}
	if err := r.Release(ctx, ip, a); err != nil {
		t.Fatal(err)
	}
	if created, err := r.Reserve(ctx, ip, b); !created || err != nil {
		t.Errorf("after Release by a: Reserve(%s, b) = %v, %v; want true, nil", ip, created, err)
	}
}

// TestIPRangeFull allocates every address of a small range, concurrently
// from two allocators (two API servers) over one etcd, and checks that no
// address is given twice, that the network, broadcast and first addresses
// are never picked, and that the range then reports full.
func TestIPRangeFull(t *testing.T) {
	b := startEtcd(t)
	servers := []*IPRange{newIPs(t, newClient(t, b), "10.0.0.0/24"), newIPs(t, newClient(t, b), "10.0.0.0/24")}
	ctx := t.Context()
	const n = 253 // 256 - network - broadcast - first
	var (
		mu  sync.Mutex
		got = map[netip.Addr]Owner{}
		wg  sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			o := owner(fmt.Sprintf("svc-%d", i))
			ip, err := servers[i%2].Allocate(ctx, o)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("Allocate(%s) = %v", o.Name, err)
				return
			}
			if prev, dup := got[ip]; dup {
				t.Errorf("Allocate gave %s to %s and %s", ip, prev.Name, o.Name)
			}
			got[ip] = o
		})
	}
	wg.Wait()
	if len(got) != n {
		t.Fatalf("allocated %d addresses, want %d", len(got), n)
	}
	for _, s := range []string{"10.0.0.0", "10.0.0.1", "10.0.0.255"} {
		if _, ok := got[netip.MustParseAddr(s)]; ok {
			t.Errorf("Allocate gave %s", s)
		}
	}
	if ip, err := servers[0].Allocate(ctx, owner("extra")); !errors.Is(err, ErrFull) {
		t.Errorf("Allocate on a full range = %s, %v; want ErrFull", ip, err)
	}
	if ip, err := servers[1].Peek(ctx); !errors.Is(err, ErrFull) {
		t.Errorf("Peek on a full range = %s, %v; want ErrFull", ip, err)
	}
	// The first address is still there for whoever asks.
	if created, err := servers[1].Reserve(ctx, netip.MustParseAddr("10.0.0.1"), owner("kubernetes")); !created || err != nil {
		t.Errorf("Reserve(10.0.0.1) = %v, %v; want true, nil", created, err)
	}
	// One released address is the next one given.
	var freed netip.Addr
	for ip, o := range got {
		freed = ip
		if err := servers[0].Release(ctx, ip, o); err != nil {
			t.Fatal(err)
		}
		break
	}
	if ip, err := servers[1].Allocate(ctx, owner("late")); err != nil || ip != freed {
		t.Errorf("Allocate after Release(%s) = %s, %v; want %s", freed, ip, err, freed)
	}
}

// TestIPRangeBigRange allocates from a /12 concurrently: dynamic addresses
// come from above the static band, and restarting (a new allocator over
// the same etcd) never gives one out again.
func TestIPRangeBigRange(t *testing.T) {
	b := startEtcd(t)
	r := newIPs(t, newClient(t, b), "10.96.0.0/12")
	ctx := t.Context()
	var (
		mu  sync.Mutex
		got = map[netip.Addr]bool{}
		wg  sync.WaitGroup
	)
	for i := range 100 {
		wg.Go(func() {
			ip, err := r.Allocate(ctx, owner(fmt.Sprintf("svc-%d", i)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("Allocate = %v", err)
			case got[ip]:
				t.Errorf("Allocate gave %s twice", ip)
			case !r.Contains(ip):
				t.Errorf("Allocate gave %s, outside the range", ip)
			}
			if off, _ := r.offset(ip); off < r.o.static {
				t.Errorf("Allocate gave %s, in the static band", ip)
			}
			got[ip] = true
		})
	}
	wg.Wait()

	restarted := newIPs(t, newClient(t, b), "10.96.0.0/12")
	for ip := range got {
		if _, err := restarted.Reserve(ctx, ip, owner("new")); !errors.Is(err, ErrAllocated) {
			t.Errorf("after restart: Reserve(%s) = %v, want ErrAllocated", ip, err)
		}
	}
	recs, err := restarted.Set().List(ctx)
	if err != nil || len(recs) != len(got) {
		t.Errorf("after restart: List() = %d records, %v; want %d", len(recs), err, len(got))
	}
}

func TestIPRangeRestartSmall(t *testing.T) {
	b := startEtcd(t)
	ctx := t.Context()
	first := newIPs(t, newClient(t, b), "10.0.0.0/29")
	var held []netip.Addr
	for i := range 3 {
		ip, err := first.Allocate(ctx, owner(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ip)
	}
	second := newIPs(t, newClient(t, b), "10.0.0.0/29")
	for i := range 2 { // 6 pickable minus the first address minus 3 held
		ip, err := second.Allocate(ctx, owner(fmt.Sprint("new", i)))
		if err != nil {
			t.Fatalf("Allocate after restart = %v", err)
		}
		for _, h := range held {
			if ip == h {
				t.Errorf("Allocate after restart gave %s, held before", ip)
			}
		}
	}
	if _, err := second.Allocate(ctx, owner("full")); !errors.Is(err, ErrFull) {
		t.Errorf("Allocate = %v, want ErrFull", err)
	}
}

func TestIPRangeIPv6(t *testing.T) {
	c := newClient(t, startEtcd(t))
	r := newIPs(t, c, "fd00:10:96::/108")
	ip, err := r.Allocate(t.Context(), owner("v6"))
	if err != nil || !ip.Is6() || !r.Contains(ip) {
		t.Fatalf("Allocate = %s, %v; want an address of fd00:10:96::/108", ip, err)
	}
	if _, err := r.Reserve(t.Context(), ip, owner("other")); !errors.Is(err, ErrAllocated) {
		t.Errorf("Reserve(%s) = %v, want ErrAllocated", ip, err)
	}
}

func TestPortRange(t *testing.T) {
	b := startEtcd(t)
	ctx := t.Context()
	newPorts := func(pr string) *PortRange {
		t.Helper()
		r, err := NewPortRange(NewSet(newClient(t, b), "/test/ports/"), *utilnet.ParsePortRangeOrDie(pr))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, bad := range []utilnet.PortRange{{}, {Base: 65000, Size: 1000}, {Base: 0, Size: 10}} {
		if _, err := NewPortRange(nil, bad); err == nil {
			t.Errorf("NewPortRange(%+v) = nil error, want one", bad)
		}
	}
	r := newPorts("30000-30009")
	if got := r.String(); got != "30000-30009" {
		t.Errorf("String() = %q", got)
	}
	if created, err := r.Reserve(ctx, 30005, owner("a")); !created || err != nil {
		t.Fatalf("Reserve(30005) = %v, %v", created, err)
	}
	if _, err := r.Reserve(ctx, 30005, owner("b")); !errors.Is(err, ErrAllocated) {
		t.Errorf("Reserve(30005, b) = %v, want ErrAllocated", err)
	}
	var re *RangeError
	if _, err := r.Reserve(ctx, 30010, owner("a")); !errors.As(err, &re) || re.Range != "30000-30009" {
		t.Errorf("Reserve(30010) = %v, want a RangeError", err)
	}
	// Peek never reserves and skips what it is told.
	p, err := r.Peek(ctx, 30000, 30001)
	if err != nil || p == 30005 || p == 30000 || p == 30001 {
		t.Errorf("Peek = %d, %v", p, err)
	}
	if err := r.Check(ctx, p, owner("b")); err != nil {
		t.Errorf("Check(%d) after Peek = %v, want nil", p, err)
	}

	// Nine free ports, many goroutines on two allocators.
	r2 := newPorts("30000-30009")
	var (
		mu  sync.Mutex
		got = map[int]bool{}
		wg  sync.WaitGroup
		nf  int
	)
	for i := range 20 {
		wg.Go(func() {
			a := []*PortRange{r, r2}[i%2]
			p, err := a.Allocate(ctx, owner(fmt.Sprint("svc", i)))
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, ErrFull) {
				nf++
				return
			}
			if err != nil {
				t.Errorf("Allocate = %v", err)
				return
			}
			if got[p] || p == 30005 || !r.Contains(p) {
				t.Errorf("Allocate gave %d (given before, held, or out of range)", p)
			}
			got[p] = true
		})
	}
	wg.Wait()
	if len(got) != 9 || nf != 11 {
		t.Errorf("allocated %d ports with %d full errors, want 9 and 11", len(got), nf)
	}
}

func TestPortRangeBands(t *testing.T) {
	r, err := NewPortRange(nil, utilnet.PortRange{Base: 30000, Size: 2768})
	if err != nil {
		t.Fatal(err)
	}
	if r.o.static != 86 {
		t.Errorf("static band = %d, want 86 (2768/32)", r.o.static)
	}
	c := newClient(t, startEtcd(t))
	r.o.set = NewSet(c, "/test/ports/")
	for i := range 50 {
		p, err := r.Allocate(t.Context(), owner(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		if p < 30086 {
			t.Errorf("Allocate = %d, in the static band 30000-30085", p)
		}
	}
}
