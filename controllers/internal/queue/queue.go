// Package queue runs the work loop that every controller under
// tether/controllers shares: start the informers, wait until their caches
// have synced, signal readiness, then let a few workers take keys from a
// rate-limited work queue and sync them, retrying a failed key with
// exponential back-off, until the context ends.
//
// A controller builds its queue with New and hands it to Run along with
// the event handlers that fill it and the function that syncs one key.
// What a key means, how it is synced and how a failure is logged stay with
// the controller.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// ErrNotSynced is returned by Run when the caches did not sync although its
// context is still live.
var ErrNotSynced = errors.New("queue: caches did not sync")

// New returns a rate-limited work queue whose failed keys come back after
// an exponential back-off from minDelay up to maxDelay. name labels the
// queue's metrics. The queue runs goroutines of its own from the start:
// whoever creates it shuts it down, and Run does so when it returns.
func New[T comparable](name string, minDelay, maxDelay time.Duration) workqueue.TypedRateLimitingInterface[T] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[T](minDelay, maxDelay),
		workqueue.TypedRateLimitingQueueConfig[T]{Name: name},
	)
}

// A Starter starts informers that run until stop is closed, as a
// SharedInformerFactory does.
type Starter interface {
	Start(stop <-chan struct{})
}

// A Handler is an event handler to register on an informer, typically one
// that adds keys to the queue. Run adds it before it starts the informers,
// waits until it has been handed the informer's initial list, and removes
// it before it returns.
type Handler struct {
	Informer cache.SharedInformer
	Handler  cache.ResourceEventHandler
}

// Config says what Run runs. Only Queue and Sync are required.
type Config[T comparable] struct {
	// Queue holds the keys to sync. Required. Run shuts it down before it
	// returns.
	Queue workqueue.TypedRateLimitingInterface[T]
	// Sync brings the object behind key where it should be. Required. The
	// workers call it concurrently, but never for the same key at once. A
	// nil error forgets the key's back-off; an error queues the key again
	// with back-off, unless ctx has ended.
	Sync func(ctx context.Context, key T) error
	// Workers is how many keys are synced at once. If 0, one.
	Workers int
	// Handlers are registered for the time of Run.
	Handlers []Handler
	// Informers are started with Run's context (informers already running
	// are left so). Run does not shut them down: their owner does, after
	// Run returns. Nil entries are skipped.
	Informers []Starter
	// Synced are the caches Sync reads, besides those of Handlers. Run
	// waits until all of them have synced before anything else.
	Synced []cache.InformerSynced
	// Start, if set, is called once the caches have synced, before Ready is
	// closed and the workers start; no key is synced before it returns. An
	// error from it ends Run with that error.
	Start func(ctx context.Context) error
	// Ready, if set, is closed after Start returns, just before the
	// workers start. A channel already closed is left alone.
	Ready chan struct{}
	// Failed, if set, is told of a Sync that failed while ctx was live,
	// just before the key is queued again with back-off; it usually logs.
	// If nil, Logger logs the failure.
	Failed func(key T, err error)
	// Logger logs "stopped" once the workers of a started Run have
	// finished, and failed syncs if Failed is nil. If nil, logs are
	// discarded.
	Logger *slog.Logger
}

// Run registers cfg.Handlers, starts cfg.Informers, waits for cfg.Synced
// and the handlers' initial lists, calls cfg.Start, closes cfg.Ready and
// runs cfg.Workers workers on cfg.Queue until ctx ends. Then it shuts the
// queue down, waits for every worker to finish the key it holds and
// removes the handlers: no goroutine that Run started outlives it.
//
// Run returns nil when ctx ends, whether before or after the start; the
// error from registering a handler or from cfg.Start; or ErrNotSynced.
func Run[T comparable](ctx context.Context, cfg Config[T]) error {
	defer cfg.Queue.ShutDown() // also on an early return; twice is fine
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	synced := slices.Clone(cfg.Synced) // not the caller's array
	for _, h := range cfg.Handlers {
		reg, err := h.Informer.AddEventHandler(h.Handler)
		if err != nil {
			return fmt.Errorf("add event handler: %w", err)
		}
		defer func() { _ = h.Informer.RemoveEventHandler(reg) }()
		synced = append(synced, reg.HasSynced)
	}
	for _, inf := range cfg.Informers {
		if inf != nil {
			inf.Start(ctx.Done())
		}
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return ErrNotSynced
	}
	if cfg.Start != nil {
		if err := cfg.Start(ctx); err != nil {
			return err
		}
	}
	if cfg.Ready != nil {
		select {
		case <-cfg.Ready:
		default:
			close(cfg.Ready)
		}
	}

	failed := cfg.Failed
	if failed == nil {
		failed = func(key T, err error) { log.Error("sync failed, will retry", "key", key, "err", err) }
	}
	var wg sync.WaitGroup
	for range max(cfg.Workers, 1) {
		wg.Go(func() {
			for next(ctx, cfg.Queue, cfg.Sync, failed) {
			}
		})
	}
	<-ctx.Done()
	cfg.Queue.ShutDown()
	wg.Wait()
	log.Info("stopped")
	return nil
}

// next syncs one key from q and reports whether the worker should go on.
func next[T comparable](ctx context.Context, q workqueue.TypedRateLimitingInterface[T],
	sync func(context.Context, T) error, failed func(T, error)) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	err := sync(ctx, key)
	switch {
	case err == nil:
		q.Forget(key)
	case ctx.Err() != nil:
		// Shutting down; the key is synced again on the next start.
	default:
		failed(key, err)
		q.AddRateLimited(key)
	}
	return true
}
