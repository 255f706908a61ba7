package registry

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/storagebackend"

	"tether/apiserver/scheme"
)

func TestNamespaceName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"default", true},
		{"kube-system", true},
		{"a1", true},
		{"my.namespace", false}, // a subdomain, not a label
		{"Upper", false},
		{"-lead", false},
		{"x123456789012345678901234567890123456789012345678901234567890123", false}, // 64 characters
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tt.name}}
			errs := newStrategy(Namespaces, false).Validate(context.Background(), ns)
			if tt.ok {
				miscCheck(t, "Validate", errs)
			} else {
				miscCheck(t, "Validate", errs, "FieldValueInvalid metadata.name")
			}
		})
	}
}

func TestNamespaceCreate(t *testing.T) {
	ns := &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "ns1"},
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"example.com/mine"}},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating},
	}
	newStrategy(Namespaces, false).PrepareForCreate(context.Background(), ns)
	if ns.Status.Phase != corev1.NamespaceActive {
		t.Errorf("phase = %q, want Active", ns.Status.Phase)
	}
	if want := []corev1.FinalizerName{"example.com/mine", "kubernetes"}; fmt.Sprint(ns.Spec.Finalizers) != fmt.Sprint(want) {
		t.Errorf("finalizers = %v, want %v", ns.Spec.Finalizers, want)
	}
	if ns.Labels[corev1.LabelMetadataName] != "ns1" {
		t.Errorf("labels = %v, want %s=ns1", ns.Labels, corev1.LabelMetadataName)
	}
}

func TestNamespaceValidate(t *testing.T) {
	tests := []struct {
		name       string
		finalizers []corev1.FinalizerName
		want       []string
	}{
		{"standard", []corev1.FinalizerName{"kubernetes"}, nil},
		{"qualified", []corev1.FinalizerName{"example.com/x"}, nil},
		{"unqualified", []corev1.FinalizerName{"kubernetes", "mine"}, []string{"FieldValueInvalid spec.finalizers[1]"}},
		{"malformed", []corev1.FinalizerName{"example.com/a b"}, []string{"FieldValueInvalid spec.finalizers[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns1"}, Spec: corev1.NamespaceSpec{Finalizers: tt.finalizers}}
			miscCheck(t, "Validate", miscValidate(Namespaces, ns), tt.want...)
		})
	}
}

func TestNamespaceUpdate(t *testing.T) {
	ctx := request.WithNamespace(context.Background(), "")
	old := &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "ns1", ResourceVersion: "5", Generation: 1},
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
	st := newStrategy(Namespaces, false)

	// The main resource ignores spec and status.
	ns := old.DeepCopy()
	ns.Spec.Finalizers = nil
	ns.Status.Phase = corev1.NamespaceTerminating
	if err := rest.BeforeUpdate(st, ctx, ns, old); err != nil {
		t.Fatalf("BeforeUpdate: %v", err)
	}
	if len(ns.Spec.Finalizers) != 1 || ns.Status.Phase != corev1.NamespaceActive || ns.Generation != 1 {
		t.Errorf("after update: finalizers %v, phase %q, generation %d; want the stored ones", ns.Spec.Finalizers, ns.Status.Phase, ns.Generation)
	}

	// Deletion starts only through DELETE.
	ns = old.DeepCopy()
	now := metav1.Now()
	ns.DeletionTimestamp = &now
	err := rest.BeforeUpdate(st, ctx, ns, old)
	if !apierrors.IsInvalid(err) {
		t.Errorf("update setting deletionTimestamp: err = %v, want Invalid (422)", err)
	}

	// Once terminating, the phase stays.
	terminating := old.DeepCopy()
	terminating.DeletionTimestamp = &now
	terminating.Status.Phase = corev1.NamespaceTerminating
	ns = terminating.DeepCopy()
	ns.Status.Phase = corev1.NamespaceActive
	ns.Labels = map[string]string{"a": "b"}
	if err := rest.BeforeUpdate(st, ctx, ns, terminating); err != nil {
		t.Fatalf("BeforeUpdate(terminating): %v", err)
	}
	if ns.Status.Phase != corev1.NamespaceTerminating {
		t.Errorf("phase = %q after update of a terminating namespace, want Terminating", ns.Status.Phase)
	}
	ns = terminating.DeepCopy()
	ns.Status.Phase = corev1.NamespaceActive
	err = rest.BeforeUpdate(newStrategy(Namespaces, true), ctx, ns, terminating)
	if !apierrors.IsInvalid(err) {
		t.Errorf("status update to Active of a terminating namespace: err = %v, want Invalid", err)
	}
}

func TestNamespaceFinalizeStrategy(t *testing.T) {
	ctx := request.WithNamespace(context.Background(), "")
	now := metav1.Now()
	old := &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "ns1", ResourceVersion: "5", DeletionTimestamp: &now, Labels: map[string]string{"a": "b"}},
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes", "example.com/x"}},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating},
	}
	st := &nsFinalizeStrategy{RESTUpdateStrategy: newStrategy(Namespaces, false)}
	ns := old.DeepCopy()
	ns.Spec.Finalizers = []corev1.FinalizerName{"example.com/x"}
	ns.Labels = nil
	ns.Status.Phase = corev1.NamespaceActive
	if err := rest.BeforeUpdate(st, ctx, ns, old); err != nil {
		t.Fatalf("BeforeUpdate: %v", err)
	}
	if len(ns.Spec.Finalizers) != 1 || ns.Labels["a"] != "b" || ns.Status.Phase != corev1.NamespaceTerminating {
		t.Errorf("finalize: got finalizers %v, labels %v, phase %q; want only the finalizers changed", ns.Spec.Finalizers, ns.Labels, ns.Status.Phase)
	}
	ns = old.DeepCopy()
	ns.Spec.Finalizers = []corev1.FinalizerName{"bad"}
	if err := rest.BeforeUpdate(st, ctx, ns, old); !apierrors.IsInvalid(err) {
		t.Errorf("finalize with an unqualified finalizer: err = %v, want Invalid", err)
	}
}

func TestNamespaceGCFinalizers(t *testing.T) {
	orphan, fg, bg := metav1.DeletePropagationOrphan, metav1.DeletePropagationForeground, metav1.DeletePropagationBackground
	yes := true
	tests := []struct {
		name string
		in   []string
		opts metav1.DeleteOptions
		want []string
	}{
		{"no policy", []string{"x/y", "orphan"}, metav1.DeleteOptions{}, []string{"x/y", "orphan"}},
		{"orphan", []string{"x/y"}, metav1.DeleteOptions{PropagationPolicy: &orphan}, []string{"x/y", "orphan"}},
		{"orphanDependents", nil, metav1.DeleteOptions{OrphanDependents: &yes}, []string{"orphan"}},
		{"foreground", []string{"orphan"}, metav1.DeleteOptions{PropagationPolicy: &fg}, []string{"foregroundDeletion"}},
		{"background", []string{"orphan", "foregroundDeletion"}, metav1.DeleteOptions{PropagationPolicy: &bg}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nsGCFinalizers(tt.in, &tt.opts); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("nsGCFinalizers(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// nsTestOptions serves REST options backed by one etcd.
type nsTestOptions struct {
	cfg storagebackend.Config
}

func (o nsTestOptions) GetRESTOptions(gr schema.GroupResource, _ runtime.Object) (generic.RESTOptions, error) {
	return generic.RESTOptions{
		StorageConfig:           o.cfg.ForResource(gr),
		Decorator:               generic.UndecoratedStorage,
		DeleteCollectionWorkers: 1,
		ResourcePrefix:          "/" + gr.Group + "/" + gr.Resource,
	}, nil
}

// nsTestStorage starts an embedded etcd for the test and returns REST
// options backed by it.
func nsTestStorage(t *testing.T) generic.RESTOptionsGetter {
	t.Helper()
	if testing.Short() {
		t.Skip("needs etcd")
	}
	cfg := storagebackend.NewDefaultConfig("/registry-test", scheme.Codecs.LegacyCodec(scheme.Served...))
	cfg.Transport.ServerList = []string{nsStartEtcd(t)}
	return nsTestOptions{cfg: *cfg}
}

// nsStartEtcd starts an embedded etcd for the test and returns its client
// URL.
func nsStartEtcd(t *testing.T) string {
	t.Helper()
	free := func() url.URL {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return url.URL{Scheme: "http", Host: ln.Addr().String()}
	}
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(cfg.Dir, "etcd.log")}
	client, peer := free(), free()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Skipf("embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("embedded etcd did not become ready")
	}
	return client.String()
}

// TestNamespaceLifecycle drives the two-phase deletion against etcd.
func TestNamespaceLifecycle(t *testing.T) {
	main, _, finalize, err := NewNamespaceStorage(nsTestStorage(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(main.Destroy)
	store := main.(*nsREST)
	fin := finalize.(rest.Updater)
	ctx := request.WithNamespace(t.Context(), "")

	create := func(name string) *corev1.Namespace {
		t.Helper()
		obj, err := store.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, nil, &metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(%s): %v", name, err)
		}
		return obj.(*corev1.Namespace)
	}
	get := func(name string) (*corev1.Namespace, error) {
		obj, err := store.Get(ctx, name, &metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return obj.(*corev1.Namespace), nil
	}
	setFinalizers := func(ns *corev1.Namespace, f ...corev1.FinalizerName) (runtime.Object, error) {
		ns = ns.DeepCopy()
		ns.Spec.Finalizers = f
		obj, _, err := fin.Update(ctx, ns.Name, rest.DefaultUpdatedObjectInfo(ns), nil, nil, false, &metav1.UpdateOptions{})
		return obj, err
	}

	ns := create("ns1")
	if ns.Status.Phase != corev1.NamespaceActive || len(ns.Spec.Finalizers) != 1 {
		t.Fatalf("created namespace: phase %q, finalizers %v", ns.Status.Phase, ns.Spec.Finalizers)
	}

	// Preconditions are honoured.
	wrongUID := types.UID("nope")
	if _, _, err := store.Delete(ctx, "ns1", nil, &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &wrongUID}}); !apierrors.IsConflict(err) {
		t.Errorf("Delete with a wrong UID: err = %v, want Conflict", err)
	}
	oldRV := "1"
	if _, _, err := store.Delete(ctx, "ns1", nil, &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &oldRV}}); !apierrors.IsConflict(err) {
		t.Errorf("Delete with a stale resourceVersion: err = %v, want Conflict", err)
	}

	// A dry run changes nothing.
	obj, deleted, err := store.Delete(ctx, "ns1", nil, &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil || deleted || obj.(*corev1.Namespace).Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("dry-run Delete = %v, %v, %v; want a Terminating namespace, not deleted", obj, deleted, err)
	}
	if ns, err = get("ns1"); err != nil || ns.DeletionTimestamp != nil {
		t.Fatalf("after dry-run Delete: %v, %v; want the namespace untouched", ns, err)
	}

	// The first delete marks the namespace.
	obj, deleted, err = store.Delete(ctx, "ns1", nil, &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &ns.UID, ResourceVersion: &ns.ResourceVersion}})
	if err != nil || deleted {
		t.Fatalf("Delete = %v, %v; want not deleted, no error", deleted, err)
	}
	ns = obj.(*corev1.Namespace)
	if ns.DeletionTimestamp == nil || ns.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("after Delete: deletionTimestamp %v, phase %q; want set, Terminating", ns.DeletionTimestamp, ns.Status.Phase)
	}

	// Deleting again while the controller works changes nothing.
	if _, deleted, err := store.Delete(ctx, "ns1", nil, nil); err != nil || deleted {
		t.Fatalf("second Delete = %v, %v; want not deleted", deleted, err)
	}
	// A main update keeps the phase and may not clear the finalizers.
	upd := ns.DeepCopy()
	upd.Status.Phase = corev1.NamespaceActive
	upd.Spec.Finalizers = nil
	upd.Labels["team"] = "a"
	obj, _, err = store.Update(ctx, "ns1", rest.DefaultUpdatedObjectInfo(upd), nil, nil, false, &metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if ns = obj.(*corev1.Namespace); ns.Status.Phase != corev1.NamespaceTerminating || len(ns.Spec.Finalizers) != 1 {
		t.Fatalf("after Update: phase %q, finalizers %v; want Terminating, [kubernetes]", ns.Status.Phase, ns.Spec.Finalizers)
	}

	// Finalizing removes the namespace once nothing is left.
	if _, err := setFinalizers(ns); err != nil {
		t.Fatalf("finalize: %v", err)
	}
	if _, err := get("ns1"); !apierrors.IsNotFound(err) {
		t.Fatalf("Get after finalize: err = %v, want NotFound", err)
	}
	if _, _, err := store.Delete(ctx, "ns1", nil, nil); !apierrors.IsNotFound(err) {
		t.Fatalf("Delete after finalize: err = %v, want NotFound", err)
	}

	// Finalizing an active namespace only edits the list; a namespace
	// without finalizers is deleted at once.
	ns = create("ns2")
	obj, err = setFinalizers(ns)
	if err != nil || len(obj.(*corev1.Namespace).Spec.Finalizers) != 0 {
		t.Fatalf("finalize active namespace = %v, %v", obj, err)
	}
	if _, deleted, err := store.Delete(ctx, "ns2", nil, nil); err != nil || !deleted {
		t.Fatalf("Delete of a namespace without finalizers = %v, %v; want deleted", deleted, err)
	}

	// metadata.finalizers hold the namespace after spec.finalizers empty.
	ns = create("ns3")
	ns.Finalizers = []string{"example.com/hold"}
	obj, _, err = store.Update(ctx, "ns3", rest.DefaultUpdatedObjectInfo(ns), nil, nil, false, &metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if _, _, err := store.Delete(ctx, "ns3", nil, nil); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	ns, _ = get("ns3")
	if _, err := setFinalizers(ns); err != nil {
		t.Fatalf("finalize: %v", err)
	}
	if ns, err = get("ns3"); err != nil {
		t.Fatalf("Get after finalize with metadata.finalizers: %v; want the namespace kept", err)
	}
	ns.Finalizers = nil
	if _, _, err := store.Update(ctx, "ns3", rest.DefaultUpdatedObjectInfo(ns), nil, nil, false, &metav1.UpdateOptions{}); err != nil {
		t.Fatalf("Update removing metadata.finalizers: %v", err)
	}
	if _, err := get("ns3"); !apierrors.IsNotFound(err) {
		t.Fatalf("Get after last finalizer: err = %v, want NotFound", err)
	}
}
