package allocator

import (
	"context"
	"fmt"
	"strconv"

	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// PortRange allocates node ports from a range such as 30000-32767.
type PortRange struct {
	base, size int
	o          offsets
}

// NewPortRange returns the allocator of pr's ports, recorded in set.
func NewPortRange(set *Set, pr utilnet.PortRange) (*PortRange, error) {
	if pr.Size <= 0 || pr.Base <= 0 || pr.Base+pr.Size-1 > 65535 {
		return nil, fmt.Errorf("allocator: node port range %q is not within 1-65535", pr.String())
	}
	r := &PortRange{base: pr.Base, size: pr.Size}
	size := uint64(pr.Size)
	r.o = offsets{
		set: set, size: size,
		static: staticBand(size, 32, 128),
		value:  func(off uint64) string { return strconv.Itoa(r.base + int(off)) },
		offset: func(v string) (uint64, bool) {
			p, err := strconv.Atoi(v)
			if err != nil {
				return 0, false
			}
			return r.offset(p)
		},
	}
	return r, nil
}

// String returns the range as base-last.
func (r *PortRange) String() string { return fmt.Sprintf("%d-%d", r.base, r.base+r.size-1) }

// Set returns the records of the range.
func (r *PortRange) Set() *Set { return r.o.set }

// Contains reports whether port is in the range.
func (r *PortRange) Contains(port int) bool {
	_, ok := r.offset(port)
	return ok
}

// Allocate gives a free port to owner. It returns ErrFull if none is left.
func (r *PortRange) Allocate(ctx context.Context, owner Owner) (int, error) {
	off, err := r.o.pick(ctx, owner, false, nil)
	if err != nil {
		return 0, err
	}
	return r.base + int(off), nil
}

// Peek returns a free port without allocating it (for dry runs), never
// one of skip.
func (r *PortRange) Peek(ctx context.Context, skip ...int) (int, error) {
	s := map[uint64]bool{}
	for _, p := range skip {
		if off, ok := r.offset(p); ok {
			s[off] = true
		}
	}
	off, err := r.o.pick(ctx, Owner{}, true, s)
	if err != nil {
		return 0, err
	}
	return r.base + int(off), nil
}

// Reserve gives port to owner. It returns a *RangeError for a port outside
// the range and ErrAllocated for one held by another owner; created is
// false when owner held port already.
func (r *PortRange) Reserve(ctx context.Context, port int, owner Owner) (created bool, err error) {
	off, ok := r.offset(port)
	if !ok {
		return false, &RangeError{Value: strconv.Itoa(port), Range: r.String()}
	}
	return r.o.reserve(ctx, off, owner)
}

// Check returns the error Reserve would, without reserving.
func (r *PortRange) Check(ctx context.Context, port int, owner Owner) error {
	off, ok := r.offset(port)
	if !ok {
		return &RangeError{Value: strconv.Itoa(port), Range: r.String()}
	}
	return r.o.check(ctx, off, owner)
}

// Release frees port if owner holds it.
func (r *PortRange) Release(ctx context.Context, port int, owner Owner) error {
	return r.o.set.Release(ctx, strconv.Itoa(port), owner)
}

func (r *PortRange) offset(port int) (uint64, bool) {
	if port < r.base || port >= r.base+r.size {
		return 0, false
	}
	return uint64(port - r.base), true
}
