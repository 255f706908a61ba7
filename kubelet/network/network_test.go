package network

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestMain(m *testing.M) {
	// The root tests re-run this binary inside network namespaces; see
	// helper_test.go.
	if req := os.Getenv(helperEnv); req != "" {
		os.Exit(runHelper(req))
	}
	os.Exit(m.Run())
}

func fakeCNIBinDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range requiredPlugins {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestNewValidation(t *testing.T) {
	bin := fakeCNIBinDir(t)
	ok := Config{PodCIDR: "10.244.1.0/24", DataDir: "/tmp/x", CNIBinDir: bin}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr []string // substrings; empty means success
	}{
		{name: "valid", mutate: func(*Config) {}},
		{name: "valid with cluster CIDR", mutate: func(c *Config) { c.ClusterCIDR = "10.244.0.0/16" }},
		{name: "valid IPv6", mutate: func(c *Config) { c.PodCIDR = "fd00:10:244:1::/64" }},
		{name: "missing everything", mutate: func(c *Config) { *c = Config{CNIBinDir: bin} },
			wantErr: []string{"PodCIDR is required", "DataDir is required"}},
		{name: "bad CIDR", mutate: func(c *Config) { c.PodCIDR = "10.244.1.0" }, wantErr: []string{"PodCIDR"}},
		{name: "host bits", mutate: func(c *Config) { c.PodCIDR = "10.244.1.5/24" }, wantErr: []string{"host bits"}},
		{name: "too small", mutate: func(c *Config) { c.PodCIDR = "10.244.1.0/31" }, wantErr: []string{"too small"}},
		{name: "outside cluster CIDR", mutate: func(c *Config) { c.ClusterCIDR = "10.245.0.0/16" }, wantErr: []string{"not inside ClusterCIDR"}},
		{name: "long bridge", mutate: func(c *Config) { c.Bridge = "a-very-long-bridge" }, wantErr: []string{"Bridge"}},
		{name: "bad prefix", mutate: func(c *Config) { c.NetNSPrefix = "a/b" }, wantErr: []string{"NetNSPrefix"}},
		{name: "relative data dir", mutate: func(c *Config) { c.DataDir = "cni" }, wantErr: []string{"absolute"}},
		{name: "bad MTU", mutate: func(c *Config) { c.MTU = 100 }, wantErr: []string{"MTU"}},
		{name: "no plugins", mutate: func(c *Config) { c.CNIBinDir = t.TempDir() },
			wantErr: []string{`"bridge" not found`, `"host-local" not found`, `"loopback" not found`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.mutate(&cfg)
			_, err := New(cfg)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("New(%+v) = %v, want success", cfg, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New(%+v) succeeded, want errors %q", cfg, tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New(%+v) = %v, want it to mention %q", cfg, err, w)
				}
			}
		})
	}
}

func TestDefaultsAndGateway(t *testing.T) {
	n, err := New(Config{PodCIDR: "10.244.7.0/24", DataDir: "/var/lib/x/cni", CNIBinDir: fakeCNIBinDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := n.Gateway().String(), "10.244.7.1"; got != want {
		t.Errorf("Gateway() = %s, want %s", got, want)
	}
	if got, want := n.NetNSPath("abc"), "/var/run/netns/tether-abc"; got != want {
		t.Errorf("NetNSPath(abc) = %s, want %s", got, want)
	}
	if n.bridge != DefaultBridge {
		t.Errorf("bridge = %q, want %q", n.bridge, DefaultBridge)
	}
	n6, err := New(Config{PodCIDR: "fd00::/120", DataDir: "/x", CNIBinDir: fakeCNIBinDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := n6.Gateway().String(), "fd00::1"; got != want {
		t.Errorf("Gateway() = %s, want %s", got, want)
	}
}

func TestConflist(t *testing.T) {
	_, podNet, _ := net.ParseCIDR("10.244.3.0/24")
	raw, err := conflist("tbr0", podNet, net.ParseIP("10.244.3.1"), 1400, "/data/ipam")
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		t.Fatalf("ConfListFromBytes: %v\n%s", err, raw)
	}
	if list.CNIVersion != "1.0.0" || list.Name != networkName || len(list.Plugins) != 2 {
		t.Fatalf("conflist = version %q name %q %d plugins, want 1.0.0, %q, 2", list.CNIVersion, list.Name, len(list.Plugins), networkName)
	}
	var br map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &br); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "bridge", "bridge": "tbr0", "isGateway": true, "hairpinMode": true, "ipMasq": false, "mtu": float64(1400)}
	for k, v := range want {
		if br[k] != v {
			t.Errorf("bridge plugin %s = %v, want %v", k, br[k], v)
		}
	}
	ipam, _ := json.Marshal(br["ipam"])
	for _, s := range []string{`"type":"host-local"`, `"subnet":"10.244.3.0/24"`, `"gateway":"10.244.3.1"`, `"dst":"0.0.0.0/0"`, `"gw":"10.244.3.1"`, `"dataDir":"/data/ipam"`} {
		if !strings.Contains(string(ipam), s) {
			t.Errorf("ipam config %s lacks %s", ipam, s)
		}
	}
	if list.Plugins[1].Network.Type != "loopback" {
		t.Errorf("second plugin = %q, want loopback", list.Plugins[1].Network.Type)
	}
}

func TestNetNSNames(t *testing.T) {
	dataDir := t.TempDir()
	n, err := New(Config{PodCIDR: "10.244.7.0/24", DataDir: dataDir, NetNSPrefix: "tp-", CNIBinDir: fakeCNIBinDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	plain := "0b6e3c1e-7a4b-4b36-9a0a-2b1c6f0e8d11"
	if got := n.netnsName(plain); got != "tp-"+plain {
		t.Errorf("netnsName(%q) = %q, want %q", plain, got, "tp-"+plain)
	}
	if uid, ok := n.podUIDOf("tp-" + plain); !ok || uid != plain {
		t.Errorf("podUIDOf(tp-%s) = %q, %v", plain, uid, ok)
	}
	for _, odd := range []string{"a/b", strings.Repeat("x", 200), ".hidden", "~x"} {
		name := n.netnsName(odd)
		if !strings.HasPrefix(name, "tp-~") || strings.Contains(name[1:], "/") || len(name) > 64 {
			t.Errorf("netnsName(%q) = %q, want a short hashed name", odd, name)
		}
		if err := n.writeNameMapping(name, odd); err != nil {
			t.Fatal(err)
		}
		if uid, ok := n.podUIDOf(name); !ok || uid != odd {
			t.Errorf("podUIDOf(%q) = %q, %v, want %q", name, uid, ok, odd)
		}
	}
	for _, foreign := range []string{"other-x", "tp-", "tp-~unknown"} {
		if uid, ok := n.podUIDOf(foreign); ok {
			t.Errorf("podUIDOf(%q) = %q, want not ours", foreign, uid)
		}
	}
}

func TestNormalizeDst(t *testing.T) {
	tests := []struct {
		in     string
		family int
		want   string
	}{
		{"default", 4, "0.0.0.0/0"},
		{"default", 6, "::/0"},
		{"10.1.2.3", 4, "10.1.2.3/32"},
		{"fd00::5", 6, "fd00::5/128"},
		{"10.244.2.0/24", 4, "10.244.2.0/24"},
	}
	for _, tt := range tests {
		if got := normalizeDst(tt.in, tt.family); got != tt.want {
			t.Errorf("normalizeDst(%q, %d) = %q, want %q", tt.in, tt.family, got, tt.want)
		}
	}
}

func TestPodLocks(t *testing.T) {
	var l podLocks
	u1 := l.lock("a")
	u2 := l.lock("b") // a different pod does not block
	u1()
	u2()
	if len(l.m) != 0 {
		t.Errorf("podLocks left %d entries, want 0", len(l.m))
	}
}
