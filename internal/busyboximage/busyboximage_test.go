package busyboximage

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func skipWithoutBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Skipf("no %s (install busybox-static): %v", Binary, err)
	}
}

func TestImageIsDeterministic(t *testing.T) {
	skipWithoutBusybox(t)
	a, err := Image()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Image()
	if err != nil {
		t.Fatal(err)
	}
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Errorf("two builds have digests %s and %s, want equal", da, db)
	}
}

func TestImageContents(t *testing.T) {
	skipWithoutBusybox(t)
	img, err := Image()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || !slices.Equal(cf.Config.Cmd, []string{"sh"}) || !slices.Equal(cf.Config.Env, []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin"}) {
		t.Errorf("config: os %q cmd %q env %q, want linux [sh] [PATH=/bin:/usr/bin:/sbin:/usr/sbin]", cf.OS, cf.Config.Cmd, cf.Config.Env)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("Layers() = %d layers, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[filepath.Clean(h.Name)] = h
	}
	for _, tc := range []struct {
		name     string
		typ      byte
		mode     int64
		linkname string
	}{
		{"bin/busybox", tar.TypeReg, 0o755, ""},
		{"bin/sh", tar.TypeSymlink, 0o777, "busybox"},
		{"bin/ls", tar.TypeSymlink, 0o777, "busybox"},
		{"etc/passwd", tar.TypeReg, 0o644, ""},
		{"etc/group", tar.TypeReg, 0o644, ""},
		{"tmp", tar.TypeDir, 0o1777, ""},
	} {
		h := entries[tc.name]
		if h == nil {
			t.Errorf("layer has no %s", tc.name)
			continue
		}
		if h.Typeflag != tc.typ || h.Mode != tc.mode || h.Linkname != tc.linkname {
			t.Errorf("%s: type %q mode %o link %q, want %q %o %q", tc.name, h.Typeflag, h.Mode, h.Linkname, tc.typ, tc.mode, tc.linkname)
		}
	}
}

func TestWriteTarball(t *testing.T) {
	skipWithoutBusybox(t)
	p := filepath.Join(t.TempDir(), "busybox.tar")
	if err := WriteTarball(p); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(Ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(p, &tag)
	if err != nil {
		t.Fatalf("read back %s tagged %s: %v", p, Ref, err)
	}
	want, err := Image()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := img.ConfigName()
	exp, _ := want.ConfigName()
	if got != exp {
		t.Errorf("tarball image ID %s, want %s", got, exp)
	}
}
