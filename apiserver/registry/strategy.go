package registry

import (
	"context"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"reflect"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"tether/apiserver/scheme"
)

// strategy adapts a Resource to the create, update and delete strategies of
// the generic store. status selects the status-subresource behaviour.
type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	res    *Resource
	status bool
}

var (
	_ rest.RESTCreateStrategy         = (*strategy)(nil)
	_ rest.RESTUpdateStrategy         = (*strategy)(nil)
	_ rest.RESTDeleteStrategy         = (*strategy)(nil)
	_ rest.RESTGracefulDeleteStrategy = (*strategy)(nil)
	_ rest.ResetFieldsStrategy        = (*strategy)(nil)
)

func newStrategy(res *Resource, status bool) *strategy {
	return &strategy{ObjectTyper: scheme.Scheme, NameGenerator: names.SimpleNameGenerator, res: res, status: status}
}

func (s *strategy) NamespaceScoped() bool { return s.res.Namespaced }

// CheckGracefulDelete makes deletion graceful for resources with a
// GracePeriod, setting the period in options.
func (s *strategy) CheckGracefulDelete(_ context.Context, obj runtime.Object, options *metav1.DeleteOptions) bool {
	if s.res.GracePeriod == nil || options == nil {
		return false
	}
	period := s.res.GracePeriod(obj, options)
	options.GracePeriodSeconds = &period
	return true
}

func (s *strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	if s.res.HasStatus && !s.res.KeepStatusOnCreate {
		resetField(obj, "Status")
	}
	if hasField(obj, "Spec") {
		if m, err := meta.Accessor(obj); err == nil {
			m.SetGeneration(1)
		}
	}
	if s.res.PrepareForCreate != nil {
		s.res.PrepareForCreate(ctx, obj)
	}
}

func (s *strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	if s.status {
		// A status write changes the status and nothing else.
		copyField(obj, old, "Spec")
		if m, err := meta.Accessor(obj); err == nil {
			if o, err := meta.Accessor(old); err == nil {
				m.SetGeneration(o.GetGeneration())
				m.SetDeletionTimestamp(o.GetDeletionTimestamp())
				m.SetOwnerReferences(o.GetOwnerReferences())
			}
		}
		if s.res.PrepareForStatusUpdate != nil {
			s.res.PrepareForStatusUpdate(ctx, obj, old)
		}
		return
	}
	if s.res.HasStatus {
		copyField(obj, old, "Status")
	}
	if hasField(obj, "Spec") {
		m, err1 := meta.Accessor(obj)
		o, err2 := meta.Accessor(old)
		if err1 == nil && err2 == nil {
			m.SetGeneration(o.GetGeneration())
			if !equality.Semantic.DeepEqual(field0(obj, "Spec"), field0(old, "Spec")) {
				m.SetGeneration(o.GetGeneration() + 1)
			}
		}
	}
	if s.res.PrepareForUpdate != nil {
		s.res.PrepareForUpdate(ctx, obj, old)
	}
}

func (s *strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	m, err := meta.Accessor(obj)
	if err != nil {
		return field.ErrorList{field.InternalError(field.NewPath("metadata"), err)}
	}
	// The generic create path validates the rest of the metadata, with
	// names only checked as path segments; the name rules are ours.
	var errs field.ErrorList
	if name := m.GetName(); name != "" {
		for _, msg := range s.nameFunc()(name, false) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
		}
	} else if gen := m.GetGenerateName(); gen != "" {
		for _, msg := range s.nameFunc()(gen, true) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "generateName"), gen, msg))
		}
	}
	if s.res.Validate != nil {
		errs = append(errs, s.res.Validate(ctx, obj)...)
	}
	return errs
}

// ValidateUpdate checks an update; the generic update path has already
// validated the metadata change.
func (s *strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	var errs field.ErrorList
	if s.status {
		if s.res.ValidateStatusUpdate != nil {
			errs = append(errs, s.res.ValidateStatusUpdate(ctx, obj, old)...)
		}
		return errs
	}
	if s.res.ValidateUpdate != nil {
		errs = append(errs, s.res.ValidateUpdate(ctx, obj, old)...)
	} else if s.res.Validate != nil {
		errs = append(errs, s.res.Validate(ctx, obj)...)
	}
	return errs
}

func (s *strategy) nameFunc() apimachineryvalidation.ValidateNameFunc {
	if s.res.NameValidation != nil {
		return s.res.NameValidation
	}
	return apimachineryvalidation.NameIsDNSSubdomain
}

func (s *strategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }
func (s *strategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}
func (s *strategy) Canonicalize(runtime.Object) {}
func (s *strategy) AllowCreateOnUpdate(context.Context) bool {
	return s.res.AllowCreateOnUpdate && !s.status
}
func (s *strategy) AllowUnconditionalUpdate(context.Context) bool { return true }

// GetResetFields tells server-side apply which fields each endpoint ignores.
func (s *strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if !s.res.HasStatus {
		return nil
	}
	v := fieldpath.APIVersion(s.res.GVK.GroupVersion().String())
	if s.status {
		if hasField(s.res.New(), "Spec") {
			return map[fieldpath.APIVersion]*fieldpath.Set{v: fieldpath.NewSet(fieldpath.MakePathOrDie("spec"))}
		}
		return nil
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{v: fieldpath.NewSet(fieldpath.MakePathOrDie("status"))}
}

// The helpers below reach the Spec and Status fields of k8s.io/api structs,
// which all resources with a status split share by convention.

func structOf(obj runtime.Object) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	return v
}

func hasField(obj runtime.Object, name string) bool {
	v := structOf(obj)
	return v.Kind() == reflect.Struct && v.FieldByName(name).IsValid()
}

func field0(obj runtime.Object, name string) interface{} {
	f := structOf(obj).FieldByName(name)
	if !f.IsValid() {
		return nil
	}
	return f.Interface()
}

func resetField(obj runtime.Object, name string) {
	f := structOf(obj).FieldByName(name)
	if f.IsValid() && f.CanSet() {
		f.Set(reflect.Zero(f.Type()))
	}
}

func copyField(dst, src runtime.Object, name string) {
	d := structOf(dst).FieldByName(name)
	s := structOf(src).FieldByName(name)
	if d.IsValid() && s.IsValid() && d.CanSet() {
		d.Set(s)
	}
}
