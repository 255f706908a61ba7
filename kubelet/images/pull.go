package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// pullCall is one pull in flight; concurrent Pulls of the same reference
// with the same credentials wait for it instead of pulling again.
type pullCall struct {
	done   chan struct{}
	img    *Image
	err    error
	cancel context.CancelFunc

	waiters int // guarded by Store.mu

	mu        sync.Mutex
	listeners map[int]func(string)
	next      int
}

func (c *pullCall) listen(f func(string)) (stop func()) {
	if f == nil {
		return func() {}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.next
	c.next++
	c.listeners[id] = f
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.listeners, id)
	}
}

func (c *pullCall) report(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.listeners {
		f(msg)
	}
}

// Pull fetches ref from its registry, unpacks the layers the store does not
// have yet and records the image under ref (and under repo@digest).
//
// creds are tried in order of how specifically their Registry matches the
// reference; a pull without matching credentials is anonymous. From an
// image index the linux/runtime.GOARCH image is chosen. Errors keep the
// registry's message ("MANIFEST_UNKNOWN: manifest unknown" for a missing
// tag). progress, if not nil, receives messages such as "pulling
// 127.0.0.1:5000/x:1: layer 2/3 (1.2 MB)"; it is called from another
// goroutine, one message at a time, until Pull returns.
//
// Concurrent Pulls of one reference with the same credentials share one
// download; it stops when every caller's ctx is done.
func (s *Store) Pull(ctx context.Context, ref string, creds []Credential, progress func(string)) (*Image, error) {
	r, err := parse(ref)
	if err != nil {
		return nil, err
	}
	norm := normalized(r)
	key := norm + "\x00" + credentialsKey(creds)

	s.mu.Lock()
	c := s.pulls[key]
	if c == nil {
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &pullCall{done: make(chan struct{}), cancel: cancel, listeners: map[int]func(string){}}
		s.pulls[key] = c
		go func() {
			img, err := s.pull(pctx, norm, creds, c.report)
			s.mu.Lock()
			if s.pulls[key] == c {
				delete(s.pulls, key)
			}
			s.mu.Unlock()
			c.img, c.err = img, err
			cancel()
			close(c.done)
		}()
	}
	c.waiters++
	stop := c.listen(progress)
	s.mu.Unlock()
	defer stop()

	select {
	case <-c.done:
		if c.err != nil {
			return nil, c.err
		}
		return c.img.clone(), nil
	case <-ctx.Done():
		s.mu.Lock()
		c.waiters--
		if c.waiters == 0 {
			// Nobody waits any more: stop the download, and let the next
			// Pull start a fresh one.
			c.cancel()
			if s.pulls[key] == c {
				delete(s.pulls, key)
			}
		}
		s.mu.Unlock()
		return nil, fmt.Errorf("images: pull %s: %w", norm, context.Cause(ctx))
	}
}

func (img *Image) clone() *Image {
	c := *img
	for _, p := range []*[]string{&c.RepoTags, &c.RepoDigests, &c.Entrypoint, &c.Cmd, &c.Env, &c.Layers} {
		*p = append([]string(nil), (*p)...)
	}
	return &c
}

func credentialsKey(creds []Credential) string {
	h := sha256.New()
	json.NewEncoder(h).Encode(creds)
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Store) pull(ctx context.Context, norm string, creds []Credential, report func(string)) (*Image, error) {
	release, err := s.holdLayers()
	if err != nil {
		return nil, err
	}
	defer release()

	var opts []name.Option
	if r, err := parse(norm); err == nil && s.allowHTTP(r.Context().RegistryStr()) {
		opts = append(opts, name.Insecure) // lets go-containerregistry fall back to http
	}
	ref, err := parse(norm, opts...)
	if err != nil {
		return nil, err
	}
	auths := []authn.Authenticator{authn.Anonymous}
	if matched := matchCredentials(creds, ref.Context().RegistryStr(), ref.Context().RepositoryStr()); len(matched) > 0 {
		auths = auths[:0]
		for _, c := range matched {
			a, err := c.authenticator()
			if err != nil {
				return nil, err
			}
			auths = append(auths, a)
		}
	}
	var lastErr error
	for _, auth := range auths {
		img, err := s.pullWith(ctx, ref, norm, auth, report)
		if err == nil {
			return img, nil
		}
		lastErr = err
		if !isAuthError(err) {
			break
		}
	}
	return nil, fmt.Errorf("images: pull %s: %w", norm, lastErr)
}

func isAuthError(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return false
	}
	if terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden {
		return true
	}
	for _, d := range terr.Errors {
		if d.Code == transport.UnauthorizedErrorCode || d.Code == transport.DeniedErrorCode {
			return true
		}
	}
	return false
}

func (s *Store) pullWith(ctx context.Context, ref name.Reference, norm string, auth authn.Authenticator, report func(string)) (*Image, error) {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(auth),
		remote.WithTransport(s.transport()),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
		remote.WithUserAgent("tether"),
	}
	report(fmt.Sprintf("pulling %s: resolving", norm))
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, err
	}
	img, err := desc.Image() // an index resolves to the image for our platform
	if err != nil {
		return nil, err
	}
	refs := []string{norm}
	if _, ok := ref.(name.Tag); ok {
		refs = append(refs, repoName(ref.Context())+"@"+desc.Digest.String())
	}
	var sizes []int64
	if m, err := img.Manifest(); err == nil {
		for _, l := range m.Layers {
			sizes = append(sizes, l.Size)
		}
	}
	return s.add(ctx, img, refs, sizes, func(msg string) { report("pulling " + norm + ": " + msg) })
}

// transport refuses plain HTTP to registries that are neither loopback
// nor listed as insecure, whatever go-containerregistry falls back to.
func (s *Store) transport() http.RoundTripper {
	return &httpGuard{next: remote.DefaultTransport, allow: s.allowHTTP}
}

type httpGuard struct {
	next  http.RoundTripper
	allow func(hostport string) bool
}

func (g *httpGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !g.allow(req.URL.Host) {
		return nil, fmt.Errorf("images: refusing plain HTTP to %s: only loopback registries and Config.InsecureRegistries may use HTTP", req.URL.Host)
	}
	return g.next.RoundTrip(req)
}

// add stores img: it verifies the config against its digest, unpacks the
// layers not stored yet (verifying each against its diff ID) and records
// the image under refs. sizes, if not nil, are the layers' download sizes
// for progress messages.
func (s *Store) add(ctx context.Context, img v1.Image, refs []string, sizes []int64, report func(string)) (*Image, error) {
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if sum := sha256.Sum256(raw); cfgName.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != cfgName.Hex {
		return nil, fmt.Errorf("config does not match its digest %s", cfgName)
	}
	cf, err := v1.ParseConfigFile(strings.NewReader(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if cf.OS != "" && cf.OS != "linux" {
		return nil, fmt.Errorf("image is for %s/%s, not linux", cf.OS, cf.Architecture)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		return nil, fmt.Errorf("image has %d layers but its config lists %d diff IDs", len(layers), len(cf.RootFS.DiffIDs))
	}
	rec := &record{ID: cfgName.String(), Created: cf.Created.Time, Stored: time.Now().UTC()}
	for i, l := range layers {
		diffID := cf.RootFS.DiffIDs[i]
		if diffID.Algorithm != "sha256" || len(diffID.Hex) != 64 || !isHex(diffID.Hex) {
			return nil, fmt.Errorf("layer %d: unsupported diff ID %s", i+1, diffID)
		}
		msg := fmt.Sprintf("layer %d/%d", i+1, len(layers))
		if i < len(sizes) && sizes[i] > 0 {
			msg += " (" + humanSize(sizes[i]) + ")"
		}
		size, cached, err := s.ensureLayer(ctx, l, diffID)
		if err != nil {
			return nil, fmt.Errorf("layer %d/%d %s: %w", i+1, len(layers), diffID, err)
		}
		if cached {
			msg += " already present"
		}
		report(msg)
		rec.DiffIDs = append(rec.DiffIDs, diffID.String())
		rec.Size += size
	}
	c := cf.Config
	rec.Entrypoint, rec.Cmd, rec.Env, rec.WorkingDir, rec.User = c.Entrypoint, c.Cmd, c.Env, c.WorkingDir, c.User
	out, err := s.commit(rec, refs)
	if err != nil {
		return nil, err
	}
	report("stored as " + out.ID)
	return out, nil
}

// ensureLayer unpacks l under layers/<diff ID hex> unless it is there
// already. It unpacks into a work directory, checks the uncompressed
// stream against diffID, syncs, and renames the directory into place.
func (s *Store) ensureLayer(ctx context.Context, l v1.Layer, diffID v1.Hash) (size int64, cached bool, err error) {
	final := s.layerDir(diffID.Hex)
	if li, err := readLayerInfo(final); err == nil {
		return li.Size, true, nil
	}
	tmp, err := s.tempDir()
	if err != nil {
		return 0, false, err
	}
	defer os.RemoveAll(tmp)
	fsDir := filepath.Join(tmp, "fs")
	if err := os.Mkdir(fsDir, 0o755); err != nil {
		return 0, false, err
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return 0, false, err
	}
	h := sha256.New()
	cr := &countingReader{ctx: ctx, r: io.TeeReader(rc, h)}
	err = unpack(fsDir, cr, s.log)
	if err == nil {
		// Read to the end: the digest covers the tar's padding, and
		// go-containerregistry verifies the compressed stream at EOF.
		_, err = io.Copy(io.Discard, cr)
	}
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, false, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != diffID.Hex {
		return 0, false, fmt.Errorf("content has digest sha256:%s, want %s", got, diffID)
	}
	data, _ := json.Marshal(layerInfo{DiffID: diffID.String(), Size: cr.n})
	if err := os.WriteFile(filepath.Join(tmp, "layer.json"), data, 0o600); err != nil {
		return 0, false, err
	}
	if err := syncFS(tmp); err != nil {
		return 0, false, err
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another pull or process unpacked the same layer meanwhile.
		if li, ierr := readLayerInfo(final); ierr == nil {
			return li.Size, true, nil
		}
		return 0, false, err
	}
	return cr.n, false, nil
}

// countingReader counts bytes and stops when ctx is done.
type countingReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// humanSize formats n bytes in SI units, as docker does ("1.2 MB").
func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	units := []string{"kB", "MB", "GB", "TB", "PB"}
	for f /= unit; f >= unit && i < len(units)-1; f /= unit {
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
