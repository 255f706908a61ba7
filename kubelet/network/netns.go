package network

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps named network namespaces.
const netnsDir = "/var/run/netns"

// maxDirectUIDLen bounds the pod UIDs used verbatim in namespace names;
// longer ones (and ones with unusual characters) are hashed.
const maxDirectUIDLen = 128

// hashedMark follows the prefix in hashed namespace names. It cannot start
// a verbatim UID, so the two kinds of name never collide.
const hashedMark = "~"

// netnsName returns the name of the pod's network namespace: the prefix and
// the UID, or, for a UID that is too long or has characters unsafe in a
// file name, the prefix, "~" and a hash of the UID.
func (n *Network) netnsName(podUID string) string {
	if len(podUID) <= maxDirectUIDLen && plainName(podUID) {
		return n.prefix + podUID
	}
	sum := sha256.Sum256([]byte(podUID))
	return n.prefix + hashedMark + hex.EncodeToString(sum[:16])
}

// podUIDOf maps a namespace name back to a pod UID.
func (n *Network) podUIDOf(nsName string) (string, bool) {
	rest, ok := strings.CutPrefix(nsName, n.prefix)
	if !ok || rest == "" {
		return "", false
	}
	if !strings.HasPrefix(rest, hashedMark) {
		return rest, plainName(rest)
	}
	b, err := os.ReadFile(n.nameMappingPath(nsName))
	if err != nil {
		// A hashed namespace whose UID is lost cannot be torn down by UID;
		// report it so it is at least visible.
		n.log.Warn("network namespace with unknown pod UID", "netns", nsName, "err", err)
		return "", false
	}
	return string(b), true
}

func (n *Network) nameMappingPath(nsName string) string {
	return filepath.Join(n.dataDir, "netns", nsName)
}

func (n *Network) writeNameMapping(nsName, podUID string) error {
	p := n.nameMappingPath(nsName)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("record netns name: %w", err)
	}
	if err := os.WriteFile(p, []byte(podUID), 0o600); err != nil {
		return fmt.Errorf("record netns name: %w", err)
	}
	return nil
}

func (n *Network) removeNameMapping(nsName string) {
	if strings.HasPrefix(strings.TrimPrefix(nsName, n.prefix), hashedMark) {
		_ = os.Remove(n.nameMappingPath(nsName))
	}
}

// plainName reports whether s is made only of letters, digits, '.', '_'
// and '-', does not start with '.', and so is safe as a file name.
func plainName(s string) bool {
	if s == "" || s[0] == '.' {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func validPodUID(uid string) error {
	if uid == "" {
		return errors.New("network: empty pod UID")
	}
	if strings.ContainsRune(uid, 0) {
		return fmt.Errorf("network: pod UID %q contains NUL", uid)
	}
	return nil
}

func validNetNSPrefix(p string) error {
	if len(p) > 64 {
		return fmt.Errorf("%q is longer than 64 characters", p)
	}
	if !plainName(p) {
		return fmt.Errorf("%q may contain only letters, digits, '.', '_' and '-' and must not start with '.'", p)
	}
	return nil
}

func validIfName(name string) error {
	if len(name) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("%q is longer than %d characters", name, unix.IFNAMSIZ-1)
	}
	if name == "." || name == ".." || !plainName(name) {
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	return nil
}

// isNetNS reports whether path is a network namespace bind mount (rather
// than a missing file or the empty file left when the mount is gone).
func isNetNS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// createNetNS creates a named network namespace with iproute2, which makes
// a fresh namespace (whatever namespace we run in), bind-mounts it under
// /var/run/netns and keeps that directory a shared mount.
func createNetNS(ctx context.Context, name string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "add", name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("create netns %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// deleteNetNS unmounts and removes a named network namespace; the namespace
// itself goes away once no process uses it. A missing one is not an error.
func deleteNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", path, err)
	}
	return nil
}

// checkMountPropagation warns when /var/run/netns is a slave mount, as it is
// under `ip netns exec`: namespaces made there are only visible to this
// process's mount namespace and vanish with it, so pods cannot be
// re-adopted after a restart and other tools cannot see them.
func (n *Network) checkMountPropagation() {
	dir, err := filepath.EvalSymlinks(netnsDir)
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var optional []string
	found := false
	for sc.Scan() {
		// mountinfo: id parent major:minor root mountpoint options [optional...] - fstype ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || fields[4] != dir {
			continue
		}
		found = true
		optional = optional[:0]
		for _, f := range fields[6:] {
			if f == "-" {
				break
			}
			optional = append(optional, f)
		}
	}
	if !found {
		return // ip netns add will create it as a shared mount
	}
	shared, slave := false, false
	for _, o := range optional {
		shared = shared || strings.HasPrefix(o, "shared:")
		slave = slave || strings.HasPrefix(o, "master:")
	}
	if slave && !shared {
		n.log.Warn("pod network namespaces are made in a private mount namespace (is the agent running under `ip netns exec`?): they disappear when the agent exits and pods cannot be re-adopted; run the agent with `nsenter --net=<netns path>` instead",
			"dir", dir)
	}
}
