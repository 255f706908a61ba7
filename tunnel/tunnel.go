// Package tunnel is path P10: a node that the API server cannot connect to
// (behind NAT, or with no inbound port open) dials out to the API server
// instead and keeps one multiplexed connection open, and the API server's
// connections to that node (P5: logs, exec, attach, port-forward; P8: the
// proxy to the node, its pods and Services' endpoints on it) ride it.
//
// The agent (Client) connects to the API server's secure port over TLS,
// verifying the server against the cluster's server CA and presenting the
// node's own client certificate, and asks for an upgrade of
// GET /tunnel/v1 to the protocol tether-tunnel/1. The API server (Server,
// behind its usual authentication and authorization) accepts only a node
// (user system:node:<name> in group system:nodes) and then multiplexes
// the connection with yamux: each connection the API server needs is a
// stream it opens, naming the address it wants; the agent dials that
// address only if its allow-list says so (its own kubelet, its own pods),
// answers, and copies bytes both ways.
//
// The tunnel adds no trust: what rides it is what would have gone over
// the network (the kubelet's TLS, verified end to end by the API server;
// the proxy's requests to pods), and the agent refuses every other
// destination.
package tunnel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// Path is the API server path a node asks to upgrade.
const Path = "/tunnel/v1"

// Protocol is the Upgrade token of the tunnel.
const Protocol = "tether-tunnel/1"

// EgressAnnotation on a Node, set by its agent, says how the API server
// reaches it: EgressTunnel means only through the node's tunnel, never by
// connecting to the node (which would not get through anyway), so that a
// tunnel that is down is reported as such.
const (
	EgressAnnotation = "tether.dev/egress"
	EgressTunnel     = "tunnel"
)

// maxTarget bounds the request line of a stream ("host:port\n").
const maxTarget = 256

// keepAlive is how often each side checks that the other is alive.
const keepAlive = 15 * time.Second

// muxConfig is the yamux configuration of both sides.
func muxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.KeepAliveInterval = keepAlive
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	c.LogOutput = io.Discard
	return c
}

// writeTarget sends the request line of a stream.
func writeTarget(w io.Writer, addr string) error {
	if len(addr) >= maxTarget || strings.ContainsAny(addr, "\r\n") {
		return fmt.Errorf("tunnel: invalid target %q", addr)
	}
	_, err := io.WriteString(w, addr+"\n")
	return err
}

// readLine reads one line of at most maxTarget bytes without reading past
// it (byte by byte: what follows belongs to the stream).
func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < maxTarget {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		if buf[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(buf[0])
	}
	return "", errors.New("tunnel: line too long")
}

// reply lines of the agent.
const (
	replyOK    = "OK"
	replyError = "ERR "
)

// pipe copies between a and b until both directions end, half-closing
// where the connection allows it.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}

// bufferedConn is a net.Conn whose first bytes were already read into a
// bufio.Reader.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
