package pods

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"tether/kubelet/images"
	"tether/kubelet/podenv"
	"tether/kubelet/runtime"
)

// serviceAccountDir is where the service-account volume is mounted.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// maxTerminationMessage bounds what is read of a termination message file.
const maxTerminationMessage = 4096

// sources fetches config maps and secrets for environment variables with
// the node's credentials (the Node authorizer allows those of its pods).
type sources struct{ m *Manager }

func (s sources) ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	return s.m.cfg.Client.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (s sources) Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return s.m.cfg.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
}

// environment resolves a container's environment variables.
func (w *worker) environment(ctx context.Context, pod *corev1.Pod, spec *corev1.Container) ([]string, []string, error) {
	svcs, err := w.m.services.List(labels.Everything())
	if err != nil {
		return nil, nil, err
	}
	var visible []*corev1.Service
	for _, s := range svcs {
		if s.Namespace == pod.Namespace || (s.Namespace == metav1.NamespaceDefault && s.Name == "kubernetes") {
			visible = append(visible, s)
		}
	}
	info := podenv.PodInfo{HostIP: w.m.cfg.NodeIP.String(), HostIPs: []string{w.m.cfg.NodeIP.String()}}
	if w.ip != nil {
		info.PodIP, info.PodIPs = w.ip.String(), []string{w.ip.String()}
	}
	return podenv.Environment(ctx, sources{w.m}, pod, spec, visible, info)
}

// containerSpec turns a pod's container into what the runtime runs.
func (w *worker) containerSpec(pod *corev1.Pod, spec *corev1.Container, c *ctr, img *images.Image, env []string, attempt int) (runtime.ContainerSpec, error) {
	id := containerID(pod.UID, spec.Name, attempt)
	rs := runtime.ContainerSpec{
		ID: id,
		Labels: map[string]string{
			LabelPodUID: string(pod.UID), LabelPodName: pod.Name, LabelPodNamespace: pod.Namespace,
			LabelContainer: spec.Name, LabelAttempt: strconv.Itoa(attempt), LabelInit: strconv.FormatBool(c.init),
		},
		LowerDirs:   img.Layers,
		Env:         withImageEnv(img.Env, env),
		WorkingDir:  spec.WorkingDir,
		Hostname:    podHostname(pod),
		NetNSPath:   w.netns,
		CgroupsPath: fmt.Sprintf("%s/pod%s/%s", w.m.cfg.CgroupParent, pod.UID, id),
		LogPath:     w.logPath(pod, spec.Name, attempt),
		Stdin:       spec.Stdin,
		StdinOnce:   spec.StdinOnce,
		TTY:         spec.TTY,
	}
	if rs.WorkingDir == "" {
		rs.WorkingDir = img.WorkingDir
	}
	rs.Args = commandLine(spec, img, env)
	if len(rs.Args) == 0 {
		return rs, fmt.Errorf("container %s: no command given and image %s names none", spec.Name, spec.Image)
	}

	// Identity: the security context, else the image's USER.
	uid, gid, err := imageUser(img)
	if err != nil {
		return rs, fmt.Errorf("container %s: %w", spec.Name, err)
	}
	psc := pod.Spec.SecurityContext
	csc := spec.SecurityContext
	if psc != nil {
		if psc.RunAsUser != nil {
			uid = uint32(*psc.RunAsUser)
		}
		if psc.RunAsGroup != nil {
			gid = uint32(*psc.RunAsGroup)
		}
		for _, g := range psc.SupplementalGroups {
			rs.AdditionalGIDs = append(rs.AdditionalGIDs, uint32(g))
		}
		if psc.FSGroup != nil {
			rs.AdditionalGIDs = append(rs.AdditionalGIDs, uint32(*psc.FSGroup))
		}
	}
	if csc != nil {
		if csc.RunAsUser != nil {
			uid = uint32(*csc.RunAsUser)
		}
		if csc.RunAsGroup != nil {
			gid = uint32(*csc.RunAsGroup)
		}
		rs.Privileged = csc.Privileged != nil && *csc.Privileged
		rs.ReadOnlyRootfs = csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem
		rs.NoNewPrivileges = csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation
		if caps := csc.Capabilities; caps != nil {
			for _, a := range caps.Add {
				rs.CapAdd = append(rs.CapAdd, string(a))
			}
			for _, d := range caps.Drop {
				rs.CapDrop = append(rs.CapDrop, string(d))
			}
		}
	}
	if nonRoot := (psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot) || (csc != nil && csc.RunAsNonRoot != nil && *csc.RunAsNonRoot); nonRoot && uid == 0 {
		return rs, fmt.Errorf("container %s has runAsNonRoot and its image will run as root (set securityContext.runAsUser)", spec.Name)
	}
	rs.UID, rs.GID = uid, gid

	// Resources: cgroup v1 limits.
	if mem := spec.Resources.Limits.Memory(); mem != nil && !mem.IsZero() {
		rs.MemoryLimit = mem.Value()
	}
	cpuReq := spec.Resources.Requests.Cpu()
	if cpuReq == nil || cpuReq.IsZero() {
		cpuReq = spec.Resources.Limits.Cpu()
	}
	if cpuReq != nil && !cpuReq.IsZero() {
		rs.CPUShares = uint64(max(2, cpuReq.MilliValue()*1024/1000))
	} else {
		rs.CPUShares = 2
	}
	if lim := spec.Resources.Limits.Cpu(); lim != nil && !lim.IsZero() {
		rs.CPUPeriod = 100000
		rs.CPUQuota = max(1000, lim.MilliValue()*100000/1000)
	}

	// Mounts: the pod's volumes, then the files the kubelet provides.
	for _, vm := range spec.VolumeMounts {
		v, ok := w.mounts[vm.Name]
		if !ok {
			return rs, fmt.Errorf("container %s: volumeMount %q names no volume of the pod", spec.Name, vm.Name)
		}
		host := v.HostPath
		if vm.SubPath != "" {
			sub := filepath.Clean("/" + vm.SubPath)
			host = filepath.Join(host, sub)
			if _, err := os.Lstat(host); os.IsNotExist(err) {
				if err := os.MkdirAll(host, 0o755); err != nil {
					return rs, fmt.Errorf("container %s: subPath %q of volume %q: %w", spec.Name, vm.SubPath, vm.Name, err)
				}
			}
		}
		rs.Mounts = append(rs.Mounts, runtime.Mount{HostPath: host, ContainerPath: vm.MountPath, ReadOnly: vm.ReadOnly || v.ReadOnly})
	}
	dir := w.m.podDir(pod.UID)
	if !mountsAt(spec, "/etc/hosts") {
		rs.Mounts = append(rs.Mounts, runtime.Mount{HostPath: filepath.Join(dir, "etc-hosts"), ContainerPath: "/etc/hosts"})
	}
	if !mountsAt(spec, "/etc/resolv.conf") {
		rs.Mounts = append(rs.Mounts, runtime.Mount{HostPath: filepath.Join(dir, "resolv.conf"), ContainerPath: "/etc/resolv.conf", ReadOnly: true})
	}
	if !mountsAt(spec, "/etc/hostname") {
		rs.Mounts = append(rs.Mounts, runtime.Mount{HostPath: filepath.Join(dir, "hostname"), ContainerPath: "/etc/hostname", ReadOnly: true})
	}
	if path := terminationPath(spec); path != "" {
		host := w.terminationFile(pod, spec.Name, attempt)
		if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
			return rs, err
		}
		if err := os.WriteFile(host, nil, 0o666); err != nil {
			return rs, err
		}
		_ = os.Chmod(host, 0o666)
		rs.Mounts = append(rs.Mounts, runtime.Mount{HostPath: host, ContainerPath: path})
	}
	return rs, nil
}

func mountsAt(spec *corev1.Container, path string) bool {
	for _, vm := range spec.VolumeMounts {
		if filepath.Clean(vm.MountPath) == path {
			return true
		}
	}
	return false
}

func terminationPath(spec *corev1.Container) string {
	if spec.TerminationMessagePath != "" {
		return spec.TerminationMessagePath
	}
	return corev1.TerminationMessagePathDefault
}

func (w *worker) terminationFile(pod *corev1.Pod, name string, attempt int) string {
	return filepath.Join(w.m.podDir(pod.UID), "containers", name, fmt.Sprintf("%d-termination-log", attempt))
}

// terminationMessage reads what an instance wrote to its termination
// message file.
func (w *worker) terminationMessage(pod *corev1.Pod, spec *corev1.Container, attempt int) string {
	if spec == nil {
		return ""
	}
	f, err := os.Open(w.terminationFile(pod, spec.Name, attempt))
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, maxTerminationMessage)
	n, _ := f.Read(buf)
	return string(buf[:n])
}

// commandLine is the container's argv: command and args from the pod when
// given, else the image's entrypoint and cmd, with $(VAR) expanded.
func commandLine(spec *corev1.Container, img *images.Image, env []string) []string {
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	var argv []string
	switch {
	case len(spec.Command) > 0:
		argv = append(append(argv, spec.Command...), spec.Args...)
	case len(spec.Args) > 0:
		argv = append(append(argv, img.Entrypoint...), spec.Args...)
	default:
		argv = append(append(argv, img.Entrypoint...), img.Cmd...)
	}
	if len(spec.Command) > 0 || len(spec.Args) > 0 {
		for i, a := range argv {
			argv[i] = podenv.Expand(a, vars)
		}
	}
	return argv
}

// withImageEnv puts the image's variables before the pod's, dropping those
// the pod overrides.
func withImageEnv(imageEnv, env []string) []string {
	set := map[string]bool{}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	var out []string
	for _, kv := range imageEnv {
		if k, _, _ := strings.Cut(kv, "="); !set[k] {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// imageUser resolves the image's USER ("uid", "uid:gid", "name",
// "name:group") against the image's own /etc/passwd and /etc/group.
func imageUser(img *images.Image) (uid, gid uint32, err error) {
	if img.User == "" {
		return 0, 0, nil
	}
	user, group, hasGroup := strings.Cut(img.User, ":")
	u, gidFromUser, err := lookup(img.Layers, "etc/passwd", user, 2)
	if err != nil {
		return 0, 0, fmt.Errorf("image user %q: %w", img.User, err)
	}
	g := gidFromUser
	if hasGroup {
		if g, _, err = lookup(img.Layers, "etc/group", group, 2); err != nil {
			return 0, 0, fmt.Errorf("image group %q: %w", group, err)
		}
	}
	return u, g, nil
}

// lookup resolves a name or number in a passwd-style file of the image's
// top-most layer that has it. It returns the id and, for passwd, the
// primary group.
func lookup(layers []string, file, name string, idField int) (uint32, uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), uint32(n), nil
	}
	for i := len(layers) - 1; i >= 0; i-- {
		f, err := os.Open(filepath.Join(layers[i], file))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Split(sc.Text(), ":")
			if len(fields) > idField+1 && fields[0] == name {
				id, _ := strconv.ParseUint(fields[idField], 10, 32)
				gid := id
				if file == "etc/passwd" {
					gid, _ = strconv.ParseUint(fields[idField+1], 10, 32)
				}
				f.Close()
				return uint32(id), uint32(gid), nil
			}
		}
		f.Close()
		break
	}
	return 0, 0, fmt.Errorf("%q is not in the image's /%s", name, file)
}

func podHostname(pod *corev1.Pod) string {
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	if len(h) > 63 {
		h = h[:63]
	}
	return h
}

// writeFiles writes the pod's /etc/hosts, /etc/resolv.conf and
// /etc/hostname.
func (w *worker) writeFiles(pod *corev1.Pod) error {
	dir := w.m.podDir(pod.UID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	host := podHostname(pod)
	hosts := "# Kubernetes-managed hosts file (tether).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if w.ip != nil && !pod.Spec.HostNetwork {
		fqdn := host
		if pod.Spec.Subdomain != "" {
			fqdn = fmt.Sprintf("%s.%s.%s.svc.cluster.local\t%s", host, pod.Spec.Subdomain, pod.Namespace, host)
		}
		hosts += fmt.Sprintf("%s\t%s\n", w.ip, fqdn)
	}
	for _, ha := range pod.Spec.HostAliases {
		hosts += fmt.Sprintf("%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		resolv = nil
	}
	if dc := pod.Spec.DNSConfig; pod.Spec.DNSPolicy == corev1.DNSNone && dc != nil {
		var b strings.Builder
		for _, ns := range dc.Nameservers {
			fmt.Fprintf(&b, "nameserver %s\n", ns)
		}
		if len(dc.Searches) > 0 {
			fmt.Fprintf(&b, "search %s\n", strings.Join(dc.Searches, " "))
		}
		for _, o := range dc.Options {
			if o.Value != nil {
				fmt.Fprintf(&b, "options %s:%s\n", o.Name, *o.Value)
			} else {
				fmt.Fprintf(&b, "options %s\n", o.Name)
			}
		}
		resolv = []byte(b.String())
	}
	for name, data := range map[string][]byte{"etc-hosts": []byte(hosts), "resolv.conf": resolv, "hostname": []byte(host + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
