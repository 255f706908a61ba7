// Package storagetest runs an embedded etcd member for tests.
package storagetest

import (
	"context"
	"os"
	"testing"
	"time"

	"tether/apiserver/storage"
)

// Start runs a member in a temporary directory until the test ends. It
// skips the test under -short.
func Start(t testing.TB) *storage.Embedded {
	t.Helper()
	if testing.Short() {
		t.Skip("needs etcd")
	}
	// Not t.TempDir(): its path can be too long for the member's sockets.
	dir, err := os.MkdirTemp("", "etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e, err := storage.NewEmbedded(storage.EmbeddedConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-e.Ready():
	case err := <-done:
		t.Fatalf("embedded etcd: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("embedded etcd not ready after 30s")
	}
	return e
}
