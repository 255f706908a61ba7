package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"tether/kubelet"
	"tether/kubelet/images"
)

// imageOptions are the flags of `tether image`.
type imageOptions struct {
	DataDir string
}

func (o *imageOptions) store() (*images.Store, error) {
	if o.DataDir == "" {
		return nil, errors.New("--data-dir must not be empty")
	}
	return images.New(images.Config{Root: filepath.Join(o.DataDir, "images")})
}

func newImageCommand(stdout, stderr io.Writer) *cobra.Command {
	o := &imageOptions{}
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage a node's image store",
		Long: `Manage the image store of the node whose agent uses --data-dir.

The store is shared with a running agent: images imported here are usable by
pods at once, without restarting the agent.`,
	}
	cmd.PersistentFlags().StringVar(&o.DataDir, "data-dir", kubelet.DefaultDataDir,
		"the agent's data directory (`tether agent --data-dir`; the local agent of `tether server --data-dir D` uses D/agent); images live in <data-dir>/images")

	importCmd := &cobra.Command{
		Use:   "import FILE...",
		Short: "Import images from docker save archives or OCI image layouts",
		Long: `Import every image in each FILE: a ` + "`docker save`" + ` tarball, or an OCI image
layout (a directory or a tar of one). Each image is stored under all its tags.`,
		Example: `  go run ./hack/busybox-image -o busybox.tar
  tether image import busybox.tar`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			s, err := o.store()
			if err != nil {
				return err
			}
			progress := func(msg string) { fmt.Fprintln(stderr, msg) }
			var errs []error
			for _, f := range files {
				imgs, err := s.ImportWithProgress(cmd.Context(), f, progress)
				for _, img := range imgs {
					refs := strings.Join(img.RepoTags, ", ")
					if refs == "" {
						refs = "<none>"
					}
					fmt.Fprintf(stdout, "imported %s %s\n", refs, img.ID)
				}
				if err != nil {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		},
	}

	lsCmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the images in the store",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			s, err := o.store()
			if err != nil {
				return err
			}
			imgs, err := s.List()
			if err != nil {
				return err
			}
			return printImages(stdout, imgs)
		},
	}
	cmd.AddCommand(importCmd, lsCmd)
	return cmd
}

// printImages writes imgs as a table, one row per tag (untagged images
// show <none>).
func printImages(w io.Writer, imgs []*images.Image) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tTAG\tIMAGE ID\tSIZE")
	for _, img := range imgs {
		id := strings.TrimPrefix(img.ID, "sha256:")
		if len(id) > 12 {
			id = id[:12]
		}
		size := humanSize(img.Size)
		if len(img.RepoTags) == 0 {
			fmt.Fprintf(tw, "<none>\t<none>\t%s\t%s\n", id, size)
		}
		for _, ref := range img.RepoTags {
			repo, tag := ref, "<none>"
			if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
				repo, tag = ref[:i], ref[i+1:]
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", repo, tag, id, size)
		}
	}
	return tw.Flush()
}

// humanSize formats n bytes in SI units, as docker images does.
func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/unit, 0
	units := []string{"kB", "MB", "GB", "TB"}
	for f >= unit && i < len(units)-1 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
