// Package images is a node's image store. It pulls images from OCI
// registries, imports `docker save` archives and OCI image layouts, and
// keeps every layer unpacked on disk so the container runtime can stack the
// layers as overlayfs lower directories without further work.
//
// The store lives in one directory (Config.Root):
//
//	layers/<hex>/fs          one unpacked layer, named by its diff ID (the
//	                         SHA-256 of its uncompressed tar); shared by
//	                         every image that contains it
//	layers/<hex>/layer.json  the layer's diff ID and size
//	images/<hex>.json        one record per image, named by its config digest
//	refs.json                tags and digest references → image ID
//	lock                     flock(2) held while the index is changed
//	gc.lock                  shared by pulls and imports, exclusive for layer GC
//	tmp/                     work directories, renamed into place when complete
//
// Two processes use one store at the same time (the agent, and
// `tether image import` run beside it). Every file is written to a
// temporary name and renamed, mutations of the index hold an exclusive
// flock, and readers read the index from disk on every call, so each process
// sees the other's changes at once.
package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotFound is returned (wrapped) when the store holds no image for a
// reference or ID.
var ErrNotFound = errors.New("images: image not found")

// Config configures a Store.
type Config struct {
	// Root is the store's directory, for example <agent data dir>/images.
	// It is created if missing. Required.
	Root string

	// InsecureRegistries lists registries (host[:port], a host without a
	// port matches every port, or a CIDR) that may be reached over plain
	// HTTP. Loopback registries (127.0.0.0/8, ::1, localhost) are always
	// allowed over HTTP; every other registry is reached over HTTPS and
	// verified against the system roots. If empty, only loopback
	// registries may use HTTP.
	InsecureRegistries []string

	// Logger receives debug and warning messages. If nil, logs are
	// discarded.
	Logger *slog.Logger
}

// Image is an image in the store.
type Image struct {
	// ID is "sha256:<hex>", the digest of the image's config.
	ID string
	// RepoTags are the normalized tag references that point at the image,
	// e.g. "docker.io/library/busybox:latest".
	RepoTags []string
	// RepoDigests are the "repo@sha256:<hex>" references of the image:
	// the digest of the manifest or index it was pulled by.
	RepoDigests []string
	// Size is the sum of the sizes of the image's uncompressed layers.
	Size int64

	// The image's run configuration, from its config.
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string

	// Layers are the absolute directories of the unpacked layers, bottom
	// layer first. overlayfs's lowerdir option lists the top layer first,
	// so reverse them there. A directory holds overlay whiteouts (0/0
	// character devices) and opaque directories (trusted.overlay.opaque).
	Layers []string
}

// Store is a node's image store. Its methods are safe for concurrent use,
// and several Stores (in one or several processes) may share one Root.
type Store struct {
	root     string
	insecure []string
	log      *slog.Logger

	mu    sync.Mutex // guards pulls
	pulls map[string]*pullCall
}

// New returns a Store on cfg.Root, creating its directories if needed and
// removing work directories that crashed processes left behind.
func New(cfg Config) (*Store, error) {
	var errs []error
	if cfg.Root == "" {
		errs = append(errs, errors.New("images: Root must not be empty"))
	}
	for _, r := range cfg.InsecureRegistries {
		if r == "" || strings.Contains(r, "/") && !isCIDR(r) {
			errs = append(errs, fmt.Errorf("images: insecure registry %q: want host[:port] or a CIDR", r))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		root:     root,
		insecure: slices.Clone(cfg.InsecureRegistries),
		log:      log.With("component", "images"),
		pulls:    map[string]*pullCall{},
	}
	for _, d := range []string{s.root, s.path("layers"), s.path("images"), s.path("tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("images: %w", err)
		}
	}
	s.removeStaleTemp()
	return s, nil
}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

// layerDir is where the layer with diff ID hex is unpacked.
func (s *Store) layerDir(hex string) string { return s.path("layers", hex) }

// record is the on-disk form of an image (images/<hex>.json). Tags and
// digests live in refs.json so that a tag moves atomically between images.
type record struct {
	ID         string    `json:"id"`
	DiffIDs    []string  `json:"diffIDs"`
	Size       int64     `json:"size"`
	Entrypoint []string  `json:"entrypoint,omitempty"`
	Cmd        []string  `json:"cmd,omitempty"`
	Env        []string  `json:"env,omitempty"`
	WorkingDir string    `json:"workingDir,omitempty"`
	User       string    `json:"user,omitempty"`
	Created    time.Time `json:"created,omitzero"`
	Stored     time.Time `json:"stored"`
}

// refsFile is refs.json.
type refsFile struct {
	Refs map[string]string `json:"refs"` // normalized reference → image ID
}

// layerInfo is layers/<hex>/layer.json.
type layerInfo struct {
	DiffID string `json:"diffID"`
	Size   int64  `json:"size"`
}

func idHex(id string) string { return strings.TrimPrefix(id, "sha256:") }

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return s != ""
}

func (s *Store) readRefs() (map[string]string, error) {
	data, err := os.ReadFile(s.path("refs.json"))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("images: read index: %w", err)
	}
	var f refsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("images: read index %s: %w", s.path("refs.json"), err)
	}
	if f.Refs == nil {
		f.Refs = map[string]string{}
	}
	return f.Refs, nil
}

func (s *Store) readRecord(id string) (*record, error) {
	h := idHex(id)
	if len(h) != 64 || !isHex(h) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	data, err := os.ReadFile(s.path("images", h+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("images: read image %s: %w", id, err)
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("images: read image %s: %w", id, err)
	}
	return &r, nil
}

// recordIDs lists the IDs of the stored images.
func (s *Store) recordIDs() ([]string, error) {
	ents, err := os.ReadDir(s.path("images"))
	if err != nil {
		return nil, fmt.Errorf("images: list images: %w", err)
	}
	var ids []string
	for _, e := range ents {
		h, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && len(h) == 64 && isHex(h) {
			ids = append(ids, "sha256:"+h)
		}
	}
	return ids, nil
}

func (s *Store) image(r *record, refs map[string]string) *Image {
	img := &Image{
		ID:         r.ID,
		Size:       r.Size,
		Entrypoint: slices.Clone(r.Entrypoint),
		Cmd:        slices.Clone(r.Cmd),
		Env:        slices.Clone(r.Env),
		WorkingDir: r.WorkingDir,
		User:       r.User,
	}
	for ref, id := range refs {
		if id != r.ID {
			continue
		}
		if strings.Contains(ref, "@") {
			img.RepoDigests = append(img.RepoDigests, ref)
		} else {
			img.RepoTags = append(img.RepoTags, ref)
		}
	}
	slices.Sort(img.RepoTags)
	slices.Sort(img.RepoDigests)
	for _, d := range r.DiffIDs {
		img.Layers = append(img.Layers, filepath.Join(s.layerDir(idHex(d)), "fs"))
	}
	return img
}

// resolve finds the ID of the image ref names: a reference (normalized
// like Kubernetes does: "busybox" is docker.io/library/busybox:latest), an
// image ID ("sha256:<hex>", "<hex>" or a unique prefix of at least 12 hex
// digits), or a bare manifest digest one of the image's RepoDigests has.
func (s *Store) resolve(ref string, refs map[string]string) (string, error) {
	if h, ok := strings.CutPrefix(ref, "sha256:"); ok && len(h) == 64 && isHex(h) {
		if _, err := os.Stat(s.path("images", h+".json")); err == nil {
			return ref, nil
		}
		for r, id := range refs {
			if strings.HasSuffix(r, "@"+ref) {
				return id, nil
			}
		}
		return "", fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	if n, err := Normalize(ref); err == nil {
		if id, ok := refs[n]; ok {
			return id, nil
		}
	}
	if len(ref) >= 12 && len(ref) <= 64 && isHex(ref) {
		ids, err := s.recordIDs()
		if err != nil {
			return "", err
		}
		var found []string
		for _, id := range ids {
			if strings.HasPrefix(idHex(id), ref) {
				found = append(found, id)
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
		default:
			return "", fmt.Errorf("images: %q matches %d images; give more of the ID", ref, len(found))
		}
	}
	return "", fmt.Errorf("%w: %s", ErrNotFound, ref)
}

// Get returns the image that ref names: a reference such as "busybox",
// "docker.io/library/busybox:latest" or "repo@sha256:…", or an image ID.
// It reads the index from disk, so it sees images that another process
// added. An unknown image gives an error for which errors.Is(err,
// ErrNotFound) is true.
func (s *Store) Get(ref string) (*Image, error) {
	refs, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	id, err := s.resolve(ref, refs)
	if err != nil {
		return nil, err
	}
	r, err := s.readRecord(id)
	if err != nil {
		return nil, err
	}
	return s.image(r, refs), nil
}

// List returns every stored image, ordered by first tag, untagged images
// last by ID.
func (s *Store) List() ([]*Image, error) {
	refs, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	ids, err := s.recordIDs()
	if err != nil {
		return nil, err
	}
	var out []*Image
	for _, id := range ids {
		r, err := s.readRecord(id)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s.image(r, refs))
	}
	slices.SortFunc(out, func(a, b *Image) int {
		switch {
		case len(a.RepoTags) > 0 && len(b.RepoTags) > 0:
			return strings.Compare(a.RepoTags[0], b.RepoTags[0])
		case len(a.RepoTags) > 0:
			return -1
		case len(b.RepoTags) > 0:
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// commit records r and points refs at it, under the store lock.
func (s *Store) commit(r *record, refs []string) (*Image, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(s.path("images", idHex(r.ID)+".json"), data); err != nil {
		return nil, fmt.Errorf("images: write image %s: %w", r.ID, err)
	}
	all, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	changed := false
	for _, ref := range refs {
		if all[ref] != r.ID {
			all[ref] = r.ID
			changed = true
		}
	}
	if changed {
		if err := s.writeRefs(all); err != nil {
			return nil, err
		}
	}
	return s.image(r, all), nil
}

func (s *Store) writeRefs(refs map[string]string) error {
	data, err := json.MarshalIndent(refsFile{Refs: refs}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path("refs.json"), data); err != nil {
		return fmt.Errorf("images: write index: %w", err)
	}
	return nil
}

// Remove removes ref from the store. If ref is a tag or digest reference,
// only that reference goes, and the image with it once nothing else
// points at it; if ref is an image ID, the image and all its references
// go. Layers no image uses any more are deleted unless a pull or import is
// in progress (they are then deleted by a later Remove).
func (s *Store) Remove(ref string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	refs, err := s.readRefs()
	if err != nil {
		return err
	}
	id, err := s.resolve(ref, refs)
	if err != nil {
		return err
	}
	n, nerr := Normalize(ref)
	byRef := nerr == nil && refs[n] == id
	remaining := 0
	for r, rid := range refs {
		switch {
		case rid != id:
		case !byRef || r == n:
			delete(refs, r)
		default:
			remaining++
		}
	}
	if err := s.writeRefs(refs); err != nil {
		return err
	}
	if remaining > 0 {
		return nil
	}
	if err := os.Remove(s.path("images", idHex(id)+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("images: remove image %s: %w", id, err)
	}
	return s.collectLayers()
}

// collectLayers deletes unused layers if no pull or import holds gc.lock.
// The caller holds the store lock, so no image record appears meanwhile.
func (s *Store) collectLayers() error {
	f, err := os.OpenFile(s.path("gc.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		s.log.Debug("layer GC skipped: a pull or import is running")
		return nil
	}
	used := map[string]bool{}
	ids, err := s.recordIDs()
	if err != nil {
		return err
	}
	for _, id := range ids {
		r, err := s.readRecord(id)
		if err != nil {
			return err
		}
		for _, d := range r.DiffIDs {
			used[idHex(d)] = true
		}
	}
	ents, err := os.ReadDir(s.path("layers"))
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if used[e.Name()] {
			continue
		}
		// Move the layer out of its final name first: a crash half-way
		// through RemoveAll must not leave a partial layer that looks
		// complete.
		tmp, err := s.tempDir()
		if err != nil {
			return err
		}
		gone := filepath.Join(tmp, "layer")
		if err := os.Rename(s.path("layers", e.Name()), gone); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(tmp); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("images: remove unused layers: %w", err)
	}
	return nil
}

// lock takes the exclusive store lock; it blocks until other processes and
// goroutines release it.
func (s *Store) lock() (unlock func(), err error) {
	f, err := os.OpenFile(s.path("lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("images: lock: %w", err)
	}
	if err := flock(f, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("images: lock: %w", err)
	}
	return func() { f.Close() }, nil // closing the descriptor releases the lock
}

// holdLayers takes gc.lock shared, so no layer GC runs until release: a
// pull's layers are unreferenced until its image record is written.
func (s *Store) holdLayers() (release func(), err error) {
	f, err := os.OpenFile(s.path("gc.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	if err := flock(f, unix.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("images: %w", err)
	}
	return func() { f.Close() }, nil
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// tempDir makes a work directory under tmp/ whose name starts with this
// process's ID, so New can tell abandoned ones from live ones.
func (s *Store) tempDir() (string, error) {
	d, err := os.MkdirTemp(s.path("tmp"), strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	return d, nil
}

// removeStaleTemp removes work directories of processes that are gone.
func (s *Store) removeStaleTemp() {
	ents, err := os.ReadDir(s.path("tmp"))
	if err != nil {
		return
	}
	for _, e := range ents {
		pidStr, _, _ := strings.Cut(e.Name(), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			continue
		}
		if pid != os.Getpid() && unix.Kill(pid, 0) == unix.ESRCH {
			s.log.Debug("removing abandoned work directory", "dir", e.Name())
			os.RemoveAll(s.path("tmp", e.Name()))
		}
	}
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, synced before it is renamed over path.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o600)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// readLayerInfo reads the size of an unpacked layer.
func readLayerInfo(dir string) (layerInfo, error) {
	var li layerInfo
	data, err := os.ReadFile(filepath.Join(dir, "layer.json"))
	if err != nil {
		return li, err
	}
	err = json.Unmarshal(data, &li)
	return li, err
}
