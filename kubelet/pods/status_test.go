package pods

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"tether/kubelet/images"
	"tether/kubelet/runtime"
)

func running() corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

func exited(code int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}
}

func backingOff(code int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{
		State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}},
	}
}

func waiting() corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
}

func TestPhase(t *testing.T) {
	w := &worker{}
	cases := []struct {
		name     string
		policy   corev1.RestartPolicy
		initDone bool
		init     []corev1.ContainerStatus
		ctrs     []corev1.ContainerStatus
		want     corev1.PodPhase
	}{
		{"init running", corev1.RestartPolicyAlways, false, []corev1.ContainerStatus{running()}, []corev1.ContainerStatus{waiting()}, corev1.PodPending},
		{"init failed, never restart", corev1.RestartPolicyNever, false, []corev1.ContainerStatus{exited(1)}, []corev1.ContainerStatus{waiting()}, corev1.PodFailed},
		{"init failed, restarts", corev1.RestartPolicyOnFailure, false, []corev1.ContainerStatus{exited(1)}, []corev1.ContainerStatus{waiting()}, corev1.PodPending},
		{"one waiting", corev1.RestartPolicyAlways, true, nil, []corev1.ContainerStatus{running(), waiting()}, corev1.PodPending},
		{"all running", corev1.RestartPolicyAlways, true, nil, []corev1.ContainerStatus{running(), running()}, corev1.PodRunning},
		{"crash loop", corev1.RestartPolicyAlways, true, nil, []corev1.ContainerStatus{backingOff(3)}, corev1.PodRunning},
		{"all done, never", corev1.RestartPolicyNever, true, nil, []corev1.ContainerStatus{exited(0), exited(0)}, corev1.PodSucceeded},
		{"one failed, never", corev1.RestartPolicyNever, true, nil, []corev1.ContainerStatus{exited(0), exited(2)}, corev1.PodFailed},
		{"failed, on failure", corev1.RestartPolicyOnFailure, true, nil, []corev1.ContainerStatus{exited(2)}, corev1.PodRunning},
		{"done, on failure", corev1.RestartPolicyOnFailure, true, nil, []corev1.ContainerStatus{exited(0)}, corev1.PodSucceeded},
		{"done, always", corev1.RestartPolicyAlways, true, nil, []corev1.ContainerStatus{exited(0)}, corev1.PodRunning},
		{"one running one done, never", corev1.RestartPolicyNever, true, nil, []corev1.ContainerStatus{running(), exited(0)}, corev1.PodRunning},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: tc.policy}}
			st := &corev1.PodStatus{InitContainerStatuses: tc.init, ContainerStatuses: tc.ctrs}
			if got := w.phase(pod, tc.initDone, st); got != tc.want {
				t.Errorf("phase = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestQOSClass(t *testing.T) {
	rl := func(cpu, mem string) corev1.ResourceList {
		l := corev1.ResourceList{}
		if cpu != "" {
			l[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			l[corev1.ResourceMemory] = resource.MustParse(mem)
		}
		return l
	}
	pod := func(req, lim corev1.ResourceList) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: req, Limits: lim}}}}}
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want corev1.PodQOSClass
	}{
		{"nothing", pod(nil, nil), corev1.PodQOSBestEffort},
		{"limits only", pod(nil, rl("1", "1Gi")), corev1.PodQOSGuaranteed},
		{"equal", pod(rl("1", "1Gi"), rl("1", "1Gi")), corev1.PodQOSGuaranteed},
		{"requests only", pod(rl("1", ""), nil), corev1.PodQOSBurstable},
		{"less than limit", pod(rl("500m", "1Gi"), rl("1", "1Gi")), corev1.PodQOSBurstable},
		{"memory limit only", pod(nil, rl("", "1Gi")), corev1.PodQOSBurstable},
	} {
		if got := qosClass(tc.pod); got != tc.want {
			t.Errorf("%s: qosClass = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	img := &images.Image{Entrypoint: []string{"/entry"}, Cmd: []string{"default", "$(X)"}}
	env := []string{"X=1", "Y=two"}
	for _, tc := range []struct {
		name          string
		command, args []string
		want          []string
	}{
		{"image defaults, not expanded", nil, nil, []string{"/entry", "default", "$(X)"}},
		{"args replace cmd", nil, []string{"a", "$(Y)"}, []string{"/entry", "a", "two"}},
		{"command replaces both", []string{"sh", "-c"}, []string{"echo $(X) $$(X) $(NOPE)"}, []string{"sh", "-c", "echo 1 $(X) $(NOPE)"}},
	} {
		spec := &corev1.Container{Command: tc.command, Args: tc.args}
		if got := commandLine(spec, img, env); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: commandLine = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestTerminatedState(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	for _, tc := range []struct {
		st     runtime.Container
		reason string
	}{
		{runtime.Container{ExitCode: 0}, "Completed"},
		{runtime.Container{ExitCode: 3}, "Error"},
		{runtime.Container{ExitCode: 137, OOMKilled: true}, "OOMKilled"},
	} {
		tc.st.ID, tc.st.StartedAt, tc.st.FinishedAt = "abc", at, at
		got := terminatedState(tc.st, "")
		if got.Reason != tc.reason || got.ExitCode != int32(tc.st.ExitCode) || got.ContainerID != "runc://abc" {
			t.Errorf("terminatedState(%+v) = %+v, want reason %s", tc.st, got, tc.reason)
		}
		// Times carry whole seconds, as the API stores them, so that a
		// status read back compares equal to the one written.
		if got.StartedAt.Nanosecond() != 0 || got.FinishedAt.Nanosecond() != 0 {
			t.Errorf("times not truncated to the second: %v", got.StartedAt)
		}
	}
}

func TestContainerIDStable(t *testing.T) {
	a, b := containerID("uid", "c", 0), containerID("uid", "c", 1)
	if a == b || len(a) != 32 || a != containerID("uid", "c", 0) {
		t.Errorf("containerID not stable and distinct per attempt: %s %s", a, b)
	}
}
