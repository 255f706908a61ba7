package nodeipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
)

// ErrRangeFull means every node subnet of the cluster CIDR is taken.
var ErrRangeFull = errors.New("nodeipam: cluster CIDR range is full")

// maxSubnetBits bounds NodeMaskSize - prefix length of ClusterCIDR, so
// that the set holds at most 65,536 node subnets (upstream's limit too).
const maxSubnetBits = 16

// reservedOwner marks node subnets that are never handed out, such as those
// overlapping the service CIDR. It cannot be a node name: '<' is not
// allowed in DNS subdomains.
const reservedOwner = "<reserved>"

// cidrSet divides an IPv4 cluster CIDR into equal node subnets and
// remembers which node holds which. It is safe for concurrent use.
type cidrSet struct {
	base     uint32 // first address of the cluster CIDR
	maskSize int    // prefix length of every node subnet
	shift    uint   // 32 - maskSize: log2 of the addresses per subnet

	mu     sync.Mutex
	owner  []string         // owner[i] holds subnet i; "" when free
	byNode map[string][]int // the subnets each node holds, ascending
	next   int              // where the next search for a free subnet starts
	used   int              // subnets with an owner, reserved ones included
}

// newCIDRSet returns an empty set of the /maskSize subnets of cluster.
func newCIDRSet(cluster *net.IPNet, maskSize int) (*cidrSet, error) {
	ip4, prefix, err := ipv4Net(cluster)
	if err != nil {
		return nil, err
	}
	switch {
	case maskSize < prefix || maskSize > 32:
		return nil, fmt.Errorf("node mask size /%d does not fit cluster CIDR %s: want /%d to /32", maskSize, cluster, prefix)
	case maskSize-prefix > maxSubnetBits:
		return nil, fmt.Errorf("node mask size /%d splits cluster CIDR %s into 2^%d subnets: want at most 2^%d, so a node mask of at most /%d",
			maskSize, cluster, maskSize-prefix, maxSubnetBits, prefix+maxSubnetBits)
	}
	return &cidrSet{
		base:     binary.BigEndian.Uint32(ip4) &^ (1<<(32-prefix) - 1),
		maskSize: maskSize,
		shift:    uint(32 - maskSize),
		owner:    make([]string, 1<<(maskSize-prefix)),
		byNode:   map[string][]int{},
	}, nil
}

// ipv4Net returns the 4-byte address and the prefix length of an IPv4
// network, or an error for IPv6 (not supported yet) and malformed values.
func ipv4Net(n *net.IPNet) (net.IP, int, error) {
	ones, bits := n.Mask.Size()
	ip4 := n.IP.To4()
	switch {
	case bits == 0:
		return nil, 0, fmt.Errorf("%s has a non-canonical netmask", n)
	case ip4 == nil || bits != 32:
		return nil, 0, fmt.Errorf("%s is not an IPv4 CIDR: only IPv4 pod networks are supported for now", n)
	}
	return ip4, ones, nil
}

// size returns how many node subnets the set has.
func (s *cidrSet) size() int { return len(s.owner) }

// subnet returns node subnet i.
func (s *cidrSet) subnet(i int) *net.IPNet {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, s.base+uint32(i)<<s.shift)
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(s.maskSize, 32)}
}

// overlapping returns the indices of the node subnets that n overlaps,
// ascending; none for IPv6 or a network outside the cluster CIDR.
func (s *cidrSet) overlapping(n *net.IPNet) []int {
	ip4, prefix, err := ipv4Net(n)
	if err != nil {
		return nil
	}
	// 64-bit arithmetic: a /0 ends at 2^32 - 1 and the range may end there.
	first := uint64(binary.BigEndian.Uint32(ip4)) &^ (1<<(32-prefix) - 1)
	last := first + 1<<(32-prefix) - 1
	lo, hi := uint64(s.base), uint64(s.base)+uint64(len(s.owner))<<s.shift-1
	first, last = max(first, lo), min(last, hi)
	if first > last {
		return nil
	}
	var out []int
	for i := (first - lo) >> s.shift; i <= (last-lo)>>s.shift; i++ {
		out = append(out, int(i))
	}
	return out
}

// reserve takes the node subnets that n overlaps out of use for good.
func (s *cidrSet) reserve(n *net.IPNet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range s.overlapping(n) {
		if s.owner[i] == "" {
			s.used++
		}
		s.owner[i] = reservedOwner
	}
}

// occupy records that node holds the pod CIDRs cidrs, which it already has
// in its spec: every node subnet they overlap becomes the node's, and any
// subnet recorded for the node before but not among them is released.
// A subnet that another node already holds stays with that node; occupy
// returns those nodes' names so that the caller can report the overlap.
func (s *cidrSet) occupy(node string, cidrs []*net.IPNet) (conflicts []string) {
	var want []int
	for _, c := range cidrs {
		want = append(want, s.overlapping(c)...)
	}
	slices.Sort(want)
	want = slices.Compact(want)

	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(s.byNode[node], want) {
		return nil
	}
	s.releaseLocked(node)
	var held []int
	for _, i := range want {
		switch o := s.owner[i]; o {
		case "":
			s.owner[i] = node
			s.used++
			held = append(held, i)
		case node:
			held = append(held, i)
		default:
			if !slices.Contains(conflicts, o) {
				conflicts = append(conflicts, o)
			}
		}
	}
	if len(held) > 0 {
		s.byNode[node] = held
	}
	return conflicts
}

// allocate returns a free node subnet for node and records it as the
// node's. If node already holds exactly one subnet, for example because a
// patch with it failed or the cache has not caught up with one that
// succeeded, allocate returns that subnet again: a node is never given two.
//
// Subnets are searched from just after the one handed out last (next fit),
// so a freed subnet is reused only after the others: routes and conntrack
// entries of the node that had it have time to go away.
func (s *cidrSet) allocate(node string) (*net.IPNet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if held := s.byNode[node]; len(held) == 1 {
		return s.subnet(held[0]), nil
	}
	s.releaseLocked(node)
	if s.used == len(s.owner) {
		return nil, ErrRangeFull
	}
	for k := range len(s.owner) {
		i := (s.next + k) % len(s.owner)
		if s.owner[i] != "" {
			continue
		}
		s.owner[i] = node
		s.used++
		s.byNode[node] = []int{i}
		s.next = (i + 1) % len(s.owner)
		return s.subnet(i), nil
	}
	return nil, ErrRangeFull // unreachable while used is right
}

// release frees every subnet node holds and reports whether there were any.
func (s *cidrSet) release(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.releaseLocked(node)
}

func (s *cidrSet) releaseLocked(node string) bool {
	held, ok := s.byNode[node]
	if !ok {
		return false
	}
	for _, i := range held {
		if s.owner[i] == node {
			s.owner[i] = ""
			s.used--
		}
	}
	delete(s.byNode, node)
	return true
}

// usage returns how many subnets are taken (reserved ones included) and
// how many there are.
func (s *cidrSet) usage() (used, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, len(s.owner)
}
