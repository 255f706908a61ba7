package nodeipam

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
)

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatalf("ParseCIDR(%q): %v", s, err)
	}
	return n
}

func mustSet(t *testing.T, cluster string, mask int) *cidrSet {
	t.Helper()
	s, err := newCIDRSet(mustCIDR(t, cluster), mask)
	if err != nil {
		t.Fatalf("newCIDRSet(%s, %d): %v", cluster, mask, err)
	}
	return s
}

// allocate allocates for node and returns the subnet as a string.
func allocate(t *testing.T, s *cidrSet, node string) string {
	t.Helper()
	n, err := s.allocate(node)
	if err != nil {
		t.Fatalf("allocate(%q): %v", node, err)
	}
	return n.String()
}

func TestNewCIDRSet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster string
		mask    int
		size    int
		wantErr string
	}{
		{"slash16 by 24", "10.244.0.0/16", 24, 256, ""},
		{"slash22 by 24", "10.0.0.0/22", 24, 4, ""},
		{"slash30 by 31", "192.168.0.0/30", 31, 2, ""},
		{"whole range one subnet", "10.0.0.0/24", 24, 1, ""},
		{"unaligned address is masked", "10.244.7.9/16", 24, 256, ""},
		{"slash8 by 24 is the limit", "10.0.0.0/8", 24, 65536, ""},
		{"too many subnets", "10.0.0.0/8", 25, 0, "at most /24"},
		{"mask shorter than cluster", "10.0.0.0/16", 15, 0, "want /16 to /32"},
		{"mask longer than 32", "10.0.0.0/16", 33, 0, "want /16 to /32"},
		{"ipv6", "fd00::/48", 64, 0, "only IPv4"},
		{"ipv4-mapped ipv6", "::ffff:10.0.0.0/104", 120, 0, "only IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newCIDRSet(mustCIDR(t, tc.cluster), tc.mask)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("newCIDRSet(%s, %d) error = %v, want one containing %q", tc.cluster, tc.mask, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("newCIDRSet(%s, %d): %v", tc.cluster, tc.mask, err)
			}
			if s.size() != tc.size {
				t.Errorf("newCIDRSet(%s, %d).size() = %d, want %d", tc.cluster, tc.mask, s.size(), tc.size)
			}
		})
	}
}

func TestAllocateNextFitAndReuse(t *testing.T) {
	s := mustSet(t, "10.0.0.0/22", 24)
	for i, want := range []string{"10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"} {
		node := []string{"a", "b", "c"}[i]
		if got := allocate(t, s, node); got != want {
			t.Errorf("allocate(%q) = %s, want %s", node, got, want)
		}
	}
	// Asking again for a node that holds a subnet returns the same one.
	if got := allocate(t, s, "b"); got != "10.0.1.0/24" {
		t.Errorf("allocate(b) again = %s, want 10.0.1.0/24", got)
	}
	// A freed subnet is reused only after the untouched ones.
	if !s.release("a") {
		t.Fatalf("release(a) = false, want true")
	}
	if s.release("a") {
		t.Errorf("release(a) twice = true, want false")
	}
	if got := allocate(t, s, "d"); got != "10.0.3.0/24" {
		t.Errorf("allocate(d) = %s, want the untouched 10.0.3.0/24", got)
	}
	if got := allocate(t, s, "e"); got != "10.0.0.0/24" {
		t.Errorf("allocate(e) = %s, want the freed 10.0.0.0/24", got)
	}
	if _, err := s.allocate("f"); !errors.Is(err, ErrRangeFull) {
		t.Errorf("allocate(f) on a full set: err = %v, want ErrRangeFull", err)
	}
	if used, total := s.usage(); used != 4 || total != 4 {
		t.Errorf("usage() = %d, %d, want 4, 4", used, total)
	}
}

func TestSmallSubnets(t *testing.T) {
	s := mustSet(t, "192.168.0.0/30", 31)
	if got := allocate(t, s, "a"); got != "192.168.0.0/31" {
		t.Errorf("allocate(a) = %s, want 192.168.0.0/31", got)
	}
	if got := allocate(t, s, "b"); got != "192.168.0.2/31" {
		t.Errorf("allocate(b) = %s, want 192.168.0.2/31", got)
	}
	if _, err := s.allocate("c"); !errors.Is(err, ErrRangeFull) {
		t.Errorf("allocate(c): err = %v, want ErrRangeFull", err)
	}
}

func TestOverlapping(t *testing.T) {
	s := mustSet(t, "10.0.0.0/22", 24)
	for _, tc := range []struct {
		cidr string
		want []int
	}{
		{"10.0.1.0/24", []int{1}},
		{"10.0.1.128/25", []int{1}},
		{"10.0.2.0/23", []int{2, 3}},
		{"10.0.0.0/16", []int{0, 1, 2, 3}},
		{"0.0.0.0/0", []int{0, 1, 2, 3}},
		{"10.0.4.0/24", nil},
		{"9.255.255.0/24", nil},
		{"fd00::/64", nil},
	} {
		if got := s.overlapping(mustCIDR(t, tc.cidr)); !slices.Equal(got, tc.want) {
			t.Errorf("overlapping(%s) = %v, want %v", tc.cidr, got, tc.want)
		}
	}
	// The top of the address space does not overflow.
	top := mustSet(t, "255.255.255.0/24", 25)
	if got := top.overlapping(mustCIDR(t, "255.255.255.128/25")); !slices.Equal(got, []int{1}) {
		t.Errorf("overlapping(255.255.255.128/25) = %v, want [1]", got)
	}
	if got := top.subnet(1).String(); got != "255.255.255.128/25" {
		t.Errorf("subnet(1) = %s, want 255.255.255.128/25", got)
	}
}

func TestOccupy(t *testing.T) {
	s := mustSet(t, "10.0.0.0/22", 24)
	if c := s.occupy("a", []*net.IPNet{mustCIDR(t, "10.0.1.0/24")}); c != nil {
		t.Errorf("occupy(a) conflicts = %v, want none", c)
	}
	// Occupying the same again is a no-op.
	if c := s.occupy("a", []*net.IPNet{mustCIDR(t, "10.0.1.0/24")}); c != nil {
		t.Errorf("occupy(a) again conflicts = %v, want none", c)
	}
	// Outside the range: nothing recorded, nothing conflicts.
	if c := s.occupy("outside", []*net.IPNet{mustCIDR(t, "192.168.0.0/24"), mustCIDR(t, "fd00::/64")}); c != nil {
		t.Errorf("occupy(outside) conflicts = %v, want none", c)
	}
	// A /23 takes two subnets, minus the one a already holds.
	if c := s.occupy("big", []*net.IPNet{mustCIDR(t, "10.0.0.0/23")}); !slices.Equal(c, []string{"a"}) {
		t.Errorf("occupy(big) conflicts = %v, want [a]", c)
	}
	if got := allocate(t, s, "c"); got != "10.0.2.0/24" {
		t.Errorf("allocate(c) = %s, want 10.0.2.0/24", got)
	}
	// Releasing big frees only what big holds, not a's subnet.
	s.release("big")
	if used, _ := s.usage(); used != 2 {
		t.Errorf("usage after release(big) = %d used, want 2 (a and c)", used)
	}
	// A node whose recorded subnet differs from its spec moves to its spec.
	s.occupy("c", []*net.IPNet{mustCIDR(t, "10.0.3.0/24")})
	if got := s.byNode["c"]; !slices.Equal(got, []int{3}) {
		t.Errorf("byNode[c] = %v, want [3]", got)
	}
	if s.owner[2] != "" {
		t.Errorf("owner[2] = %q, want free after c moved", s.owner[2])
	}
}

func TestReserve(t *testing.T) {
	s := mustSet(t, "10.0.0.0/22", 24)
	s.reserve(mustCIDR(t, "10.0.1.0/24"))
	s.reserve(mustCIDR(t, "10.96.0.0/12")) // outside: no effect
	var got []string
	for _, node := range []string{"a", "b", "c"} {
		got = append(got, allocate(t, s, node))
	}
	if want := []string{"10.0.0.0/24", "10.0.2.0/24", "10.0.3.0/24"}; !slices.Equal(got, want) {
		t.Errorf("allocations around a reserved subnet = %v, want %v", got, want)
	}
	if _, err := s.allocate("d"); !errors.Is(err, ErrRangeFull) {
		t.Errorf("allocate(d): err = %v, want ErrRangeFull", err)
	}
	// A node claiming the reserved subnet does not get it.
	if c := s.occupy("e", []*net.IPNet{mustCIDR(t, "10.0.1.0/24")}); !slices.Equal(c, []string{reservedOwner}) {
		t.Errorf("occupy(e) of a reserved subnet conflicts = %v, want [%s]", c, reservedOwner)
	}
}
