package kubelet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machineInfo is what the node reports about its machine. Empty strings
// and zero sizes mean unknown and are left out of the Node.
type machineInfo struct {
	CPUs                    int
	MemoryBytes             int64
	EphemeralStorageBytes   int64
	Architecture            string
	KernelVersion           string
	OSImage                 string
	MachineID               string
	SystemUUID              string
	BootID                  string
	ContainerRuntimeVersion string
}

// readMachineInfo reads the machine's facts from /proc, /etc and /sys, and
// asks runc for its version. dataDir's file system is the node's ephemeral
// storage. Nothing here fails: what cannot be read is unknown.
func readMachineInfo(ctx context.Context, dataDir string) machineInfo {
	info := machineInfo{
		CPUs:                    runtime.NumCPU(),
		Architecture:            runtime.GOARCH,
		EphemeralStorageBytes:   diskCapacity(dataDir),
		KernelVersion:           readTrimmed("/proc/sys/kernel/osrelease"),
		MachineID:               firstNonEmpty(readTrimmed("/etc/machine-id"), readTrimmed("/var/lib/dbus/machine-id")),
		SystemUUID:              strings.ToLower(readTrimmed("/sys/class/dmi/id/product_uuid")),
		BootID:                  readTrimmed("/proc/sys/kernel/random/boot_id"),
		ContainerRuntimeVersion: "runc://" + runcVersion(ctx),
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		info.MemoryBytes, _ = parseMemTotal(string(data))
	}
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		info.OSImage = parseOSRelease(string(data))
	} else if data, err := os.ReadFile("/usr/lib/os-release"); err == nil {
		info.OSImage = parseOSRelease(string(data))
	}
	return info
}

// parseMemTotal returns MemTotal from /proc/meminfo, in bytes.
func parseMemTotal(meminfo string) (int64, error) {
	s := bufio.NewScanner(strings.NewReader(meminfo))
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("MemTotal %q: %w", f[0], err)
		}
		if len(f) > 1 && f[1] != "kB" {
			return 0, fmt.Errorf("MemTotal unit %q, want kB", f[1])
		}
		return n * 1024, nil
	}
	return 0, errors.New("no MemTotal line")
}

// parseOSRelease returns PRETTY_NAME from an os-release file, unquoted, or
// "Linux" when it has none.
func parseOSRelease(data string) string {
	for line := range strings.Lines(data) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "PRETTY_NAME=")
		if !ok {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		} else {
			v = strings.Trim(v, `"'`)
		}
		if v != "" {
			return v
		}
	}
	return "Linux"
}

// runcVersion returns the version of the runc on PATH, or "unknown".
func runcVersion(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "runc", "--version").Output()
	if err != nil {
		return "unknown"
	}
	return parseRuncVersion(string(out))
}

// parseRuncVersion reads "runc version 1.1.5+ds1" from `runc --version`.
func parseRuncVersion(out string) string {
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "runc version "); ok && v != "" {
			return strings.Fields(v)[0]
		}
	}
	return "unknown"
}

func readTrimmed(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
