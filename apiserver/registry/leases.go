package registry

import (
	"context"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Leases is coordination.k8s.io/v1 Lease, used for leader election and
// node heartbeats.
var Leases = &Resource{
	GVK:        coordinationv1.SchemeGroupVersion.WithKind("Lease"),
	Resource:   "leases",
	Namespaced: true,
	New:        func() runtime.Object { return &coordinationv1.Lease{} },
	NewList:    func() runtime.Object { return &coordinationv1.LeaseList{} },

	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		return leaseValidateSpec(&obj.(*coordinationv1.Lease).Spec, field.NewPath("spec"))
	},

	Columns: []metav1.TableColumnDefinition{
		NameColumn,
		{Name: "Holder", Type: "string", Description: "The identity of the holder of the lease."},
		AgeColumn,
	},
	Row: func(obj runtime.Object) []interface{} {
		l := obj.(*coordinationv1.Lease)
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		return []interface{}{l.Name, holder, Age(l.CreationTimestamp)}
	},
}

func leaseValidateSpec(spec *coordinationv1.LeaseSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if d := spec.LeaseDurationSeconds; d != nil && *d <= 0 {
		errs = append(errs, field.Invalid(p.Child("leaseDurationSeconds"), *d, "must be greater than 0"))
	}
	if t := spec.LeaseTransitions; t != nil && *t < 0 {
		errs = append(errs, field.Invalid(p.Child("leaseTransitions"), *t, "must be greater than or equal to 0"))
	}
	if s := spec.Strategy; s != nil && *s != coordinationv1.OldestEmulationVersion {
		errs = append(errs, field.NotSupported(p.Child("strategy"), *s, []coordinationv1.CoordinatedLeaseStrategy{coordinationv1.OldestEmulationVersion}))
	}
	if h := spec.PreferredHolder; h != nil && *h != "" && (spec.Strategy == nil || *spec.Strategy == "") {
		errs = append(errs, field.Forbidden(p.Child("preferredHolder"), "may only be specified if `strategy` is defined"))
	}
	return errs
}
