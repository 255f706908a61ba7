package allocator

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// maxHostBits bounds the part of an IPv6 range that is used: offsets are
// 64-bit numbers.
const maxHostBits = 62

// IPRange allocates cluster IPs from a CIDR: every address but the network
// address and, for IPv4, the broadcast address. The first address (the
// kubernetes Service's) is given only to whoever asks for it.
type IPRange struct {
	prefix netip.Prefix
	o      offsets
}

// NewIPRange returns the allocator of cidr's addresses, recorded in set.
func NewIPRange(set *Set, cidr *net.IPNet) (*IPRange, error) {
	if cidr == nil {
		return nil, fmt.Errorf("allocator: no service IP range")
	}
	addr, ok := netip.AddrFromSlice(cidr.IP)
	ones, bits := cidr.Mask.Size()
	if !ok || bits == 0 {
		return nil, fmt.Errorf("allocator: service IP range %s is not a CIDR", cidr)
	}
	prefix := netip.PrefixFrom(addr.Unmap(), ones).Masked()
	host := prefix.Addr().BitLen() - ones
	var size uint64
	switch {
	case host > maxHostBits:
		size = 1 << maxHostBits
	case prefix.Addr().Is4():
		size = (1 << host) - 2 // no network, no broadcast address
	default:
		size = (1 << host) - 1 // no network address
	}
	if host < 2 || size < 2 {
		return nil, fmt.Errorf("allocator: service IP range %s is too small", prefix)
	}
	r := &IPRange{prefix: prefix}
	r.o = offsets{
		set: set, size: size, first: 1,
		static: staticBand(size, 16, 256),
		value:  func(off uint64) string { return r.addr(off).String() },
		offset: func(v string) (uint64, bool) {
			a, err := netip.ParseAddr(v)
			if err != nil {
				return 0, false
			}
			return r.offset(a)
		},
	}
	return r, nil
}

// String returns the range as a CIDR.
func (r *IPRange) String() string { return r.prefix.String() }

// Is6 reports whether the range is IPv6.
func (r *IPRange) Is6() bool { return r.prefix.Addr().Is6() }

// First returns the first address, the kubernetes Service's.
func (r *IPRange) First() netip.Addr { return r.addr(0) }

// Set returns the records of the range.
func (r *IPRange) Set() *Set { return r.o.set }

// Contains reports whether ip may be allocated.
func (r *IPRange) Contains(ip netip.Addr) bool {
	_, ok := r.offset(ip)
	return ok
}

// Allocate gives a free address to owner. It returns ErrFull if none is
// left.
func (r *IPRange) Allocate(ctx context.Context, owner Owner) (netip.Addr, error) {
	off, err := r.o.pick(ctx, owner, false, nil)
	if err != nil {
		return netip.Addr{}, err
	}
	return r.addr(off), nil
}

// Peek returns a free address without allocating it (for dry runs),
// never one of skip.
func (r *IPRange) Peek(ctx context.Context, skip ...netip.Addr) (netip.Addr, error) {
	s := map[uint64]bool{}
	for _, ip := range skip {
		if off, ok := r.offset(ip); ok {
			s[off] = true
		}
	}
	off, err := r.o.pick(ctx, Owner{}, true, s)
	if err != nil {
		return netip.Addr{}, err
	}
	return r.addr(off), nil
}

// Reserve gives ip to owner. It returns a *RangeError for an address
// outside the range and ErrAllocated for one held by another owner;
// created is false when owner held ip already.
func (r *IPRange) Reserve(ctx context.Context, ip netip.Addr, owner Owner) (created bool, err error) {
	off, ok := r.offset(ip)
	if !ok {
		return false, &RangeError{Value: ip.String(), Range: r.String()}
	}
	return r.o.reserve(ctx, off, owner)
}

// Check returns the error Reserve would, without reserving.
func (r *IPRange) Check(ctx context.Context, ip netip.Addr, owner Owner) error {
	off, ok := r.offset(ip)
	if !ok {
		return &RangeError{Value: ip.String(), Range: r.String()}
	}
	return r.o.check(ctx, off, owner)
}

// Release frees ip if owner holds it.
func (r *IPRange) Release(ctx context.Context, ip netip.Addr, owner Owner) error {
	return r.o.set.Release(ctx, ip.String(), owner)
}

// addr returns the address at offset off: offset 0 is the one after the
// network address.
func (r *IPRange) addr(off uint64) netip.Addr {
	b := r.prefix.Addr().As16()
	// Offsets are below 2^62 and the low bits of the network address are
	// zero where they land, so the addition never carries into the upper
	// half.
	low := binary.BigEndian.Uint64(b[8:]) + off + 1
	binary.BigEndian.PutUint64(b[8:], low)
	a := netip.AddrFrom16(b)
	if r.prefix.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// offset returns the offset of ip, and whether ip is an allocatable
// address of the range.
func (r *IPRange) offset(ip netip.Addr) (uint64, bool) {
	ip = ip.Unmap()
	if !r.prefix.Contains(ip) {
		return 0, false
	}
	a, n := ip.As16(), r.prefix.Addr().As16()
	if [8]byte(a[:8]) != [8]byte(n[:8]) {
		return 0, false // beyond the part of a huge IPv6 range in use
	}
	d := binary.BigEndian.Uint64(a[8:]) - binary.BigEndian.Uint64(n[8:])
	if d == 0 || d-1 >= r.o.size {
		return 0, false
	}
	return d - 1, true
}
