package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"tether/internal/version"
)

// run executes the tether command line with args; it is main without the
// process around it, so tests can call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:           "tether",
		Short:         "tether: a small, secure-by-default Kubernetes-compatible cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newServerCommand(stdout, stderr), newTokenCommand(stdout), newNodeCommand(stdout, stderr), newAgentCommand(stdout, stderr), newVersionCommand(stdout))
	root.AddCommand(newShimCommand())
	root.AddCommand(newImageCommand(stdout, stderr))
	root.AddCommand(newPathsCommand(stdout, stderr))
	return root.ExecuteContext(ctx)
}

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print tether's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(stdout, "tether %s (Kubernetes API v1.37.2)\n", version.Version)
			return err
		},
	}
}

// newLogger returns the process logger and routes the Kubernetes libraries'
// klog output into it.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
	klog.SetLogger(logr.FromSlogHandler(h))
	return slog.New(h)
}
