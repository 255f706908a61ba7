package main

import (
	"os"

	"github.com/spf13/cobra"

	"tether/kubelet/runtime"
)

// newShimCommand returns the hidden "shim" command: the per-container
// process the kubelet's runtime starts (runtime.Config.ShimCommand is
// [tether, "shim"]). It is not meant to be run by hand.
func newShimCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "shim",
		Short:              "Run a container's shim (started by the agent)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			if code := runtime.ShimMain(args); code != 0 {
				os.Exit(code)
			}
			return nil
		},
	}
}
