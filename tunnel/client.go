package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// ClientConfig configures a node's end of the tunnel.
type ClientConfig struct {
	// Server is the API server's https URL. Required.
	Server string
	// RootCAs verify the API server: the cluster's server CA. Required.
	RootCAs *x509.CertPool
	// GetClientCertificate returns the node's current client certificate
	// (system:node:<name>). Required. When it returns a new certificate
	// (rotation), the tunnel is opened again with it.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// Allowed is the node's allow-list: whether the API server may reach
	// addr through this node. Required. Only IP addresses are asked about.
	Allowed func(addr netip.AddrPort) bool
	// NodeName names the node in messages.
	NodeName string
	// DialTimeout bounds connecting to the API server and to targets. If
	// 0, 10 s.
	DialTimeout time.Duration
	// Logger receives what happens; may be nil.
	Logger *slog.Logger
}

// Client keeps a node's tunnel to the API server open.
type Client struct {
	cfg  ClientConfig
	host string // host:port of the API server
	name string // its host name, for TLS

	connected atomic.Bool
}

// NewClient validates cfg, reporting every problem at once.
func NewClient(cfg ClientConfig) (*Client, error) {
	var errs []error
	u, err := url.Parse(cfg.Server)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("tunnel: server URL %q: %w", cfg.Server, err))
	case u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("tunnel: server URL %q must be https://host[:port]", cfg.Server))
	}
	if cfg.RootCAs == nil {
		errs = append(errs, errors.New("tunnel: no server CA to verify the API server with"))
	}
	if cfg.GetClientCertificate == nil {
		errs = append(errs, errors.New("tunnel: no client certificate source"))
	}
	if cfg.Allowed == nil {
		errs = append(errs, errors.New("tunnel: no allow-list"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("component", "tunnel")
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	return &Client{cfg: cfg, host: host, name: u.Hostname()}, nil
}

// Connected reports whether the tunnel is up.
func (c *Client) Connected() bool { return c.connected.Load() }

// Run keeps the tunnel open until ctx ends, opening it again (after 1 s,
// doubling to 30 s while it keeps failing) whenever it closes.
func (c *Client) Run(ctx context.Context) error {
	backoff := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		err := c.serve(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		c.cfg.Logger.Warn("tunnel to the API server closed; opening it again", "server", c.host, "err", err, "in", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	return nil
}

// serve opens the tunnel once and serves it until it closes.
func (c *Client) serve(ctx context.Context) error {
	var used atomic.Pointer[tls.Certificate]
	tlsConfig := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    c.cfg.RootCAs,
		ServerName: c.name,
		NextProtos: []string{"http/1.1"},
		GetClientCertificate: func(info *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := c.cfg.GetClientCertificate(info)
			if err == nil {
				used.Store(cert)
			}
			return cert, err
		},
	}
	dialCtx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	conn, err := (&tls.Dialer{Config: tlsConfig, NetDialer: &net.Dialer{KeepAlive: 30 * time.Second}}).DialContext(dialCtx, "tcp", c.host)
	cancel()
	if err != nil {
		return fmt.Errorf("connect to %s: %w", c.host, err)
	}
	mux, err := c.upgrade(conn)
	if err != nil {
		conn.Close()
		return err
	}
	defer mux.Close()
	c.connected.Store(true)
	defer c.connected.Store(false)
	c.cfg.Logger.Info("tunnel to the API server up", "server", c.host)

	// Ends the tunnel when ctx ends or the certificate it was opened
	// with is replaced: the next one is opened with the new certificate.
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				mux.Close()
				return
			case <-mux.CloseChan():
				return
			case <-tick.C:
				if cur, err := c.cfg.GetClientCertificate(&tls.CertificateRequestInfo{}); err == nil && !sameCert(cur, used.Load()) {
					c.cfg.Logger.Info("client certificate rotated; reopening the tunnel")
					mux.Close()
					return
				}
			}
		}
	}()
	var streams sync.WaitGroup
	defer streams.Wait()
	for {
		stream, err := mux.AcceptStream()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		streams.Go(func() { c.handle(ctx, mux.CloseChan(), stream) })
	}
}

// upgrade asks for the tunnel on conn and returns the multiplexed session.
func (c *Client) upgrade(conn net.Conn) (*yamux.Session, error) {
	conn.SetDeadline(time.Now().Add(c.cfg.DialTimeout))
	req := "GET " + Path + " HTTP/1.1\r\nHost: " + c.host + "\r\nConnection: Upgrade\r\nUpgrade: " + Protocol +
		"\r\nUser-Agent: tether-agent (" + c.cfg.NodeName + ")\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, fmt.Errorf("ask %s for a tunnel: %w", c.host, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, fmt.Errorf("ask %s for a tunnel: %w", c.host, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		var st struct{ Message string }
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		return nil, fmt.Errorf("the API server at %s refused the tunnel: %s: %s", c.host, resp.Status, msg)
	}
	conn.SetDeadline(time.Time{})
	var mc net.Conn = conn
	if br.Buffered() > 0 {
		mc = &bufferedConn{Conn: conn, r: br}
	}
	return yamux.Server(mc, muxConfig())
}

// handle serves one stream: the target line, the allow-list, the dial,
// the answer, then the bytes, until both sides are done or the tunnel
// (closed) or ctx ends.
func (c *Client) handle(ctx context.Context, closed <-chan struct{}, stream net.Conn) {
	stream.SetDeadline(time.Now().Add(c.cfg.DialTimeout))
	line, err := readLine(stream)
	if err != nil {
		stream.Close()
		return
	}
	refuse := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		c.cfg.Logger.Warn("tunnel connection refused", "target", line, "reason", msg)
		io.WriteString(stream, replyError+strings.ReplaceAll(msg, "\n", " ")+"\n")
		stream.Close()
	}
	target, err := netip.ParseAddrPort(line)
	if err != nil {
		refuse("%q is not an IP address and port", line)
		return
	}
	target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	if !c.cfg.Allowed(target) {
		refuse("node %s does not let the API server reach %s (only its kubelet and its own pods)", c.cfg.NodeName, target)
		return
	}
	dialCtx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	conn, err := (&net.Dialer{}).DialContext(dialCtx, "tcp", target.String())
	cancel()
	if err != nil {
		refuse("%v", err)
		return
	}
	if _, err := io.WriteString(stream, replyOK+"\n"); err != nil {
		conn.Close()
		stream.Close()
		return
	}
	stream.SetDeadline(time.Time{})
	// A target that ignores the end of its input would otherwise keep
	// this stream, and so the tunnel's reopening, waiting forever.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-closed:
		case <-ctx.Done():
		case <-done:
			return
		}
		conn.Close()
		stream.Close()
	}()
	pipe(stream, conn)
}

func sameCert(a, b *tls.Certificate) bool {
	if a == nil || b == nil || len(a.Certificate) == 0 || len(b.Certificate) == 0 {
		return a == b
	}
	return bytes.Equal(a.Certificate[0], b.Certificate[0])
}
