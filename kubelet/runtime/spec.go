package runtime

import (
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultPath is added to a container's environment when it has no PATH.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultCaps is the capability set containers get unless adjusted; it is
// the set Docker and containerd give by default.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// capNames lists the Linux capabilities by number.
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// Paths hidden from and made read-only in unprivileged containers.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// capName normalizes "net_admin" or "CAP_NET_ADMIN" to "CAP_NET_ADMIN".
func capName(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	if s == "ALL" || strings.HasPrefix(s, "CAP_") {
		return s
	}
	return "CAP_" + s
}

// capabilities returns the container's capability set.
func (r *Runtime) capabilities(spec ContainerSpec) []string {
	// Capabilities this process lacks cannot be given to a container.
	var held []string
	for i, name := range capNames {
		if r.capBnd&(1<<uint(i)) != 0 {
			held = append(held, name)
		}
	}
	if spec.Privileged {
		return held
	}
	caps := slices.Clone(defaultCaps)
	for _, d := range spec.CapDrop {
		if d = capName(d); d == "ALL" {
			caps = nil
		} else {
			caps = slices.DeleteFunc(caps, func(c string) bool { return c == d })
		}
	}
	for _, a := range spec.CapAdd {
		if a = capName(a); a == "ALL" {
			caps = slices.Clone(held)
		} else if !slices.Contains(caps, a) {
			caps = append(caps, a)
		}
	}
	return caps
}

// ociSpec builds the OCI runtime spec (config.json) for a container.
func (r *Runtime) ociSpec(spec ContainerSpec) *specs.Spec {
	env := slices.Clone(spec.Env)
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		env = append(env, defaultPath)
	}
	cwd := spec.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	caps := r.capabilities(spec)
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal: spec.TTY,
			User: specs.User{
				UID: spec.UID, GID: spec.GID,
				AdditionalGids: slices.Clone(spec.AdditionalGIDs),
			},
			Args: slices.Clone(spec.Args),
			Env:  env,
			Cwd:  cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: r.nofile, Soft: r.nofile},
			},
			NoNewPrivileges: spec.NoNewPrivileges,
			// OOMScoreAdj stays unset: a negative value needs
			// CAP_SYS_RESOURCE, which these machines' root lacks.
		},
		Root:     &specs.Root{Path: rootfsDir, Readonly: spec.ReadOnlyRootfs},
		Hostname: spec.Hostname,
		Mounts:   mounts(spec),
		Linux: &specs.Linux{
			CgroupsPath: spec.CgroupsPath,
			Resources:   resources(spec),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: spec.NetNSPath},
			},
		},
	}
	if !spec.Privileged {
		s.Linux.MaskedPaths = slices.Clone(maskedPaths)
		s.Linux.ReadonlyPaths = slices.Clone(readonlyPaths)
	}
	return s
}

func resources(spec ContainerSpec) *specs.LinuxResources {
	res := &specs.LinuxResources{}
	if spec.Privileged {
		res.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		// runc adds the standard devices (null, zero, tty, …) to this.
		res.Devices = []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	}
	if spec.MemoryLimit > 0 {
		limit := spec.MemoryLimit
		res.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	if spec.CPUShares > 0 || spec.CPUQuota != 0 || spec.CPUPeriod > 0 {
		cpu := &specs.LinuxCPU{}
		if spec.CPUShares > 0 {
			shares := spec.CPUShares
			cpu.Shares = &shares
		}
		if spec.CPUQuota != 0 {
			quota := spec.CPUQuota
			cpu.Quota = &quota
		}
		if spec.CPUPeriod > 0 {
			period := spec.CPUPeriod
			cpu.Period = &period
		}
		res.CPU = cpu
	}
	return res
}

// mounts returns the default mounts followed by the caller's bind mounts;
// a bind mount onto a default mount's destination replaces it.
func mounts(spec ContainerSpec) []specs.Mount {
	sysOpts, cgroupOpts := []string{"nosuid", "noexec", "nodev", "ro"}, []string{"nosuid", "noexec", "nodev", "relatime", "ro"}
	if spec.Privileged {
		sysOpts, cgroupOpts = sysOpts[:3], cgroupOpts[:4]
	}
	defaults := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: sysOpts},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: cgroupOpts},
	}
	var out []specs.Mount
	for _, d := range defaults {
		if !slices.ContainsFunc(spec.Mounts, func(m Mount) bool { return filepath.Clean(m.ContainerPath) == d.Destination }) {
			out = append(out, d)
		}
	}
	for _, m := range spec.Mounts {
		opts := []string{"rbind", "rprivate"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		out = append(out, specs.Mount{Destination: filepath.Clean(m.ContainerPath), Type: "bind", Source: m.HostPath, Options: opts})
	}
	return out
}
