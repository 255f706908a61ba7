package registry

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// ServiceAccounts is core/v1 ServiceAccount. Beyond its metadata (a DNS-1123
// subdomain name), nothing in a ServiceAccount is validated, as upstream.
// References to secrets keep only their names: a secret of a service
// account always lives in the service account's namespace.
var ServiceAccounts = &Resource{
	GVK:        corev1.SchemeGroupVersion.WithKind("ServiceAccount"),
	Resource:   "serviceaccounts",
	ShortNames: []string{"sa"},
	Namespaced: true,
	New:        func() runtime.Object { return &corev1.ServiceAccount{} },
	NewList:    func() runtime.Object { return &corev1.ServiceAccountList{} },

	PrepareForCreate: func(_ context.Context, obj runtime.Object) {
		saNamesOnly(obj.(*corev1.ServiceAccount))
	},
	PrepareForUpdate: func(_ context.Context, obj, _ runtime.Object) {
		saNamesOnly(obj.(*corev1.ServiceAccount))
	},

	Columns: []metav1.TableColumnDefinition{
		NameColumn,
		{Name: "Secrets", Type: "integer", Description: "The number of secrets listed in the service account."},
		AgeColumn,
	},
	Row: func(obj runtime.Object) []interface{} {
		sa := obj.(*corev1.ServiceAccount)
		return []interface{}{sa.Name, int64(len(sa.Secrets)), Age(sa.CreationTimestamp)}
	},
}

// saNamesOnly drops every field but the name from the secret references.
func saNamesOnly(sa *corev1.ServiceAccount) {
	for i, ref := range sa.Secrets {
		sa.Secrets[i] = corev1.ObjectReference{Name: ref.Name}
	}
}
