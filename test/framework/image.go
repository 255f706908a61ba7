package framework

import (
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"tether/internal/busyboximage"
)

// StartRegistry serves an in-memory OCI registry on 127.0.0.1 for the
// rest of the test and returns its "127.0.0.1:PORT". Loopback registries
// are reached over plain HTTP, by nodes and by PushImage alike.
func StartRegistry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// PushImage pushes img to ref, e.g. StartRegistry(t)+"/busybox:1".
func PushImage(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("PushImage: %v", err)
	}
	if err := remote.Write(r, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("PushImage %s: %v", ref, err)
	}
}

var busybox = sync.OnceValues(busyboximage.Image)

// BusyboxImage returns the busybox test image (internal/busyboximage),
// built once per test binary. It skips the test when the host has no
// static busybox.
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := busybox()
	if err != nil {
		t.Skipf("busybox test image: %v", err)
	}
	return img
}
