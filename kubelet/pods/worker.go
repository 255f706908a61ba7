package pods

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"tether/kubelet/images"
	"tether/kubelet/prober"
	"tether/kubelet/runtime"
	"tether/kubelet/volume"
)

// defaultGracePeriod is used when a pod names none.
const defaultGracePeriod = 30 * time.Second

// resetBackOffAfter: a container that ran this long before exiting is
// restarted without the accumulated back-off.
const resetBackOffAfter = 10 * time.Minute

// ctr is what a worker knows about one container of its pod.
type ctr struct {
	name string
	init bool

	id      string // current runtime container; "" before the first start
	attempt int    // restart count of id
	status  runtime.Container
	imageID string

	last   *corev1.ContainerStateTerminated // the previous instance, for lastState
	lastID string                           // its runtime container, kept for `logs --previous`

	backoff   time.Duration // wait before the next restart
	notBefore time.Time     // no start before this

	waitReason, waitMessage string

	// failedStart is set when the runtime could not start id; it reads
	// as terminated with exit code 128.
	failedStart *corev1.ContainerStateTerminated

	livenessFailed string // container ID whose liveness probe failed
}

func (c *ctr) running() bool {
	return c.id != "" && c.failedStart == nil && c.status.State == runtime.StateRunning
}
func (c *ctr) exited() bool {
	return c.id != "" && (c.failedStart != nil || c.status.State == runtime.StateExited)
}
func (c *ctr) exitCode() int {
	if c.failedStart != nil {
		return int(c.failedStart.ExitCode)
	}
	return c.status.ExitCode
}

// worker runs one pod. Its fields below mu are shared with the informer
// callbacks; the rest belong to the run goroutine.
type worker struct {
	m   *Manager
	uid types.UID
	log *slog.Logger

	mu      sync.Mutex
	pod     *corev1.Pod // latest from the API; nil once the API has no pod
	wake    chan struct{}
	liveFor map[string]string // container name → ID that failed liveness
	pub     published         // for the kubelet API

	adopted   bool
	ctrs      map[string]*ctr
	netns     string
	ip        net.IP
	mounts    map[string]volume.Mount
	files     bool // hosts and resolv.conf written
	grace     time.Duration
	killed    bool // every container stopped for deletion
	torn      bool // network torn down (terminal pod)
	pullUntil map[string]time.Time
	pullWait  map[string]time.Duration
	pullError map[string]string
	startTime *metav1.Time
}

// newWorker returns the worker of pod. It holds the pod from the start:
// its run goroutine may sync before podChanged hands it anything, and a
// worker without a pod removes it.
func newWorker(m *Manager, pod *corev1.Pod) *worker {
	return &worker{
		m:         m,
		uid:       pod.UID,
		pod:       pod,
		log:       m.log.With("pod", pod.Namespace+"/"+pod.Name),
		wake:      make(chan struct{}, 1),
		liveFor:   map[string]string{},
		ctrs:      map[string]*ctr{},
		grace:     defaultGracePeriod,
		pullUntil: map[string]time.Time{},
		pullWait:  map[string]time.Duration{},
		pullError: map[string]string{},
	}
}

func (w *worker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	w.kick()
}

func (w *worker) kick() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) probeResult(u prober.Update) {
	if (u.Kind == prober.Liveness || u.Kind == prober.Startup) && u.Result == prober.Failure {
		w.mu.Lock()
		w.liveFor[u.Container] = u.ContainerID
		w.mu.Unlock()
	}
	w.kick()
}

// run syncs the pod whenever it changes, a probe flips or the resync
// period passes, until the pod is gone and cleaned up or ctx ends.
func (w *worker) run(ctx context.Context) {
	t := time.NewTicker(w.m.cfg.ResyncPeriod)
	defer t.Stop()
	for {
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		pod := w.pod
		w.mu.Unlock()
		if w.sync(ctx, pod) {
			return
		}
		w.publish(pod)
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-t.C:
		}
	}
}

// sync moves the pod one step towards its desired state. It returns true
// when the pod is gone from the API and everything of it is removed.
func (w *worker) sync(ctx context.Context, pod *corev1.Pod) (done bool) {
	if !w.adopted {
		if err := w.adopt(ctx, pod); err != nil {
			w.log.Warn("adopt containers", "err", err)
			return false
		}
		w.adopted = true
	}
	if pod == nil {
		w.killAll(ctx, nil, 0)
		for _, c := range w.ctrs {
			for _, id := range []string{c.id, c.lastID} {
				if id != "" {
					if err := w.m.cfg.Runtime.Remove(ctx, id); err != nil {
						w.log.Warn("remove container", "id", id, "err", err)
					}
				}
			}
		}
		w.m.cleanupPod(ctx, w.uid)
		w.log.Info("pod removed")
		return true
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		w.grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	w.refresh(ctx)

	if pod.DeletionTimestamp != nil {
		grace := w.grace
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
		if !w.killed {
			w.killAll(ctx, pod, grace)
			w.killed = true
			w.refresh(ctx)
			w.writeStatus(ctx, pod)
		}
		// All containers have stopped: the pod may go. The kubelet
		// finishes the graceful deletion the API server started.
		err := w.m.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			w.log.Warn("delete pod", "err", err)
		}
		return false
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		w.killAll(ctx, pod, w.grace)
		w.teardownNetwork(ctx)
		return false
	}

	w.syncRunning(ctx, pod)
	w.refresh(ctx)
	if phase := w.writeStatus(ctx, pod); phase == corev1.PodSucceeded || phase == corev1.PodFailed {
		w.teardownNetwork(ctx)
	}
	return false
}

// adopt rebuilds what the worker knows from the runtime's containers of
// this pod: the newest instance of each container is current, the one
// before it is the previous instance, older ones are removed.
func (w *worker) adopt(ctx context.Context, pod *corev1.Pod) error {
	all, err := w.m.cfg.Runtime.List(ctx)
	if err != nil {
		return err
	}
	byName := map[string][]runtime.Container{}
	for _, c := range all {
		if types.UID(c.Labels[LabelPodUID]) == w.uid {
			byName[c.Labels[LabelContainer]] = append(byName[c.Labels[LabelContainer]], c)
		}
	}
	for name, list := range byName {
		slices.SortFunc(list, func(a, b runtime.Container) int { return attemptOf(b) - attemptOf(a) })
		c := w.container(name, list[0].Labels[LabelInit] == "true")
		c.id, c.attempt, c.status = list[0].ID, attemptOf(list[0]), list[0]
		if len(list) > 1 {
			c.lastID = list[1].ID
			c.last = terminatedState(list[1], "")
		}
		for _, old := range list[min(2, len(list)):] {
			if err := w.m.cfg.Runtime.Remove(ctx, old.ID); err != nil {
				w.log.Warn("remove old container", "id", old.ID, "err", err)
			}
		}
		w.log.Info("adopted container", "container", name, "id", c.id, "state", c.status.State)
	}
	if len(byName) > 0 && pod != nil && pod.Status.StartTime != nil {
		w.startTime = pod.Status.StartTime
	}
	return nil
}

func attemptOf(c runtime.Container) int {
	n, _ := strconv.Atoi(c.Labels[LabelAttempt])
	return n
}

func (w *worker) container(name string, init bool) *ctr {
	c := w.ctrs[name]
	if c == nil {
		c = &ctr{name: name, init: init}
		w.ctrs[name] = c
	}
	return c
}

// refresh reads the state of every current container from the runtime.
func (w *worker) refresh(ctx context.Context) {
	for _, c := range w.ctrs {
		if c.id == "" || c.failedStart != nil {
			continue
		}
		st, err := w.m.cfg.Runtime.Status(ctx, c.id)
		if err != nil {
			if errors.Is(err, runtime.ErrNotFound) {
				// Removed behind our back: the container is as good as
				// exited; it is started again by the restart policy.
				c.status = runtime.Container{ID: c.id, State: runtime.StateExited, ExitCode: 137, Message: "container vanished"}
			}
			continue
		}
		c.status = st
	}
}

// syncRunning starts what should run: the sandbox, the volumes, the init
// containers one after another, then all regular containers.
func (w *worker) syncRunning(ctx context.Context, pod *corev1.Pod) {
	if w.startTime == nil {
		if pod.Status.StartTime != nil {
			w.startTime = pod.Status.StartTime
		} else {
			now := apiTime(time.Now())
			w.startTime = &now
		}
	}
	if !w.sandbox(ctx, pod) {
		return
	}
	for i := range pod.Spec.InitContainers {
		spec := &pod.Spec.InitContainers[i]
		c := w.container(spec.Name, true)
		switch {
		case c.exited() && c.exitCode() == 0:
			continue
		case c.running():
			return
		case c.exited() && pod.Spec.RestartPolicy == corev1.RestartPolicyNever:
			return // the pod has failed
		default:
			w.start(ctx, pod, spec, c)
			return
		}
	}
	w.mu.Lock()
	live := w.liveFor
	w.liveFor = map[string]string{}
	w.mu.Unlock()
	running := map[string]prober.RunningContainer{}
	for i := range pod.Spec.Containers {
		spec := &pod.Spec.Containers[i]
		c := w.container(spec.Name, false)
		switch {
		case c.running():
			if id := live[spec.Name]; id != "" && id == c.id {
				w.m.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Container %s failed its liveness or startup probe, will be restarted", spec.Name)
				w.stopContainer(ctx, pod, spec, c, w.grace)
				w.refresh(ctx)
				if !c.running() {
					w.restart(ctx, pod, spec, c)
				}
				continue
			}
			running[spec.Name] = prober.RunningContainer{ID: c.id, StartedAt: c.status.StartedAt}
		case c.exited():
			w.restart(ctx, pod, spec, c)
		default:
			w.start(ctx, pod, spec, c)
		}
		if c.running() {
			running[spec.Name] = prober.RunningContainer{ID: c.id, StartedAt: c.status.StartedAt}
		}
	}
	probed := pod
	if w.ip != nil && pod.Status.PodIP != w.ip.String() {
		probed = pod.DeepCopy()
		probed.Status.PodIP = w.ip.String()
	}
	w.m.prober.Sync(probed, running)
}

// restart starts an exited container again if the restart policy asks for
// it and its back-off has passed.
func (w *worker) restart(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *ctr) {
	switch pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return
	case corev1.RestartPolicyOnFailure:
		if c.exitCode() == 0 {
			return
		}
	}
	finished := c.status.FinishedAt
	if c.failedStart != nil {
		finished = c.failedStart.FinishedAt.Time
	}
	if !c.status.StartedAt.IsZero() && finished.Sub(c.status.StartedAt) > resetBackOffAfter {
		c.backoff = 0
	}
	if wait := finished.Add(c.backoff); time.Now().Before(wait) {
		if c.waitReason != "CrashLoopBackOff" {
			w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)", spec.Name, pod.Name, pod.Namespace, pod.UID)
			time.AfterFunc(time.Until(wait), w.kick)
		}
		c.waitReason = "CrashLoopBackOff"
		c.waitMessage = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", c.backoff, spec.Name, pod.Name, pod.Namespace, pod.UID)
		return
	}
	w.start(ctx, pod, spec, c)
	c.backoff = min(max(w.m.cfg.InitialBackOff, 2*c.backoff), w.m.cfg.MaxBackOff)
}

// start starts the next instance of a container: it pulls the image,
// resolves the environment and asks the runtime to run it.
func (w *worker) start(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *ctr) {
	img, ok := w.image(ctx, pod, spec, c)
	if !ok {
		return
	}
	env, warnings, err := w.environment(ctx, pod, spec)
	for _, warn := range warnings {
		w.m.recorder.Event(pod, corev1.EventTypeWarning, "InvalidEnvironmentVariableNames", warn)
	}
	if err != nil {
		c.waitReason, c.waitMessage = "CreateContainerConfigError", err.Error()
		w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return
	}
	attempt := 0
	if c.id != "" {
		attempt = c.attempt + 1
	}
	rs, err := w.containerSpec(pod, spec, c, img, env, attempt)
	if err != nil {
		c.waitReason, c.waitMessage = "CreateContainerConfigError", err.Error()
		w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return
	}
	// The instance before the current one goes; the current one becomes
	// the previous (its log stays for `kubectl logs --previous`).
	if c.id != "" {
		if c.lastID != "" {
			if err := w.m.cfg.Runtime.Remove(ctx, c.lastID); err != nil {
				w.log.Warn("remove old container", "id", c.lastID, "err", err)
			}
		}
		if c.failedStart != nil {
			c.last = c.failedStart
		} else {
			c.last = terminatedState(c.status, w.terminationMessage(pod, spec, c.attempt))
		}
		c.lastID = c.id
	}
	c.id, c.attempt, c.imageID = rs.ID, attempt, imageRef(img)
	c.failedStart = nil
	c.status = runtime.Container{ID: rs.ID, State: runtime.StateCreated}
	c.waitReason, c.waitMessage = "", ""
	if err := w.m.cfg.Runtime.Start(ctx, rs); err != nil {
		now := apiTime(time.Now())
		c.failedStart = &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: err.Error(),
			StartedAt: now, FinishedAt: now, ContainerID: "runc://" + rs.ID}
		w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		w.kick()
		return
	}
	if st, err := w.m.cfg.Runtime.Status(ctx, rs.ID); err == nil {
		c.status = st
	}
	w.m.recorder.Eventf(pod, corev1.EventTypeNormal, "Started", "Started container %s", spec.Name)
}

// image returns the container's image, pulling it as imagePullPolicy says.
func (w *worker) image(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *ctr) (*images.Image, bool) {
	store := w.m.cfg.Images
	img, err := store.Get(spec.Image)
	present := err == nil
	pull := spec.ImagePullPolicy == corev1.PullAlways || (!present && spec.ImagePullPolicy != corev1.PullNever)
	if !pull {
		if present {
			return img, true
		}
		c.waitReason = "ErrImageNeverPull"
		c.waitMessage = fmt.Sprintf("Container image %q is not present with pull policy of Never", spec.Image)
		w.m.recorder.Event(pod, corev1.EventTypeWarning, "ErrImageNeverPull", c.waitMessage)
		return nil, false
	}
	if until := w.pullUntil[spec.Image]; time.Now().Before(until) {
		c.waitReason = "ImagePullBackOff"
		c.waitMessage = fmt.Sprintf("Back-off pulling image %q: %s", spec.Image, w.pullError[spec.Image])
		return nil, false
	}
	creds := w.pullCredentials(ctx, pod)
	w.m.recorder.Eventf(pod, corev1.EventTypeNormal, "Pulling", "Pulling image %q", spec.Image)
	began := time.Now()
	var lastEvent time.Time
	img, err = store.Pull(ctx, spec.Image, creds, func(msg string) {
		if time.Since(lastEvent) >= 2*time.Second {
			lastEvent = time.Now()
			w.m.recorder.Event(pod, corev1.EventTypeNormal, "Pulling", msg)
		}
	})
	if err != nil {
		wait := min(max(w.m.cfg.InitialBackOff, 2*w.pullWait[spec.Image]), w.m.cfg.MaxBackOff)
		w.pullWait[spec.Image] = wait
		w.pullUntil[spec.Image] = time.Now().Add(wait)
		w.pullError[spec.Image] = err.Error()
		c.waitReason = "ErrImagePull"
		c.waitMessage = fmt.Sprintf("failed to pull image %q: %v", spec.Image, err)
		w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Failed to pull image %q: %v", spec.Image, err)
		time.AfterFunc(wait, w.kick)
		return nil, false
	}
	delete(w.pullUntil, spec.Image)
	delete(w.pullWait, spec.Image)
	w.m.recorder.Eventf(pod, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s (image size %d bytes)",
		spec.Image, time.Since(began).Round(time.Millisecond), img.Size)
	return img, true
}

// pullCredentials reads the pod's image pull secrets.
func (w *worker) pullCredentials(ctx context.Context, pod *corev1.Pod) []images.Credential {
	var creds []images.Credential
	for _, ref := range pod.Spec.ImagePullSecrets {
		s, err := w.m.cfg.Client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedToRetrieveImagePullSecret",
				"Unable to retrieve image pull secret %s/%s: %v", pod.Namespace, ref.Name, err)
			continue
		}
		for _, key := range []string{corev1.DockerConfigJsonKey, corev1.DockerConfigKey} {
			if data := s.Data[key]; len(data) > 0 {
				c, err := images.CredentialsFromDockerConfigJSON(data)
				if err != nil {
					w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedToRetrieveImagePullSecret",
						"Image pull secret %s/%s: %v", pod.Namespace, ref.Name, err)
					continue
				}
				creds = append(creds, c...)
			}
		}
	}
	return creds
}

// sandbox makes the pod's network namespace, volumes and files once.
func (w *worker) sandbox(ctx context.Context, pod *corev1.Pod) bool {
	if w.netns == "" {
		if pod.Spec.HostNetwork {
			w.netns = fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
			w.ip = w.m.cfg.NodeIP
		} else {
			netns, ip, err := w.m.cfg.Network.SetupPod(ctx, string(pod.UID), pod.Namespace, pod.Name)
			if err != nil {
				w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
				return false
			}
			w.netns, w.ip = netns, ip
		}
		w.torn = false
	}
	if w.mounts == nil {
		mounts, err := w.m.cfg.Volumes.Setup(ctx, pod)
		if err != nil {
			w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed: %v", err)
			time.AfterFunc(2*time.Second, w.kick)
			return false
		}
		w.mounts = mounts
	}
	if !w.files {
		if err := w.writeFiles(pod); err != nil {
			w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to write pod files: %v", err)
			return false
		}
		w.files = true
	}
	return true
}

// teardownNetwork releases the network of a pod that has finished.
func (w *worker) teardownNetwork(ctx context.Context) {
	if w.torn {
		return
	}
	if err := w.m.cfg.Network.TeardownPod(ctx, string(w.uid)); err != nil {
		w.log.Warn("tear down network", "err", err)
		return
	}
	w.torn = true
}

// killAll stops every running container of the pod within grace, running
// preStop hooks first.
func (w *worker) killAll(ctx context.Context, pod *corev1.Pod, grace time.Duration) {
	var wg sync.WaitGroup
	for _, c := range w.ctrs {
		if !c.running() {
			continue
		}
		var spec *corev1.Container
		if pod != nil {
			spec = findContainer(pod, c.name)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.stopContainer(ctx, pod, spec, c, grace)
		}()
	}
	wg.Wait()
}

// stopContainer runs the preStop hook, then stops the container within
// what is left of grace.
func (w *worker) stopContainer(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *ctr, grace time.Duration) {
	deadline := time.Now().Add(grace)
	if pod != nil && spec != nil {
		w.m.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Stopping container %s", spec.Name)
		if h := spec.Lifecycle; h != nil && h.PreStop != nil && h.PreStop.Exec != nil && grace > 0 {
			if _, _, code, err := w.m.cfg.Runtime.ExecSync(ctx, c.id, h.PreStop.Exec.Command, grace); err != nil || code != 0 {
				w.m.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: exit code %d %v", code, err)
			}
		}
	}
	if err := w.m.cfg.Runtime.Stop(ctx, c.id, max(0, time.Until(deadline))); err != nil {
		w.log.Warn("stop container", "container", c.name, "err", err)
	}
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// containerID names a pod's container instance for the runtime: stable for
// (pod, container, attempt), short, and free of characters runc refuses.
func containerID(uid types.UID, name string, attempt int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", uid, name, attempt)))
	return hex.EncodeToString(sum[:16])
}

// logPath is where an instance's log goes, in the upstream layout.
func (w *worker) logPath(pod *corev1.Pod, name string, attempt int) string {
	return filepath.Join(w.m.cfg.LogDir, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID), name, fmt.Sprintf("%d.log", attempt))
}

func imageRef(img *images.Image) string {
	if len(img.RepoDigests) > 0 {
		return img.RepoDigests[0]
	}
	return img.ID
}

// terminatedState describes an exited runtime container.
func terminatedState(st runtime.Container, message string) *corev1.ContainerStateTerminated {
	reason := "Completed"
	switch {
	case st.OOMKilled:
		reason = "OOMKilled"
	case st.ExitCode != 0:
		reason = "Error"
	}
	if message == "" {
		message = st.Message
	}
	return &corev1.ContainerStateTerminated{
		ExitCode:    int32(st.ExitCode),
		Reason:      reason,
		Message:     message,
		StartedAt:   apiTime(st.StartedAt),
		FinishedAt:  apiTime(st.FinishedAt),
		ContainerID: "runc://" + st.ID,
	}
}
