package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	storeerr "k8s.io/apiserver/pkg/storage/errors"
	"k8s.io/apiserver/pkg/util/dryrun"
)

// NewBindingStorage returns the storage of pods/binding and of the older
// namespaced bindings collection, both on the main pod storage. A POST of a
// core/v1 Binding assigns its pod to the node the binding's target names:
// this is how the scheduler places pods (and the only way to set a pod's
// spec.nodeName after it was created).
//
// As upstream: the target's kind must be Node or empty and its name is
// required (422); the pod must exist (404); a pod that already has a node,
// is being deleted or still has scheduling gates is refused with 409, as is
// a binding whose metadata.uid or resourceVersion (on pods/binding) does not
// match the pod's. The binding sets spec.nodeName, copies the binding's
// annotations onto the pod and marks the pod's PodScheduled condition True.
// A dry run checks all of that and writes nothing. Who may bind is up to
// the authorizer (create on pods/binding or bindings); nodes may not.
func NewBindingStorage(pods *REST) (binding, legacy rest.Storage) {
	b := &bindingREST{pods: pods, now: time.Now}
	return b, &legacyBindingREST{binding: b}
}

// bindingREST serves pods/binding.
type bindingREST struct {
	pods *REST
	now  func() time.Time
}

var (
	_ rest.NamedCreater                   = (*bindingREST)(nil)
	_ rest.SubresourceObjectMetaPreserver = (*bindingREST)(nil)
)

// New implements rest.Storage.
func (r *bindingREST) New() runtime.Object { return &corev1.Binding{} }

// Destroy implements rest.Storage; the pod storage owns the store.
func (r *bindingREST) Destroy() {}

// PreserveRequestObjectMetaSystemFieldsOnSubresourceCreate keeps the uid
// and resourceVersion a client sends: they are preconditions on the pod.
func (r *bindingREST) PreserveRequestObjectMetaSystemFieldsOnSubresourceCreate() bool {
	return true
}

// Create implements rest.NamedCreater; name is the pod's.
func (r *bindingREST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, opts *metav1.CreateOptions) (runtime.Object, error) {
	b, ok := obj.(*corev1.Binding)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected a Binding, got %T", obj))
	}
	if b.Name != name {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the name in the URL (%q) does not match the name of the Binding (%q)", name, b.Name))
	}
	if errs := bindingValidate(b); len(errs) > 0 {
		return nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Binding").GroupKind(), name, errs)
	}
	if createValidation != nil {
		if err := createValidation(ctx, b.DeepCopyObject()); err != nil {
			return nil, err
		}
	}
	if err := r.assign(ctx, b, opts != nil && dryrun.IsDryRun(opts.DryRun)); err != nil {
		return nil, err
	}
	return &metav1.Status{Status: metav1.StatusSuccess, Code: http.StatusCreated}, nil
}

// bindingValidate checks a Binding's target.
func bindingValidate(b *corev1.Binding) field.ErrorList {
	p := field.NewPath("target")
	var errs field.ErrorList
	if k := b.Target.Kind; k != "" && k != "Node" {
		errs = append(errs, field.NotSupported(p.Child("kind"), k, []string{"Node", "<empty>"}))
	}
	if b.Target.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), "the node to bind the pod to"))
	} else {
		errs = append(errs, validateNodeName(p.Child("name"), b.Target.Name)...)
	}
	return errs
}

// assign writes the binding into its pod with a guaranteed update: the
// checks run against the pod as stored, so two binders racing for one pod
// cannot both succeed.
func (r *bindingREST) assign(ctx context.Context, b *corev1.Binding, dryRun bool) error {
	store := r.pods.Store
	key, err := store.KeyFunc(ctx, b.Name)
	if err != nil {
		return err
	}
	var pre *storage.Preconditions
	if b.UID != "" || b.ResourceVersion != "" {
		pre = &storage.Preconditions{}
		if b.UID != "" {
			uid := types.UID(b.UID)
			pre.UID = &uid
		}
		if b.ResourceVersion != "" {
			rv := b.ResourceVersion
			pre.ResourceVersion = &rv
		}
	}
	node := b.Target.Name
	err = store.Storage.GuaranteedUpdate(ctx, key, &corev1.Pod{}, false, pre,
		storage.SimpleUpdate(func(obj runtime.Object) (runtime.Object, error) {
			pod, ok := obj.(*corev1.Pod)
			if !ok {
				return nil, fmt.Errorf("unexpected object %T", obj)
			}
			switch {
			case pod.DeletionTimestamp != nil:
				return nil, errBinding{fmt.Sprintf("pod %s is being deleted, cannot be assigned to a node", pod.Name)}
			case pod.Spec.NodeName != "":
				return nil, errBinding{fmt.Sprintf("pod %s is already assigned to node %q", pod.Name, pod.Spec.NodeName)}
			case len(pod.Spec.SchedulingGates) > 0:
				return nil, errBinding{fmt.Sprintf("pod %s has non-empty .spec.schedulingGates", pod.Name)}
			}
			pod.Spec.NodeName = node
			if len(b.Annotations) > 0 && pod.Annotations == nil {
				pod.Annotations = make(map[string]string, len(b.Annotations))
			}
			for k, v := range b.Annotations {
				pod.Annotations[k] = v
			}
			bindingSetScheduled(&pod.Status, metav1.NewTime(r.now()))
			return pod, nil
		}), dryRun, nil)
	if err == nil {
		return nil
	}
	gr := r.pods.DefaultQualifiedResource
	if e := (errBinding{}); errors.As(err, &e) {
		gr.Resource = "pods/binding"
		return apierrors.NewConflict(gr, b.Name, e)
	}
	return storeerr.InterpretUpdateError(err, gr, b.Name)
}

// errBinding is why a pod cannot take a binding.
type errBinding struct{ msg string }

func (e errBinding) Error() string { return e.msg }

// bindingSetScheduled sets the PodScheduled condition to True, keeping its
// transition time if it was True already.
func bindingSetScheduled(st *corev1.PodStatus, now metav1.Time) {
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != corev1.PodScheduled {
			continue
		}
		if c.Status != corev1.ConditionTrue {
			*c = corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}
		}
		return
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now})
}

// legacyBindingREST serves POST /api/v1/namespaces/{ns}/bindings, where
// the Binding's own metadata.name names the pod.
type legacyBindingREST struct {
	binding *bindingREST
}

var (
	_ rest.Creater              = (*legacyBindingREST)(nil)
	_ rest.Scoper               = (*legacyBindingREST)(nil)
	_ rest.SingularNameProvider = (*legacyBindingREST)(nil)
)

// New implements rest.Storage.
func (r *legacyBindingREST) New() runtime.Object { return &corev1.Binding{} }

// Destroy implements rest.Storage.
func (r *legacyBindingREST) Destroy() {}

// NamespaceScoped implements rest.Scoper.
func (r *legacyBindingREST) NamespaceScoped() bool { return true }

// GetSingularName implements rest.SingularNameProvider.
func (r *legacyBindingREST) GetSingularName() string { return "binding" }

// Create implements rest.Creater.
func (r *legacyBindingREST) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, opts *metav1.CreateOptions) (runtime.Object, error) {
	b, ok := obj.(*corev1.Binding)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected a Binding, got %T", obj))
	}
	if b.Name == "" {
		return nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Binding").GroupKind(), "",
			field.ErrorList{field.Required(field.NewPath("metadata", "name"), "the name of the pod to bind")})
	}
	return r.binding.Create(ctx, b.Name, obj, createValidation, opts)
}
