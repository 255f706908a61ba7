package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tether/kubelet/bootstrap"
	"tether/pki"
	"tether/test/framework"
)

func TestAgentOptionsValidate(t *testing.T) {
	pin := "sha256:" + strings.Repeat("0a", 32)
	good := agentOptions{
		Server: "https://10.0.0.1:6443", Token: "abcdef.0123456789abcdef", CACertHashes: []string{pin},
		DataDir: "/var/lib/tether/agent", KubeletPort: 10250,
	}
	tests := []struct {
		name   string
		change func(o *agentOptions)
		want   []string // substrings of the error; none means valid
	}{
		{name: "join", change: func(*agentOptions) {}},
		{name: "restart without token", change: func(o *agentOptions) { *o = agentOptions{DataDir: "/d", KubeletPort: 10250} }},
		{name: "insecure skip without pin", change: func(o *agentOptions) { o.CACertHashes, o.InsecureSkipCAPin = nil, true }},
		{name: "upper-case hex pin", change: func(o *agentOptions) { o.CACertHashes = []string{"sha256:" + strings.ToUpper(pin[7:])} }},
		{name: "pin without sha256:", change: func(o *agentOptions) { o.CACertHashes = []string{pin[7:]} }, want: []string{`"sha256:"`}},
		{name: "plain http", change: func(o *agentOptions) { o.Server = "http://10.0.0.1:6443" }, want: []string{"--server", "https://"}},
		{name: "server with a path", change: func(o *agentOptions) { o.Server = "https://10.0.0.1:6443/api" }, want: []string{"--server"}},
		{name: "token format", change: func(o *agentOptions) { o.Token = "ABCDEF.0123456789abcdef" }, want: []string{"--token must be <id>.<secret>"}},
		{name: "token without server", change: func(o *agentOptions) { o.Server = "" }, want: []string{"--server is required with --token"}},
		{name: "token without pin", change: func(o *agentOptions) { o.CACertHashes = nil }, want: []string{"--ca-cert-hash is required", "--insecure-skip-ca-pin"}},
		{name: "short pin", change: func(o *agentOptions) { o.CACertHashes = []string{"sha256:abc"} }, want: []string{"64 hex digits"}},
		{name: "rejoin without token", change: func(o *agentOptions) { o.Token, o.Rejoin = "", true }, want: []string{"--rejoin needs --token"}},
		{
			name: "every problem at once",
			change: func(o *agentOptions) {
				*o = agentOptions{Server: "ftp://x", Token: "nope", CACertHashes: []string{"md5:1"}, NodeName: "Bad_Name", NodeIP: "10.0.0", KubeletPort: 0}
			},
			want: []string{"--server", "--token", "--ca-cert-hash", "--data-dir", "--node-name", "--node-ip", "--kubelet-port"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.change(&o)
			err := o.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAgentCommand joins a node with `tether agent` as printed by `tether
// token create`, and checks that a wrong pin fails with a message about
// the pin.
func TestAgentCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	c := framework.StartCluster(t)
	token, err := bootstrap.CreateToken(t.Context(), c.Client, 10*time.Minute, "test")
	if err != nil {
		t.Fatal(err)
	}
	pin := pki.Pin(c.ControlPlane.PKI().ServerCA.Cert)
	agent := func(ctx context.Context, stdout *lockedBuffer, args ...string) error {
		var stderr bytes.Buffer
		cmd := agentCommand(stdout, &stderr, func(io.Writer, slog.Level) *slog.Logger { return slog.New(slog.DiscardHandler) })
		cmd.SetArgs(args)
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		return cmd.ExecuteContext(ctx)
	}

	t.Run("wrong pin", func(t *testing.T) {
		other, _ := pki.NewCA("impostor", time.Hour)
		err := agent(t.Context(), &lockedBuffer{}, "--server", c.URL, "--token", token, "--ca-cert-hash", pki.Pin(other.Cert),
			"--data-dir", t.TempDir(), "--node-name", "node-x")
		if err == nil || !strings.Contains(err.Error(), "CA pin does not match") || !strings.Contains(err.Error(), pin) {
			t.Errorf("tether agent with a wrong pin = %v, want an error about the pin naming %s", err, pin)
		}
	})

	t.Run("join", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var stdout lockedBuffer
		done := make(chan error, 1)
		go func() {
			done <- agent(ctx, &stdout, "--server", c.URL, "--token", token, "--ca-cert-hash", pin,
				"--data-dir", t.TempDir(), "--node-name", "node-cli", "--kubelet-port", strconv.Itoa(port))
		}()
		framework.Eventually(t, 30*time.Second, func() (bool, error) {
			select {
			case err := <-done:
				t.Fatalf("tether agent stopped: %v\n%s", err, stdout.String())
			default:
			}
			return strings.Contains(stdout.String(), "[5/5] node node-cli registered"), nil
		})
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tether agent after cancel = %v, want nil", err)
		}
	})
}
