package registry

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// cmMaxSize bounds the summed size of the values of a ConfigMap or Secret,
// as upstream: 1 MiB.
const cmMaxSize = 1 << 20

// ConfigMaps is core/v1 ConfigMap.
var ConfigMaps = &Resource{
	GVK:        corev1.SchemeGroupVersion.WithKind("ConfigMap"),
	Resource:   "configmaps",
	ShortNames: []string{"cm"},
	Namespaced: true,
	New:        func() runtime.Object { return &corev1.ConfigMap{} },
	NewList:    func() runtime.Object { return &corev1.ConfigMapList{} },

	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		return cmValidate(obj.(*corev1.ConfigMap))
	},
	ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
		cm, oldCM := obj.(*corev1.ConfigMap), old.(*corev1.ConfigMap)
		var errs field.ErrorList
		if cmIsImmutable(oldCM.Immutable) {
			var changed []string
			if !equality.Semantic.DeepEqual(cm.Data, oldCM.Data) {
				changed = append(changed, "data")
			}
			if !equality.Semantic.DeepEqual(cm.BinaryData, oldCM.BinaryData) {
				changed = append(changed, "binaryData")
			}
			errs = cmImmutableErrors(cm.Immutable, changed...)
		}
		return append(errs, cmValidate(cm)...)
	},

	Columns: []metav1.TableColumnDefinition{
		NameColumn,
		{Name: "Data", Type: "integer", Description: "The number of keys in data and binaryData."},
		AgeColumn,
	},
	Row: func(obj runtime.Object) []interface{} {
		cm := obj.(*corev1.ConfigMap)
		return []interface{}{cm.Name, int64(len(cm.Data) + len(cm.BinaryData)), Age(cm.CreationTimestamp)}
	},
}

func cmValidate(cm *corev1.ConfigMap) field.ErrorList {
	var errs field.ErrorList
	size := 0
	dataPath, binPath := field.NewPath("data"), field.NewPath("binaryData")
	for k, v := range cm.Data {
		errs = append(errs, cmValidateKey(dataPath, k)...)
		if _, dup := cm.BinaryData[k]; dup {
			errs = append(errs, field.Invalid(dataPath.Key(k), k, "duplicate of key present in binaryData"))
		}
		size += len(v)
	}
	for k, v := range cm.BinaryData {
		errs = append(errs, cmValidateKey(binPath, k)...)
		size += len(v)
	}
	if size > cmMaxSize {
		// The limit is on data and binaryData together.
		p := dataPath
		if len(cm.Data) == 0 {
			p = binPath
		}
		errs = append(errs, field.TooLong(p, "", cmMaxSize))
	}
	return errs
}

// cmValidateKey checks that k may name a file in a volume and an
// environment variable source: the rule for ConfigMap and Secret keys.
func cmValidateKey(p *field.Path, k string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsConfigMapKey(k) {
		errs = append(errs, field.Invalid(p.Key(k), k, msg))
	}
	return errs
}

func cmIsImmutable(b *bool) bool { return b != nil && *b }

// cmImmutableErrors reports what an update of an immutable ConfigMap or
// Secret may not do: clear immutable, or change the named fields.
func cmImmutableErrors(immutable *bool, changed ...string) field.ErrorList {
	const msg = "field is immutable when `immutable` is set"
	var errs field.ErrorList
	if !cmIsImmutable(immutable) {
		errs = append(errs, field.Forbidden(field.NewPath("immutable"), msg))
	}
	for _, f := range changed {
		errs = append(errs, field.Forbidden(field.NewPath(f), msg))
	}
	return errs
}
