// Package busyboximage builds a minimal container image from the host's
// static busybox (/usr/bin/busybox, Debian's busybox-static). Tests push it
// to loopback registries, and `make busybox-image` imports it into a node
// for the README's first pod, so no test or first run needs the internet.
//
// The image is deterministic: fixed timestamps and owners, sorted entries,
// so its digest changes only when the busybox binary does.
package busyboximage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Ref is the reference the image is tagged with.
const Ref = "tether.local/busybox:latest"

// Binary is the static busybox the image is built from.
const Binary = "/usr/bin/busybox"

// epoch is every timestamp in the image.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	group  = "root:x:0:\nnobody:x:65534:\n"
)

// Image returns the busybox image for linux/runtime.GOARCH (the host's
// binary): one layer with /bin/busybox, a symlink in /bin for each applet
// `busybox --list` prints, /etc/passwd and /etc/group with root and
// nobody (65534), and a 1777 /tmp. Its config runs "sh" with
// PATH=/bin:/usr/bin:/sbin:/usr/sbin.
func Image() (v1.Image, error) {
	bin, err := os.ReadFile(Binary)
	if err != nil {
		return nil, fmt.Errorf("busyboximage: %w (install busybox-static)", err)
	}
	out, err := exec.Command(Binary, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busyboximage: %s --list: %w", Binary, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	slices.Sort(applets)
	applets = slices.Compact(applets)

	layerTar, err := buildLayer(bin, applets)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("busyboximage: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "tether internal/busyboximage: " + Binary,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("busyboximage: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("busyboximage: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("busyboximage: %w", err)
	}
	return img, nil
}

// buildLayer writes the image's only layer as an uncompressed tar.
func buildLayer(bin []byte, applets []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(h *tar.Header) *tar.Header {
		h.ModTime = epoch
		h.Format = tar.FormatPAX
		return h
	}
	dir := func(name string, mode int64) *tar.Header {
		return hdr(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(hdr(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))})); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	var err error
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin", 0o755}, {"dev", 0o755}, {"etc", 0o755}, {"home", 0o755}, {"proc", 0o555}, {"root", 0o700}, {"sys", 0o555}, {"tmp", 0o1777}, {"usr", 0o755}, {"var", 0o755}} {
		if err == nil {
			err = tw.WriteHeader(dir(d.name, d.mode))
		}
	}
	if err == nil {
		err = file("bin/busybox", 0o755, bin)
	}
	for _, a := range applets {
		if err == nil {
			err = tw.WriteHeader(hdr(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}))
		}
	}
	if err == nil {
		err = file("etc/group", 0o644, []byte(group))
	}
	if err == nil {
		err = file("etc/passwd", 0o644, []byte(passwd))
	}
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("busyboximage: build layer: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteTarball writes the image to path as a `docker save` tarball tagged
// Ref, through a temporary file renamed into place.
func WriteTarball(path string) error {
	img, err := Image()
	if err != nil {
		return err
	}
	tag, err := name.NewTag(Ref)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("busyboximage: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tarball.Write(tag, img, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("busyboximage: write %s: %w", path, err)
	}
	return nil
}
