package namespace

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
)

var (
	configmaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	pods       = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	// widgets can be deleted only one by one: no deletecollection verb.
	widgets = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}
)

// discoveryResources is what the fake apiserver advertises.
var discoveryResources = []*metav1.APIResourceList{
	{
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{
			{Name: "configmaps", Namespaced: true, Kind: "ConfigMap", Verbs: []string{"create", "delete", "deletecollection", "get", "list", "watch"}},
			{Name: "pods", Namespaced: true, Kind: "Pod", Verbs: []string{"create", "delete", "deletecollection", "get", "list", "watch"}},
			{Name: "pods/status", Namespaced: true, Kind: "Pod", Verbs: []string{"get", "patch", "update"}},
			{Name: "bindings", Namespaced: true, Kind: "Binding", Verbs: []string{"create"}},
			{Name: "namespaces", Namespaced: false, Kind: "Namespace", Verbs: []string{"delete", "list"}},
		},
	},
	{
		GroupVersion: "example.com/v1",
		APIResources: []metav1.APIResource{
			{Name: "widgets", Namespaced: true, Kind: "Widget", Verbs: []string{"delete", "get", "list"}},
		},
	},
}

func terminating(name string) *corev1.Namespace {
	now := metav1.Now()
	return &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), DeletionTimestamp: &now},
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating},
	}
}

func active(name string) *corev1.Namespace {
	return &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
}

func object(apiVersion, kind, namespace, name string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: apiVersion, Kind: kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("uid-" + namespace + "-" + name)},
	}
}

// fixture is a controller wired to fakes.
type fixture struct {
	c         *Controller
	client    *fake.Clientset
	discovery *fakediscovery.FakeDiscovery
	metadata  *metadatafake.FakeMetadataClient
}

func newFixture(t *testing.T, namespaces []runtime.Object, objects ...runtime.Object) *fixture {
	t.Helper()
	client := fake.NewClientset(namespaces...)
	disc := client.Discovery().(*fakediscovery.FakeDiscovery)
	disc.Resources = discoveryResources

	scheme := runtime.NewScheme()
	metav1.AddMetaToScheme(scheme)
	md := metadatafake.NewSimpleMetadataClient(scheme, objects...)
	// The fake metadata client records deletecollection but does not act on
	// it; remove the matching objects from its tracker like a server would.
	md.PrependReactor("delete-collection", "*", deleteCollectionReactor(md.Tracker()))

	c, err := New(Config{
		Client:    client,
		Metadata:  md,
		Discovery: disc,
		Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &fixture{c: c, client: client, discovery: disc, metadata: md}
}

func deleteCollectionReactor(tracker clienttesting.ObjectTracker) clienttesting.ReactionFunc {
	return func(action clienttesting.Action) (bool, runtime.Object, error) {
		gvr, ns := action.GetResource(), action.GetNamespace()
		listGVK := schema.GroupVersionKind{Group: "fake-metadata-client-group", Version: "v1"}
		obj, err := tracker.List(gvr, listGVK, ns)
		if err != nil {
			return true, nil, err
		}
		items, err := meta.ExtractList(obj)
		if err != nil {
			return true, nil, err
		}
		for _, item := range items {
			m, err := meta.Accessor(item)
			if err != nil {
				return true, nil, err
			}
			if err := tracker.Delete(gvr, ns, m.GetName()); err != nil {
				return true, nil, err
			}
		}
		return true, &metav1.Status{Status: metav1.StatusSuccess}, nil
	}
}

// start runs the controller until the test ends and waits until it has
// nothing left to do. It must be called inside a synctest bubble.
func (f *fixture) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	select {
	case <-f.c.Ready():
	case err := <-done:
		t.Fatalf("Run() returned %v before Ready", err)
	}
	synctest.Wait()
}

// exists reports whether the metadata fake still holds the object.
func (f *fixture) exists(t *testing.T, gvr schema.GroupVersionResource, ns, name string) bool {
	t.Helper()
	_, err := f.metadata.Tracker().Get(gvr, ns, name)
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatalf("tracker.Get(%v, %q, %q): %v", gvr, ns, name, err)
	}
	return true
}

// finalizeActions returns the namespaces/finalize calls recorded by the
// fake clientset. Its Finalize records a create action on the "finalize"
// subresource.
func (f *fixture) finalizeActions() []clienttesting.CreateAction {
	var out []clienttesting.CreateAction
	for _, a := range f.client.Actions() {
		if a.GetResource().Resource == "namespaces" && a.GetSubresource() == "finalize" {
			out = append(out, a.(clienttesting.CreateAction))
		}
	}
	return out
}

func (f *fixture) namespaceDeleted(name string) bool {
	for _, a := range f.client.Actions() {
		if d, ok := a.(clienttesting.DeleteAction); ok && d.GetResource().Resource == "namespaces" && d.GetName() == name {
			return true
		}
	}
	return false
}

func TestTerminatingNamespaceIsEmptiedAndFinalized(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t,
			[]runtime.Object{terminating("doomed"), active("keep")},
			object("v1", "ConfigMap", "doomed", "settings"),
			object("v1", "Pod", "doomed", "web"),
			object("example.com/v1", "Widget", "doomed", "gadget"),
			object("v1", "ConfigMap", "keep", "settings"),
		)
		f.start(t)

		for _, o := range []struct {
			gvr  schema.GroupVersionResource
			name string
		}{{configmaps, "settings"}, {pods, "web"}, {widgets, "gadget"}} {
			if f.exists(t, o.gvr, "doomed", o.name) {
				t.Errorf("%s doomed/%s still exists, want deleted", o.gvr.Resource, o.name)
			}
		}
		if !f.exists(t, configmaps, "keep", "settings") {
			t.Errorf("configmaps keep/settings was deleted, want kept")
		}

		var collections, single []string
		for _, a := range f.metadata.Actions() {
			if a.GetNamespace() != "doomed" {
				if a.GetVerb() != "list" && a.GetVerb() != "watch" {
					t.Errorf("unexpected %s of %s in namespace %q", a.GetVerb(), a.GetResource().Resource, a.GetNamespace())
				}
				continue
			}
			switch a := a.(type) {
			case clienttesting.DeleteCollectionActionImpl:
				collections = append(collections, a.GetResource().Resource)
			case clienttesting.DeleteActionImpl:
				single = append(single, a.GetResource().Resource+"/"+a.GetName())
				if p := a.DeleteOptions.PropagationPolicy; p == nil || *p != metav1.DeletePropagationBackground {
					t.Errorf("delete %s/%s: propagationPolicy = %v, want Background", a.GetResource().Resource, a.GetName(), p)
				}
			}
		}
		slices.Sort(collections)
		if want := []string{"configmaps", "pods"}; !slices.Equal(collections, want) {
			t.Errorf("deletecollection calls = %v, want %v", collections, want)
		}
		if want := []string{"widgets/gadget"}; !slices.Equal(single, want) {
			t.Errorf("single delete calls = %v, want %v", single, want)
		}

		fin := f.finalizeActions()
		if len(fin) != 1 {
			t.Fatalf("finalize calls = %d, want 1", len(fin))
		}
		ns := fin[0].GetObject().(*corev1.Namespace)
		if ns.Name != "doomed" || len(ns.Spec.Finalizers) != 0 {
			t.Errorf("finalize sent %s with spec.finalizers %v, want doomed with none", ns.Name, ns.Spec.Finalizers)
		}
		if !f.namespaceDeleted("doomed") {
			t.Errorf("namespace doomed was not deleted after finalize")
		}
		if f.namespaceDeleted("keep") {
			t.Errorf("namespace keep was deleted, want untouched")
		}
	})
}

func TestActiveNamespaceIsUntouched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t,
			[]runtime.Object{active("keep")},
			object("v1", "ConfigMap", "keep", "settings"),
		)
		f.start(t)

		// The fake discovery shares the clientset's action log, so this
		// also shows that discovery was not asked.
		for _, a := range f.client.Actions() {
			if v := a.GetVerb(); v != "list" && v != "watch" {
				t.Errorf("clientset action %s %s/%s, want only list and watch", v, a.GetResource().Resource, a.GetSubresource())
			}
		}
		if got := f.metadata.Actions(); len(got) != 0 {
			t.Errorf("metadata actions = %v, want none", got)
		}
		if !f.exists(t, configmaps, "keep", "settings") {
			t.Errorf("configmaps keep/settings was deleted, want kept")
		}
	})
}

func TestRemainingContentDelaysFinalize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t,
			[]runtime.Object{terminating("doomed")},
			object("v1", "Pod", "doomed", "web"),
		)
		// Pods shut down gracefully: deletecollection marks them but
		// leaves them in place until their kubelet is done.
		f.metadata.PrependReactor("delete-collection", "pods", func(clienttesting.Action) (bool, runtime.Object, error) {
			return true, &metav1.Status{Status: metav1.StatusSuccess}, nil
		})
		f.start(t)

		if n := len(f.finalizeActions()); n != 0 {
			t.Fatalf("finalize calls while a pod remains = %d, want 0", n)
		}

		// The kubelet finishes; the next retry must finalize.
		if err := f.metadata.Tracker().Delete(pods, "doomed", "web"); err != nil {
			t.Fatalf("tracker.Delete: %v", err)
		}
		time.Sleep(2 * maxRetryDelay) // fake time inside the bubble
		synctest.Wait()

		if n := len(f.finalizeActions()); n != 1 {
			t.Errorf("finalize calls after the pod left = %d, want 1", n)
		}
		if !f.namespaceDeleted("doomed") {
			t.Errorf("namespace doomed was not deleted after finalize")
		}
	})
}

func TestDiscoveryFailureBlocksFinalize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, []runtime.Object{terminating("doomed")})
		f.discovery.PrependReactor("get", "resource", func(clienttesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("aggregated API unavailable")
		})
		f.start(t)

		if n := len(f.finalizeActions()); n != 0 {
			t.Errorf("finalize calls with failed discovery = %d, want 0", n)
		}
	})
}

func TestNamespaceWithoutOurFinalizerIsDeleted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ns := terminating("done")
		ns.Spec.Finalizers = nil
		f := newFixture(t, []runtime.Object{ns})
		f.start(t)

		if n := len(f.finalizeActions()); n != 0 {
			t.Errorf("finalize calls = %d, want 0", n)
		}
		if !f.namespaceDeleted("done") {
			t.Errorf("namespace done was not deleted")
		}
		if got := f.metadata.Actions(); len(got) != 0 {
			t.Errorf("metadata actions = %v, want none", got)
		}
	})
}

func TestNewRequiresClients(t *testing.T) {
	_, err := New(Config{Workers: -1})
	if err == nil {
		t.Fatal("New(Config{Workers: -1}) = nil error, want one")
	}
	for _, want := range []string{"Client", "Metadata", "Discovery", "Workers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New(Config{Workers: -1}) error %q does not mention %s", err, want)
		}
	}
}
