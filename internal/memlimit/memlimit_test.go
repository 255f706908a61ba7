package memlimit

import (
	"context"
	"runtime/debug"
	"testing"
	"time"
)

func TestFor(t *testing.T) {
	const mib = 1 << 20
	const floor = 384 * mib
	for _, c := range []struct{ live, other, want uint64 }{
		{0, 0, floor},
		{100 * mib, 100 * mib, floor}, // 225 MiB < floor
		{200 * mib, 134 * mib, floor}, // exactly 384 MiB
		{240 * mib, 100 * mib, 400 * mib},
		{1000 * mib, 200 * mib, 1450 * mib},
	} {
		if got := For(c.live, c.other, floor); got != c.want {
			t.Errorf("For(%d MiB live, %d MiB other) = %d MiB, want %d MiB", c.live/mib, c.other/mib, got/mib, c.want/mib)
		}
	}
}

func TestRunSetsAndRemovesTheLimit(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx, 1<<40); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for debug.SetMemoryLimit(-1) != 1<<40 {
		if time.Now().After(deadline) {
			t.Fatalf("the limit is %d, want %d", debug.SetMemoryLimit(-1), int64(1<<40))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got := debug.SetMemoryLimit(-1); got != 1<<63-1 {
		t.Errorf("after Run returned the limit is %d, want none", got)
	}
}
