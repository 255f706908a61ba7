package volume

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A volume whose content comes from the API (configMap, secret,
// downwardAPI, projected) is laid out so that a reader never sees a mix of
// two versions:
//
//	<volume>/..2026_11_02_10_04_05.123456789   one complete version of every file
//	<volume>/..data -> ..2026_11_02_10_04_05.123456789
//	<volume>/<name> -> ..data/<name>            one per top-level path
//
// A new version is written into a fresh hidden directory and published by
// renaming a temporary symlink over ..data, which the kernel does in one
// step. The user-visible names never change their target, so they stay
// valid across versions; only names that appear or disappear are touched,
// after the switch.

const (
	dataLink    = "..data"
	dataLinkTmp = "..data_tmp"
	// versionDirLayout names version directories; a random suffix keeps
	// two versions written in the same second (or under a fake clock)
	// apart.
	versionDirLayout = "..2006_01_02_15_04_05."
)

// file is one file of a volume's content.
type file struct {
	data []byte
	mode fs.FileMode
}

// payload is a volume's complete content by slash-separated relative path.
type payload map[string]file

// add puts a file at path, refusing a path that is unsafe or already taken.
func (p payload) add(path string, data []byte, mode fs.FileMode) error {
	if err := checkPath(path); err != nil {
		return err
	}
	path = filepath.ToSlash(filepath.Clean(path))
	if _, dup := p[path]; dup {
		return fmt.Errorf("path %q is used twice", path)
	}
	for other := range p {
		if strings.HasPrefix(other, path+"/") || strings.HasPrefix(path, other+"/") {
			return fmt.Errorf("path %q conflicts with %q", path, other)
		}
	}
	p[path] = file{data: data, mode: mode & fs.ModePerm}
	return nil
}

// checkPath rejects paths that could leave the volume directory or collide
// with the writer's own hidden entries.
func checkPath(path string) error {
	switch {
	case path == "":
		return errors.New("empty path")
	case filepath.IsAbs(path):
		return fmt.Errorf("path %q must be relative", path)
	case strings.HasPrefix(path, ".."):
		return fmt.Errorf("path %q must not start with '..'", path)
	}
	for _, elem := range strings.Split(filepath.ToSlash(path), "/") {
		if elem == ".." {
			return fmt.Errorf("path %q must not contain '..'", path)
		}
	}
	if c := filepath.Clean(path); c == "." {
		return fmt.Errorf("path %q names the volume itself", path)
	}
	return nil
}

// topLevel returns the first element of each path in p.
func (p payload) topLevel() map[string]bool {
	top := make(map[string]bool, len(p))
	for path := range p {
		first, _, _ := strings.Cut(path, "/")
		top[first] = true
	}
	return top
}

// writeAtomic makes dir hold exactly p, as described above. It reports
// whether it wrote a new version; it writes nothing when the current
// version already has the same files, contents and modes. dir must exist.
func writeAtomic(dir string, p payload, now time.Time) (bool, error) {
	current, err := os.Readlink(filepath.Join(dir, dataLink))
	switch {
	case err == nil:
		if strings.ContainsRune(current, os.PathSeparator) || !strings.HasPrefix(current, "..") {
			return false, fmt.Errorf("%s points at %q, outside the volume", dataLink, current)
		}
		same, err := sameContent(filepath.Join(dir, current), p)
		if err != nil {
			return false, err
		}
		if same {
			// Repair user-visible links lost to an interrupted update.
			return false, syncVisibleLinks(dir, p)
		}
	case errors.Is(err, fs.ErrNotExist):
		// First version.
	default:
		return false, fmt.Errorf("read %s: %w", dataLink, err)
	}

	version, err := os.MkdirTemp(dir, now.UTC().Format(versionDirLayout))
	if err != nil {
		return false, fmt.Errorf("create version directory: %w", err)
	}
	if err := fillVersion(version, p); err != nil {
		os.RemoveAll(version)
		return false, err
	}

	// Publish: a fresh symlink renamed over ..data.
	tmp := filepath.Join(dir, dataLinkTmp)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		os.RemoveAll(version)
		return false, fmt.Errorf("remove stale %s: %w", dataLinkTmp, err)
	}
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		os.RemoveAll(version)
		return false, fmt.Errorf("create %s: %w", dataLinkTmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		os.Remove(tmp)
		os.RemoveAll(version)
		return false, fmt.Errorf("publish %s: %w", dataLink, err)
	}

	if err := syncVisibleLinks(dir, p); err != nil {
		return true, err
	}
	// Drop every hidden entry but the published version: the previous
	// version and leftovers of interrupted updates.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return true, fmt.Errorf("read volume directory: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "..") || name == dataLink || name == filepath.Base(version) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			errs = append(errs, fmt.Errorf("remove old version: %w", err))
		}
	}
	return true, errors.Join(errs...)
}

// fillVersion writes every file of p below the new version directory.
func fillVersion(version string, p payload) error {
	// MkdirTemp makes 0700; a version is as open as the volume root.
	if err := os.Chmod(version, 0o755); err != nil {
		return fmt.Errorf("chmod version directory: %w", err)
	}
	for path, f := range p {
		full := filepath.Join(version, filepath.FromSlash(path))
		if err := mkdirAllMode(version, filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := writeFile(full, f); err != nil {
			return err
		}
	}
	return nil
}

// mkdirAllMode makes dir and its missing parents below root with mode,
// independent of the umask.
func mkdirAllMode(root, dir string, mode fs.FileMode) error {
	if dir == root {
		return nil
	}
	if fi, err := os.Lstat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	if err := mkdirAllMode(root, filepath.Dir(dir), mode); err != nil {
		return err
	}
	if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.Chmod(dir, mode)
}

// writeFile creates a new file with exactly f's content and mode.
func writeFile(path string, f file) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	_, err = out.Write(f.data)
	if err == nil {
		err = out.Chmod(f.mode)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// sameContent reports whether the version directory holds exactly p.
func sameContent(version string, p payload) (bool, error) {
	seen := 0
	same := true
	err := filepath.WalkDir(version, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(version, path)
		if err != nil {
			return err
		}
		want, ok := p[filepath.ToSlash(rel)]
		if !ok || !d.Type().IsRegular() {
			same = false
			return filepath.SkipAll
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm() != want.mode || info.Size() != int64(len(want.data)) {
			same = false
			return filepath.SkipAll
		}
		got, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want.data) {
			same = false
			return filepath.SkipAll
		}
		seen++
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		// A dangling ..data: write a new version.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("compare current version: %w", err)
	}
	return same && seen == len(p), nil
}

// syncVisibleLinks makes the volume's visible entries exactly one symlink
// "<name> -> ..data/<name>" per top-level name of p.
func syncVisibleLinks(dir string, p payload) error {
	top := p.topLevel()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read volume directory: %w", err)
	}
	present := make(map[string]bool, len(entries))
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "..") {
			continue
		}
		full := filepath.Join(dir, name)
		if top[name] {
			if target, err := os.Readlink(full); err == nil && target == filepath.Join(dataLink, name) {
				present[name] = true
				continue
			}
		}
		// Stale, or not the link it should be.
		if err := os.RemoveAll(full); err != nil {
			errs = append(errs, fmt.Errorf("remove stale %s: %w", name, err))
		}
	}
	for name := range top {
		if present[name] {
			continue
		}
		if err := os.Symlink(filepath.Join(dataLink, name), filepath.Join(dir, name)); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
