// Package registry turns a small description of each served resource (its
// kind, defaults, validation, selectable fields and table columns) into the
// REST storage that the generic API server installs. Everything that is the
// same for all resources — metadata validation, the status split, generation
// bumps, field selectors, tables, etcd access — lives here once; each resource
// file holds only what is particular to that resource.
package registry

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Resource describes one served resource. Only GVK, Resource, New and
// NewList are required; every nil func means "nothing particular".
type Resource struct {
	// GVK is the external group, version and kind served.
	GVK schema.GroupVersionKind
	// Resource is the plural lower-case name used in URLs.
	Resource string
	// Singular is the singular name; if empty, the lower-case kind is used.
	Singular   string
	ShortNames []string
	Categories []string
	Namespaced bool

	New     func() runtime.Object
	NewList func() runtime.Object

	// NameValidation validates metadata.name. If nil, names must be DNS-1123
	// subdomains.
	NameValidation func(name string, prefix bool) []string

	// Default fills unset fields on create and update, after decoding.
	Default func(obj runtime.Object)
	// PrepareForCreate clears or sets fields a client does not control on
	// create. The status is already reset when HasStatus is set.
	PrepareForCreate func(ctx context.Context, obj runtime.Object)
	// PrepareForUpdate does the same on update; old is the stored object.
	PrepareForUpdate func(ctx context.Context, obj, old runtime.Object)
	// Validate checks an object on create (metadata is checked already).
	Validate func(ctx context.Context, obj runtime.Object) field.ErrorList
	// ValidateUpdate checks an update, including immutable fields.
	ValidateUpdate func(ctx context.Context, obj, old runtime.Object) field.ErrorList

	// HasStatus splits the object: the main resource ignores status changes
	// and a "status" subresource changes only the status.
	HasStatus bool
	// KeepStatusOnCreate keeps the status a client sends on create (nodes
	// register with their status filled in).
	KeepStatusOnCreate bool
	// ValidateStatusUpdate checks a write to the status subresource.
	ValidateStatusUpdate func(ctx context.Context, obj, old runtime.Object) field.ErrorList
	// PrepareForStatusUpdate adjusts a status write beyond the generic split.
	PrepareForStatusUpdate func(ctx context.Context, obj, old runtime.Object)

	// Fields returns the fields that field selectors may name, in addition
	// to metadata.name and metadata.namespace.
	Fields func(obj runtime.Object) fields.Set

	// Columns and Row build the Table for kubectl get. If Columns is nil,
	// the table has Name and Created At.
	Columns []metav1.TableColumnDefinition
	Row     func(obj runtime.Object) []interface{}

	// TTL, if set, makes etcd delete an object this long after its last
	// write (events, like upstream's --event-ttl).
	TTL time.Duration

	// AllowCreateOnUpdate lets PUT create a missing object.
	AllowCreateOnUpdate bool

	// GracePeriod, if set, makes deletion graceful: it returns the grace
	// period in seconds for deleting obj with the given options (0 deletes
	// at once). The object then stays, with deletionTimestamp set, until
	// another actor (the kubelet, for pods) deletes it with grace 0.
	GracePeriod func(obj runtime.Object, options *metav1.DeleteOptions) int64
}

// GroupResource returns the resource's group and plural name.
func (r *Resource) GroupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.GVK.Group, Resource: r.Resource}
}

func (r *Resource) singular() string {
	if r.Singular != "" {
		return r.Singular
	}
	return lower(r.GVK.Kind)
}

// selectableFields returns the field set of obj for field selectors.
func (r *Resource) selectableFields(obj runtime.Object) (fields.Set, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, fmt.Errorf("registry: %s: %w", r.Resource, err)
	}
	set := fields.Set{"metadata.name": m.GetName()}
	if r.Namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	if r.Fields != nil {
		for k, v := range r.Fields(obj) {
			set[k] = v
		}
	}
	return set, nil
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
