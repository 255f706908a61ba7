// Package memlimit gives the API server a soft memory limit that follows
// its live heap.
//
// tether server runs with GOGC=200, which lets the heap grow to three times
// what is live between collections: cheap in CPU for a small cluster, but
// at a thousand nodes it is hundreds of MiB of garbage. The limit set here
// is the larger of a floor and what the runtime needs besides the heap
// (goroutine stacks, metadata) plus the live heap and a quarter of it. So
// small clusters keep GOGC=200 untouched, a large one collects more often,
// and the collector never runs more often than once per quarter of the
// live heap allocated (no death spiral when the live heap grows past the
// floor).
package memlimit

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Floor is the smallest limit set: below it GOGC alone decides.
const Floor = 368 << 20

// Every is how often the limit follows the live heap.
const Every = 5 * time.Second

// For returns the soft limit for a live heap of live bytes when the runtime
// holds other bytes besides the heap.
func For(live, other, floor uint64) uint64 {
	return max(floor, other+live+live/4)
}

// Run sets the limit now and then every Every until ctx ends, when it
// removes it again.
func Run(ctx context.Context, floor uint64) {
	sample := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	value := func(i int) uint64 {
		if sample[i].Value.Kind() == metrics.KindUint64 {
			return sample[i].Value.Uint64()
		}
		return 0
	}
	set := func() {
		metrics.Read(sample)
		heap := value(2) + value(3) + value(4) + value(5)
		var other uint64
		if total := value(1); total > heap {
			other = total - heap
		}
		debug.SetMemoryLimit(int64(For(value(0), other, floor)))
	}
	set()
	t := time.NewTicker(Every)
	defer t.Stop()
	defer debug.SetMemoryLimit(math.MaxInt64)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			set()
		}
	}
}
