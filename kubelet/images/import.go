package images

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Annotations that name an image in an OCI image layout's index.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// Import adds every image in the archive at path to the store: a
// `docker save` tarball (manifest.json; each image under all its
// RepoTags), or an OCI image layout, either a directory or a tar of one
// (each index entry under the name its io.containerd.image.name or
// org.opencontainers.image.ref.name annotation gives, when that is a full
// reference). An image index in a layout is resolved to the
// linux/runtime.GOARCH image. Errors name the file.
func (s *Store) Import(ctx context.Context, path string) ([]*Image, error) {
	return s.ImportWithProgress(ctx, path, nil)
}

// ImportWithProgress is Import reporting progress to progress, if not
// nil, as Pull does.
func (s *Store) ImportWithProgress(ctx context.Context, path string, progress func(string)) ([]*Image, error) {
	if progress == nil {
		progress = func(string) {}
	}
	imgs, err := s.importPath(ctx, path, progress)
	if err != nil {
		return imgs, fmt.Errorf("images: import %s: %w", path, err)
	}
	return imgs, nil
}

func (s *Store) importPath(ctx context.Context, p string, progress func(string)) ([]*Image, error) {
	release, err := s.holdLayers()
	if err != nil {
		return nil, err
	}
	defer release()
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return s.importLayout(ctx, p, p, progress)
	}
	names, err := tarNames(p)
	if err != nil {
		return nil, err
	}
	switch {
	case names["manifest.json"]:
		return s.importDockerSave(ctx, p, progress)
	case names["index.json"]:
		dir, err := s.tempDir()
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if err := extractPlain(p, dir); err != nil {
			return nil, err
		}
		return s.importLayout(ctx, dir, p, progress)
	}
	return nil, errors.New("neither a docker save archive (no manifest.json) nor an OCI image layout (no index.json)")
}

// tarNames lists the top-level files of the tar at p.
func tarNames(p string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		names[path.Clean(hdr.Name)] = true
	}
}

func (s *Store) importDockerSave(ctx context.Context, p string, progress func(string)) ([]*Image, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(p) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("read manifest.json: %w", err)
	}
	var out []*Image
	for i, d := range m {
		var tag *name.Tag
		var refs []string
		for _, rt := range d.RepoTags {
			t, err := name.NewTag(rt)
			if err != nil {
				return out, fmt.Errorf("image %d: tag %q: %w", i+1, rt, err)
			}
			if tag == nil {
				tag = &t
			}
			refs = append(refs, normalized(t))
		}
		if tag == nil && len(m) > 1 {
			return out, fmt.Errorf("image %d (%s) has no tag; untagged images are only supported in single-image archives", i+1, d.Config)
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return out, fmt.Errorf("image %d: %w", i+1, err)
		}
		label := d.Config
		if len(refs) > 0 {
			label = refs[0]
		}
		stored, err := s.add(ctx, img, refs, nil, func(msg string) { progress("importing " + label + ": " + msg) })
		if err != nil {
			return out, fmt.Errorf("image %s: %w", label, err)
		}
		out = append(out, stored)
	}
	return out, nil
}

func (s *Store) importLayout(ctx context.Context, dir, label string, progress func(string)) ([]*Image, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("not an OCI image layout: %w", err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("read index.json: %w", err)
	}
	var out []*Image
	for i, desc := range im.Manifests {
		var refs []string
		what := fmt.Sprintf("%s#%d", label, i+1)
		if r := layoutRef(desc.Annotations); r != nil {
			what = normalized(r)
			refs = append(refs, what)
			if _, isDigest := r.(name.Digest); !isDigest {
				refs = append(refs, repoName(r.Context())+"@"+desc.Digest.String())
			}
		}
		img, err := layoutImage(idx, desc)
		if err != nil {
			return out, fmt.Errorf("%s: %w", what, err)
		}
		stored, err := s.add(ctx, img, refs, nil, func(msg string) { progress("importing " + what + ": " + msg) })
		if err != nil {
			return out, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, stored)
	}
	if len(out) == 0 {
		return nil, errors.New("the OCI image layout holds no images")
	}
	return out, nil
}

// layoutRef is the reference an index entry's annotations name, or nil. A
// bare tag ("1.0", as `skopeo copy oci:dir:1.0` writes) names no
// repository and is ignored.
func layoutRef(a map[string]string) name.Reference {
	for _, n := range []string{a[annotationContainerdName], a[annotationRefName]} {
		if n == "" || !strings.ContainsAny(n, "/:@") {
			continue
		}
		if r, err := name.ParseReference(n); err == nil {
			return r
		}
	}
	return nil
}

// layoutImage returns the image desc points at, choosing our platform's
// image when desc is an index.
func layoutImage(idx v1.ImageIndex, desc v1.Descriptor) (v1.Image, error) {
	for depth := 0; depth < 4; depth++ {
		if !desc.MediaType.IsIndex() {
			return idx.Image(desc.Digest)
		}
		child, err := idx.ImageIndex(desc.Digest)
		if err != nil {
			return nil, err
		}
		im, err := child.IndexManifest()
		if err != nil {
			return nil, err
		}
		found := false
		want := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
		for _, m := range im.Manifests {
			if m.Platform != nil && m.Platform.Satisfies(want) || m.Platform == nil && len(im.Manifests) == 1 {
				desc, found = m, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("no image for %s in index %s", want, desc.Digest)
		}
		idx = child
	}
	return nil, errors.New("image indexes nested too deep")
}

// extractPlain extracts the directories and regular files of the tar at
// p into dir (an OCI layout holds nothing else), refusing names that leave
// dir.
func extractPlain(p, dir string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		n, err := entryPath(hdr.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(n, 0o700)
		case tar.TypeReg:
			if err = root.MkdirAll(path.Dir(n), 0o700); err != nil {
				break
			}
			var w *os.File
			if w, err = root.OpenFile(n, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
				break
			}
			_, err = io.Copy(w, tr)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
}

// entryPath cleans a tar entry name into a path relative to the layer,
// rejecting names that climb out of it.
func entryPath(name string) (string, error) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("path escapes the layer")
	}
	return p, nil
}
