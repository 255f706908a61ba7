// Command busybox-image writes tether's busybox test image (see
// internal/busyboximage) as a `docker save` tarball tagged
// tether.local/busybox:latest:
//
//	go run ./hack/busybox-image -o bin/busybox.tar
//	tether image import bin/busybox.tar
package main

import (
	"flag"
	"fmt"
	"os"

	"tether/internal/busyboximage"
)

func main() {
	out := flag.String("o", "busybox.tar", "file to write the image tarball to")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: busybox-image [-o FILE]")
		os.Exit(2)
	}
	if err := busyboximage.WriteTarball(*out); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s)\n", *out, busyboximage.Ref)
}
