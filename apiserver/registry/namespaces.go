package registry

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	storeerr "k8s.io/apiserver/pkg/storage/errors"
	"k8s.io/apiserver/pkg/util/dryrun"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// Namespaces is core/v1 Namespace. A namespace is deleted in two phases: see
// NewNamespaceStorage.
var Namespaces = &Resource{
	GVK:            corev1.SchemeGroupVersion.WithKind("Namespace"),
	Resource:       "namespaces",
	ShortNames:     []string{"ns"},
	HasStatus:      true,
	NameValidation: apimachineryvalidation.ValidateNamespaceName,
	New:            func() runtime.Object { return &corev1.Namespace{} },
	NewList:        func() runtime.Object { return &corev1.NamespaceList{} },

	Default: func(obj runtime.Object) {
		ns := obj.(*corev1.Namespace)
		if ns.Name != "" {
			nsSetNameLabel(ns)
		}
	},
	PrepareForCreate: func(_ context.Context, obj runtime.Object) {
		ns := obj.(*corev1.Namespace)
		ns.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
		// Every namespace starts with the "kubernetes" finalizer, which the
		// namespace controller removes once the namespace is empty. It is
		// added here rather than in Default so that it can later be removed.
		if !slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
			ns.Spec.Finalizers = append(ns.Spec.Finalizers, corev1.FinalizerKubernetes)
		}
		// A generated name is known only now.
		nsSetNameLabel(ns)
	},
	PrepareForUpdate: func(_ context.Context, obj, old runtime.Object) {
		ns, oldNS := obj.(*corev1.Namespace), old.(*corev1.Namespace)
		// spec.finalizers changes only through namespaces/finalize. The
		// generation was computed before this reset; undo any bump.
		ns.Spec = oldNS.Spec
		ns.Generation = oldNS.Generation
		nsSetNameLabel(ns)
	},
	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		return nsValidateFinalizers(obj.(*corev1.Namespace))
	},
	PrepareForStatusUpdate: func(_ context.Context, obj, _ runtime.Object) {
		nsSetNameLabel(obj.(*corev1.Namespace))
	},
	ValidateStatusUpdate: func(_ context.Context, obj, _ runtime.Object) field.ErrorList {
		return nsValidatePhase(obj.(*corev1.Namespace))
	},

	Fields: func(obj runtime.Object) fields.Set {
		return fields.Set{"status.phase": string(obj.(*corev1.Namespace).Status.Phase)}
	},
	Columns: []metav1.TableColumnDefinition{
		NameColumn,
		{Name: "Status", Type: "string", Description: "The lifecycle phase of the namespace."},
		AgeColumn,
	},
	Row: func(obj runtime.Object) []interface{} {
		ns := obj.(*corev1.Namespace)
		return []interface{}{ns.Name, string(ns.Status.Phase), Age(ns.CreationTimestamp)}
	},
}

// nsSetNameLabel keeps the kubernetes.io/metadata.name label equal to the
// name, so that namespace selectors can pick a namespace by name.
func nsSetNameLabel(ns *corev1.Namespace) {
	if ns.Name == "" || ns.Labels[corev1.LabelMetadataName] == ns.Name {
		return
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[corev1.LabelMetadataName] = ns.Name
}

// nsValidateFinalizers checks spec.finalizers: each is a qualified name, and
// one without a domain prefix must be the built-in "kubernetes".
func nsValidateFinalizers(ns *corev1.Namespace) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec", "finalizers")
	for i, f := range ns.Spec.Finalizers {
		name := string(f)
		errs = append(errs, apimachineryvalidation.ValidateFinalizerName(name, p.Index(i))...)
		if !strings.Contains(name, "/") && f != corev1.FinalizerKubernetes {
			errs = append(errs, field.Invalid(p.Index(i), name, "name is neither a standard finalizer name nor is it fully qualified"))
		}
	}
	return errs
}

// nsValidatePhase ties status.phase to metadata.deletionTimestamp: a
// namespace is Terminating exactly when its deletion has begun.
func nsValidatePhase(ns *corev1.Namespace) field.ErrorList {
	p := field.NewPath("status", "phase")
	if ns.DeletionTimestamp.IsZero() {
		if ns.Status.Phase != corev1.NamespaceActive {
			return field.ErrorList{field.Invalid(p, ns.Status.Phase, "may only be 'Active' if `deletionTimestamp` is empty")}
		}
		return nil
	}
	if ns.Status.Phase != corev1.NamespaceTerminating {
		return field.ErrorList{field.Invalid(p, ns.Status.Phase, "may only be 'Terminating' if `deletionTimestamp` is not empty")}
	}
	return nil
}

// nsShouldDeleteDuringUpdate adds to the generic rule (a deleted object
// whose metadata.finalizers become empty is removed) that spec.finalizers
// must be empty too. The generic store checks its own rule first.
func nsShouldDeleteDuringUpdate(_ context.Context, _ string, obj, _ runtime.Object) bool {
	ns, ok := obj.(*corev1.Namespace)
	return ok && len(ns.Spec.Finalizers) == 0
}

// NewNamespaceStorage builds the storage of namespaces, their status and
// their finalize subresource.
//
// Deleting a namespace takes two phases, as upstream. The first DELETE of a
// namespace that has finalizers only marks it: it sets
// metadata.deletionTimestamp and status.phase=Terminating and returns the
// namespace. The namespace controller then empties the namespace and removes
// its entry from spec.finalizers with PUT namespaces/{name}/finalize.
//
// The finalize (or any other) update that leaves a terminating namespace with
// neither spec.finalizers nor metadata.finalizers removes it from storage, as
// upstream does; a DELETE sent afterwards gets 404, which a controller should
// treat as done. A DELETE of a terminating namespace whose spec.finalizers is
// already empty also removes it (after any metadata.finalizers, as for every
// resource).
//
// The main storage serves no deletecollection: deleting many namespaces at
// once would bypass the two phases, and upstream does not offer it either.
func NewNamespaceStorage(opts generic.RESTOptionsGetter) (main rest.Storage, status rest.Storage, finalize rest.Storage, err error) {
	store, st, err := NewStore(Namespaces, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	store.Store.ReturnDeletedObject = true
	store.Store.ShouldDeleteDuringUpdate = nsShouldDeleteDuringUpdate
	st.store.ShouldDeleteDuringUpdate = nsShouldDeleteDuringUpdate

	fin := *store.Store
	fs := &nsFinalizeStrategy{RESTUpdateStrategy: store.Store.UpdateStrategy}
	fin.UpdateStrategy = fs
	fin.ResetFieldsStrategy = fs
	return &nsREST{rest: store}, st, &nsFinalizeREST{store: &fin}, nil
}

// nsREST is the main namespace storage: the generic store with the two-phase
// Delete and without DeleteCollection. It forwards the rest explicitly;
// embedding *REST would also promote the store's DeleteCollection.
type nsREST struct {
	rest *REST
}

var (
	_ rest.Creater                    = (*nsREST)(nil)
	_ rest.Lister                     = (*nsREST)(nil)
	_ rest.Getter                     = (*nsREST)(nil)
	_ rest.Watcher                    = (*nsREST)(nil)
	_ rest.Updater                    = (*nsREST)(nil)
	_ rest.Patcher                    = (*nsREST)(nil)
	_ rest.GracefulDeleter            = (*nsREST)(nil)
	_ rest.MayReturnFullObjectDeleter = (*nsREST)(nil)
	_ rest.Scoper                     = (*nsREST)(nil)
	_ rest.SingularNameProvider       = (*nsREST)(nil)
	_ rest.ShortNamesProvider         = (*nsREST)(nil)
	_ rest.StorageVersionProvider     = (*nsREST)(nil)
	_ rest.ResetFieldsStrategy        = (*nsREST)(nil)
	_ rest.TableConvertor             = (*nsREST)(nil)
)

func (r *nsREST) New() runtime.Object     { return r.rest.New() }
func (r *nsREST) NewList() runtime.Object { return r.rest.NewList() }
func (r *nsREST) Destroy()                { r.rest.Destroy() }
func (r *nsREST) NamespaceScoped() bool   { return false }
func (r *nsREST) GetSingularName() string { return r.rest.GetSingularName() }
func (r *nsREST) ShortNames() []string    { return r.rest.ShortNames() }
func (r *nsREST) Categories() []string    { return r.rest.Categories() }
func (r *nsREST) ReadinessCheck() error   { return r.rest.ReadinessCheck() }

func (r *nsREST) StorageVersion() runtime.GroupVersioner { return r.rest.StorageVersion() }
func (r *nsREST) DeleteReturnsDeletedObject() bool       { return r.rest.DeleteReturnsDeletedObject() }

func (r *nsREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.rest.GetResetFields()
}

func (r *nsREST) ConvertToTable(ctx context.Context, obj runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	return r.rest.ConvertToTable(ctx, obj, opts)
}

func (r *nsREST) Get(ctx context.Context, name string, opts *metav1.GetOptions) (runtime.Object, error) {
	return r.rest.Get(ctx, name, opts)
}

func (r *nsREST) List(ctx context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	return r.rest.List(ctx, opts)
}

func (r *nsREST) Watch(ctx context.Context, opts *metainternalversion.ListOptions) (watch.Interface, error) {
	return r.rest.Watch(ctx, opts)
}

func (r *nsREST) Create(ctx context.Context, obj runtime.Object, v rest.ValidateObjectFunc, opts *metav1.CreateOptions) (runtime.Object, error) {
	return r.rest.Create(ctx, obj, v, opts)
}

func (r *nsREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, cv rest.ValidateObjectFunc, uv rest.ValidateObjectUpdateFunc, forceAllowCreate bool, opts *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.rest.Update(ctx, name, objInfo, cv, uv, forceAllowCreate, opts)
}

// Delete begins or completes the deletion of a namespace; see
// NewNamespaceStorage. The DeleteOptions preconditions are checked in both
// phases.
func (r *nsREST) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, opts *metav1.DeleteOptions) (runtime.Object, bool, error) {
	obj, err := r.rest.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, false, err
	}
	ns := obj.(*corev1.Namespace)
	if opts == nil {
		opts = &metav1.DeleteOptions{}
	}
	if deleteValidation == nil {
		deleteValidation = rest.ValidateAllObjectFunc
	}
	var pre storage.Preconditions
	if p := opts.Preconditions; p != nil {
		if p.UID != nil && *p.UID != ns.UID {
			return nil, false, nsConflict(name, "UID in precondition: %v, UID in object meta: %v", *p.UID, ns.UID)
		}
		if p.ResourceVersion != nil && *p.ResourceVersion != ns.ResourceVersion {
			return nil, false, nsConflict(name, "ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *p.ResourceVersion, ns.ResourceVersion)
		}
		pre.UID, pre.ResourceVersion = p.UID, p.ResourceVersion
	}

	terminating := !ns.DeletionTimestamp.IsZero()
	switch {
	case !terminating && (len(ns.Spec.Finalizers) > 0 || len(ns.Finalizers) > 0):
		return r.beginDelete(ctx, name, &pre, deleteValidation, opts)
	case terminating && len(ns.Spec.Finalizers) > 0:
		// The namespace controller is still at work.
		return ns, false, nil
	}
	return r.rest.Store.Delete(ctx, name, deleteValidation, opts)
}

// beginDelete marks a namespace as terminating in one guarded write.
func (r *nsREST) beginDelete(ctx context.Context, name string, pre *storage.Preconditions, deleteValidation rest.ValidateObjectFunc, opts *metav1.DeleteOptions) (runtime.Object, bool, error) {
	s := r.rest.Store
	key, err := s.KeyFunc(ctx, name)
	if err != nil {
		return nil, false, err
	}
	out := s.NewFunc()
	err = s.Storage.GuaranteedUpdate(ctx, key, out, false, pre,
		storage.SimpleUpdate(func(existing runtime.Object) (runtime.Object, error) {
			ns := existing.(*corev1.Namespace)
			if err := deleteValidation(ctx, ns); err != nil {
				return nil, err
			}
			if ns.DeletionTimestamp.IsZero() {
				now := metav1.Now()
				ns.DeletionTimestamp = &now
			}
			ns.Status.Phase = corev1.NamespaceTerminating
			ns.Finalizers = nsGCFinalizers(ns.Finalizers, opts)
			return ns, nil
		}),
		dryrun.IsDryRun(opts.DryRun), nil)
	if err != nil {
		err = storeerr.InterpretGetError(err, s.DefaultQualifiedResource, name)
		err = storeerr.InterpretUpdateError(err, s.DefaultQualifiedResource, name)
		if _, ok := err.(apierrors.APIStatus); !ok {
			err = apierrors.NewInternalError(err)
		}
		return nil, false, err
	}
	return out, false, nil
}

// nsGCFinalizers applies the propagation policy of a first DELETE to the
// garbage collector's finalizers, as the generic store does for other
// resources: Orphan asks for "orphan", Foreground for "foregroundDeletion",
// Background for neither; with no policy the finalizers stay as they are.
func nsGCFinalizers(finalizers []string, opts *metav1.DeleteOptions) []string {
	var policy metav1.DeletionPropagation
	switch {
	case opts.OrphanDependents != nil && *opts.OrphanDependents:
		policy = metav1.DeletePropagationOrphan
	case opts.OrphanDependents != nil:
		policy = metav1.DeletePropagationBackground
	case opts.PropagationPolicy != nil:
		policy = *opts.PropagationPolicy
	default:
		return finalizers
	}
	out := slices.DeleteFunc(slices.Clone(finalizers), func(f string) bool {
		return f == metav1.FinalizerOrphanDependents || f == metav1.FinalizerDeleteDependents
	})
	switch policy {
	case metav1.DeletePropagationOrphan:
		out = append(out, metav1.FinalizerOrphanDependents)
	case metav1.DeletePropagationForeground:
		out = append(out, metav1.FinalizerDeleteDependents)
	}
	return out
}

func nsConflict(name, format string, args ...interface{}) error {
	return apierrors.NewConflict(Namespaces.GroupResource(), name, fmt.Errorf("precondition failed: "+format, args...))
}

// nsFinalizeREST serves namespaces/finalize: PUT only, as upstream.
type nsFinalizeREST struct {
	store *genericregistry.Store
}

var _ rest.Updater = (*nsFinalizeREST)(nil)

func (r *nsFinalizeREST) New() runtime.Object { return r.store.New() }
func (r *nsFinalizeREST) Destroy()            {}

// Update replaces spec.finalizers of a namespace.
func (r *nsFinalizeREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, cv rest.ValidateObjectFunc, uv rest.ValidateObjectUpdateFunc, _ bool, opts *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.store.Update(ctx, name, objInfo, cv, uv, false, opts)
}

// GetResetFields implements rest.ResetFieldsStrategy.
func (r *nsFinalizeREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

// nsFinalizeStrategy lets a write change spec.finalizers and nothing else.
type nsFinalizeStrategy struct {
	rest.RESTUpdateStrategy
}

var _ rest.ResetFieldsStrategy = (*nsFinalizeStrategy)(nil)

func (s *nsFinalizeStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	ns, oldNS := obj.(*corev1.Namespace), old.(*corev1.Namespace)
	finalizers, managed := ns.Spec.Finalizers, ns.ManagedFields
	*ns = *oldNS.DeepCopy()
	ns.Spec.Finalizers = finalizers
	ns.ManagedFields = managed
}

func (s *nsFinalizeStrategy) ValidateUpdate(_ context.Context, obj, _ runtime.Object) field.ErrorList {
	// rest.BeforeUpdate has checked the metadata, all of which is stored.
	return nsValidateFinalizers(obj.(*corev1.Namespace))
}

func (s *nsFinalizeStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		"v1": fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}
