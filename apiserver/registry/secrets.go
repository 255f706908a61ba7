package registry

import (
	"context"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Keys of a bootstrap.kubernetes.io/token Secret.
const (
	secretBootstrapTokenIDKey     = "token-id"
	secretBootstrapTokenSecretKey = "token-secret"
)

// Secrets is core/v1 Secret.
//
// stringData is write-only, as upstream: Default merges it into data (a key
// in both takes the stringData value) and clears it, so it is never stored.
var Secrets = &Resource{
	GVK:        corev1.SchemeGroupVersion.WithKind("Secret"),
	Resource:   "secrets",
	Namespaced: true,
	New:        func() runtime.Object { return &corev1.Secret{} },
	NewList:    func() runtime.Object { return &corev1.SecretList{} },

	Default: func(obj runtime.Object) {
		s := obj.(*corev1.Secret)
		if s.Type == "" {
			s.Type = corev1.SecretTypeOpaque
		}
		if len(s.StringData) > 0 && s.Data == nil {
			s.Data = make(map[string][]byte, len(s.StringData))
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
	},
	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		return secretValidate(obj.(*corev1.Secret))
	},
	ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
		s, oldS := obj.(*corev1.Secret), old.(*corev1.Secret)
		errs := apimachineryvalidation.ValidateImmutableField(s.Type, oldS.Type, field.NewPath("type"))
		if cmIsImmutable(oldS.Immutable) {
			var changed []string
			if !equality.Semantic.DeepEqual(s.Data, oldS.Data) {
				changed = append(changed, "data")
			}
			errs = append(errs, cmImmutableErrors(s.Immutable, changed...)...)
		}
		return append(errs, secretValidate(s)...)
	},

	Fields: func(obj runtime.Object) fields.Set {
		return fields.Set{"type": string(obj.(*corev1.Secret).Type)}
	},
	Columns: []metav1.TableColumnDefinition{
		NameColumn,
		{Name: "Type", Type: "string", Description: "The type of the secret."},
		{Name: "Data", Type: "integer", Description: "The number of keys in data."},
		AgeColumn,
	},
	Row: func(obj runtime.Object) []interface{} {
		s := obj.(*corev1.Secret)
		return []interface{}{s.Name, string(s.Type), int64(len(s.Data)), Age(s.CreationTimestamp)}
	},
}

func secretValidate(s *corev1.Secret) field.ErrorList {
	var errs field.ErrorList
	data := field.NewPath("data")
	size := 0
	for k, v := range s.Data {
		errs = append(errs, cmValidateKey(data, k)...)
		size += len(v)
	}
	if size > cmMaxSize {
		errs = append(errs, field.TooLong(data, "", cmMaxSize))
	}
	return append(errs, secretValidateType(s, data)...)
}

// secretValidateType checks the keys that the built-in secret types
// require. Other types, including Opaque, may hold any keys.
func secretValidateType(s *corev1.Secret, data *field.Path) field.ErrorList {
	var errs field.ErrorList
	require := func(keys ...string) {
		for _, k := range keys {
			if _, ok := s.Data[k]; !ok {
				errs = append(errs, field.Required(data.Key(k), ""))
			}
		}
	}
	switch s.Type {
	case corev1.SecretTypeServiceAccountToken:
		// The token itself is added later by the token controller.
		if s.Annotations[corev1.ServiceAccountNameKey] == "" {
			errs = append(errs, field.Required(field.NewPath("metadata", "annotations").Key(corev1.ServiceAccountNameKey), ""))
		}
	case corev1.SecretTypeDockercfg:
		errs = append(errs, secretValidateJSON(s, data, corev1.DockerConfigKey)...)
	case corev1.SecretTypeDockerConfigJson:
		errs = append(errs, secretValidateJSON(s, data, corev1.DockerConfigJsonKey)...)
	case corev1.SecretTypeBasicAuth:
		// Either may be empty, but one must be there.
		_, user := s.Data[corev1.BasicAuthUsernameKey]
		_, pass := s.Data[corev1.BasicAuthPasswordKey]
		if !user && !pass {
			require(corev1.BasicAuthUsernameKey, corev1.BasicAuthPasswordKey)
		}
	case corev1.SecretTypeSSHAuth:
		if len(s.Data[corev1.SSHAuthPrivateKey]) == 0 {
			errs = append(errs, field.Required(data.Key(corev1.SSHAuthPrivateKey), ""))
		}
	case corev1.SecretTypeTLS:
		require(corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	case corev1.SecretTypeBootstrapToken:
		require(secretBootstrapTokenIDKey, secretBootstrapTokenSecretKey)
	}
	return errs
}

// secretValidateJSON checks that key is present and holds a JSON object.
func secretValidateJSON(s *corev1.Secret, data *field.Path, key string) field.ErrorList {
	v, ok := s.Data[key]
	if !ok {
		return field.ErrorList{field.Required(data.Key(key), "")}
	}
	if err := json.Unmarshal(v, &map[string]interface{}{}); err != nil {
		return field.ErrorList{field.Invalid(data.Key(key), "<secret contents redacted>", err.Error())}
	}
	return nil
}
