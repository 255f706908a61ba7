// Package volume makes a pod's volumes exist on the node: emptyDir and
// hostPath directories, and the files of configMap, secret, downwardAPI
// and projected volumes (service-account tokens included, path P3). It
// sits between the kubelet's pod workers, which call Setup before starting
// a pod's containers and Teardown after they are gone, and the API server,
// which it reads through client-go with the node's own credentials (path
// P2), so the Node authorizer limits it to the objects of pods bound to
// the node.
//
// A pod's volumes live in <PodsDir>/<uid>/volumes/<kind>/<name>, with the
// kinds named as upstream's kubelet names them (kubernetes.io~secret, …).
// Volumes filled from the API are updated in place, atomically (see
// writeAtomic), every ResyncPeriod while the pod is registered; tokens are
// replaced when 80 % of their lifetime has passed. Secret and projected
// volumes, and emptyDirs with medium Memory, are tmpfs mounts so that
// credentials never reach the disk.
package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Defaults.
const (
	DefaultResyncPeriod = 30 * time.Second
	// DefaultMemoryVolumeSize bounds the tmpfs of each secret and projected
	// volume. Secrets are at most 1 MiB; the bound leaves room for many and
	// for two versions during an update.
	DefaultMemoryVolumeSize = 64 << 20
)

// Directory names of the volume kinds below <pod>/volumes, as upstream.
const (
	kindEmptyDir    = "kubernetes.io~empty-dir"
	kindConfigMap   = "kubernetes.io~configmap"
	kindSecret      = "kubernetes.io~secret"
	kindDownwardAPI = "kubernetes.io~downward-api"
	kindProjected   = "kubernetes.io~projected"
)

// Config configures a Manager. A Config is not changed after New.
type Config struct {
	// Client reads configMaps and secrets and requests service-account
	// tokens, with the node's credentials. Required.
	Client kubernetes.Interface
	// PodsDir holds one directory per pod, named by its UID. Required.
	PodsDir string
	// Logger receives the manager's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Now tells the time; tokens are refreshed and versions named by it.
	// If nil, time.Now.
	Now func() time.Time
	// ResyncPeriod is how often the content of registered pods' volumes
	// is fetched again. If zero, DefaultResyncPeriod.
	ResyncPeriod time.Duration
	// Allocatable returns the node's allocatable resources, which a
	// downwardAPI limits.* value reads when the container sets no limit.
	// If nil, the machine's CPU count and memory are used.
	Allocatable func() corev1.ResourceList
	// MemoryVolumeSize is the size limit, in bytes, of the tmpfs of each
	// secret and projected volume. If zero, DefaultMemoryVolumeSize.
	MemoryVolumeSize int64
	// DisableTmpfs puts secret and projected volumes and emptyDirs with
	// medium Memory on disk as plain directories, so credentials are
	// written to the disk. Only for tests and unprivileged runs, which
	// cannot mount.
	DisableTmpfs bool
}

// Mount is what the runtime binds into a pod's containers for one volume.
type Mount struct {
	// HostPath is the directory or file on the node.
	HostPath string
	// ReadOnly is true for volumes the kubelet owns the content of
	// (configMap, secret, downwardAPI, projected); containers may still
	// ask for any volume read-only.
	ReadOnly bool
}

// Manager sets up and tears down pods' volumes. Its methods are safe for
// concurrent use; calls for the same pod are serialised.
type Manager struct {
	client      kubernetes.Interface
	podsDir     string
	log         *slog.Logger
	now         func() time.Time
	resync      time.Duration
	allocatable func() corev1.ResourceList
	memSize     int64
	noTmpfs     bool

	kick chan struct{} // wakes Run to look at token deadlines again

	mu     sync.Mutex
	pods   map[types.UID]*podState
	tokens map[tokenKey]*token
}

// podState is a registered pod.
type podState struct {
	mu          sync.Mutex // held while the pod's volumes are written
	pod         *corev1.Pod
	fingerprint string // of what the volumes' content depends on
	mounts      map[string]Mount
	synced      time.Time // last complete, successful sync
	err         error     // of the last complete sync
	dead        bool      // torn down; write nothing more
}

// New returns a Manager for cfg.
func New(cfg Config) (*Manager, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("volume: Client is required"))
	}
	if cfg.PodsDir == "" {
		errs = append(errs, errors.New("volume: PodsDir is required"))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("volume: ResyncPeriod %s is negative", cfg.ResyncPeriod))
	}
	if cfg.MemoryVolumeSize < 0 {
		errs = append(errs, fmt.Errorf("volume: MemoryVolumeSize %d is negative", cfg.MemoryVolumeSize))
	}
	podsDir, err := filepath.Abs(cfg.PodsDir)
	if err != nil && cfg.PodsDir != "" {
		errs = append(errs, fmt.Errorf("volume: PodsDir: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m := &Manager{
		client:      cfg.Client,
		podsDir:     podsDir,
		log:         cfg.Logger,
		now:         cfg.Now,
		resync:      cfg.ResyncPeriod,
		allocatable: cfg.Allocatable,
		memSize:     cfg.MemoryVolumeSize,
		noTmpfs:     cfg.DisableTmpfs,
		kick:        make(chan struct{}, 1),
		pods:        make(map[types.UID]*podState),
		tokens:      make(map[tokenKey]*token),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("component", "volume")
	if m.now == nil {
		m.now = time.Now
	}
	if m.resync == 0 {
		m.resync = DefaultResyncPeriod
	}
	if m.allocatable == nil {
		m.allocatable = machineAllocatable
	}
	if m.memSize == 0 {
		m.memSize = DefaultMemoryVolumeSize
	}
	return m, nil
}

// PodDir is the directory holding everything of the pod on the node.
func (m *Manager) PodDir(podUID types.UID) string {
	return filepath.Join(m.podsDir, string(podUID))
}

func (m *Manager) volumeDir(podUID types.UID, kind, name string) string {
	return filepath.Join(m.PodDir(podUID), "volumes", kind, name)
}

// Setup makes every volume of pod exist with current content and returns
// them by volume name. It registers the pod, so that Run keeps the content
// current, until Teardown. Setup does nothing but return the known mounts
// when the pod's volumes, labels, annotations and resources are as at the
// last successful call, no token is due, and the content was fetched less
// than ResyncPeriod ago.
//
// Errors name the volume and the object. A volume that fails keeps the
// content it had.
func (m *Manager) Setup(ctx context.Context, pod *corev1.Pod) (map[string]Mount, error) {
	if pod == nil {
		return nil, errors.New("volume: nil pod")
	}
	if err := checkName("pod UID", string(pod.UID)); err != nil {
		return nil, err
	}
	fp, err := fingerprint(pod)
	if err != nil {
		return nil, err
	}

	m.mu.Lock()
	st := m.pods[pod.UID]
	if st == nil {
		st = &podState{}
		m.pods[pod.UID] = st
	}
	m.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.dead {
		return nil, fmt.Errorf("volume: pod %s/%s is being torn down", pod.Namespace, pod.Name)
	}
	st.pod = pod.DeepCopy()
	now := m.now()
	if st.mounts != nil && st.err == nil && st.fingerprint == fp &&
		now.Sub(st.synced) < m.resync && !m.tokenDue(pod.UID, now) {
		return maps.Clone(st.mounts), nil
	}
	mounts, err := m.syncPod(ctx, st.pod, nil)
	st.err = err
	if err != nil {
		return nil, err
	}
	st.fingerprint, st.mounts, st.synced = fp, mounts, now
	return maps.Clone(mounts), nil
}

// tokenDue reports whether a cached token of the pod needs replacing.
func (m *Manager) tokenDue(uid types.UID, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, t := range m.tokens {
		if key.pod == uid && !now.Before(t.refreshAt) {
			return true
		}
	}
	return false
}

// fingerprint captures what the volumes of a pod depend on, besides the
// API objects they read.
func fingerprint(pod *corev1.Pod) (string, error) {
	type container struct {
		Name      string
		Resources corev1.ResourceRequirements
	}
	in := struct {
		Name, Namespace, ServiceAccount string
		Labels, Annotations             map[string]string
		Volumes                         []corev1.Volume
		Containers                      []container
	}{
		Name: pod.Name, Namespace: pod.Namespace, ServiceAccount: pod.Spec.ServiceAccountName,
		Labels: pod.Labels, Annotations: pod.Annotations, Volumes: pod.Spec.Volumes,
	}
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		in.Containers = append(in.Containers, container{c.Name, c.Resources})
	}
	b, err := json.Marshal(in)
	if err != nil {
		return "", fmt.Errorf("volume: fingerprint pod: %w", err)
	}
	return string(b), nil
}

// syncPod sets up the pod's volumes, or only those named in only if it is
// not nil. The caller holds the pod's lock.
func (m *Manager) syncPod(ctx context.Context, pod *corev1.Pod, only map[string]bool) (map[string]Mount, error) {
	for _, dir := range []string{m.podsDir, m.PodDir(pod.UID), filepath.Join(m.PodDir(pod.UID), "volumes")} {
		if err := mkdirMode(dir, 0o750); err != nil {
			return nil, fmt.Errorf("volume: %w", err)
		}
	}
	mounts := make(map[string]Mount, len(pod.Spec.Volumes))
	var errs []error
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if only != nil && !only[v.Name] {
			continue
		}
		mnt, err := m.setupVolume(ctx, pod, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", v.Name, err))
			continue
		}
		mounts[v.Name] = mnt
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return mounts, nil
}

// setupVolume makes one volume exist with current content.
func (m *Manager) setupVolume(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) (Mount, error) {
	if err := checkName("volume name", v.Name); err != nil {
		return Mount{}, err
	}
	switch {
	case v.EmptyDir != nil:
		return m.setupEmptyDir(pod.UID, v)
	case v.HostPath != nil:
		if err := checkHostPath(v.HostPath); err != nil {
			return Mount{}, err
		}
		return Mount{HostPath: filepath.Clean(v.HostPath.Path)}, nil
	case v.ConfigMap != nil:
		p := payload{}
		src := v.ConfigMap
		if err := m.addConfigMap(ctx, p, pod.Namespace, src.Name, src.Items, src.DefaultMode, src.Optional); err != nil {
			return Mount{}, err
		}
		return m.writeVolume(pod, v.Name, kindConfigMap, false, p)
	case v.Secret != nil:
		p := payload{}
		src := v.Secret
		if err := m.addSecret(ctx, p, pod.Namespace, src.SecretName, src.Items, src.DefaultMode, src.Optional); err != nil {
			return Mount{}, err
		}
		return m.writeVolume(pod, v.Name, kindSecret, true, p)
	case v.DownwardAPI != nil:
		p := payload{}
		if err := m.addDownwardAPI(p, pod, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode); err != nil {
			return Mount{}, err
		}
		return m.writeVolume(pod, v.Name, kindDownwardAPI, false, p)
	case v.Projected != nil:
		p, err := m.projectedPayload(ctx, pod, v.Name, v.Projected)
		if err != nil {
			return Mount{}, err
		}
		return m.writeVolume(pod, v.Name, kindProjected, true, p)
	}
	return Mount{}, errors.New("unsupported volume type")
}

// setupEmptyDir makes a world-writable directory, as upstream, since the
// pod's containers may run as any user; medium Memory makes it a tmpfs.
func (m *Manager) setupEmptyDir(uid types.UID, v *corev1.Volume) (Mount, error) {
	dir := m.volumeDir(uid, kindEmptyDir, v.Name)
	if err := mkdirMode(filepath.Dir(dir), 0o750); err != nil {
		return Mount{}, err
	}
	if err := mkdirMode(dir, 0o777); err != nil {
		return Mount{}, err
	}
	switch v.EmptyDir.Medium {
	case corev1.StorageMediumDefault:
	case corev1.StorageMediumMemory:
		if !m.noTmpfs {
			var size int64
			if l := v.EmptyDir.SizeLimit; l != nil && !l.IsZero() {
				size = l.Value()
			}
			if err := mountTmpfs(dir, size, 0o777); err != nil {
				return Mount{}, err
			}
		}
	default:
		return Mount{}, fmt.Errorf("emptyDir medium %q is not supported", v.EmptyDir.Medium)
	}
	return Mount{HostPath: dir}, nil
}

// writeVolume publishes p in the volume's directory, on a tmpfs if
// inMemory.
func (m *Manager) writeVolume(pod *corev1.Pod, name, kind string, inMemory bool, p payload) (Mount, error) {
	dir := m.volumeDir(pod.UID, kind, name)
	if err := mkdirMode(filepath.Dir(dir), 0o750); err != nil {
		return Mount{}, err
	}
	if err := mkdirMode(dir, 0o755); err != nil {
		return Mount{}, err
	}
	if inMemory && !m.noTmpfs {
		if err := mountTmpfs(dir, m.memSize, 0o755); err != nil {
			return Mount{}, err
		}
	}
	changed, err := writeAtomic(dir, p, m.now())
	if err != nil {
		return Mount{}, fmt.Errorf("write content: %w", err)
	}
	if changed {
		m.log.Debug("volume content updated", "namespace", pod.Namespace, "name", pod.Name,
			"volume", name, "files", len(p))
	}
	return Mount{HostPath: dir, ReadOnly: true}, nil
}

// mkdirMode makes dir (and missing parents) and gives dir exactly mode.
// An existing directory keeps its mode: a tmpfs root was given its own.
func mkdirMode(dir string, mode os.FileMode) error {
	fi, err := os.Lstat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o750); err != nil {
		return err
	}
	if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return os.Chmod(dir, mode)
}

// checkName rejects a name that is not a single path element.
func checkName(what, name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("volume: invalid %s %q", what, name)
	}
	return nil
}

// Teardown unregisters the pod, unmounts every file system below its
// directory and removes the directory. It works for pods this Manager
// never saw, such as those of an earlier agent run. A pod without a
// directory is not an error. Teardown must be called only after the pod's
// containers are gone. It finishes even if ctx is done: all it does is
// local and short.
func (m *Manager) Teardown(_ context.Context, podUID types.UID) error {
	if err := checkName("pod UID", string(podUID)); err != nil {
		return err
	}
	m.mu.Lock()
	st := m.pods[podUID]
	delete(m.pods, podUID)
	m.mu.Unlock()
	if st != nil {
		// Wait for a sync in progress, and stop later ones.
		st.mu.Lock()
		st.dead = true
		defer st.mu.Unlock()
	}
	m.forgetTokens(podUID)

	dir := m.PodDir(podUID)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	mounts, err := mountsUnder(dir)
	if err != nil {
		return fmt.Errorf("volume: tear down pod %s: %w", podUID, err)
	}
	var errs []error
	for _, mp := range mounts {
		if err := unmount(mp); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Removing now would reach into what is still mounted.
		return fmt.Errorf("volume: tear down pod %s: %w", podUID, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("volume: tear down pod %s: %w", podUID, err)
	}
	m.log.Debug("pod volumes torn down", "uid", podUID, "unmounted", len(mounts))
	return nil
}

// Run keeps registered pods' volumes current until ctx ends: it fetches
// their content every ResyncPeriod and replaces each service-account token
// when it is due. Run returns nil when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	ticker := time.NewTicker(m.resync)
	defer ticker.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(m.untilTokenDue())
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			m.resyncAll(ctx)
		case <-timer.C:
			m.refreshTokens(ctx)
		case <-m.kick:
		}
	}
}

// wake makes Run look at the token deadlines again.
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// untilTokenDue is how long Run may sleep before a token is due.
func (m *Manager) untilTokenDue() time.Duration {
	const idle = 24 * time.Hour
	next, ok := m.nextTokenDue()
	if !ok {
		return idle
	}
	return min(max(next.Sub(m.now()), 0), idle)
}

// snapshot returns the registered pods.
func (m *Manager) snapshot() map[types.UID]*podState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.pods)
}

// resyncAll fetches every registered pod's content again.
func (m *Manager) resyncAll(ctx context.Context) {
	for uid, st := range m.snapshot() {
		if ctx.Err() != nil {
			return
		}
		st.mu.Lock()
		if !st.dead && st.pod != nil {
			mounts, err := m.syncPod(ctx, st.pod, nil)
			st.err = err
			if err != nil {
				m.log.Warn("refresh pod volumes", "namespace", st.pod.Namespace, "name", st.pod.Name,
					"uid", uid, "err", err)
			} else {
				st.mounts, st.synced = mounts, m.now()
			}
		}
		st.mu.Unlock()
	}
}

// refreshTokens rewrites the volumes holding tokens that are due.
func (m *Manager) refreshTokens(ctx context.Context) {
	due := m.dueTokenVolumes(m.now())
	pods := m.snapshot()
	for uid, volumes := range due {
		if ctx.Err() != nil {
			return
		}
		st := pods[uid]
		if st == nil {
			continue
		}
		st.mu.Lock()
		if !st.dead && st.pod != nil {
			if _, err := m.syncPod(ctx, st.pod, volumes); err != nil {
				m.log.Warn("refresh service account token", "namespace", st.pod.Namespace,
					"name", st.pod.Name, "uid", uid, "err", err)
			}
		}
		st.mu.Unlock()
	}
}
