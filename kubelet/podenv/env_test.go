package podenv

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// fakeSources serves ConfigMaps and Secrets from maps keyed "ns/name" and
// counts the Gets.
type fakeSources struct {
	configMaps map[string]map[string]string
	secrets    map[string]map[string][]byte
	gets       int
}

var _ Sources = (*fakeSources)(nil)

func (f *fakeSources) ConfigMap(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	f.gets++
	data, ok := f.configMaps[ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
	}
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}, nil
}

func (f *fakeSources) Secret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	f.gets++
	data, ok := f.secrets[ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}, nil
}

func ptr[T any](v T) *T { return &v }

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   "ns1",
			Name:        "web-0",
			UID:         "1234-5678",
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"note": "a \"quoted\" value"},
		},
		Spec: corev1.PodSpec{
			NodeName:           "node-a",
			ServiceAccountName: "robot",
			EnableServiceLinks: ptr(false),
			Containers: []corev1.Container{
				{Name: "app"},
				{Name: "side", Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
				}},
			},
		},
	}
}

func TestEnvironment(t *testing.T) {
	src := func() *fakeSources {
		return &fakeSources{
			configMaps: map[string]map[string]string{
				"ns1/cfg":   {"B_KEY": "from-cfg", "A_KEY": "a", "1bad": "x", "bad.key-ok": "y", "SHARED": "cfg"},
				"ns1/cfg2":  {"SHARED": "cfg2", "OTHER": "o"},
				"other/cfg": {"NOPE": "wrong namespace"},
			},
			secrets: map[string]map[string][]byte{
				"ns1/creds": {"password": []byte("s3cr3t\n"), "user": []byte("admin")},
			},
		}
	}
	info := PodInfo{
		PodIPs:  []string{"10.244.1.5", "fd00::5"},
		HostIP:  "192.168.0.10",
		HostIPs: []string{"192.168.0.10", "fd00:1::10"},
		NodeAllocatable: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("3500m"),
			corev1.ResourceMemory: resource.MustParse("8Gi"),
		},
	}
	kube := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{
			{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP},
		}},
	}

	tests := []struct {
		name      string
		mutate    func(*corev1.Pod, *corev1.Container)
		services  []*corev1.Service
		want      []string // exact, in order
		wantHas   []string // subset, any order
		warnings  []string
		errSubstr string
	}{
		{
			name: "literal values and expansion",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.Env = []corev1.EnvVar{
					{Name: "A", Value: "one"},
					{Name: "B", Value: "$(A)-two"},
					{Name: "C", Value: "$(LATER) $$(A) $(A"},
					{Name: "LATER", Value: "x"},
					{Name: "EMPTY"},
					{Name: "A", Value: "again-$(A)"},
				}
			},
			want: []string{"A=again-one", "B=one-two", "C=$(LATER) $(A) $(A", "LATER=x", "EMPTY="},
		},
		{
			name:     "service links always include the master service",
			services: []*corev1.Service{kube},
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.Env = []corev1.EnvVar{
					{Name: "API", Value: "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT_HTTPS)"},
					{Name: "KUBERNETES_SERVICE_PORT", Value: "8443"},
				}
			},
			want: []string{
				"KUBERNETES_SERVICE_HOST=10.96.0.1",
				"KUBERNETES_SERVICE_PORT=8443",
				"KUBERNETES_SERVICE_PORT_HTTPS=443",
				"KUBERNETES_PORT=tcp://10.96.0.1:443",
				"KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
				"KUBERNETES_PORT_443_TCP_PROTO=tcp",
				"KUBERNETES_PORT_443_TCP_PORT=443",
				"KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
				"API=https://10.96.0.1:443",
			},
		},
		{
			name: "envFrom with prefix, invalid keys, env overrides",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.EnvFrom = []corev1.EnvFromSource{
					{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
					{Prefix: "S_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}}},
					{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg2"}}},
				}
				c.Env = []corev1.EnvVar{
					{Name: "A_KEY", Value: "env-$(A_KEY)"},
					{Name: "Z", Value: "$(S_user)"},
				}
			},
			want: []string{
				"A_KEY=env-a", "B_KEY=from-cfg", "SHARED=cfg2", "bad.key-ok=y",
				"S_password=s3cr3t\n", "S_user=admin", "OTHER=o", "Z=admin",
			},
			warnings: []string{"Keys [1bad] from the EnvFrom configMap ns1/cfg were skipped since they are considered invalid environment variable names."},
		},
		{
			name: "prefix makes a key valid",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.EnvFrom = []corev1.EnvFromSource{
					{Prefix: "p_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
				}
			},
			want: []string{"p_1bad=x", "p_A_KEY=a", "p_B_KEY=from-cfg", "p_SHARED=cfg", "p_bad.key-ok=y"},
		},
		{
			name: "optional missing sources are skipped",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.EnvFrom = []corev1.EnvFromSource{
					{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Optional: ptr(true)}},
					{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Optional: ptr(true)}},
				}
				c.Env = []corev1.EnvVar{
					{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k", Optional: ptr(true)}}},
					{Name: "B", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "missing", Optional: ptr(true)}}},
					{Name: "C", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "missing", Optional: ptr(true)}}},
					{Name: "D", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "user"}}},
				}
			},
			want: []string{"D=admin"},
		},
		{
			name: "required configmap missing",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.EnvFrom = []corev1.EnvFromSource{
					{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}},
				}
			},
			errSubstr: `configmaps "nope" not found`,
		},
		{
			name: "required secret missing",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.Env = []corev1.EnvVar{{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}}}
			},
			errSubstr: `secrets "nope" not found`,
		},
		{
			name: "required configmap key missing",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.Env = []corev1.EnvVar{{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "K"}}}}
			},
			errSubstr: "couldn't find key K in ConfigMap ns1/cfg",
		},
		{
			name: "required secret key missing",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.Env = []corev1.EnvVar{{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "K"}}}}
			},
			errSubstr: "couldn't find key K in Secret ns1/creds",
		},
		{
			name: "downward API fields",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				for _, f := range []string{
					"metadata.name", "metadata.namespace", "metadata.uid",
					"metadata.labels['app']", "metadata.labels['missing']", "metadata.annotations['note']",
					"metadata.labels", "spec.nodeName", "spec.serviceAccountName",
					"status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
				} {
					c.Env = append(c.Env, corev1.EnvVar{Name: "F_" + strings.NewReplacer(".", "_", "['", "_", "']", "").Replace(f),
						ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: f}}})
				}
			},
			want: []string{
				"F_metadata_name=web-0",
				"F_metadata_namespace=ns1",
				"F_metadata_uid=1234-5678",
				"F_metadata_labels_app=web",
				"F_metadata_labels_missing=",
				`F_metadata_annotations_note=a "quoted" value`,
				"F_metadata_labels=app=\"web\"\ntier=\"front\"",
				"F_spec_nodeName=node-a",
				"F_spec_serviceAccountName=robot",
				"F_status_hostIP=192.168.0.10",
				"F_status_hostIPs=192.168.0.10,fd00:1::10",
				"F_status_podIP=10.244.1.5",
				"F_status_podIPs=10.244.1.5,fd00::5",
			},
		},
		{
			name: "unsupported field path",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.hostname"}}}}
			},
			errSubstr: "unsupported fieldPath: spec.hostname",
		},
		{
			name: "resource fields with divisors and allocatable defaults",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.Resources = corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1250m")},
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("100Mi")},
				}
				rf := func(name, res, div, ctr string) corev1.EnvVar {
					sel := &corev1.ResourceFieldSelector{Resource: res, ContainerName: ctr}
					if div != "" {
						sel.Divisor = resource.MustParse(div)
					}
					return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: sel}}
				}
				c.Env = []corev1.EnvVar{
					rf("CPU_LIMIT", "limits.cpu", "", ""),
					rf("CPU_LIMIT_M", "limits.cpu", "1m", ""),
					rf("CPU_REQ", "requests.cpu", "", ""),
					rf("CPU_REQ_M", "requests.cpu", "1m", "app"),
					rf("MEM_LIMIT_MI", "limits.memory", "1Mi", ""),
					rf("MEM_REQ", "requests.memory", "", ""),
					rf("MEM_REQ_MI", "requests.memory", "1Mi", ""),
					rf("MEM_REQ_GI", "requests.memory", "1Gi", ""),
					rf("SIDE_MEM_MI", "limits.memory", "1Mi", "side"),
					rf("SIDE_CPU", "limits.cpu", "", "side"),
					rf("EPHEMERAL", "limits.ephemeral-storage", "", ""),
				}
			},
			want: []string{
				"CPU_LIMIT=2", "CPU_LIMIT_M=1250", "CPU_REQ=1", "CPU_REQ_M=250",
				"MEM_LIMIT_MI=8192", "MEM_REQ=104857600", "MEM_REQ_MI=100", "MEM_REQ_GI=1",
				"SIDE_MEM_MI=64", "SIDE_CPU=4", "EPHEMERAL=0",
			},
		},
		{
			name: "unsupported resource",
			mutate: func(_ *corev1.Pod, c *corev1.Container) {
				c.Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.gpu"}}}}
			},
			errSubstr: "unsupported container resource: limits.gpu",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod()
			c := &pod.Spec.Containers[0]
			if tt.mutate != nil {
				tt.mutate(pod, c)
			}
			env, warnings, err := Environment(t.Context(), src(), pod, c, tt.services, info)
			if tt.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errSubstr) {
					t.Fatalf("Environment() error = %v, want one containing %q", err, tt.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Environment() error = %v", err)
			}
			if tt.want != nil && !slices.Equal(env, tt.want) {
				t.Errorf("Environment() =\n  %q\nwant\n  %q", env, tt.want)
			}
			if !slices.Equal(warnings, tt.warnings) {
				t.Errorf("Environment() warnings = %q, want %q", warnings, tt.warnings)
			}
		})
	}
}

func TestEnvironmentFetchesEachObjectOnce(t *testing.T) {
	src := &fakeSources{configMaps: map[string]map[string]string{"ns1/cfg": {"A": "1", "B": "2"}}}
	pod := testPod()
	c := &pod.Spec.Containers[0]
	c.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}
	ref := func(key string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: key}}
	}
	c.Env = []corev1.EnvVar{{Name: "X", ValueFrom: ref("A")}, {Name: "Y", ValueFrom: ref("B")}}
	env, _, err := Environment(t.Context(), src, pod, c, nil, PodInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A=1", "B=2", "X=1", "Y=2"}; !slices.Equal(env, want) {
		t.Errorf("Environment() = %q, want %q", env, want)
	}
	if src.gets != 1 {
		t.Errorf("Sources were asked %d times, want 1", src.gets)
	}
}

func TestEnvironmentHostIPUnknown(t *testing.T) {
	pod := testPod()
	c := &pod.Spec.Containers[0]
	c.Env = []corev1.EnvVar{{Name: "H", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}}}
	if _, _, err := Environment(t.Context(), nil, pod, c, nil, PodInfo{}); err == nil {
		t.Fatal("Environment() with no host IP succeeded, want an error")
	}
	env, _, err := Environment(t.Context(), nil, pod, c, nil, PodInfo{HostIP: "10.0.0.1"})
	if err != nil || !slices.Equal(env, []string{"H=10.0.0.1"}) {
		t.Fatalf("Environment() = %q, %v; want [H=10.0.0.1]", env, err)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "EMPTY": "", "B": "$(A)"}
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"$(A)", "a"},
		{"x$(A)y$(A)", "xaya"},
		{"$(EMPTY)|", "|"},
		{"$(B)", "$(A)"}, // no recursive expansion
		{"$(MISSING)", "$(MISSING)"},
		{"$$(A)", "$(A)"},
		{"$$$(A)", "$a"},
		{"$$", "$"},
		{"$", "$"},
		{"a$", "a$"},
		{"$A", "$A"},
		{"$(A", "$(A"},
		{"$()", "$()"},
		{"$(A)$(", "a$("},
		{"price: $5", "price: $5"},
	}
	for _, tt := range tests {
		if got := Expand(tt.in, vars); got != tt.want {
			t.Errorf("Expand(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestExpandArgs(t *testing.T) {
	env := []string{"A=1", "B=x=y", "A=2"}
	got := ExpandArgs([]string{"echo", "$(A)", "$(B)", "$$(A)", "$(C)"}, env)
	want := []string{"echo", "2", "x=y", "$(A)", "$(C)"}
	if !slices.Equal(got, want) {
		t.Errorf("ExpandArgs() = %q, want %q", got, want)
	}
	if got := ExpandArgs(nil, env); got != nil {
		t.Errorf("ExpandArgs(nil) = %q, want nil", got)
	}
}
