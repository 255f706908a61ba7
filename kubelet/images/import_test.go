package images

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func writeDockerSave(t *testing.T, path string, refs map[string]v1.Image) {
	t.Helper()
	m := map[name.Reference]v1.Image{}
	for r, img := range refs {
		tag, err := name.NewTag(r)
		if err != nil {
			t.Fatal(err)
		}
		m[tag] = img
	}
	if err := tarball.MultiRefWriteToFile(path, m); err != nil {
		t.Fatal(err)
	}
}

func tagsOf(imgs []*Image) []string {
	var tags []string
	for _, img := range imgs {
		tags = append(tags, img.RepoTags...)
	}
	slices.Sort(tags)
	return tags
}

func TestImportDockerSave(t *testing.T) {
	a, b := randomImage(t, 2), randomImage(t, 1)
	file := filepath.Join(t.TempDir(), "images.tar")
	writeDockerSave(t, file, map[string]v1.Image{"busybox": a, "127.0.0.1:5000/a:1": a, "example.com/b:2": b})

	s := newStore(t, "")
	var msgs []string
	imgs, err := s.ImportWithProgress(t.Context(), file, func(m string) { msgs = append(msgs, m) })
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	want := []string{"127.0.0.1:5000/a:1", "docker.io/library/busybox:latest", "example.com/b:2"}
	if got := tagsOf(imgs); !slices.Equal(got, want) {
		t.Errorf("imported tags %q, want %q", got, want)
	}
	got, err := s.Get("busybox")
	if err != nil || got.ID != configName(t, a) || len(got.Layers) != 2 {
		t.Fatalf("Get(busybox) = %+v, %v; want %s with 2 layers", got, err, configName(t, a))
	}
	if !slices.Equal(got.RepoTags, []string{"127.0.0.1:5000/a:1", "docker.io/library/busybox:latest"}) {
		t.Errorf("RepoTags = %q", got.RepoTags)
	}
	for _, l := range got.Layers {
		if _, err := os.Stat(l); err != nil {
			t.Errorf("layer %s: %v", l, err)
		}
	}
	if !slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, "importing ") && strings.Contains(m, "layer 1/") }) {
		t.Errorf("progress %q has no layer message", msgs)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Errorf("List() = %d images, %v; want 2", len(list), err)
	}
}

func TestImportErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	notTar := filepath.Join(dir, "notes.txt")
	os.WriteFile(notTar, []byte("hello"), 0o600)
	emptyTar := filepath.Join(dir, "empty.tar")
	f, _ := os.Create(emptyTar)
	tar.NewWriter(f).Close()
	f.Close()
	s := newStore(t, "")
	for _, p := range []string{filepath.Join(dir, "missing.tar"), notTar, emptyTar} {
		if _, err := s.Import(t.Context(), p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("Import(%s) = %v, want an error naming the file", p, err)
		}
	}
}

// writeLayout writes an OCI image layout with an image named by
// org.opencontainers.image.ref.name, a multi-platform index named by
// io.containerd.image.name and an image with only a bare tag.
func writeLayout(t *testing.T, dir string) (named, ours, bare v1.Image) {
	t.Helper()
	named, ours, bare = randomImage(t, 2), randomImage(t, 1), randomImage(t, 1)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: randomImage(t, 1), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "windows", Architecture: runtime.GOARCH}}},
		mutate.IndexAddendum{Add: ours, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(named, layout.WithAnnotations(map[string]string{annotationRefName: "127.0.0.1:5000/named:1"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{annotationContainerdName: "example.com/multi:2", annotationRefName: "2"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(bare, layout.WithAnnotations(map[string]string{annotationRefName: "latest"})); err != nil {
		t.Fatal(err)
	}
	return named, ours, bare
}

func tarDir(t *testing.T, dir, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = rel
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			r, err := os.Open(p)
			if err != nil {
				return err
			}
			defer r.Close()
			_, err = io.Copy(tw, r)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestImportOCILayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "layout")
	named, ours, bare := writeLayout(t, dir)
	file := filepath.Join(t.TempDir(), "layout.tar")
	tarDir(t, dir, file)

	for what, path := range map[string]string{"directory": dir, "tar": file} {
		t.Run(what, func(t *testing.T) {
			s := newStore(t, "")
			imgs, err := s.Import(t.Context(), path)
			if err != nil {
				t.Fatalf("Import(%s): %v", path, err)
			}
			if len(imgs) != 3 {
				t.Fatalf("imported %d images, want 3", len(imgs))
			}
			for ref, img := range map[string]v1.Image{"127.0.0.1:5000/named:1": named, "example.com/multi:2": ours} {
				got, err := s.Get(ref)
				if err != nil || got.ID != configName(t, img) {
					t.Errorf("Get(%s) = %v, %v; want %s", ref, got, err, configName(t, img))
				}
			}
			got, err := s.Get(configName(t, bare))
			if err != nil || len(got.RepoTags) != 0 {
				t.Errorf("image tagged only %q: %+v, %v; want it stored untagged", "latest", got, err)
			}
			if ents, _ := os.ReadDir(s.path("tmp")); len(ents) != 0 {
				t.Errorf("tmp/ holds %d entries after import", len(ents))
			}
		})
	}
}

// TestTwoStoresShareRoot is the agent and `tether image import` running at
// once on one node.
func TestTwoStoresShareRoot(t *testing.T) {
	root := t.TempDir()
	agent, cli := newStore(t, root), newStore(t, root)

	shared := randomImage(t, 2)
	file := filepath.Join(t.TempDir(), "one.tar")
	writeDockerSave(t, file, map[string]v1.Image{"example.com/imported:1": shared})
	if _, err := agent.Get("example.com/imported:1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get before import: %v, want ErrNotFound", err)
	}
	if _, err := cli.Import(t.Context(), file); err != nil {
		t.Fatal(err)
	}
	got, err := agent.Get("example.com/imported:1")
	if err != nil || got.ID != configName(t, shared) {
		t.Fatalf("agent Get after the CLI imported: %v, %v", got, err)
	}

	// Concurrent writers on both stores lose no tag.
	reg := startRegistry(t, nil)
	var wg sync.WaitGroup
	var want []string
	for i := range 6 {
		ref := fmt.Sprintf("%s/p:%d", reg, i)
		push(t, ref, shared) // same layers as the import: unpacked once
		want = append(want, ref)
		wg.Go(func() {
			if _, err := agent.Pull(t.Context(), ref, nil, nil); err != nil {
				t.Error(err)
			}
		})
		f := filepath.Join(t.TempDir(), "x.tar")
		writeDockerSave(t, f, map[string]v1.Image{fmt.Sprintf("example.com/i:%d", i): randomImage(t, 1)})
		want = append(want, fmt.Sprintf("example.com/i:%d", i))
		wg.Go(func() {
			if _, err := cli.Import(t.Context(), f); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, s := range []*Store{agent, cli} {
		list, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		tags := tagsOf(list)
		for _, w := range want {
			if !slices.Contains(tags, w) {
				t.Errorf("List() lacks %s after concurrent pulls and imports", w)
			}
		}
	}
	if ents, _ := os.ReadDir(agent.path("tmp")); len(ents) != 0 {
		t.Errorf("tmp/ holds %d entries", len(ents))
	}
}

func TestRemove(t *testing.T) {
	a, b := randomImage(t, 2), randomImage(t, 1)
	file := filepath.Join(t.TempDir(), "images.tar")
	writeDockerSave(t, file, map[string]v1.Image{"example.com/a:1": a, "example.com/a:2": a, "example.com/b:1": b})
	s := newStore(t, "")
	if _, err := s.Import(t.Context(), file); err != nil {
		t.Fatal(err)
	}
	layers := func() int { e, _ := os.ReadDir(s.path("layers")); return len(e) }
	if n := layers(); n != 3 {
		t.Fatalf("%d layers stored, want 3", n)
	}
	if err := s.Remove("example.com/a:1"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get("example.com/a:2"); err != nil || !slices.Equal(got.RepoTags, []string{"example.com/a:2"}) {
		t.Errorf("after removing one tag: %v, %v; want the image with the other tag", got, err)
	}
	if err := s.Remove("example.com/a:2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(configName(t, a)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(removed image) error = %v, want ErrNotFound", err)
	}
	if n := layers(); n != 1 {
		t.Errorf("%d layers left, want 1 (b's)", n)
	}
	if err := s.Remove(configName(t, b)); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(); len(list) != 0 || layers() != 0 {
		t.Errorf("after removing everything: %d images, %d layers", len(list), layers())
	}
	if err := s.Remove("example.com/b:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove(gone) = %v, want ErrNotFound", err)
	}
}
