//go:build linux

package images

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func unpackEntries(t *testing.T, dir string, entries ...entry) error {
	t.Helper()
	return unpack(dir, bytes.NewReader(tarOf(t, entries...)), slog.New(slog.DiscardHandler))
}

func isWhiteout(t *testing.T, p string) bool {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func opaque(p string) bool {
	buf := make([]byte, 8)
	n, err := unix.Getxattr(p, opaqueXattr, buf)
	return err == nil && string(buf[:n]) == "y"
}

func TestUnpackFileTypes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: unpacking sets ownership and makes whiteout devices")
	}
	dir := t.TempDir()
	err := unpackEntries(t, dir,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "d/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1001},
		entry{name: "d/f", body: "hello", mode: 0o4755, uid: 1000, gid: 1001, xattrs: map[string]string{"user.test": "v", "trusted.overlay.redirect": "/x"}},
		entry{name: "d/h", typ: tar.TypeLink, link: "d/f"},
		entry{name: "s", typ: tar.TypeSymlink, link: "/d/f", uid: 7, gid: 8},
		entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		entry{name: "p", typ: tar.TypeFifo, mode: 0o640},
		entry{name: "x", body: "first"},
		entry{name: "x", typ: tar.TypeSymlink, link: "d"},
		entry{name: "deep/er/file", body: "implicit parents"},
		entry{name: "t/", typ: tar.TypeDir, mode: 0o1777},
	)
	if err != nil {
		t.Fatalf("unpack: %v", err)
	}
	check := func(p string, wantMode fs.FileMode, uid, gid uint32) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != wantMode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", p, fi.Mode(), st.Uid, st.Gid, wantMode, uid, gid)
		}
	}
	check("d", fs.ModeDir|0o750, 1000, 1001)
	check("d/f", fs.ModeSetuid|0o755, 1000, 1001)
	check("s", fs.ModeSymlink|0o777, 7, 8)
	check("p", fs.ModeNamedPipe|0o640, 0, 0)
	check("x", fs.ModeSymlink|0o777, 0, 0)
	check("t", fs.ModeDir|fs.ModeSticky|0o777, 0, 0)
	check("deep/er", fs.ModeDir|0o755, 0, 0)

	if fi, err := os.Stat(filepath.Join(dir, "d")); err != nil || !fi.ModTime().Equal(epoch) {
		t.Errorf("d mtime = %v, %v; want %v", fi.ModTime(), err, epoch)
	}
	var f, h unix.Stat_t
	if unix.Stat(filepath.Join(dir, "d/f"), &f) != nil || unix.Stat(filepath.Join(dir, "d/h"), &h) != nil || f.Ino != h.Ino {
		t.Errorf("d/h is not a hard link of d/f")
	}
	if got, _ := os.Readlink(filepath.Join(dir, "s")); got != "/d/f" {
		t.Errorf("readlink s = %q, want /d/f", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "dev/null")); !os.IsNotExist(err) {
		t.Errorf("device node dev/null was created (err %v)", err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(filepath.Join(dir, "d/f"), "user.test", buf); err == nil && string(buf[:n]) != "v" {
		t.Errorf("xattr user.test = %q, want v", buf[:n])
	}
	if _, err := unix.Getxattr(filepath.Join(dir, "d/f"), "trusted.overlay.redirect", buf); err == nil {
		t.Errorf("a trusted.overlay xattr from the tar was applied")
	}
}

func TestUnpackRejectsTraversal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries func(outside string) []entry
	}{
		{"dotdot", func(string) []entry { return []entry{{name: "../evil", body: "x"}} }},
		{"dotdot inside", func(string) []entry { return []entry{{name: "a/../../evil", body: "x"}} }},
		{"absolute symlink", func(o string) []entry {
			return []entry{{name: "l", typ: tar.TypeSymlink, link: o}, {name: "l/evil", body: "x"}}
		}},
		{"relative symlink", func(string) []entry {
			return []entry{{name: "a/l", typ: tar.TypeSymlink, link: "../../outside"}, {name: "a/l/evil", body: "x"}}
		}},
		{"symlink dir entry", func(o string) []entry {
			return []entry{{name: "l", typ: tar.TypeSymlink, link: o}, {name: "l/evil/", typ: tar.TypeDir}}
		}},
		{"hard link out", func(string) []entry {
			return []entry{{name: "h", typ: tar.TypeLink, link: "../outside/secret"}}
		}},
		{"hard link through symlink", func(o string) []entry {
			return []entry{{name: "l", typ: tar.TypeSymlink, link: o}, {name: "h", typ: tar.TypeLink, link: "l/secret"}}
		}},
		{"whiteout through symlink", func(o string) []entry {
			return []entry{{name: "l", typ: tar.TypeSymlink, link: o}, {name: "l/.wh.secret", typ: tar.TypeReg}}
		}},
		{"opaque through symlink", func(o string) []entry {
			return []entry{{name: "l", typ: tar.TypeSymlink, link: o}, {name: "l/.wh..wh..opq", typ: tar.TypeReg}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			outside := filepath.Join(parent, "outside")
			layer := filepath.Join(parent, "layer")
			for _, d := range []string{outside, layer} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := unpackEntries(t, layer, tc.entries(outside)...)
			t.Logf("unpack: %v", err)
			if err == nil {
				t.Errorf("unpack succeeded, want an error")
			}
			for _, p := range []string{filepath.Join(parent, "evil"), filepath.Join(outside, "evil")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("unpack wrote %s", p)
				}
			}
			if b, err := os.ReadFile(filepath.Join(outside, "secret")); err != nil || string(b) != "s" {
				t.Errorf("outside/secret = %q, %v; want it untouched", b, err)
			}
			if opaque(outside) {
				t.Errorf("unpack marked a directory outside the layer opaque")
			}
			if fi, err := os.Stat(filepath.Join(layer, "h")); err == nil && fi.Mode().IsRegular() {
				t.Errorf("unpack hard-linked a file from outside the layer")
			}
		})
	}
}

func TestPullTraversalLayerLeavesNothing(t *testing.T) {
	reg := startRegistry(t, nil)
	ref := reg + "/evil:1"
	push(t, ref, imageOf(t, layerOf(t, entry{name: "ok", body: "x"}, entry{name: "../../evil", body: "x"})))
	s := newStore(t, "")
	_, err := s.Pull(t.Context(), ref, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "escapes the layer") {
		t.Fatalf("Pull(traversal layer) = %v, want an error saying the path escapes", err)
	}
	for _, d := range []string{"layers", "tmp", "images"} {
		if ents, _ := os.ReadDir(s.path(d)); len(ents) != 0 {
			t.Errorf("%s/ holds %d entries after a failed pull, want none", d, len(ents))
		}
	}
	if _, err := s.Get(ref); err == nil {
		t.Errorf("Get(%s) succeeded after a failed pull", ref)
	}
}

// TestWhiteoutsMakeOverlayLowerDirs pulls a two-layer image whose top
// layer deletes a file and makes a directory opaque, then mounts the
// layers as an overlay to check the merged view.
func TestWhiteoutsMakeOverlayLowerDirs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: whiteouts are character devices and opaque directories trusted.* xattrs")
	}
	reg := startRegistry(t, nil)
	bottom := layerOf(t,
		entry{name: "a/", typ: tar.TypeDir},
		entry{name: "a/keep", body: "keep"},
		entry{name: "a/gone", body: "gone"},
		entry{name: "b/", typ: tar.TypeDir},
		entry{name: "b/old", body: "old"},
		entry{name: "c/", typ: tar.TypeDir},
		entry{name: "c/sub/", typ: tar.TypeDir},
		entry{name: "c/sub/x", body: "x"},
	)
	top := layerOf(t,
		entry{name: "a/.wh.gone"},
		entry{name: "b/", typ: tar.TypeDir},
		entry{name: "b/.wh..wh..opq"},
		entry{name: "b/new", body: "new"},
		entry{name: ".wh.c"},
		entry{name: ".wh..wh.plnk/", typ: tar.TypeDir},
	)
	ref := reg + "/wh:1"
	push(t, ref, imageOf(t, bottom, top))
	img, err := newStore(t, "").Pull(t.Context(), ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 2 {
		t.Fatalf("Layers = %q, want 2", img.Layers)
	}
	upper := img.Layers[1]
	if !isWhiteout(t, filepath.Join(upper, "a/gone")) || !isWhiteout(t, filepath.Join(upper, "c")) {
		t.Errorf("a/gone and c are not 0/0 character devices in the top layer")
	}
	if !opaque(filepath.Join(upper, "b")) {
		t.Errorf("b in the top layer has no %s=y", opaqueXattr)
	}
	for _, p := range []string{"a/.wh.gone", "b/.wh..wh..opq", ".wh..wh.plnk"} {
		if _, err := os.Lstat(filepath.Join(upper, p)); err == nil {
			t.Errorf("whiteout file %s was unpacked as is", p)
		}
	}

	mnt := t.TempDir()
	// lowerdir lists the top layer first.
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+img.Layers[1]+":"+img.Layers[0]); err != nil {
		t.Skipf("cannot mount overlayfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	for p, want := range map[string]bool{"a/keep": true, "a/gone": false, "b/old": false, "b/new": true, "c": false, "c/sub/x": false} {
		_, err := os.Lstat(filepath.Join(mnt, p))
		if got := err == nil; got != want {
			t.Errorf("merged view: %s exists = %v, want %v", p, got, want)
		}
	}
}
