package framework_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"tether/test/framework"
)

func TestNetwork(t *testing.T) {
	n := framework.NewNetwork(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	ln, err := b.Listen("tcp", net.JoinHostPort(b.IP.String(), "7777"))
	if err != nil {
		t.Fatalf("listen in b: %v", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hello from b"))
		c.Close()
	}()
	c, err := a.Dial(ctx, "tcp", net.JoinHostPort(b.IP.String(), "7777"))
	if err != nil {
		t.Fatalf("dial a→b: %v", err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hello from b" {
		t.Errorf("a read %q from b, want %q", got, "hello from b")
	}

	// The host's loopback is not a's loopback.
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if c, err := a.Dial(ctx, "tcp", host.Addr().String()); err == nil {
		c.Close()
		t.Errorf("dial from a reached a listener on the host's loopback")
	}
	out, err := a.Command(ctx, "ip", "-4", "-o", "addr", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), a.IP.String()) {
		t.Errorf("ip addr in a = %q (err %v), want %s", out, err, a.IP)
	}
}
