package images

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func newStore(t *testing.T, root string) *Store {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	s, err := New(Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startRegistry serves an in-memory registry on 127.0.0.1 and returns its
// host:port. wrap, if not nil, wraps its handler.
func startRegistry(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func push(t *testing.T, ref string, img v1.Image, opts ...remote.Option) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, append(opts, remote.WithContext(t.Context()))...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func randomImage(t *testing.T, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(1024, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func configName(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// entry is one tar entry of a test layer.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
	xattrs           map[string]string
}

var epoch = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Linkname: e.link, Uid: e.uid, Gid: e.gid, ModTime: epoch, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layerOf(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	data := tarOf(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageOf(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.WorkingDir = "/w"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"busybox", "docker.io/library/busybox:latest"},
		{"busybox:1.36", "docker.io/library/busybox:1.36"},
		{"docker.io/busybox", "docker.io/library/busybox:latest"},
		{"index.docker.io/library/busybox:1", "docker.io/library/busybox:1"},
		{"user/app", "docker.io/user/app:latest"},
		{"127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"},
		{"localhost/x", "localhost/x:latest"},
		{"quay.io/a/b/c:v", "quay.io/a/b/c:v"},
		{"busybox@sha256:" + strings.Repeat("a", 64), "docker.io/library/busybox@sha256:" + strings.Repeat("a", 64)},
		{"busybox:1@sha256:" + strings.Repeat("a", 64), "docker.io/library/busybox@sha256:" + strings.Repeat("a", 64)},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Normalize(tc.in)
			if err != nil || got != tc.want {
				t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "UPPER/case", "a b", "x@sha256:short"} {
		if got, err := Normalize(bad); err == nil {
			t.Errorf("Normalize(%q) = %q, want an error", bad, got)
		}
	}
}

func TestPullByTagAndDigest(t *testing.T) {
	reg := startRegistry(t, nil)
	img := randomImage(t, 3)
	ref := reg + "/x:1"
	push(t, ref, img)
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t, "")

	var msgs []string
	got, err := s.Pull(t.Context(), ref, nil, func(m string) { msgs = append(msgs, m) })
	if err != nil {
		t.Fatalf("Pull(%s): %v", ref, err)
	}
	if want := configName(t, img); got.ID != want {
		t.Errorf("ID = %s, want %s", got.ID, want)
	}
	if want := []string{ref}; !slices.Equal(got.RepoTags, want) {
		t.Errorf("RepoTags = %q, want %q", got.RepoTags, want)
	}
	if want := []string{reg + "/x@" + digest.String()}; !slices.Equal(got.RepoDigests, want) {
		t.Errorf("RepoDigests = %q, want %q", got.RepoDigests, want)
	}
	if len(got.Layers) != 3 {
		t.Fatalf("Layers = %q, want 3", got.Layers)
	}
	cf, _ := img.ConfigFile()
	for i, l := range got.Layers {
		if want := filepath.Join(s.root, "layers", cf.RootFS.DiffIDs[i].Hex, "fs"); l != want {
			t.Errorf("Layers[%d] = %s, want %s", i, l, want)
		}
		if ents, err := os.ReadDir(l); err != nil || len(ents) == 0 {
			t.Errorf("layer dir %s: %d entries, %v", l, len(ents), err)
		}
	}
	if got.Size <= 3*1024 {
		t.Errorf("Size = %d, want > 3 KiB", got.Size)
	}
	progress := regexp.MustCompile(`^pulling ` + regexp.QuoteMeta(ref) + `: layer 2/3 \([0-9.]+ k?B\)$`)
	if !slices.ContainsFunc(msgs, progress.MatchString) {
		t.Errorf("progress %q has no message matching %s", msgs, progress)
	}

	for _, q := range []string{ref, got.ID, idHex(got.ID), idHex(got.ID)[:12], got.RepoDigests[0], digest.String()} {
		g, err := s.Get(q)
		if err != nil || g.ID != got.ID {
			t.Errorf("Get(%q) = %v, %v; want %s", q, g, err, got.ID)
		}
	}
	if _, err := s.Get(reg + "/x:2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown tag) error = %v, want ErrNotFound", err)
	}

	// By digest, into a fresh store: no tag, the digest reference.
	s2 := newStore(t, "")
	byDigest := reg + "/x@" + digest.String()
	got2, err := s2.Pull(t.Context(), byDigest, nil, nil)
	if err != nil {
		t.Fatalf("Pull(%s): %v", byDigest, err)
	}
	if got2.ID != got.ID || len(got2.RepoTags) != 0 || !slices.Equal(got2.RepoDigests, []string{byDigest}) {
		t.Errorf("Pull by digest = %+v, want ID %s, no tags, digest %s", got2, got.ID, byDigest)
	}

	// Pulling again reuses the layers.
	msgs = nil
	if _, err := s.Pull(t.Context(), ref, nil, func(m string) { msgs = append(msgs, m) }); err != nil {
		t.Fatal(err)
	}
	if n := len(slices.DeleteFunc(slices.Clone(msgs), func(m string) bool { return !strings.HasSuffix(m, "already present") })); n != 3 {
		t.Errorf("second pull progress %q: %d layers already present, want 3", msgs, n)
	}
}

func TestPullMissingTag(t *testing.T) {
	reg := startRegistry(t, nil)
	push(t, reg+"/x:1", randomImage(t, 1))
	s := newStore(t, "")
	_, err := s.Pull(t.Context(), reg+"/x:nope", nil, nil)
	t.Logf("missing tag: %v", err)
	if err == nil || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN: Unknown manifest") || !strings.Contains(err.Error(), reg+"/x:nope") {
		t.Errorf("Pull(missing tag) error = %v, want the registry's MANIFEST_UNKNOWN message and the reference", err)
	}
	_, err = s.Pull(t.Context(), reg+"/nothing:1", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "NAME_UNKNOWN") {
		t.Errorf("Pull(missing repository) error = %v, want NAME_UNKNOWN", err)
	}
}

func TestPullIndexPicksPlatform(t *testing.T) {
	reg := startRegistry(t, nil)
	ours, other := randomImage(t, 1), randomImage(t, 1)
	otherArch := "arm64"
	if runtime.GOARCH == "arm64" {
		otherArch = "amd64"
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch}}},
		mutate.IndexAddendum{Add: ours, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	r, _ := name.ParseReference(reg + "/multi:1")
	if err := remote.WriteIndex(r, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	s := newStore(t, "")
	got, err := s.Pull(t.Context(), reg+"/multi:1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := configName(t, ours); got.ID != want {
		t.Errorf("pulled %s, want the %s image %s", got.ID, runtime.GOARCH, want)
	}
	if want := reg + "/multi@" + idxDigest.String(); !slices.Contains(got.RepoDigests, want) {
		t.Errorf("RepoDigests = %q, want the index digest %s", got.RepoDigests, want)
	}
}

// basicAuth answers 401 unless a request has user:pass.
func basicAuth(user, pass string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

func TestPullWithBasicAuth(t *testing.T) {
	reg := startRegistry(t, basicAuth("alice", "s3cret"))
	ref := reg + "/private/app:1"
	push(t, ref, randomImage(t, 2), remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))

	s := newStore(t, "")
	if _, err := s.Pull(t.Context(), ref, nil, nil); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("Pull without credentials: %v, want UNAUTHORIZED", err)
	}
	// A credential for another registry is not sent.
	if _, err := s.Pull(t.Context(), ref, []Credential{{Registry: "example.com", Username: "alice", Password: "s3cret"}}, nil); err == nil {
		t.Errorf("Pull with another registry's credential succeeded")
	}

	secret := fmt.Sprintf(`{"auths":{%q:{"auth":%q},"https://%s/other":{"username":"bob","password":"x"}}}`,
		reg, base64.StdEncoding.EncodeToString([]byte("alice:s3cret")), reg)
	creds, err := CredentialsFromDockerConfigJSON([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	for name, creds := range map[string][]Credential{
		"username":         {{Registry: reg, Username: "alice", Password: "s3cret"}},
		"dockerconfigjson": creds,
		"wrong then right": {{Registry: reg + "/private", Username: "alice", Password: "wrong"}, {Registry: "http://" + reg, Username: "alice", Password: "s3cret"}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := newStore(t, "").Pull(t.Context(), ref, creds, nil)
			if err != nil || !slices.Equal(got.RepoTags, []string{ref}) {
				t.Errorf("Pull = %v, %v; want %s", got, err, ref)
			}
		})
	}
}

func TestPullCollapsesConcurrentPulls(t *testing.T) {
	var manifestGets atomic.Int64
	count := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
				manifestGets.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	}
	reg := startRegistry(t, count)
	ref := reg + "/x:1"
	push(t, ref, randomImage(t, 2))

	manifestGets.Store(0)
	if _, err := newStore(t, "").Pull(t.Context(), ref, nil, nil); err != nil {
		t.Fatal(err)
	}
	single := manifestGets.Load()

	manifestGets.Store(0)
	s := newStore(t, "")
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Go(func() {
			img, err := s.Pull(t.Context(), ref, nil, nil)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = img.ID
		})
	}
	wg.Wait()
	if got := manifestGets.Load(); got > 2*single {
		t.Errorf("8 concurrent pulls made %d manifest GETs, one pull makes %d", got, single)
	}
	if ids[0] == "" || slices.ContainsFunc(ids, func(id string) bool { return id != ids[0] }) {
		t.Errorf("concurrent pulls returned IDs %q, want one ID", ids)
	}
}

func TestPullCanceled(t *testing.T) {
	block := make(chan struct{})
	reg := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet {
				select {
				case <-block:
				case <-r.Context().Done():
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	})
	ref := reg + "/x:1"
	push(t, ref, randomImage(t, 1))
	s := newStore(t, "")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := s.Pull(ctx, ref, nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Pull with expiring context: %v, want DeadlineExceeded", err)
	}
	close(block)
	if _, err := s.Pull(t.Context(), ref, nil, nil); err != nil {
		t.Errorf("Pull after a canceled pull: %v", err)
	}
}

func TestAllowHTTP(t *testing.T) {
	s, err := New(Config{Root: t.TempDir(), InsecureRegistries: []string{"reg.internal:5000", "plain.example", "10.1.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"127.0.0.1:5000":      true,
		"127.0.0.2":           true,
		"[::1]:5000":          true,
		"localhost:5000":      true,
		"localhost":           true,
		"reg.internal:5000":   true,
		"reg.internal:5001":   false,
		"plain.example:1234":  true,
		"10.1.2.3:5000":       true,
		"10.2.0.1:5000":       false,
		"192.168.1.1:5000":    false,
		"registry.example:80": false,
		"docker.io":           false,
	} {
		if got := s.allowHTTP(host); got != want {
			t.Errorf("allowHTTP(%q) = %v, want %v", host, got, want)
		}
	}
	g := &httpGuard{next: http.DefaultTransport, allow: s.allowHTTP}
	req, _ := http.NewRequest(http.MethodGet, "http://192.168.1.1:5000/v2/", nil)
	if _, err := g.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "refusing plain HTTP") {
		t.Errorf("plain HTTP to a private address: %v, want refused", err)
	}
}

func TestCredentialsFromDockerConfigJSON(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte("u:p:w"))
	for _, tc := range []struct {
		name, data string
		want       []Credential
		wantErr    bool
	}{
		{
			name: "dockerconfigjson",
			data: `{"auths":{"reg.example":{"auth":"` + auth + `"},"https://index.docker.io/v1/":{"username":"a","password":"b","identitytoken":"tok"}}}`,
			want: []Credential{
				{Registry: "https://index.docker.io/v1/", Username: "a", Password: "b", IdentityToken: "tok"},
				{Registry: "reg.example", Auth: auth},
			},
		},
		{
			name: "dockercfg",
			data: `{"reg.example:5000":{"username":"a","password":"b","email":"a@example.com"}}`,
			want: []Credential{{Registry: "reg.example:5000", Username: "a", Password: "b"}},
		},
		{name: "bad auth", data: `{"auths":{"r":{"auth":"!!"}}}`, wantErr: true},
		{name: "not json", data: `{`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CredentialsFromDockerConfigJSON([]byte(tc.data))
			if tc.wantErr {
				if err == nil {
					t.Errorf("CredentialsFromDockerConfigJSON = %+v, want an error", got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("CredentialsFromDockerConfigJSON = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	u, p, err := Credential{Auth: auth}.userPass()
	if u != "u" || p != "p:w" || err != nil {
		t.Errorf("userPass() = %q, %q, %v; want u, p:w", u, p, err)
	}
}

func TestCredentialMatches(t *testing.T) {
	for _, tc := range []struct {
		key, reg, repo string
		want           bool
	}{
		{"reg.example", "reg.example", "a/b", true},
		{"https://reg.example", "reg.example", "a/b", true},
		{"reg.example:5000", "reg.example", "a", false},
		{"reg.example", "reg.example:5000", "a", false},
		{"reg.example/a", "reg.example", "a/b", true},
		{"reg.example/a", "reg.example", "ab", false},
		{"*.example", "reg.example", "a", true},
		{"*.example", "a.reg.example", "a", false},
		{"https://index.docker.io/v1/", "index.docker.io", "library/busybox", true},
		{"docker.io", "index.docker.io", "library/busybox", true},
		{"other.example", "reg.example", "a", false},
	} {
		if _, got := credentialMatches(tc.key, tc.reg, tc.repo); got != tc.want {
			t.Errorf("credentialMatches(%q, %q, %q) = %v, want %v", tc.key, tc.reg, tc.repo, got, tc.want)
		}
	}
	got := matchCredentials([]Credential{{Registry: "*.example"}, {Registry: "r.example/a/b"}, {Registry: "r.example"}}, "r.example", "a/b/c")
	var order []string
	for _, c := range got {
		order = append(order, c.Registry)
	}
	if want := []string{"r.example/a/b", "r.example", "*.example"}; !slices.Equal(order, want) {
		t.Errorf("matchCredentials order = %q, want %q", order, want)
	}
}
