// Package server is the kubelet's HTTPS port (path P5's far end): it serves
// TLS ≥ 1.2 with the node's rotating serving certificate (path P6), whose
// SANs are the Node's addresses and whose issuer is the cluster's server CA,
// so the API server can verify it.
//
// For now it serves only GET /healthz ("ok") to anyone; every other path is
// 404. The kubelet API (logs, exec, attach, port-forward) and its
// authentication and authorization (path P7: client certificates from the
// cluster client CA, TokenReview, SubjectAccessReview, no anonymous access)
// come with the streaming work.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Config configures a Server.
type Config struct {
	// GetCertificate returns the serving certificate for a handshake; it is
	// called for every new connection, so a rotated certificate is used at
	// once. Required.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Logger receives the server's messages. If nil, they are discarded.
	Logger *slog.Logger
}

// Server is the kubelet HTTPS server.
type Server struct {
	cfg     Config
	handler http.Handler
}

// New validates cfg and returns a Server; it opens no socket.
func New(cfg Config) (*Server, error) {
	if cfg.GetCertificate == nil {
		return nil, errors.New("kubelet server: no serving certificate source")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		fmt.Fprint(w, "ok")
	})
	return &Server{cfg: cfg, handler: mux}, nil
}

// Handler is the server's HTTP handler, without TLS.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTPS on ln until ctx ends, then stops accepting, gives
// requests in flight five seconds to finish, and returns nil. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: s.handler,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.cfg.GetCertificate,
			NextProtos:     []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		// Failed handshakes (a scanner, a client that does not trust the
		// server CA) are routine: log them at debug level.
		ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		return fmt.Errorf("kubelet server: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("kubelet server: serve on %s: %w", ln.Addr(), err)
	}
	return nil
}
