//go:build linux

package images

import (
	"archive/tar"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The OCI (and docker) layer format marks deletions with whiteout files;
// overlayfs marks them with 0/0 character devices and an xattr.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."     // aufs bookkeeping, never unpacked
	opaqueWhiteout = ".wh..wh..opq" // "hide everything below in this directory"
	opaqueXattr    = "trusted.overlay.opaque"
	paxXattr       = "SCHILY.xattr."
)

// unpack extracts the layer tar r into dir in overlayfs's format, ready to
// be a lowerdir: whiteouts become 0/0 character devices, opaque markers set
// trusted.overlay.opaque=y on their directory. Entries are created through
// an os.Root, so neither "../" names nor symlinks (absolute ones, or
// relative ones leading out) can make it write outside dir: such a layer
// is an error. Ownership is applied when running as root; device nodes are
// skipped.
func unpack(dir string, r io.Reader, log *slog.Logger) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	u := &unpacker{root: root, log: log, chown: os.Geteuid() == 0, dirs: map[string]dirMeta{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
	return u.finishDirs()
}

type dirMeta struct {
	mode         fs.FileMode
	atime, mtime time.Time
}

type unpacker struct {
	root  *os.Root
	log   *slog.Logger
	chown bool
	dirs  map[string]dirMeta // mode and times applied last: entries change them
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	p, err := entryPath(hdr.Name)
	if err != nil {
		return err
	}
	base, parent := path.Base(p), path.Dir(p)
	if p != "." {
		if err := u.root.MkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(parent, base)
	}
	if fi, err := u.root.Lstat(p); err == nil && !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
		// A later entry replaces an earlier one, unless both are
		// directories: then their contents merge.
		if p == "." {
			return errors.New("entry would replace the layer's root directory")
		}
		if err := u.root.RemoveAll(p); err != nil {
			return err
		}
		delete(u.dirs, p)
	}
	mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := u.root.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := u.lchown(p, hdr); err != nil {
			return err
		}
		if err := u.xattrs(p, nil, hdr); err != nil {
			return err
		}
		u.dirs[p] = dirMeta{mode: mode, atime: accessTime(hdr), mtime: hdr.ModTime}
	case tar.TypeReg:
		f, err := u.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if err == nil && u.chown {
			err = f.Chown(hdr.Uid, hdr.Gid)
		}
		if err == nil {
			err = f.Chmod(mode) // after chown, which clears setuid bits
		}
		if err == nil {
			err = u.xattrs(p, f, hdr)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		return u.root.Chtimes(p, accessTime(hdr), hdr.ModTime)
	case tar.TypeSymlink:
		// The target is stored as written; it is never followed while
		// unpacking except by os.Root, which refuses to leave the layer.
		if err := u.root.Symlink(hdr.Linkname, p); err != nil {
			return err
		}
		return u.lchown(p, hdr)
	case tar.TypeLink:
		target, err := entryPath(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link to %s: %w", hdr.Linkname, err)
		}
		if target == "." {
			return errors.New("hard link to the layer's root directory")
		}
		return u.root.Link(target, p)
	case tar.TypeFifo:
		if err := u.mknod(p, unix.S_IFIFO|0o600, 0); err != nil {
			return err
		}
		if err := u.lchown(p, hdr); err != nil {
			return err
		}
		return u.root.Chmod(p, mode)
	case tar.TypeChar, tar.TypeBlock:
		// Containers get their devices from the runtime, never from an
		// image.
		u.log.Debug("skipping device node in layer", "path", p)
	default:
		u.log.Debug("skipping tar entry of unsupported type", "path", p, "type", string(hdr.Typeflag))
	}
	return nil
}

// whiteout turns a whiteout entry in dir into overlayfs's format.
func (u *unpacker) whiteout(dir, base string) error {
	switch {
	case base == opaqueWhiteout:
		d, err := u.root.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		if err := unix.Fsetxattr(int(d.Fd()), opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("mark %s opaque: %w", dir, err)
		}
		return nil
	case strings.HasPrefix(base, whiteoutMeta):
		return nil
	}
	target := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
	if err := u.root.RemoveAll(target); err != nil {
		return err
	}
	delete(u.dirs, target)
	if err := u.mknod(target, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout %s: %w", target, err)
	}
	return nil
}

func (u *unpacker) mknod(p string, mode uint32, dev int) error {
	d, err := u.root.Open(path.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Mknodat(int(d.Fd()), path.Base(p), mode, dev)
}

func (u *unpacker) lchown(p string, hdr *tar.Header) error {
	if !u.chown {
		return nil
	}
	return u.root.Lchown(p, hdr.Uid, hdr.Gid)
}

// xattrs applies the entry's extended attributes (PAX SCHILY.xattr.*) to
// the open file f, or to directory p when f is nil. trusted.* attributes
// are dropped: trusted.overlay.* ones would steer overlayfs.
func (u *unpacker) xattrs(p string, f *os.File, hdr *tar.Header) error {
	var names []string
	for k := range hdr.PAXRecords {
		if n, ok := strings.CutPrefix(k, paxXattr); ok && !strings.HasPrefix(n, "trusted.") {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	if f == nil {
		d, err := u.root.Open(p)
		if err != nil {
			return err
		}
		defer d.Close()
		f = d
	}
	for _, n := range names {
		err := unix.Fsetxattr(int(f.Fd()), n, []byte(hdr.PAXRecords[paxXattr+n]), 0)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EPERM):
			u.log.Debug("cannot set xattr", "path", p, "xattr", n, "err", err)
		default:
			return fmt.Errorf("set xattr %s: %w", n, err)
		}
	}
	return nil
}

// finishDirs sets directory modes and times, deepest first.
func (u *unpacker) finishDirs() error {
	names := make([]string, 0, len(u.dirs))
	for n := range u.dirs {
		names = append(names, n)
	}
	depth := func(n string) int {
		if n == "." {
			return -1
		}
		return strings.Count(n, "/")
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(depth(b), depth(a)), strings.Compare(a, b))
	})
	for _, n := range names {
		m := u.dirs[n]
		if err := u.root.Chmod(n, m.mode); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if err := u.root.Chtimes(n, m.atime, m.mtime); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return nil
}

func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// syncFS flushes the file system holding dir, so a layer is on disk
// before it gets its final name.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
}
