package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	apistorage "k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	"k8s.io/utils/clock"
)

// compactInterval is how often the API server's compactor runs, as in
// upstream's default.
const compactInterval = 5 * time.Minute

// EmbeddedConfig configures the embedded etcd member.
type EmbeddedConfig struct {
	// Dir holds the member's data, its unix sockets and its log. Required.
	// Two servers with different Dirs never share a socket or a port: the
	// member listens only on unix sockets inside Dir, never on the network.
	Dir string
	// Logger receives start and stop messages. If nil, logs are discarded.
	Logger *slog.Logger
	// StartTimeout bounds how long Run waits for the member to serve. If 0,
	// one minute.
	StartTimeout time.Duration
}

// Embedded is a single-member etcd cluster inside the tether process.
type Embedded struct {
	cfg   EmbeddedConfig
	ready chan struct{}

	// Set before ready is closed, cleared never: the in-process client
	// and the compactor that runs on it.
	client    *clientv3.Client
	compactor compactor
}

type compactor interface {
	etcd3.Compactor
	Stop()
}

// NewEmbedded validates cfg. It starts nothing.
func NewEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Dir == "" {
		return nil, errors.New("storage: embedded etcd needs a data directory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = time.Minute
	}
	if n := len(filepath.Join(cfg.Dir, "etcd-peer.sock")); n > 100 {
		return nil, fmt.Errorf("storage: data directory %s is too long for a unix socket path (%d bytes, limit 100); choose a shorter --data-dir", cfg.Dir, n)
	}
	return &Embedded{cfg: cfg, ready: make(chan struct{})}, nil
}

// Backend returns how the API server reaches this member: the API
// server's own storage calls go straight to the member in this process
// (Local); other clients, and tools, use the unix socket (Servers).
func (e *Embedded) Backend() Backend {
	return Backend{Servers: []string{e.clientURL().String()}, Local: e}
}

// local returns the in-process client and the compactor. They exist once
// Ready is closed and stay valid until Run returns.
func (e *Embedded) local() (*clientv3.Client, etcd3.Compactor, error) {
	select {
	case <-e.ready:
		return e.client, e.compactor, nil
	default:
		return nil, nil, fmt.Errorf("storage: embedded etcd in %s is not running", e.cfg.Dir)
	}
}

// Ready is closed once the member serves clients.
func (e *Embedded) Ready() <-chan struct{} { return e.ready }

func (e *Embedded) clientURL() *url.URL {
	return &url.URL{Scheme: "unix", Path: filepath.Join(e.cfg.Dir, "etcd.sock")}
}

// Run starts the member and blocks until ctx ends, then stops it.
func (e *Embedded) Run(ctx context.Context) error {
	if err := os.MkdirAll(e.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("storage: create %s: %w", e.cfg.Dir, err)
	}
	// Sockets left by a killed process would make the listen fail.
	client, peer := e.clientURL(), &url.URL{Scheme: "unix", Path: filepath.Join(e.cfg.Dir, "etcd-peer.sock")}
	for _, s := range []string{client.Path, peer.Path} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("storage: remove stale socket %s: %w", s, err)
		}
	}
	ec := embed.NewConfig()
	ec.Name = "tether"
	ec.Dir = filepath.Join(e.cfg.Dir, "data")
	ec.ListenClientUrls = []url.URL{*client}
	ec.AdvertiseClientUrls = []url.URL{*client}
	ec.ListenPeerUrls = []url.URL{*peer}
	ec.AdvertisePeerUrls = []url.URL{*peer}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.LogLevel = "error"
	ec.LogOutputs = []string{filepath.Join(e.cfg.Dir, "etcd.log")}
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "1h"
	ec.QuotaBackendBytes = 8 << 30
	ec.ListenMetricsUrls = nil

	e.cfg.Logger.Info("starting embedded etcd", "component", "etcd", "dir", e.cfg.Dir)
	srv, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("storage: start embedded etcd in %s: %w", e.cfg.Dir, err)
	}
	defer srv.Close()
	// Sockets are only for this user.
	for _, s := range []string{client.Path, peer.Path} {
		_ = os.Chmod(s, 0o600)
	}
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(e.cfg.StartTimeout):
		return fmt.Errorf("storage: embedded etcd in %s did not start within %s (see %s)", e.cfg.Dir, e.cfg.StartTimeout, ec.LogOutputs[0])
	case <-ctx.Done():
		return nil
	}
	// The API server's reads and writes call the member directly instead
	// of through gRPC over the socket: no marshalling, no connection, no
	// per-request goroutine on the serving side. Nothing leaves the process,
	// so there is nothing to encrypt.
	e.client = v3client.New(srv.Server)
	// Each request's time in etcd feeds its latency trackers, as with
	// upstream's storage client.
	e.client.KV = etcd3.NewETCDLatencyTracker(expiredFirst{e.client.KV})
	e.compactor = etcd3.NewCompactor(e.client, compactInterval, clock.RealClock{}, nil)
	// The watch cache serves consistent LISTs only once the storage layer
	// knows etcd answers progress requests, and it learns that per client
	// endpoint. An in-process client has no endpoint, so name one.
	etcdfeature.DefaultFeatureSupportChecker.CheckClient(ctx, inProcess{e.client}, apistorage.RequestWatchProgress)
	defer func() {
		e.compactor.Stop()
		_ = e.client.Close()
	}()
	close(e.ready)
	e.cfg.Logger.Info("embedded etcd ready", "component", "etcd", "endpoint", client.String())
	select {
	case err := <-srv.Err():
		return fmt.Errorf("storage: embedded etcd: %w", err)
	case <-ctx.Done():
		e.cfg.Logger.Info("stopping embedded etcd", "component", "etcd")
		return nil
	}
}

// inProcess gives the in-process client the one endpoint it talks to.
type inProcess struct{ *clientv3.Client }

func (inProcess) Endpoints() []string { return []string{"in-process"} }
