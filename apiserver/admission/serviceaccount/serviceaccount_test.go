package serviceaccount

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

const ns = "team"

var (
	podKind     = corev1.SchemeGroupVersion.WithKind("Pod")
	podResource = corev1.SchemeGroupVersion.WithResource("pods")
)

type fixture struct {
	p       *Plugin
	indexer cache.Indexer
	client  *fake.Clientset
}

// newFixture returns a plugin whose cache holds cached and whose live
// client holds live (plus cached).
func newFixture(t *testing.T, cached []*corev1.ServiceAccount, live ...runtime.Object) *fixture {
	t.Helper()
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, sa := range cached {
		if err := indexer.Add(sa); err != nil {
			t.Fatal(err)
		}
		live = append(live, sa)
	}
	client := fake.NewClientset(live...)
	p := New(Config{ServiceAccounts: corelisters.NewServiceAccountLister(indexer), Client: client})
	p.volumeSuffix = func() string { return "x2z9q" }
	if err := p.ValidateInitialization(); err != nil {
		t.Fatal(err)
	}
	return &fixture{p: p, indexer: indexer, client: client}
}

func account(name string, mods ...func(*corev1.ServiceAccount)) *corev1.ServiceAccount {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)}}
	for _, m := range mods {
		m(sa)
	}
	return sa
}

func pod(mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "nginx", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}},
				{Name: "sidecar", Image: "busybox"},
			},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func createAttrs(obj runtime.Object, subresource string) admission.Attributes {
	name := ""
	if p, ok := obj.(*corev1.Pod); ok {
		name = p.Name
	}
	return admission.NewAttributesRecord(obj, nil, podKind, ns, name, podResource, subresource, admission.Create,
		&metav1.CreateOptions{}, false, &user.DefaultInfo{Name: "alice"})
}

func updateAttrs(obj, old *corev1.Pod, subresource string) admission.Attributes {
	return admission.NewAttributesRecord(obj, old, podKind, ns, obj.Name, podResource, subresource, admission.Update,
		&metav1.UpdateOptions{}, false, &user.DefaultInfo{Name: "alice"})
}

// admit runs both phases on a created pod, as the chain does.
func (f *fixture) admit(t *testing.T, p *corev1.Pod) error {
	t.Helper()
	a := createAttrs(p, "")
	if err := f.p.Admit(t.Context(), a, nil); err != nil {
		return err
	}
	return f.p.Validate(t.Context(), a, nil)
}

func wantMount(volume string) corev1.VolumeMount {
	return corev1.VolumeMount{Name: volume, ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}
}

func TestDefaultsAndMounts(t *testing.T) {
	f := newFixture(t, []*corev1.ServiceAccount{account("default")})
	p := pod()
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit: %v", err)
	}
	if p.Spec.ServiceAccountName != "default" || p.Spec.DeprecatedServiceAccount != "default" {
		t.Errorf("serviceAccountName, serviceAccount = %q, %q; want default, default", p.Spec.ServiceAccountName, p.Spec.DeprecatedServiceAccount)
	}
	if len(p.Spec.Volumes) != 2 {
		t.Fatalf("volumes = %+v, want data and the token volume", p.Spec.Volumes)
	}
	expiration, mode := int64(3607), int32(0o644)
	want := corev1.Volume{
		Name: "kube-api-access-x2z9q",
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: &mode,
			Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &expiration}},
				{ConfigMap: &corev1.ConfigMapProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
					Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
				}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
					Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
				}}}},
			},
		}},
	}
	if got := p.Spec.Volumes[1]; !reflect.DeepEqual(got, want) {
		t.Errorf("token volume = %+v,\nwant %+v", got, want)
	}
	checks := []struct {
		name string
		got  []corev1.VolumeMount
		want []corev1.VolumeMount
	}{
		{"init", p.Spec.InitContainers[0].VolumeMounts, []corev1.VolumeMount{wantMount(want.Name)}},
		{"app", p.Spec.Containers[0].VolumeMounts, []corev1.VolumeMount{{Name: "data", MountPath: "/data"}, wantMount(want.Name)}},
		{"sidecar", p.Spec.Containers[1].VolumeMounts, []corev1.VolumeMount{wantMount(want.Name)}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("container %s mounts = %+v, want %+v", c.name, c.got, c.want)
		}
	}
}

func TestRandomVolumeName(t *testing.T) {
	f := newFixture(t, []*corev1.ServiceAccount{account("default")})
	f.p.volumeSuffix = New(Config{}).volumeSuffix
	p := pod()
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit: %v", err)
	}
	name := p.Spec.Volumes[len(p.Spec.Volumes)-1].Name
	suffix, ok := strings.CutPrefix(name, "kube-api-access-")
	if !ok || len(suffix) != 5 || strings.Trim(suffix, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		t.Errorf("volume name = %q, want kube-api-access-<5 lowercase alphanumerics>", name)
	}
}

func TestNamedAccount(t *testing.T) {
	f := newFixture(t, []*corev1.ServiceAccount{account("builder")})
	for _, set := range []func(*corev1.Pod){
		func(p *corev1.Pod) { p.Spec.ServiceAccountName = "builder" },
		func(p *corev1.Pod) { p.Spec.DeprecatedServiceAccount = "builder" }, // old clients
	} {
		p := pod(set)
		if err := f.admit(t, p); err != nil {
			t.Fatalf("admit: %v", err)
		}
		if p.Spec.ServiceAccountName != "builder" || p.Spec.DeprecatedServiceAccount != "builder" {
			t.Errorf("serviceAccountName, serviceAccount = %q, %q; want builder, builder", p.Spec.ServiceAccountName, p.Spec.DeprecatedServiceAccount)
		}
		if len(p.Spec.Volumes) != 2 {
			t.Errorf("volumes = %d, want 2", len(p.Spec.Volumes))
		}
	}
}

func TestMissingAccountIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, []*corev1.ServiceAccount{account("default")})
		start := time.Now()
		err := f.admit(t, pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "ghost" }))
		if !apierrors.IsForbidden(err) {
			t.Fatalf("admit = %v, want 403 Forbidden", err)
		}
		want := `pods "web" is forbidden: error looking up service account team/ghost: serviceaccount "ghost" not found`
		if err.Error() != want {
			t.Errorf("error = %q, want %q", err, want)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("a named account was waited for (%v); only default is", d)
		}
	})
}

func TestWaitsForDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		go func() {
			time.Sleep(time.Second)
			_ = f.indexer.Add(account("default"))
		}()
		start := time.Now()
		p := pod()
		if err := f.admit(t, p); err != nil {
			t.Fatalf("admit: %v", err)
		}
		if d := time.Since(start); d < time.Second || d > time.Second+pollInterval {
			t.Errorf("admitted after %v, want just after the account appeared (1s)", d)
		}
		if p.Spec.ServiceAccountName != "default" {
			t.Errorf("serviceAccountName = %q, want default", p.Spec.ServiceAccountName)
		}
	})
}

func TestMissingDefaultIsRefusedAfterWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		start := time.Now()
		err := f.admit(t, pod())
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `serviceaccount "default" not found`) {
			t.Fatalf("admit = %v, want 403 naming the default account", err)
		}
		if d := time.Since(start); d != DefaultWait {
			t.Errorf("refused after %v, want %v", d, DefaultWait)
		}
	})
}

func TestLiveFallback(t *testing.T) {
	// The account exists but the cache has not seen it yet.
	f := newFixture(t, nil, account("fresh"))
	p := pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "fresh" })
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit: %v", err)
	}
}

func TestLiveErrorIsInternal(t *testing.T) {
	f := newFixture(t, nil)
	f.client.PrependReactor("get", "serviceaccounts", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is resting")
	})
	err := f.admit(t, pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "builder" }))
	if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), "etcd is resting") {
		t.Errorf("admit = %v, want 500 with the cause", err)
	}
}

func TestAutomount(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name      string
		pod, sa   *bool
		wantMount bool
	}{
		{"unset everywhere", nil, nil, true},
		{"pod false", &no, nil, false},
		{"account false", nil, &no, false},
		{"pod true overrides account false", &yes, &no, true},
		{"pod false overrides account true", &no, &yes, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, []*corev1.ServiceAccount{account("default", func(sa *corev1.ServiceAccount) { sa.AutomountServiceAccountToken = tt.sa })})
			p := pod(func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = tt.pod })
			if err := f.admit(t, p); err != nil {
				t.Fatalf("admit: %v", err)
			}
			if got := len(p.Spec.Volumes) == 2; got != tt.wantMount {
				t.Errorf("token volume added = %v, want %v (volumes %+v)", got, tt.wantMount, p.Spec.Volumes)
			}
			if got := len(p.Spec.Containers[1].VolumeMounts) == 1; got != tt.wantMount {
				t.Errorf("token mounted = %v, want %v", got, tt.wantMount)
			}
		})
	}
}

func TestOwnMountAtPathIsKept(t *testing.T) {
	f := newFixture(t, []*corev1.ServiceAccount{account("default")})
	own := corev1.VolumeMount{Name: "data", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount/"}
	p := pod(func(p *corev1.Pod) { p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{own} })
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit: %v", err)
	}
	if got := p.Spec.Containers[0].VolumeMounts; !reflect.DeepEqual(got, []corev1.VolumeMount{own}) {
		t.Errorf("app mounts = %+v, want only its own", got)
	}
	if got := p.Spec.Containers[1].VolumeMounts; !reflect.DeepEqual(got, []corev1.VolumeMount{wantMount("kube-api-access-x2z9q")}) {
		t.Errorf("sidecar mounts = %+v, want the token", got)
	}

	// When every container has its own, no volume is added.
	p = pod(func(p *corev1.Pod) {
		p.Spec.InitContainers = nil
		p.Spec.Containers = p.Spec.Containers[:1]
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{own}
	})
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit: %v", err)
	}
	if len(p.Spec.Volumes) != 1 {
		t.Errorf("volumes = %+v, want only data", p.Spec.Volumes)
	}
}

func TestExistingTokenVolumeIsReused(t *testing.T) {
	// A spec copied from another pod's output already has the volume and
	// mounts in some containers.
	f := newFixture(t, []*corev1.ServiceAccount{account("default")})
	p := pod(func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, TokenVolume("kube-api-access-abcde"))
		p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{wantMount("kube-api-access-abcde")}
	})
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit: %v", err)
	}
	if len(p.Spec.Volumes) != 2 {
		t.Errorf("volumes = %+v, want data and the existing token volume", p.Spec.Volumes)
	}
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		n := 0
		for _, m := range c.VolumeMounts {
			if m.MountPath == MountPath {
				n++
				if m.Name != "kube-api-access-abcde" {
					t.Errorf("container %s mounts %q, want the existing volume", c.Name, m.Name)
				}
			}
		}
		if n != 1 {
			t.Errorf("container %s has %d mounts at %s, want 1", c.Name, n, MountPath)
		}
	}
}

func TestEphemeralContainersAreMounted(t *testing.T) {
	f := newFixture(t, []*corev1.ServiceAccount{account("default")})
	p := pod(func(p *corev1.Pod) {
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug"}}}
	})
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit: %v", err)
	}
	if got := p.Spec.EphemeralContainers[0].VolumeMounts; !reflect.DeepEqual(got, []corev1.VolumeMount{wantMount("kube-api-access-x2z9q")}) {
		t.Errorf("ephemeral container mounts = %+v, want the token", got)
	}
}

func TestImagePullSecrets(t *testing.T) {
	f := newFixture(t, []*corev1.ServiceAccount{account("default", func(sa *corev1.ServiceAccount) {
		sa.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "registry-a"}, {Name: "registry-b"}}
	})})
	p := pod()
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit: %v", err)
	}
	if want := []corev1.LocalObjectReference{{Name: "registry-a"}, {Name: "registry-b"}}; !reflect.DeepEqual(p.Spec.ImagePullSecrets, want) {
		t.Errorf("imagePullSecrets = %v, want %v", p.Spec.ImagePullSecrets, want)
	}
	own := []corev1.LocalObjectReference{{Name: "mine"}}
	p = pod(func(p *corev1.Pod) { p.Spec.ImagePullSecrets = own })
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit: %v", err)
	}
	if !reflect.DeepEqual(p.Spec.ImagePullSecrets, own) {
		t.Errorf("imagePullSecrets = %v, want the pod's own %v", p.Spec.ImagePullSecrets, own)
	}
}

func mirror(p *corev1.Pod) {
	p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "hash"}
}

func TestMirrorPods(t *testing.T) {
	f := newFixture(t, []*corev1.ServiceAccount{account("default")})
	p := pod(mirror)
	before := p.DeepCopy()
	if err := f.admit(t, p); err != nil {
		t.Fatalf("admit mirror pod: %v", err)
	}
	if !reflect.DeepEqual(p, before) {
		t.Errorf("mirror pod changed:\n%+v\nwant\n%+v", p, before)
	}

	for name, mod := range map[string]func(*corev1.Pod){
		"service account": func(p *corev1.Pod) { p.Spec.ServiceAccountName = "default" },
		"token volume":    func(p *corev1.Pod) { p.Spec.Volumes = append(p.Spec.Volumes, TokenVolume("kube-api-access-abcde")) },
	} {
		err := f.admit(t, pod(mirror, mod))
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "mirror pod may not") {
			t.Errorf("mirror pod with %s: admit = %v, want 403", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	f := newFixture(t, nil)
	named := pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "default" })
	other := pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "builder" })
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}
	tests := []struct {
		name string
		a    admission.Attributes
		code int32 // 0: admitted
	}{
		{"create without account", createAttrs(pod(), ""), http.StatusForbidden},
		{"create with account", createAttrs(named, ""), 0},
		{"binding", createAttrs(binding, "binding"), 0},
		{"update keeps account", updateAttrs(named, named, ""), 0},
		{"update changes account", updateAttrs(other, named, ""), http.StatusForbidden},
		{"status update", updateAttrs(named, named, "status"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.p.Validate(t.Context(), tt.a, nil)
			var code int32
			if err != nil {
				code = -1
				if s, ok := err.(apierrors.APIStatus); ok {
					code = s.Status().Code
				}
			}
			if code != tt.code {
				t.Errorf("Validate = %v (code %d), want code %d", err, code, tt.code)
			}
		})
	}
}

func TestOtherResourcesAreIgnored(t *testing.T) {
	f := newFixture(t, nil)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c"}}
	a := admission.NewAttributesRecord(cm, nil, corev1.SchemeGroupVersion.WithKind("ConfigMap"), ns, "c",
		corev1.SchemeGroupVersion.WithResource("configmaps"), "", admission.Create, &metav1.CreateOptions{}, false, &user.DefaultInfo{Name: "alice"})
	if err := f.p.Admit(context.Background(), a, nil); err != nil {
		t.Errorf("Admit(configmap) = %v", err)
	}
	if err := f.p.Validate(context.Background(), a, nil); err != nil {
		t.Errorf("Validate(configmap) = %v", err)
	}
}
