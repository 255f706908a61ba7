package allocator

import (
	"context"
	"errors"
	"math/rand/v2"
)

// offsets is a range of values numbered 0 … size-1, kept in a Set. Values
// from 0 to first-1 are only ever requested, never picked. Picking prefers
// the upper band, from static to size-1, and falls back to the lower band
// (first to static-1) when the upper one is full: the lower band stays free
// for values that clients ask for by number, like upstream's static
// subranges.
type offsets struct {
	set    *Set
	size   uint64
	first  uint64
	static uint64
	value  func(off uint64) string
	offset func(value string) (uint64, bool)
}

// probes is how many random values a pick tries before it lists the
// allocated values and scans: a big range with few allocations rarely
// needs the list.
const probes = 4

// pick allocates a free value to owner; if dry, it only finds one. skip
// holds values that must not be returned.
func (o *offsets) pick(ctx context.Context, owner Owner, dry bool, skip map[uint64]bool) (uint64, error) {
	upper := max(o.static, o.first)
	for _, band := range [][2]uint64{{upper, o.size}, {o.first, upper}} {
		off, err := o.pickIn(ctx, band[0], band[1], owner, dry, skip)
		if errors.Is(err, ErrFull) {
			continue
		}
		return off, err
	}
	return 0, ErrFull
}

func (o *offsets) pickIn(ctx context.Context, lo, hi uint64, owner Owner, dry bool, skip map[uint64]bool) (uint64, error) {
	if lo >= hi {
		return 0, ErrFull
	}
	n := hi - lo
	try := func(off uint64) (bool, error) {
		if skip[off] {
			return false, nil
		}
		if dry {
			_, found, err := o.set.Get(ctx, o.value(off))
			return !found, err
		}
		created, err := o.set.Reserve(ctx, o.value(off), owner)
		if errors.Is(err, ErrAllocated) {
			return false, nil
		}
		// A value owner already held (false, nil) is not a new one.
		return created, err
	}
	if n > 64 {
		for range probes {
			off := lo + rand.Uint64N(n)
			if ok, err := try(off); ok || err != nil {
				return off, err
			}
		}
	}
	values, err := o.set.values(ctx)
	if err != nil {
		return 0, err
	}
	used := make(map[uint64]bool, len(values))
	for _, v := range values {
		if off, ok := o.offset(v); ok {
			used[off] = true
		}
	}
	start := rand.Uint64N(n)
	for i := range n {
		off := lo + (start+i)%n
		if used[off] || skip[off] {
			continue
		}
		ok, err := try(off)
		if ok || err != nil {
			return off, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	return 0, ErrFull
}

// staticBand is the size of the lower band of a range of size values:
// size/div, at least 16 and at most limit, and never the whole range.
func staticBand(size, div, limit uint64) uint64 {
	if b := max(min(size/div, limit), 16); b < size {
		return b
	}
	return 0
}

// reserve gives value number off to owner.
func (o *offsets) reserve(ctx context.Context, off uint64, owner Owner) (bool, error) {
	return o.set.Reserve(ctx, o.value(off), owner)
}

// check reports what reserve would: ErrAllocated if another owner holds
// value number off.
func (o *offsets) check(ctx context.Context, off uint64, owner Owner) error {
	rec, found, err := o.set.Get(ctx, o.value(off))
	switch {
	case err != nil && !found:
		return err
	case found && (err != nil || rec.Owner != owner):
		return ErrAllocated
	}
	return nil
}
