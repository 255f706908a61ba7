// Package scheme holds the runtime.Scheme that tether's API server serves.
//
// tether stores and serves the external types of k8s.io/api directly: there
// is no separate internal representation. To fit the generic server of
// k8s.io/apiserver, which converts every request to a "hub" version before it
// reaches storage, each served external type is also registered as its
// group's internal (hub) version. Conversion between a version and the hub is
// then a copy, and the same Go value flows from the decoder to etcd.
package scheme

import (
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

var (
	// Scheme knows every type tether serves, in its external and hub form.
	Scheme = runtime.NewScheme()
	// Codecs encodes and decodes JSON, YAML and Kubernetes protobuf.
	Codecs = serializer.NewCodecFactory(Scheme)
	// ParameterCodec decodes query parameters into option structs.
	ParameterCodec = runtime.NewParameterCodec(Scheme)
)

// Served lists the group versions tether serves, core first.
var Served = []schema.GroupVersion{
	corev1.SchemeGroupVersion,
	coordinationv1.SchemeGroupVersion,
	certificatesv1.SchemeGroupVersion,
	eventsv1.SchemeGroupVersion,
	discoveryv1.SchemeGroupVersion,
	rbacv1.SchemeGroupVersion,
	authenticationv1.SchemeGroupVersion,
	authorizationv1.SchemeGroupVersion,
}

// Internal returns the hub version of a group.
func Internal(group string) schema.GroupVersion {
	return schema.GroupVersion{Group: group, Version: runtime.APIVersionInternal}
}

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(metainternalversion.AddToScheme(Scheme))
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	Scheme.AddUnversionedTypes(schema.GroupVersion{Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{},
		&metav1.APIGroup{}, &metav1.APIResourceList{})

	// Register every served external kind as its group's hub kind too.
	for _, gv := range Served {
		if gv == eventsv1.SchemeGroupVersion {
			continue // events.k8s.io shares the core Event as its hub; see events.go
		}
		for kind, t := range Scheme.KnownTypes(gv) {
			if isMetaKind(kind) {
				continue
			}
			Scheme.AddKnownTypeWithName(Internal(gv.Group).WithKind(kind), newOf(t))
		}
	}
	registerEvents()
}

// isMetaKind reports kinds that metav1.AddToGroupVersion adds to every
// group version; they keep their own internal forms.
func isMetaKind(kind string) bool {
	switch kind {
	case "WatchEvent", "ListOptions", "GetOptions", "DeleteOptions", "CreateOptions",
		"UpdateOptions", "PatchOptions", "Status", "APIVersions", "APIGroupList",
		"APIGroup", "APIResourceList":
		return true
	}
	return false
}

// KindFor returns the external GroupVersionKind of a served object.
func KindFor(obj runtime.Object) (schema.GroupVersionKind, error) {
	kinds, _, err := Scheme.ObjectKinds(obj)
	if err != nil {
		return schema.GroupVersionKind{}, err
	}
	for _, k := range kinds {
		if k.Version != runtime.APIVersionInternal {
			return k, nil
		}
	}
	return schema.GroupVersionKind{}, fmt.Errorf("scheme: no external kind for %T", obj)
}
