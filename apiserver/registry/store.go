package registry

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"tether/apiserver/scheme"
)

// REST is the storage of one resource: the generic etcd-backed store plus
// the discovery details the store does not carry.
type REST struct {
	*genericregistry.Store
	res *Resource
}

var (
	_ rest.ShortNamesProvider = (*REST)(nil)
	_ rest.CategoriesProvider = (*REST)(nil)
	_ rest.StandardStorage    = (*REST)(nil)
)

// ShortNames implements rest.ShortNamesProvider.
func (r *REST) ShortNames() []string { return r.res.ShortNames }

// Categories implements rest.CategoriesProvider.
func (r *REST) Categories() []string { return r.res.Categories }

// StatusREST serves the status subresource of a resource.
type StatusREST struct {
	store *genericregistry.Store
}

var _ rest.Patcher = (*StatusREST)(nil)

// New implements rest.Storage.
func (r *StatusREST) New() runtime.Object { return r.store.New() }

// Destroy implements rest.Storage; the main resource owns the storage.
func (r *StatusREST) Destroy() {}

// Get returns the object, so that patches of the status can be computed.
func (r *StatusREST) Get(ctx context.Context, name string, opts *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, opts)
}

// Update writes the status of an object.
func (r *StatusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, opts *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// Status writes never create: the object must exist.
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, opts)
}

// GetResetFields implements rest.ResetFieldsStrategy.
func (r *StatusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

// ConvertToTable implements rest.TableConvertor.
func (r *StatusREST) ConvertToTable(ctx context.Context, obj runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, obj, opts)
}

// NewStore builds the storage of res on the given REST options (etcd and
// the watch cache). If res has a status, the status storage is returned too.
func NewStore(res *Resource, opts generic.RESTOptionsGetter) (*REST, *StatusREST, error) {
	if err := RegisterInScheme(res); err != nil {
		return nil, nil, err
	}
	gr := res.GroupResource()
	st := newStrategy(res, false)
	store := &genericregistry.Store{
		NewFunc:                  res.New,
		NewListFunc:              res.NewList,
		DefaultQualifiedResource: gr,
		PredicateFunc:            nil,
		CreateStrategy:           st,
		UpdateStrategy:           st,
		DeleteStrategy:           st,
		ResetFieldsStrategy:      st,
		TableConvertor:           newTable(res),
	}
	if res.TTL > 0 {
		ttl := uint64(res.TTL.Seconds())
		store.TTLFunc = func(runtime.Object, uint64, bool) (uint64, error) { return ttl, nil }
	}
	store.SingularQualifiedResource = gr
	store.SingularQualifiedResource.Resource = res.singular()
	attrs := func(obj runtime.Object) (labels.Set, fields.Set, error) {
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, nil, err
		}
		f, err := res.selectableFields(obj)
		return labels.Set(m.GetLabels()), f, err
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: opts, AttrFunc: attrs}); err != nil {
		return nil, nil, fmt.Errorf("registry: %s: %w", gr, err)
	}
	main := &REST{Store: store, res: res}
	if !res.HasStatus {
		return main, nil, nil
	}
	status := *store
	sst := newStrategy(res, true)
	status.UpdateStrategy = sst
	status.ResetFieldsStrategy = sst
	return main, &StatusREST{store: &status}, nil
}

var (
	schemeMu         sync.Mutex
	schemeRegistered = map[schema.GroupVersionKind]bool{}
)

// RegisterInScheme teaches the scheme a resource's defaults and the field
// labels its field selectors accept. The request handlers ask the scheme
// for both.
func RegisterInScheme(res *Resource) error {
	schemeMu.Lock()
	defer schemeMu.Unlock()
	if schemeRegistered[res.GVK] {
		return nil
	}
	allowed, err := res.selectableFields(res.New())
	if err != nil {
		return err
	}
	err = scheme.Scheme.AddFieldLabelConversionFunc(res.GVK, func(label, value string) (string, string, error) {
		if _, ok := allowed[label]; ok {
			return label, value, nil
		}
		return "", "", fmt.Errorf("field label not supported: %s", label)
	})
	if err != nil {
		return fmt.Errorf("registry: %s: %w", res.Resource, err)
	}
	if res.Default != nil {
		scheme.Scheme.AddTypeDefaultingFunc(res.New(), func(obj interface{}) { res.Default(obj.(runtime.Object)) })
	}
	schemeRegistered[res.GVK] = true
	return nil
}

// Resources returns every resource the API server stores.
func Resources() []*Resource {
	return []*Resource{
		Pods, Nodes, Services, Endpoints, ConfigMaps, Secrets, ServiceAccounts, Events, EventsV1,
		Namespaces, Leases, CertificateSigningRequests, EndpointSlices,
		Roles, ClusterRoles, RoleBindings, ClusterRoleBindings,
	}
}

// PrepareScheme registers every resource, and the query conversions of the
// pod subresources, in the scheme. The scheme's maps are read without locks
// by running watches and requests, so this must happen before the first
// store exists; later calls change nothing.
func PrepareScheme() error {
	for _, res := range Resources() {
		if err := RegisterInScheme(res); err != nil {
			return err
		}
	}
	return registerPodStreamConversions()
}
