package runtime

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCapabilities(t *testing.T) {
	r := &Runtime{capBnd: 0x1fffeffffff} // everything but CAP_SYS_RESOURCE
	tests := []struct {
		name        string
		spec        ContainerSpec
		has, hasNot []string
		wantLen     int // 0: don't check
	}{
		{"default", ContainerSpec{}, []string{"CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"}, []string{"CAP_NET_ADMIN", "CAP_SYS_ADMIN"}, len(defaultCaps)},
		{"add short and long forms", ContainerSpec{CapAdd: []string{"net_admin", "CAP_SYS_TIME"}}, []string{"CAP_NET_ADMIN", "CAP_SYS_TIME", "CAP_CHOWN"}, nil, len(defaultCaps) + 2},
		{"drop", ContainerSpec{CapDrop: []string{"NET_RAW", "cap_chown"}}, []string{"CAP_KILL"}, []string{"CAP_NET_RAW", "CAP_CHOWN"}, len(defaultCaps) - 2},
		{"drop all, add one", ContainerSpec{CapDrop: []string{"ALL"}, CapAdd: []string{"NET_BIND_SERVICE"}}, []string{"CAP_NET_BIND_SERVICE"}, []string{"CAP_CHOWN"}, 1},
		{"privileged", ContainerSpec{Privileged: true}, []string{"CAP_SYS_ADMIN", "CAP_BPF"}, []string{"CAP_SYS_RESOURCE"}, len(capNames) - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.capabilities(tt.spec)
			for _, c := range tt.has {
				if !slices.Contains(got, c) {
					t.Errorf("capabilities = %v, want %s", got, c)
				}
			}
			for _, c := range tt.hasNot {
				if slices.Contains(got, c) {
					t.Errorf("capabilities = %v, want no %s", got, c)
				}
			}
			if tt.wantLen != 0 && len(got) != tt.wantLen {
				t.Errorf("len(capabilities) = %d, want %d", len(got), tt.wantLen)
			}
		})
	}
}

func TestOCISpec(t *testing.T) {
	r := &Runtime{capBnd: ^uint64(0), nofile: 4096}
	spec := ContainerSpec{
		ID: "c1", Args: []string{"sh"}, Env: []string{"A=b"},
		NetNSPath:   "/var/run/netns/pod1",
		Mounts:      []Mount{{HostPath: "/host/shm", ContainerPath: "/dev/shm/"}, {HostPath: "/host/hosts", ContainerPath: "/etc/hosts", ReadOnly: true}},
		CgroupsPath: "/tether/pod1/c1", MemoryLimit: 1 << 20, CPUShares: 512, CPUQuota: 50000, CPUPeriod: 100000,
		ReadOnlyRootfs: true,
	}
	s := r.ociSpec(spec)
	if s.Process.OOMScoreAdj != nil {
		t.Errorf("OOMScoreAdj = %d, want unset", *s.Process.OOMScoreAdj)
	}
	if !slices.Contains(s.Process.Env, defaultPath) || s.Process.Cwd != "/" {
		t.Errorf("Env = %v, Cwd = %q; want a default PATH and /", s.Process.Env, s.Process.Cwd)
	}
	if !s.Root.Readonly || s.Root.Path != "rootfs" {
		t.Errorf("Root = %+v", s.Root)
	}
	var netns specs.LinuxNamespace
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			netns = ns
		}
	}
	if netns.Path != spec.NetNSPath {
		t.Errorf("network namespace = %+v, want path %s", netns, spec.NetNSPath)
	}
	var shm []specs.Mount
	for _, m := range s.Mounts {
		if m.Destination == "/dev/shm" {
			shm = append(shm, m)
		}
		if m.Destination == "/etc/hosts" && !slices.Contains(m.Options, "ro") {
			t.Errorf("read-only mount has options %v", m.Options)
		}
	}
	if len(shm) != 1 || shm[0].Type != "bind" {
		t.Errorf("/dev/shm mounts = %+v, want only the caller's bind mount", shm)
	}
	res := s.Linux.Resources
	if *res.Memory.Limit != 1<<20 || *res.CPU.Shares != 512 || *res.CPU.Quota != 50000 || *res.CPU.Period != 100000 {
		t.Errorf("resources = %+v", res)
	}
	if len(s.Linux.MaskedPaths) == 0 || len(s.Linux.ReadonlyPaths) == 0 {
		t.Error("unprivileged container has no masked or read-only paths")
	}
	if s.Process.Rlimits[0].Hard != 4096 {
		t.Errorf("RLIMIT_NOFILE = %d, want 4096", s.Process.Rlimits[0].Hard)
	}

	spec.Privileged = true
	s = r.ociSpec(spec)
	if len(s.Linux.MaskedPaths) != 0 || len(s.Linux.ReadonlyPaths) != 0 || !s.Linux.Resources.Devices[0].Allow {
		t.Errorf("privileged container: masked %v, read-only %v, devices %+v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Linux.Resources.Devices)
	}
}

func TestValidate(t *testing.T) {
	ok := ContainerSpec{ID: "abc-1", LowerDirs: []string{"/l"}, Args: []string{"sh"}, LogPath: "/var/log/x.log"}
	if err := validate(ok); err != nil {
		t.Fatalf("validate(%+v) = %v", ok, err)
	}
	for _, id := range []string{"", "ABC", "a_b", "-a", string(make([]byte, 65))} {
		bad := ok
		bad.ID = id
		if validate(bad) == nil {
			t.Errorf("validate(ID %q) = nil, want an error", id)
		}
	}
	bad := ok
	bad.CgroupsPath = "relative/path"
	if validate(bad) == nil {
		t.Error("validate accepted a relative CgroupsPath")
	}
}
