package pods

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tether/kubelet/runtime"
)

// writeStatus computes the pod's status from what the worker knows and
// writes it through pods/status when it differs from what the API has. It
// returns the phase it computed.
func (w *worker) writeStatus(ctx context.Context, pod *corev1.Pod) corev1.PodPhase {
	st := w.status(pod)
	if equality.Semantic.DeepEqual(st, &pod.Status) {
		return st.Phase
	}
	upd := pod.DeepCopy()
	upd.Status = *st
	_, err := w.m.cfg.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	switch {
	case err == nil:
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		w.kick() // a newer pod is on its way from the informer
	default:
		w.log.Warn("update pod status", "err", err)
	}
	return st.Phase
}

// status is the pod's status as this node sees it.
func (w *worker) status(pod *corev1.Pod) *corev1.PodStatus {
	st := pod.Status.DeepCopy()
	st.HostIP = w.m.cfg.NodeIP.String()
	st.HostIPs = []corev1.HostIP{{IP: st.HostIP}}
	if w.ip != nil {
		st.PodIP = w.ip.String()
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}
	if w.startTime != nil {
		st.StartTime = w.startTime
	}
	st.QOSClass = qosClass(pod)

	initDone := true
	st.InitContainerStatuses = nil
	for i := range pod.Spec.InitContainers {
		spec := &pod.Spec.InitContainers[i]
		cs := w.containerStatus(pod, spec, "PodInitializing")
		if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			initDone = false
		}
		cs.Ready = cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	waitReason := "ContainerCreating"
	if !initDone {
		waitReason = "PodInitializing"
	}
	st.ContainerStatuses = nil
	allReady := true
	for i := range pod.Spec.Containers {
		spec := &pod.Spec.Containers[i]
		cs := w.containerStatus(pod, spec, waitReason)
		if cs.State.Running != nil {
			started := w.m.prober.Started(pod.UID, spec.Name)
			cs.Started = &started
			cs.Ready = started && w.m.prober.Ready(pod.UID, spec.Name)
		} else {
			f := false
			cs.Started = &f
		}
		if !cs.Ready {
			allReady = false
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}

	st.Phase = w.phase(pod, initDone, st)
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		allReady = false
		for i := range st.ContainerStatuses {
			st.ContainerStatuses[i].Ready = false
		}
	}
	sandboxReady := w.netns != "" && !w.torn
	setCondition(st, corev1.PodReadyToStartContainers, sandboxReady, "")
	setCondition(st, corev1.PodInitialized, initDone, "ContainersNotInitialized")
	setCondition(st, corev1.ContainersReady, allReady, "ContainersNotReady")
	setCondition(st, corev1.PodReady, allReady, "ContainersNotReady")
	if !hasCondition(st, corev1.PodScheduled) {
		setCondition(st, corev1.PodScheduled, true, "")
	}
	return st
}

// phase follows the upstream rules: Pending until every container has been
// started, Succeeded or Failed once every container has exited for good,
// Running otherwise.
func (w *worker) phase(pod *corev1.Pod, initDone bool, st *corev1.PodStatus) corev1.PodPhase {
	policy := pod.Spec.RestartPolicy
	if !initDone {
		for _, cs := range st.InitContainerStatuses {
			if t := cs.State.Terminated; t != nil && t.ExitCode != 0 && policy == corev1.RestartPolicyNever {
				return corev1.PodFailed
			}
		}
		return corev1.PodPending
	}
	var running, waiting, succeeded, failed int
	for _, cs := range st.ContainerStatuses {
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			} else {
				failed++
			}
		case cs.LastTerminationState.Terminated != nil:
			// Waiting to restart after a crash: the pod runs on.
			running++
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case failed > 0 && policy == corev1.RestartPolicyAlways:
		return corev1.PodRunning
	case failed > 0 && policy == corev1.RestartPolicyOnFailure:
		return corev1.PodRunning
	case succeeded > 0 && failed == 0 && policy == corev1.RestartPolicyAlways:
		return corev1.PodRunning
	case failed > 0:
		return corev1.PodFailed
	default:
		return corev1.PodSucceeded
	}
}

// containerStatus describes one container.
func (w *worker) containerStatus(pod *corev1.Pod, spec *corev1.Container, waitReason string) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: spec.Name, Image: spec.Image}
	c := w.ctrs[spec.Name]
	if c == nil || c.id == "" {
		reason, msg := waitReason, ""
		if c != nil && c.waitReason != "" {
			reason, msg = c.waitReason, c.waitMessage
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
		return cs
	}
	cs.RestartCount = int32(c.attempt)
	cs.ImageID = c.imageID
	if cs.ImageID == "" {
		if img, err := w.m.cfg.Images.Get(spec.Image); err == nil {
			cs.ImageID = imageRef(img)
		}
	}
	cs.ContainerID = "runc://" + c.id
	if c.last != nil {
		cs.LastTerminationState.Terminated = c.last
	}
	switch {
	case c.failedStart != nil:
		if c.waitReason != "" {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waitReason, Message: c.waitMessage}
			cs.LastTerminationState.Terminated = c.failedStart
		} else {
			cs.State.Terminated = c.failedStart
		}
	case c.status.State == runtime.StateRunning:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: apiTime(c.status.StartedAt)}
	case c.status.State == runtime.StateExited:
		t := terminatedState(c.status, w.terminationMessage(pod, spec, c.attempt))
		if c.waitReason != "" {
			// Waiting for its back-off to pass: upstream shows the crash
			// as the last state and the container as waiting.
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waitReason, Message: c.waitMessage}
			cs.LastTerminationState.Terminated = t
		} else {
			cs.State.Terminated = t
		}
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	return cs
}

func hasCondition(st *corev1.PodStatus, t corev1.PodConditionType) bool {
	for _, c := range st.Conditions {
		if c.Type == t {
			return true
		}
	}
	return false
}

// setCondition sets a condition, keeping its transition time when its
// status does not change.
func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, ok bool, falseReason string) {
	status, reason := corev1.ConditionTrue, ""
	if !ok {
		status, reason = corev1.ConditionFalse, falseReason
	}
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != status {
			c.Status, c.LastTransitionTime = status, apiTime(time.Now())
		}
		c.Reason = reason
		c.Message = ""
		return
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: status, Reason: reason, LastTransitionTime: apiTime(time.Now())})
}

// qosClass is the pod's quality-of-service class by the upstream rules.
func qosClass(pod *corev1.Pod) corev1.PodQOSClass {
	requested, guaranteed := false, true
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range all {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[r]
			lim, hasLim := c.Resources.Limits[r]
			if hasReq || hasLim {
				requested = true
			}
			if !hasLim || (hasReq && req.Cmp(lim) != 0) {
				guaranteed = false
			}
		}
	}
	switch {
	case !requested:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// apiTime is t as the API returns it: to the second. Status compares equal
// to what was written only if its times carry no more than that.
func apiTime(t time.Time) metav1.Time {
	if t.IsZero() {
		return metav1.Time{}
	}
	return metav1.NewTime(t.Truncate(time.Second))
}
