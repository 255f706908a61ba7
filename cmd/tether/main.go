// Command tether runs a tether control plane (tether server) or node
// (tether agent), and manages a cluster's join tokens and kubeconfigs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	// The API server allocates a lot of short-lived garbage per request;
	// collecting half as often costs memory and saves about a tenth of the
	// CPU of a small GET (docs/performance.md). GOGC still wins if set.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
