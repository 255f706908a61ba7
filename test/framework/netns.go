package framework

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Network is a private layer-2 network for a test: a "switch" network
// namespace holding a bridge, and hosts, each a network namespace with one
// veth port on that bridge and its own address. It is removed when the test
// ends. Creating one needs root.
type Network struct {
	t      testing.TB
	prefix string
	subnet string // e.g. "10.77.3" for 10.77.3.0/24
	sw     string
	hosts  []*Host
}

// Host is one machine on a Network.
type Host struct {
	// Netns is the network namespace's name (under /var/run/netns).
	Netns string
	// IP is the host's address on the network.
	IP net.IP
}

// RequireRoot skips the test with a clear reason unless it runs as root
// with the ip command available.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: the ip command (iproute2) is not installed")
	}
}

// NewNetwork creates the switch namespace and bridge. Names carry a random
// prefix so parallel tests and leftovers never collide; subnets are picked
// from 10.77.0.0/16 by that prefix.
func NewNetwork(t testing.TB) *Network {
	t.Helper()
	RequireRoot(t)
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	prefix := "tt" + hex.EncodeToString(b)
	n := &Network{t: t, prefix: prefix, subnet: fmt.Sprintf("10.77.%d", b[0]), sw: prefix + "-sw"}
	t.Cleanup(n.cleanup)
	n.ip("netns", "add", n.sw)
	n.ip("-n", n.sw, "link", "add", "br0", "type", "bridge")
	n.ip("-n", n.sw, "link", "set", "br0", "up")
	return n
}

// AddHost creates a host with the next address of the network.
func (n *Network) AddHost(name string) *Host {
	n.t.Helper()
	idx := len(n.hosts) + 1
	h := &Host{Netns: n.prefix + "-" + name, IP: net.ParseIP(fmt.Sprintf("%s.%d", n.subnet, idx))}
	port := fmt.Sprintf("%sp%d", n.prefix, idx)
	n.ip("netns", "add", h.Netns)
	n.ip("link", "add", "eth0", "netns", h.Netns, "type", "veth", "peer", "name", port, "netns", n.sw)
	n.ip("-n", n.sw, "link", "set", port, "master", "br0", "up")
	n.ip("-n", h.Netns, "link", "set", "lo", "up")
	n.ip("-n", h.Netns, "addr", "add", h.IP.String()+"/24", "dev", "eth0")
	n.ip("-n", h.Netns, "link", "set", "eth0", "up")
	n.hosts = append(n.hosts, h)
	return h
}

// Command returns a command that runs inside the host's network
// namespace. It enters only the network namespace (nsenter), not a private
// mount namespace as `ip netns exec` does, so that mounts the program makes
// (a node agent's pod network namespaces) outlive it like on a real host.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=/var/run/netns/" + h.Netns, "--", name}, args...)...)
}

// Dial connects from inside the host's namespace.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a listener inside the host's namespace.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// do runs f on an OS thread that has entered the host's namespace. The
// thread is discarded afterwards (never unlocked), so no other goroutine
// ever runs in the namespace; sockets made by f stay in it.
func (h *Host) do(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := os.Open("/var/run/netns/" + h.Netns)
		if err != nil {
			ch <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("enter netns %s: %w", h.Netns, err)
			return
		}
		ch <- f()
	}()
	return <-ch
}

func (n *Network) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (n *Network) cleanup() {
	for _, h := range n.hosts {
		// Processes still inside would keep the namespace alive; tests stop
		// their processes in their own cleanups, which run before this one.
		_ = exec.Command("ip", "netns", "delete", h.Netns).Run()
	}
	_ = exec.Command("ip", "netns", "delete", n.sw).Run()
}
