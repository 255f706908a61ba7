// Package pods is the kubelet's pod lifecycle: it watches the pods bound to
// its node and makes each one run — network namespace, volumes, images,
// containers through the runtime, probes — and reports what it sees through
// pods/status. One worker per pod does all of that pod's work, so two pods
// never wait on each other and one pod's steps never race.
//
// Everything a worker knows can be rebuilt from the runtime's container
// records (labels carry the pod UID, container name and restart count), the
// pod's network namespace and the API: after an agent restart the workers
// adopt the containers runc still runs instead of starting them again.
package pods

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"tether/internal/informer"
	"tether/kubelet/images"
	"tether/kubelet/network"
	"tether/kubelet/prober"
	"tether/kubelet/runtime"
	"tether/kubelet/volume"
)

// Labels the kubelet puts on every container it starts, so that a new agent
// process can tell whose container it is.
const (
	LabelPodUID       = "tether.dev/pod-uid"
	LabelPodName      = "tether.dev/pod-name"
	LabelPodNamespace = "tether.dev/pod-namespace"
	LabelContainer    = "tether.dev/container"
	LabelAttempt      = "tether.dev/attempt"
	LabelInit         = "tether.dev/init"
)

// Runtime is what the pod workers need of the container runtime
// (runtime.Runtime implements it).
type Runtime interface {
	Start(ctx context.Context, spec runtime.ContainerSpec) error
	Stop(ctx context.Context, id string, grace time.Duration) error
	Remove(ctx context.Context, id string) error
	Status(ctx context.Context, id string) (runtime.Container, error)
	List(ctx context.Context) ([]runtime.Container, error)
	ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, exitCode int, err error)
}

// Config configures a Manager. A Config is not changed after New.
type Config struct {
	// Client reaches the API server with the node's credentials. Required.
	Client kubernetes.Interface
	// NodeName is this node's name. Required.
	NodeName string
	// NodeIP is the node's InternalIP, reported as the pods' hostIP.
	// Required.
	NodeIP net.IP
	// Runtime runs the containers. Required.
	Runtime Runtime
	// Images pulls and holds images. Required.
	Images *images.Store
	// Network gives pods their network namespace and address. Required.
	Network *network.Network
	// Volumes makes the pods' volumes. Required.
	Volumes *volume.Manager
	// PodsDir holds per-pod files (hosts, resolv.conf, overlay state) in
	// PodsDir/<uid>. Required.
	PodsDir string
	// LogDir is where container logs go, in the upstream layout
	// LogDir/<namespace>_<name>_<uid>/<container>/<restart>.log. If empty,
	// /var/log/pods.
	LogDir string
	// CgroupParent is the cgroupfs parent of every pod's cgroup. If empty,
	// "/tether/<node name>".
	CgroupParent string
	// InitialBackOff and MaxBackOff bound the delay between restarts of a
	// crashing container. If 0, 10 s and 5 min.
	InitialBackOff, MaxBackOff time.Duration
	// ResyncPeriod is how often every worker looks at its containers even
	// when nothing in the API changed. If 0, one second.
	ResyncPeriod time.Duration
	// Logger receives the workers' messages. If nil, they are discarded.
	Logger *slog.Logger
}

// Manager runs the pod workers of one node. Create it with New.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	recorder record.EventRecorder
	prober   *prober.Manager

	services corev1listers.ServiceLister
	podsList corev1listers.PodLister

	ctx     context.Context
	mu      sync.Mutex
	workers map[types.UID]*worker
	wg      sync.WaitGroup
	ready   chan struct{}
}

// New validates cfg and fills in defaults. It starts nothing.
func New(cfg Config) (*Manager, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("pods: Config.Client is required"))
	}
	if cfg.NodeName == "" {
		errs = append(errs, errors.New("pods: Config.NodeName is required"))
	}
	if cfg.NodeIP == nil {
		errs = append(errs, errors.New("pods: Config.NodeIP is required"))
	}
	if cfg.Runtime == nil || cfg.Images == nil || cfg.Network == nil || cfg.Volumes == nil {
		errs = append(errs, errors.New("pods: Config.Runtime, Images, Network and Volumes are required"))
	}
	if cfg.PodsDir == "" {
		errs = append(errs, errors.New("pods: Config.PodsDir is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.LogDir == "" {
		cfg.LogDir = "/var/log/pods"
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "/tether/" + cfg.NodeName
	}
	if cfg.InitialBackOff <= 0 {
		cfg.InitialBackOff = 10 * time.Second
	}
	if cfg.MaxBackOff <= 0 {
		cfg.MaxBackOff = 5 * time.Minute
	}
	if cfg.ResyncPeriod <= 0 {
		cfg.ResyncPeriod = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "pods"),
		workers: map[types.UID]*worker{},
		ready:   make(chan struct{}),
	}
	return m, nil
}

// Ready is closed once the manager has listed the node's pods and adopted
// what the runtime already runs.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Run watches the node's pods and runs a worker for each until ctx ends.
// Containers keep running when Run returns: stopping the agent does not
// stop the pods (the next agent adopts them).
func (m *Manager) Run(ctx context.Context) error {
	m.ctx = ctx
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: m.cfg.Client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	m.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: m.cfg.NodeName})

	m.prober = prober.NewManager(m.execProbe, m.probeChanged, nil)
	defer m.prober.Stop()

	podFactory := informer.NewFactory(m.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", m.cfg.NodeName).String()
		}))
	podInformer := podFactory.Core().V1().Pods()
	m.podsList = podInformer.Lister()
	svcFactory := informer.NewFactory(m.cfg.Client, 0)
	svcInformer := svcFactory.Core().V1().Services()
	m.services = svcInformer.Lister()

	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.podChanged(obj) },
		UpdateFunc: func(_, obj any) { m.podChanged(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				m.podGone(p.UID)
			}
		},
	}); err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	podFactory.Start(ctx.Done())
	svcFactory.Start(ctx.Done())
	defer podFactory.Shutdown()
	defer svcFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced, svcInformer.Informer().HasSynced) {
		return nil
	}
	// Containers and network namespaces of pods the API no longer has
	// (deleted while the agent was down) are removed now.
	m.collectOrphans(ctx)
	close(m.ready)

	gc := time.NewTicker(time.Minute)
	defer gc.Stop()
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			for _, w := range m.workers {
				w.kick()
			}
			m.mu.Unlock()
			m.wg.Wait()
			return nil
		case <-gc.C:
			m.collectOrphans(ctx)
		}
	}
}

// podChanged hands a pod's new state to its worker, starting one if needed.
func (m *Manager) podChanged(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName != m.cfg.NodeName {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.workers[pod.UID]
	if w == nil {
		w = newWorker(m, pod)
		m.workers[pod.UID] = w
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			w.run(m.ctx)
			m.mu.Lock()
			if m.workers[pod.UID] == w {
				delete(m.workers, pod.UID)
			}
			m.mu.Unlock()
		}()
	}
	w.update(pod)
}

// podGone tells a pod's worker that the API no longer has the pod.
func (m *Manager) podGone(uid types.UID) {
	m.mu.Lock()
	w := m.workers[uid]
	m.mu.Unlock()
	if w != nil {
		w.update(nil)
	}
}

// collectOrphans removes containers, network namespaces and pod
// directories whose pod is neither in the API nor handled by a worker.
func (m *Manager) collectOrphans(ctx context.Context) {
	known := func(uid types.UID) bool {
		m.mu.Lock()
		_, working := m.workers[uid]
		m.mu.Unlock()
		if working {
			return true
		}
		pods, _ := m.podsList.List(labels.Everything())
		for _, p := range pods {
			if p.UID == uid {
				return true
			}
		}
		return false
	}
	ctrs, err := m.cfg.Runtime.List(ctx)
	if err != nil {
		m.log.Warn("list containers", "err", err)
	}
	orphans := map[types.UID]bool{}
	for _, c := range ctrs {
		if uid := types.UID(c.Labels[LabelPodUID]); uid != "" && !known(uid) {
			orphans[uid] = true
		}
	}
	if uids, err := m.cfg.Network.Pods(); err == nil {
		for _, u := range uids {
			// Network namespaces are machine-wide: another agent on this
			// machine (tests run several) owns those it has no address for.
			if _, ours := m.cfg.Network.PodIP(u); ours && !known(types.UID(u)) {
				orphans[types.UID(u)] = true
			}
		}
	}
	if entries, err := os.ReadDir(m.cfg.PodsDir); err == nil {
		for _, e := range entries {
			if uid := types.UID(e.Name()); e.IsDir() && !known(uid) {
				orphans[uid] = true
			}
		}
	}
	for uid := range orphans {
		m.log.Info("removing what is left of a deleted pod", "uid", uid)
		for _, c := range ctrs {
			if types.UID(c.Labels[LabelPodUID]) == uid {
				if err := m.cfg.Runtime.Stop(ctx, c.ID, 0); err != nil {
					m.log.Warn("stop orphaned container", "id", c.ID, "err", err)
				}
				if err := m.cfg.Runtime.Remove(ctx, c.ID); err != nil {
					m.log.Warn("remove orphaned container", "id", c.ID, "err", err)
				}
			}
		}
		m.cleanupPod(ctx, uid)
	}
}

// cleanupPod removes a pod's network namespace, volumes and files.
func (m *Manager) cleanupPod(ctx context.Context, uid types.UID) {
	if err := m.cfg.Network.TeardownPod(ctx, string(uid)); err != nil {
		m.log.Warn("tear down pod network", "uid", uid, "err", err)
	}
	if err := m.cfg.Volumes.Teardown(ctx, uid); err != nil {
		m.log.Warn("tear down pod volumes", "uid", uid, "err", err)
	}
	m.prober.Remove(uid)
	// The pod's logs go with it, as upstream's kubelet removes them.
	if entries, err := os.ReadDir(m.cfg.LogDir); err == nil {
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), "_"+string(uid)) {
				if err := os.RemoveAll(filepath.Join(m.cfg.LogDir, e.Name())); err != nil {
					m.log.Warn("remove pod logs", "uid", uid, "err", err)
				}
			}
		}
	}
	if err := os.RemoveAll(m.podDir(uid)); err != nil {
		m.log.Warn("remove pod directory", "uid", uid, "err", err)
	}
}

func (m *Manager) podDir(uid types.UID) string { return filepath.Join(m.cfg.PodsDir, string(uid)) }

// execProbe runs an exec probe in a container.
func (m *Manager) execProbe(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, int, error) {
	stdout, stderr, code, err := m.cfg.Runtime.ExecSync(ctx, id, cmd, timeout)
	return append(stdout, stderr...), code, err
}

// probeChanged wakes the worker of the pod whose probe result flipped.
func (m *Manager) probeChanged(u prober.Update) {
	m.mu.Lock()
	w := m.workers[u.PodUID]
	m.mu.Unlock()
	if w != nil {
		w.probeResult(u)
	}
}
