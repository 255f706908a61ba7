package volume

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Data: data}
}

func secret(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{ResyncPeriod: -1})
	if err == nil {
		t.Fatal("New(Config{}) succeeded, want an error")
	}
	for _, want := range []string{"Client", "PodsDir", "ResyncPeriod"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New error %q does not mention %s", err, want)
		}
	}
}

func TestContentVolumes(t *testing.T) {
	cm := configMap("settings", map[string]string{"app.conf": "level=info", "other": "x"})
	cm.BinaryData = map[string][]byte{"blob": {0, 1, 2}}
	sec := secret("creds", map[string]string{"user": "admin", "pass": "hunter2"})

	tests := []struct {
		name   string
		volume corev1.VolumeSource
		kind   string
		want   map[string]fileInfo
	}{{
		name:   "configMap all keys",
		volume: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}},
		kind:   kindConfigMap,
		want: map[string]fileInfo{
			"app.conf": {"level=info", 0o644},
			"other":    {"x", 0o644},
			"blob":     {"\x00\x01\x02", 0o644},
		},
	}, {
		name: "configMap items nested paths and modes",
		volume: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "settings"},
			DefaultMode:          ptr[int32](0o440),
			Items: []corev1.KeyToPath{
				{Key: "app.conf", Path: "etc/app/app.conf"},
				{Key: "other", Path: "etc/other", Mode: ptr[int32](0o600)},
				{Key: "blob", Path: "top"},
			},
		}},
		kind: kindConfigMap,
		want: map[string]fileInfo{
			"etc/app/app.conf": {"level=info", 0o440},
			"etc/other":        {"x", 0o600},
			"top":              {"\x00\x01\x02", 0o440},
		},
	}, {
		name:   "secret default mode",
		volume: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}},
		kind:   kindSecret,
		want: map[string]fileInfo{
			"user": {"admin", 0o644},
			"pass": {"hunter2", 0o644},
		},
	}, {
		name: "secret items and defaultMode",
		volume: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  "creds",
			DefaultMode: ptr[int32](0o400),
			Items:       []corev1.KeyToPath{{Key: "pass", Path: "db/password"}},
		}},
		kind: kindSecret,
		want: map[string]fileInfo{"db/password": {"hunter2", 0o400}},
	}, {
		name: "downwardAPI",
		volume: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
			{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
			{Path: "uid", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}, Mode: ptr[int32](0o600)},
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
			{Path: "meta/app", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}},
			{Path: "cpu_limit_millis", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "main", Resource: "limits.cpu", Divisor: mustQuantity("1m")}},
			{Path: "cpu_limit", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "main", Resource: "limits.cpu"}},
			{Path: "cpu_request", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "main", Resource: "requests.cpu"}},
			{Path: "mem_request_mi", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "main", Resource: "requests.memory", Divisor: mustQuantity("1Mi")}},
			{Path: "mem_limit_gi", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "main", Resource: "limits.memory", Divisor: mustQuantity("1Gi")}},
		}}},
		kind: kindDownwardAPI,
		want: map[string]fileInfo{
			"name":             {"web", 0o644},
			"namespace":        {"ns", 0o644},
			"uid":              {"0f6e7a52-2b1c-4d0e-9a33-5e1b4c7d9a10", 0o600},
			"labels":           {"app=\"web\"\ntier=\"front\"", 0o644},
			"annotations":      {`note="say \"hi\""`, 0o644},
			"meta/app":         {"web", 0o644},
			"cpu_limit_millis": {"1500", 0o644},
			"cpu_limit":        {"2", 0o644}, // 1.5 rounded up
			"cpu_request":      {"1", 0o644},
			"mem_request_mi":   {"64", 0o644},
			"mem_limit_gi":     {"8", 0o644}, // no limit: the node's allocatable
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, cm, sec)
			pod := testPod(corev1.Volume{Name: "vol", VolumeSource: tt.volume})
			mounts := f.setup(t, pod)
			mnt, ok := mounts["vol"]
			if !ok {
				t.Fatalf("Setup returned %v, want a mount for vol", mounts)
			}
			wantDir := filepath.Join(f.m.PodDir(pod.UID), "volumes", tt.kind, "vol")
			if mnt.HostPath != wantDir || !mnt.ReadOnly {
				t.Errorf("mount = %+v, want {%s true}", mnt, wantDir)
			}
			if d := diffFiles(readVolume(t, mnt.HostPath), tt.want); d != "" {
				t.Errorf("volume content:\n%s", d)
			}
			checkLayout(t, mnt.HostPath)
			fi, err := os.Stat(mnt.HostPath)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("volume dir mode = %v, want 0755", fi.Mode().Perm())
			}
			inMemory := tt.kind == kindSecret || tt.kind == kindProjected
			if mounted, _ := isMountPoint(mnt.HostPath); mounted != (inMemory && f.tmpfs) {
				t.Errorf("volume is a mount point: %v, want %v", mounted, inMemory && f.tmpfs)
			}
		})
	}
}

// checkLayout checks the ..data scheme: one hidden version, ..data
// pointing at it, every visible entry a "<name> -> ..data/<name>" link.
func checkLayout(t *testing.T, dir string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		t.Fatalf("..data: %v", err)
	}
	if !strings.HasPrefix(target, "..2026_") || strings.Contains(target, "/") {
		t.Errorf("..data -> %q, want a ..<timestamp> sibling", target)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == dataLink || name == target:
		case strings.HasPrefix(name, ".."):
			t.Errorf("stale hidden entry %s", name)
		default:
			got, err := os.Readlink(filepath.Join(dir, name))
			if want := filepath.Join(dataLink, name); err != nil || got != want {
				t.Errorf("%s -> %q (%v), want %q", name, got, err, want)
			}
		}
	}
	return target
}

func TestProjectedVolume(t *testing.T) {
	cm := configMap("ca", map[string]string{"ca.crt": "CERT"})
	pod := testPod(corev1.Volume{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr[int32](0o600),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "vault", ExpirationSeconds: ptr[int64](100)}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "ca"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptr(true)}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}, Mode: ptr[int32](0o644)},
			}}},
		},
	}}})
	f := newFixture(t, cm)
	mounts := f.setup(t, pod)
	dir := mounts["kube-api-access"].HostPath
	want := map[string]fileInfo{
		"token":     {"token-1", 0o600},
		"ca.crt":    {"CERT", 0o600},
		"namespace": {"ns", 0o644},
	}
	if d := diffFiles(readVolume(t, dir), want); d != "" {
		t.Errorf("volume content:\n%s", d)
	}
	checkLayout(t, dir)
	if mounted, _ := isMountPoint(dir); mounted != f.tmpfs {
		t.Errorf("projected volume is a mount point: %v, want %v", mounted, f.tmpfs)
	}

	req := f.tokens.last()
	if req.namespace != "ns" || req.serviceAccount != "builder" {
		t.Errorf("token requested for %s/%s, want ns/builder", req.namespace, req.serviceAccount)
	}
	if len(req.spec.Audiences) != 1 || req.spec.Audiences[0] != "vault" {
		t.Errorf("audiences = %v, want [vault]", req.spec.Audiences)
	}
	if got := *req.spec.ExpirationSeconds; got != minTokenExpiration {
		t.Errorf("expirationSeconds = %d, want %d (raised to the minimum)", got, minTokenExpiration)
	}
	ref := req.spec.BoundObjectRef
	if ref == nil || ref.Kind != "Pod" || ref.APIVersion != "v1" || ref.Name != pod.Name || ref.UID != pod.UID {
		t.Errorf("boundObjectRef = %+v, want the pod", ref)
	}
}

func TestTokenDefaults(t *testing.T) {
	pod := testPod(corev1.Volume{Name: "tok", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "t"}}},
	}}})
	pod.Spec.ServiceAccountName = ""
	f := newFixture(t)
	f.setup(t, pod)
	req := f.tokens.last()
	if req.serviceAccount != "default" || req.spec.Audiences != nil || *req.spec.ExpirationSeconds != 3600 {
		t.Errorf("request = %s %v %d, want default [] 3600", req.serviceAccount, req.spec.Audiences, *req.spec.ExpirationSeconds)
	}
}

func TestMissingObjects(t *testing.T) {
	cm := configMap("present", map[string]string{"a": "1"})
	tests := []struct {
		name    string
		volume  corev1.VolumeSource
		wantErr string // empty: an empty volume
	}{
		{"optional configMap", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "x"}, Optional: ptr(true)}}, ""},
		{"optional secret", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "x", Optional: ptr(true)}}, ""},
		{"optional key", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "present"}, Optional: ptr(true), Items: []corev1.KeyToPath{{Key: "b", Path: "b"}}}}, ""},
		{"required configMap", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "x"}}}, `volume "cfg": configmap "x" not found`},
		{"required secret", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "x"}}, `volume "cfg": secret "x" not found`},
		{"required key", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "present"}, Items: []corev1.KeyToPath{{Key: "b", Path: "b"}}}}, `volume "cfg": configmap "present" has no key "b"`},
		{"projected required secret", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "x"}}}}}}, `volume "cfg": secret "x" not found`},
		{"unsupported", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}, `volume "cfg": unsupported volume type`},
		{"unsafe path", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "present"}, Items: []corev1.KeyToPath{{Key: "a", Path: "../../etc/passwd"}}}}, `must not`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, cm)
			pod := testPod(corev1.Volume{Name: "cfg", VolumeSource: tt.volume})
			t.Cleanup(func() { f.m.Teardown(context.Background(), pod.UID) })
			mounts, err := f.m.Setup(t.Context(), pod)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Setup error = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(tt.wantErr, "not found") && !apierrors.IsNotFound(err) {
					t.Errorf("apierrors.IsNotFound(%v) = false, want true", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			if got := readVolume(t, mounts["cfg"].HostPath); len(got) != 0 {
				t.Errorf("volume holds %v, want nothing", got)
			}
		})
	}
}

func TestEmptyDir(t *testing.T) {
	f := newFixture(t)
	pod := testPod(
		corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr(mustQuantity("1Mi")),
		}}},
	)
	mounts := f.setup(t, pod)
	for name, want := range map[string]bool{"scratch": false, "mem": f.tmpfs} {
		mnt := mounts[name]
		fi, err := os.Stat(mnt.HostPath)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o777 || mnt.ReadOnly {
			t.Errorf("%s: %v, read-only %v, want a writable 0777 directory", name, fi.Mode(), mnt.ReadOnly)
		}
		if mounted, _ := isMountPoint(mnt.HostPath); mounted != want {
			t.Errorf("%s is a mount point: %v, want %v", name, mounted, want)
		}
	}
	// Content survives another Setup.
	keep := filepath.Join(mounts["scratch"].HostPath, "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	if _, err := f.m.Setup(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("emptyDir content lost: %v", err)
	}
	if !f.tmpfs {
		t.Logf("tmpfs not checked: %v", tmpfsAvailable(t))
		return
	}
	var st statfs
	if err := statFS(mounts["mem"].HostPath, &st); err != nil {
		t.Fatal(err)
	}
	if st.size != 1<<20 {
		t.Errorf("tmpfs size = %d, want %d", st.size, 1<<20)
	}
}

func TestTeardown(t *testing.T) {
	f := newFixture(t, secret("creds", map[string]string{"k": "v"}))
	pod := testPod(
		corev1.Volume{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}},
		corev1.Volume{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		corev1.Volume{Name: "d", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	)
	if _, err := f.m.Setup(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	dir := f.m.PodDir(pod.UID)
	before, err := mountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if f.tmpfs && len(before) != 2 {
		t.Errorf("mounts under the pod dir = %v, want 2", before)
	}

	// A new Manager, as after an agent restart, tears down what it never
	// set up.
	restarted, err := New(Config{Client: f.client, PodsDir: f.m.podsDir})
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.Teardown(t.Context(), pod.UID); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if after, _ := mountsUnder(dir); len(after) != 0 {
		t.Errorf("mounts left after Teardown: %v", after)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pod dir after Teardown: %v, want it gone", err)
	}
	// Idempotent, on either manager.
	for _, m := range []*Manager{restarted, f.m} {
		if err := m.Teardown(t.Context(), pod.UID); err != nil {
			t.Errorf("second Teardown: %v", err)
		}
	}
	if err := f.m.Teardown(t.Context(), types.UID("../etc")); err == nil {
		t.Error("Teardown(../etc) succeeded, want an error")
	}
	if !f.tmpfs {
		t.Logf("unmounting not checked: %v", tmpfsAvailable(t))
	}
}

func TestHostPath(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "dir")
	file := filepath.Join(root, "file")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(root, "sock")
	if err := makeSocket(t, sock); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(root, "missing")

	tests := []struct {
		path    string
		typ     corev1.HostPathType
		wantErr string
	}{
		{missing, corev1.HostPathUnset, ""},
		{dir, corev1.HostPathDirectory, ""},
		{file, corev1.HostPathDirectory, `hostPath "` + file + `" is a file, not a directory (type Directory)`},
		{missing, corev1.HostPathDirectory, `hostPath "` + missing + `" does not exist (type Directory)`},
		{filepath.Join(root, "new/dir"), corev1.HostPathDirectoryOrCreate, ""},
		{file, corev1.HostPathDirectoryOrCreate, "not a directory"},
		{file, corev1.HostPathFile, ""},
		{dir, corev1.HostPathFile, `is a directory, not a file (type File)`},
		{filepath.Join(root, "new/file"), corev1.HostPathFileOrCreate, ""},
		{dir, corev1.HostPathFileOrCreate, "not a file"},
		{sock, corev1.HostPathSocket, ""},
		{file, corev1.HostPathSocket, `is a file, not a socket (type Socket)`},
		{"/dev/null", corev1.HostPathCharDev, ""},
		{file, corev1.HostPathCharDev, "not a character device"},
		{"/dev/null", corev1.HostPathBlockDev, "is a character device, not a block device"},
		{"relative/path", corev1.HostPathUnset, "not an absolute path"},
	}
	f := newFixture(t)
	for _, tt := range tests {
		t.Run(string(tt.typ)+" "+filepath.Base(tt.path), func(t *testing.T) {
			pod := testPod(corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: tt.path, Type: ptr(tt.typ)}}})
			mounts, err := f.m.Setup(t.Context(), pod)
			defer f.m.Teardown(context.Background(), pod.UID)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `volume "h"`) {
					t.Fatalf("Setup error = %v, want one naming the volume and containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			if got := mounts["h"]; got.HostPath != tt.path || got.ReadOnly {
				t.Errorf("mount = %+v, want {%s false}", got, tt.path)
			}
		})
	}
	if fi, err := os.Stat(filepath.Join(root, "new/dir")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("DirectoryOrCreate made %v (%v), want a 0755 directory", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(root, "new/file")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("FileOrCreate made %v (%v), want a file", fi, err)
	}
}
