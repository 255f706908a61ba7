package registry

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// coreTestCheck fails t unless errs lie at exactly the field paths want
// (each path counted once).
func coreTestCheck(t *testing.T, errs field.ErrorList, want ...string) {
	t.Helper()
	var got []string
	for _, e := range errs {
		got = append(got, e.Field)
	}
	slices.Sort(got)
	got = slices.Compact(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("error paths = %q, want %q\nerrors: %v", got, want, errs.ToAggregate())
	}
}

// podTestPod returns a valid, defaulted pod with one container that uses
// most of what validation looks at.
func podTestPod() *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{{Name: "data"}},
			Containers: []corev1.Container{{
				Name:         "app",
				Image:        "nginx:1.25",
				Ports:        []corev1.ContainerPort{{Name: "http", ContainerPort: 80}},
				Env:          []corev1.EnvVar{{Name: "MODE", Value: "prod"}},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("500m"),
					corev1.ResourceMemory: resource.MustParse("128Mi"),
				}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("http")}}},
			}},
		},
	}
	podDefault(pod)
	return pod
}

func TestPodPullPolicy(t *testing.T) {
	for _, tc := range []struct {
		image string
		want  corev1.PullPolicy
	}{
		{"nginx", corev1.PullAlways},
		{"nginx:latest", corev1.PullAlways},
		{"nginx:1.25", corev1.PullIfNotPresent},
		{"localhost:5000/nginx", corev1.PullAlways},
		{"localhost:5000/nginx:1.0", corev1.PullIfNotPresent},
		{"registry.k8s.io/pause@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097", corev1.PullIfNotPresent},
		{"nginx:latest@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097", corev1.PullAlways},
	} {
		if got := podPullPolicy(tc.image); got != tc.want {
			t.Errorf("podPullPolicy(%q) = %v, want %v", tc.image, got, tc.want)
		}
	}
}

func TestPodDefault(t *testing.T) {
	pod := &corev1.Pod{
		Spec: corev1.PodSpec{
			HostNetwork:              true,
			DeprecatedServiceAccount: "builder",
			Volumes: []corev1.Volume{
				{Name: "scratch"},
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
				}}}},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "nginx",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				Env:   []corev1.EnvVar{{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
				Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")},
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")},
				},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(8080)}}},
			}},
		},
		Status: corev1.PodStatus{PodIP: "10.0.0.5"},
	}
	podDefault(pod)
	spec := &pod.Spec
	c := &spec.Containers[0]
	for _, check := range []struct {
		what      string
		got, want interface{}
	}{
		{"restartPolicy", spec.RestartPolicy, corev1.RestartPolicyAlways},
		{"dnsPolicy", spec.DNSPolicy, corev1.DNSClusterFirst},
		{"terminationGracePeriodSeconds", *spec.TerminationGracePeriodSeconds, int64(30)},
		{"schedulerName", spec.SchedulerName, "default-scheduler"},
		{"securityContext set", spec.SecurityContext != nil, true},
		{"enableServiceLinks", *spec.EnableServiceLinks, true},
		{"serviceAccountName", spec.ServiceAccountName, "builder"},
		{"volumes[0] emptyDir", spec.Volumes[0].EmptyDir != nil, true},
		{"configMap defaultMode", *spec.Volumes[1].ConfigMap.DefaultMode, int32(0o644)},
		{"projected defaultMode", *spec.Volumes[2].Projected.DefaultMode, int32(0o644)},
		{"token expirationSeconds", *spec.Volumes[2].Projected.Sources[0].ServiceAccountToken.ExpirationSeconds, int64(3600)},
		{"imagePullPolicy", c.ImagePullPolicy, corev1.PullAlways},
		{"terminationMessagePath", c.TerminationMessagePath, "/dev/termination-log"},
		{"terminationMessagePolicy", c.TerminationMessagePolicy, corev1.TerminationMessageReadFile},
		{"port protocol", c.Ports[0].Protocol, corev1.ProtocolTCP},
		{"hostPort on host network", c.Ports[0].HostPort, int32(8080)},
		{"fieldRef apiVersion", c.Env[0].ValueFrom.FieldRef.APIVersion, "v1"},
		{"requested cpu kept", c.Resources.Requests.Cpu().String(), "100m"},
		{"requested memory from limit", c.Resources.Requests.Memory().String(), "1Gi"},
		{"probe timeoutSeconds", c.LivenessProbe.TimeoutSeconds, int32(1)},
		{"probe periodSeconds", c.LivenessProbe.PeriodSeconds, int32(10)},
		{"probe successThreshold", c.LivenessProbe.SuccessThreshold, int32(1)},
		{"probe failureThreshold", c.LivenessProbe.FailureThreshold, int32(3)},
		{"httpGet scheme", c.LivenessProbe.HTTPGet.Scheme, corev1.URISchemeHTTP},
		{"httpGet path", c.LivenessProbe.HTTPGet.Path, "/"},
		{"podIPs from podIP", pod.Status.PodIPs, []corev1.PodIP{{IP: "10.0.0.5"}}},
	} {
		if !equality.Semantic.DeepEqual(check.got, check.want) {
			t.Errorf("%s = %v, want %v", check.what, check.got, check.want)
		}
	}

	// Defaulting twice changes nothing.
	again := pod.DeepCopy()
	podDefault(again)
	if !equality.Semantic.DeepEqual(again, pod) {
		t.Errorf("podDefault is not idempotent")
	}
}

func TestPodValidate(t *testing.T) {
	gpu := corev1.ResourceName("example.com/gpu")
	for _, tc := range []struct {
		name   string
		mutate func(*corev1.Pod)
		want   []string
	}{
		{"valid", func(*corev1.Pod) {}, nil},
		{"no containers", func(p *corev1.Pod) {
			p.Spec.Containers = nil
		}, []string{"spec.containers"}},
		{"container name not a DNS label", func(p *corev1.Pod) {
			p.Spec.Containers[0].Name = "App_1"
		}, []string{"spec.containers[0].name"}},
		{"container name taken by an init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "app", Image: "busybox"}}
		}, []string{"spec.containers[0].name"}},
		{"no image", func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = ""
		}, []string{"spec.containers[0].image"}},
		{"port out of range", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports[0].ContainerPort = 70000
		}, []string{"spec.containers[0].ports[0].containerPort"}},
		{"unknown protocol", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports[0].Protocol = "HTTP"
		}, []string{"spec.containers[0].ports[0].protocol"}},
		{"port name not an IANA service name", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports[0].Name = "http_port"
		}, []string{"spec.containers[0].ports[0].name"}},
		{"duplicate port name", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "http", ContainerPort: 8080})
		}, []string{"spec.containers[0].ports[1].name"}},
		{"env name with =", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env[0].Name = "A=B"
		}, []string{"spec.containers[0].env[0].name"}},
		{"env name with dots and dashes", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env[0].Name = "my.env-name 1"
		}, nil},
		{"env value and valueFrom", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env[0].ValueFrom = &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}
		}, []string{"spec.containers[0].env[0].valueFrom"}},
		{"env from an unknown field", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env[0] = corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.foo"}}}
		}, []string{"spec.containers[0].env[0].valueFrom.fieldRef.fieldPath"}},
		{"env from one label", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env[0] = corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}}
		}, nil},
		{"env from a secret key without key", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env[0] = corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}}}
		}, []string{"spec.containers[0].env[0].valueFrom.secretKeyRef.key"}},
		{"mount of an unknown volume", func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts[0].Name = "missing"
		}, []string{"spec.containers[0].volumeMounts[0].name"}},
		{"mount without path", func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts[0].MountPath = ""
		}, []string{"spec.containers[0].volumeMounts[0].mountPath"}},
		{"mount subPath escapes", func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts[0].SubPath = "../etc"
		}, []string{"spec.containers[0].volumeMounts[0].subPath"}},
		{"duplicate volume", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data"})
		}, []string{"spec.volumes[1].name"}},
		{"volume name not a DNS label", func(p *corev1.Pod) {
			p.Spec.Volumes[0].Name = "Data"
			p.Spec.Containers[0].VolumeMounts[0].Name = "Data"
		}, []string{"spec.volumes[0].name"}},
		{"two volume sources", func(p *corev1.Pod) {
			p.Spec.Volumes[0].HostPath = &corev1.HostPathVolumeSource{Path: "/srv"}
		}, []string{"spec.volumes[0].emptyDir"}},
		{"secret volume without secret", func(p *corev1.Pod) {
			p.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{}}
		}, []string{"spec.volumes[0].secret.secretName"}},
		{"configMap mode too wide", func(p *corev1.Pod) {
			mode := int32(0o1000)
			p.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, DefaultMode: &mode}}
		}, []string{"spec.volumes[0].configMap.defaultMode"}},
		{"unknown restartPolicy", func(p *corev1.Pod) {
			p.Spec.RestartPolicy = "Sometimes"
		}, []string{"spec.restartPolicy"}},
		{"unknown dnsPolicy", func(p *corev1.Pod) {
			p.Spec.DNSPolicy = "Google"
		}, []string{"spec.dnsPolicy"}},
		{"dnsPolicy None without dnsConfig", func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSNone
		}, []string{"spec.dnsConfig"}},
		{"negative request", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("-1")
		}, []string{"spec.containers[0].resources.requests[cpu]"}},
		{"request above limit", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Requests[corev1.ResourceMemory] = resource.MustParse("256Mi")
		}, []string{"spec.containers[0].resources.requests[memory]"}},
		{"extended resource without limit", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Requests[gpu] = resource.MustParse("1")
		}, []string{"spec.containers[0].resources.limits"}},
		{"extended resource with limit", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits[gpu] = resource.MustParse("1")
		}, nil},
		{"unknown unprefixed resource", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits["gpu"] = resource.MustParse("1")
		}, []string{"spec.containers[0].resources.limits[gpu]", "spec.containers[0].resources.requests[gpu]"}},
		{"liveness probe needing two successes", func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{
				ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}},
				SuccessThreshold: 2,
			}
		}, []string{"spec.containers[0].livenessProbe.successThreshold"}},
		{"probe without handler", func(p *corev1.Pod) {
			p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{}
		}, []string{"spec.containers[0].readinessProbe"}},
		{"probe with two handlers", func(p *corev1.Pod) {
			p.Spec.Containers[0].ReadinessProbe.TCPSocket = &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}
		}, []string{"spec.containers[0].readinessProbe.tcpSocket"}},
		{"probe of an init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox", ReadinessProbe: p.Spec.Containers[0].ReadinessProbe}}
		}, []string{"spec.initContainers[0].readinessProbe"}},
		{"probe of a sidecar", func(p *corev1.Pod) {
			always := corev1.ContainerRestartPolicyAlways
			p.Spec.InitContainers = []corev1.Container{{Name: "proxy", Image: "envoy", RestartPolicy: &always, ReadinessProbe: p.Spec.Containers[0].ReadinessProbe}}
		}, nil},
		{"init container restartPolicy OnFailure", func(p *corev1.Pod) {
			onFailure := corev1.ContainerRestartPolicy("OnFailure")
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox", RestartPolicy: &onFailure}}
		}, []string{"spec.initContainers[0].restartPolicy"}},
		{"host port differs on the host network", func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.Containers[0].Ports[0].HostPort = 8080
		}, []string{"spec.containers[0].ports[0].hostPort"}},
		{"host port taken twice", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports[0].HostPort = 8080
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "b", Image: "busybox",
				Ports: []corev1.ContainerPort{{ContainerPort: 81, HostPort: 8080}}})
		}, []string{"spec.containers[1].ports[0].hostPort"}},
		{"toleration Exists with a value", func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Value: "v"}}
		}, []string{"spec.tolerations[0].operator"}},
		{"tolerationSeconds without NoExecute", func(p *corev1.Pod) {
			secs := int64(60)
			p.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule, TolerationSeconds: &secs}}
		}, []string{"spec.tolerations[0].effect"}},
		{"zero activeDeadlineSeconds", func(p *corev1.Pod) {
			zero := int64(0)
			p.Spec.ActiveDeadlineSeconds = &zero
		}, []string{"spec.activeDeadlineSeconds"}},
		{"nodeName not a DNS subdomain", func(p *corev1.Pod) {
			p.Spec.NodeName = "Node_1"
		}, []string{"spec.nodeName"}},
		{"unknown imagePullPolicy", func(p *corev1.Pod) {
			p.Spec.Containers[0].ImagePullPolicy = "Sometimes"
		}, []string{"spec.containers[0].imagePullPolicy"}},
		{"bad nodeSelector", func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"a b": "c"}
		}, []string{"spec.nodeSelector"}},
		{"ephemeral containers on create", func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "busybox"}}}
		}, []string{"spec.ephemeralContainers"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := podTestPod()
			tc.mutate(pod)
			podDefault(pod)
			coreTestCheck(t, podValidate(context.Background(), pod), tc.want...)
		})
	}
}

func TestPodStrategyCreate(t *testing.T) {
	// The smallest pod a user writes passes defaulting, preparation and
	// validation, metadata included.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	st := newStrategy(Pods, false)
	podDefault(pod)
	st.PrepareForCreate(t.Context(), pod)
	coreTestCheck(t, st.Validate(t.Context(), pod))
	if pod.Status.Phase != corev1.PodPending || pod.Status.QOSClass != corev1.PodQOSBestEffort {
		t.Errorf("status after create = %+v, want Pending and BestEffort", pod.Status)
	}
	pod.Name = "Web"
	coreTestCheck(t, st.Validate(t.Context(), pod), "metadata.name")
}

func TestPodQOSClass(t *testing.T) {
	res := func(cpu, mem string) corev1.ResourceList {
		l := corev1.ResourceList{}
		if cpu != "" {
			l[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			l[corev1.ResourceMemory] = resource.MustParse(mem)
		}
		return l
	}
	for _, tc := range []struct {
		name             string
		requests, limits corev1.ResourceList
		want             corev1.PodQOSClass
	}{
		{"nothing", nil, nil, corev1.PodQOSBestEffort},
		{"limits only", nil, res("1", "1Gi"), corev1.PodQOSGuaranteed},
		{"requests equal limits", res("1", "1Gi"), res("1", "1Gi"), corev1.PodQOSGuaranteed},
		{"requests below limits", res("500m", "1Gi"), res("1", "1Gi"), corev1.PodQOSBurstable},
		{"cpu limit only", nil, res("1", ""), corev1.PodQOSBurstable},
		{"requests only", res("1", ""), nil, corev1.PodQOSBurstable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "app", Image: "nginx", Resources: corev1.ResourceRequirements{Requests: tc.requests, Limits: tc.limits},
			}}}}
			podDefault(pod)
			podPrepareForCreate(t.Context(), pod)
			if pod.Status.QOSClass != tc.want {
				t.Errorf("QOSClass = %v, want %v", pod.Status.QOSClass, tc.want)
			}
		})
	}
}

func TestPodValidateUpdate(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name   string
		old    func(*corev1.Pod)
		mutate func(*corev1.Pod)
		want   []string
	}{
		{"nothing changed", nil, func(*corev1.Pod) {}, nil},
		{"new image", nil, func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = "nginx:1.26"
		}, nil},
		{"shorter deadline", func(p *corev1.Pod) {
			p.Spec.ActiveDeadlineSeconds = i64(100)
		}, func(p *corev1.Pod) {
			p.Spec.ActiveDeadlineSeconds = i64(50)
		}, nil},
		{"longer deadline", func(p *corev1.Pod) {
			p.Spec.ActiveDeadlineSeconds = i64(100)
		}, func(p *corev1.Pod) {
			p.Spec.ActiveDeadlineSeconds = i64(200)
		}, []string{"spec.activeDeadlineSeconds"}},
		{"deadline removed", func(p *corev1.Pod) {
			p.Spec.ActiveDeadlineSeconds = i64(100)
		}, func(p *corev1.Pod) {
			p.Spec.ActiveDeadlineSeconds = nil
		}, []string{"spec.activeDeadlineSeconds"}},
		{"toleration added", nil, func(p *corev1.Pod) {
			p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: "k", Operator: corev1.TolerationOpExists})
		}, nil},
		{"toleration changed", func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists}}
		}, func(p *corev1.Pod) {
			p.Spec.Tolerations[0].Key = "other"
		}, []string{"spec.tolerations"}},
		{"tolerationSeconds changed", func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: i64(300)}}
		}, func(p *corev1.Pod) {
			p.Spec.Tolerations[0].TolerationSeconds = i64(60)
		}, nil},
		{"env changed", nil, func(p *corev1.Pod) {
			p.Spec.Containers[0].Env[0].Value = "dev"
		}, []string{"spec"}},
		{"container added", nil, func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "b", Image: "busybox"})
		}, []string{"spec.containers"}},
		{"nodeName set by update", nil, func(p *corev1.Pod) {
			p.Spec.NodeName = "node-1"
		}, []string{"spec.nodeName"}},
		{"nodeName changed", func(p *corev1.Pod) {
			p.Spec.NodeName = "node-1"
		}, func(p *corev1.Pod) {
			p.Spec.NodeName = "node-2"
		}, []string{"spec.nodeName"}},
		{"scheduling gate removed", func(p *corev1.Pod) {
			p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/wait"}}
		}, func(p *corev1.Pod) {
			p.Spec.SchedulingGates = nil
		}, nil},
		{"scheduling gate added", nil, func(p *corev1.Pod) {
			p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/wait"}}
		}, []string{"spec.schedulingGates[0]"}},
		{"negative grace period set to 1", func(p *corev1.Pod) {
			p.Spec.TerminationGracePeriodSeconds = i64(-1)
		}, func(p *corev1.Pod) {
			p.Spec.TerminationGracePeriodSeconds = i64(1)
		}, nil},
		{"grace period changed", nil, func(p *corev1.Pod) {
			p.Spec.TerminationGracePeriodSeconds = i64(5)
		}, []string{"spec"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := podTestPod()
			if tc.old != nil {
				tc.old(old)
			}
			pod := old.DeepCopy()
			tc.mutate(pod)
			podDefault(pod)
			coreTestCheck(t, podValidateUpdate(t.Context(), pod, old), tc.want...)
		})
	}
}

func TestPodValidateUpdateMessage(t *testing.T) {
	old := podTestPod()
	pod := old.DeepCopy()
	pod.Spec.Containers[0].Env[0].Value = "dev"
	errs := podValidateUpdate(t.Context(), pod, old)
	if len(errs) != 1 {
		t.Fatalf("podValidateUpdate() = %v, want one error", errs)
	}
	for _, want := range []string{"pod updates may not change fields other than", "changed: spec.containers[0].env"} {
		if !strings.Contains(errs[0].Error(), want) {
			t.Errorf("podValidateUpdate() = %q, want it to contain %q", errs[0].Error(), want)
		}
	}
}

func TestPodValidateStatusUpdate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		old    func(*corev1.Pod)
		mutate func(*corev1.Pod)
		want   []string
	}{
		{"running", nil, func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.PodIP = "10.244.0.5"
			p.Status.HostIP = "192.168.1.10"
		}, nil},
		{"dual-stack pod IPs", nil, func(p *corev1.Pod) {
			p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.0.5"}, {IP: "fd00::5"}}
		}, nil},
		{"unknown phase", nil, func(p *corev1.Pod) {
			p.Status.Phase = "Done"
		}, []string{"status.phase"}},
		{"bad pod IP", nil, func(p *corev1.Pod) {
			p.Status.PodIP = "10.0.0.256"
		}, []string{"status.podIPs[0].ip"}},
		{"two IPv4 pod IPs", nil, func(p *corev1.Pod) {
			p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.0.5"}, {IP: "10.244.0.6"}}
		}, []string{"status.podIPs"}},
		{"bad nominated node", nil, func(p *corev1.Pod) {
			p.Status.NominatedNodeName = "Node 1"
		}, []string{"status.nominatedNodeName"}},
		{"terminated container restarts under Never", func(p *corev1.Pod) {
			p.Spec.RestartPolicy = corev1.RestartPolicyNever
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}}}
		}, func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
		}, []string{"status.containerStatuses[0].state"}},
		{"failed container restarts under OnFailure", func(p *corev1.Pod) {
			p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}}}
		}, func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := podTestPod()
			podPrepareForCreate(t.Context(), old)
			if tc.old != nil {
				tc.old(old)
			}
			pod := old.DeepCopy()
			tc.mutate(pod)
			podDefault(pod)
			podPrepareForStatusUpdate(t.Context(), pod, old)
			coreTestCheck(t, podValidateStatusUpdate(t.Context(), pod, old), tc.want...)
		})
	}
}

func TestPodStatusKeepsQOSClass(t *testing.T) {
	old := podTestPod()
	podPrepareForCreate(t.Context(), old)
	pod := old.DeepCopy()
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning}
	podPrepareForStatusUpdate(t.Context(), pod, old)
	if pod.Status.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("QOSClass = %q, want %q", pod.Status.QOSClass, corev1.PodQOSGuaranteed)
	}
}

func TestPodFields(t *testing.T) {
	pod := podTestPod()
	pod.Spec.NodeName = "node-1"
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}}}
	got := podFields(pod)
	for k, want := range map[string]string{
		"spec.nodeName":            "node-1",
		"spec.restartPolicy":       "Always",
		"spec.schedulerName":       "default-scheduler",
		"spec.serviceAccountName":  "",
		"spec.hostNetwork":         "false",
		"status.phase":             "Running",
		"status.podIP":             "10.244.0.5",
		"status.nominatedNodeName": "",
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("podFields()[%q] = %q, %v; want %q", k, v, ok, want)
		}
	}
}

func TestPodSummarize(t *testing.T) {
	fifteenMinutesAgo := metav1.NewTime(time.Now().Add(-15*time.Minute - time.Second))
	always := corev1.ContainerRestartPolicyAlways
	yes := true
	waiting := func(reason string) corev1.ContainerState {
		return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}
	}
	terminated := func(reason string, code int32) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: code}}
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}

	for _, tc := range []struct {
		name                   string
		mutate                 func(*corev1.Pod)
		ready, status, restart string
	}{
		{"pending", func(p *corev1.Pod) {}, "0/1", "Pending", "0"},
		{"creating", func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: waiting("ContainerCreating")}}
		}, "0/1", "ContainerCreating", "0"},
		{"running", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, State: running}}
		}, "1/1", "Running", "0"},
		{"crash looping", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{
				Name: "app", State: waiting("CrashLoopBackOff"), RestartCount: 3,
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, FinishedAt: fifteenMinutesAgo}},
			}}
		}, "0/1", "CrashLoopBackOff", "3 (15m ago)"},
		{"completed", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodSucceeded
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: terminated("Completed", 0)}}
		}, "0/1", "Completed", "0"},
		{"error", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: terminated("Error", 2)}}
		}, "0/1", "Error", "0"},
		{"killed by a signal", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Signal: 9}}}}
		}, "0/1", "Signal:9", "0"},
		{"evicted", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.Reason = "Evicted"
		}, "0/1", "Evicted", "0"},
		{"first of two init containers", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "a"}, {Name: "b"}}
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "a", State: running}, {Name: "b", State: waiting("PodInitializing")}}
		}, "0/1", "Init:0/2", "0"},
		{"second of two init containers", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "a"}, {Name: "b"}}
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "a", State: terminated("Completed", 0)}, {Name: "b", State: running}}
		}, "0/1", "Init:1/2", "0"},
		{"init container crash looping", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "a"}}
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "a", State: waiting("CrashLoopBackOff"), RestartCount: 2}}
		}, "0/1", "Init:CrashLoopBackOff", "2"},
		{"init container failed", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "a"}}
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "a", State: terminated("", 3)}}
		}, "0/1", "Init:ExitCode:3", "0"},
		{"sidecar running", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Spec.InitContainers = []corev1.Container{{Name: "proxy", RestartPolicy: &always}}
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "proxy", Started: &yes, Ready: true, State: running}}
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, State: running}}
		}, "2/2", "Running", "0"},
		{"one of two done, other not ready", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "job"})
			p.Status.ContainerStatuses = []corev1.ContainerStatus{
				{Name: "app", Ready: true, State: running},
				{Name: "job", State: terminated("Completed", 0)},
			}
		}, "1/2", "NotReady", "0"},
		{"terminating", func(p *corev1.Pod) {
			now := metav1.Now()
			p.DeletionTimestamp = &now
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, State: running}}
		}, "1/1", "Terminating", "0"},
		{"scheduling gated", func(p *corev1.Pod) {
			p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/wait"}}
			podPrepareForCreate(context.Background(), p)
		}, "0/1", "SchedulingGated", "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "web", CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour))},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
				Status:     corev1.PodStatus{Phase: corev1.PodPending},
			}
			tc.mutate(pod)
			row := podRow(pod)
			if len(row) != len(podColumns) {
				t.Fatalf("podRow() has %d cells, want %d", len(row), len(podColumns))
			}
			got := [3]interface{}{row[1], row[2], row[3]}
			want := [3]interface{}{tc.ready, tc.status, tc.restart}
			if got != want {
				t.Errorf("READY, STATUS, RESTARTS = %q, want %q", got, want)
			}
		})
	}
}

func TestPodRowWide(t *testing.T) {
	pod := podTestPod()
	pod.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}, {ConditionType: "example.com/dns"}}
	pod.Status.Conditions = []corev1.PodCondition{{Type: "example.com/lb", Status: corev1.ConditionTrue}}
	row := podRow(pod)
	want := []interface{}{"<none>", "<none>", "<none>", "1/2"}
	if got := row[5:]; !slices.Equal(got, want) {
		t.Errorf("wide cells = %q, want %q", got, want)
	}
}
