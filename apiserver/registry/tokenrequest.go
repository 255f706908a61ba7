package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/audit"
	apiserversa "k8s.io/apiserver/pkg/authentication/serviceaccount"
	tokenjwt "k8s.io/apiserver/pkg/authentication/token/jwt"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/util/dryrun"

	"tether/apiserver/authn/serviceaccount"
)

// Limits of a TokenRequest's spec.expirationSeconds.
const (
	tokenRequestDefaultExpiration    = time.Hour
	tokenRequestMinExpiration        = 10 * time.Minute
	tokenRequestDefaultMaxExpiration = 48 * time.Hour
)

// TokenRequestConfig is what the serviceaccounts/token subresource needs.
type TokenRequestConfig struct {
	// Issuer signs the tokens. Required: without it every request fails
	// with 500.
	Issuer *serviceaccount.Issuer
	// Getter reads the service account and the object a token is bound to.
	// Required, like Issuer.
	Getter serviceaccount.ObjectGetter
	// APIAudiences are the audiences of a token whose request names none.
	// If empty, requests must name their audiences.
	APIAudiences []string
	// MaxExpiration is the longest lifetime a request may ask for. If zero,
	// 48 hours; values under the 10-minute minimum are raised to it.
	MaxExpiration time.Duration
}

// NewTokenRequestStorage returns the storage of serviceaccounts/token: a
// POST of an authentication.k8s.io/v1 TokenRequest returns it with a
// signed token in its status. Nothing is stored.
//
// As upstream: the service account must exist (404); spec.audiences
// defaults to the API audiences and spec.expirationSeconds to one hour; a
// token may be bound to a Pod, Secret or Node (v1) that must exist (404)
// and, if the reference has a uid, have that uid (409); a pod must run as
// the service account (400), and a pod-bound token also names the pod's
// node. Unlike upstream, an expirationSeconds outside [600, MaxExpiration]
// is refused (422) instead of being shortened, and a dry run returns the
// request with an empty status instead of issuing a token.
func NewTokenRequestStorage(cfg TokenRequestConfig) rest.Storage {
	cfg.APIAudiences = slices.Clone(cfg.APIAudiences)
	if cfg.MaxExpiration == 0 {
		cfg.MaxExpiration = tokenRequestDefaultMaxExpiration
	}
	cfg.MaxExpiration = max(cfg.MaxExpiration, tokenRequestMinExpiration)
	return &tokenRequestREST{cfg: cfg, now: time.Now}
}

type tokenRequestREST struct {
	cfg TokenRequestConfig
	now func() time.Time
}

var (
	_ rest.Storage                        = (*tokenRequestREST)(nil)
	_ rest.NamedCreater                   = (*tokenRequestREST)(nil)
	_ rest.GroupVersionKindProvider       = (*tokenRequestREST)(nil)
	_ rest.Scoper                         = (*tokenRequestREST)(nil)
	_ rest.SubresourceObjectMetaPreserver = (*tokenRequestREST)(nil)
)

var tokenRequestKind = authenticationv1.SchemeGroupVersion.WithKind("TokenRequest")

// New implements rest.Storage.
func (r *tokenRequestREST) New() runtime.Object { return &authenticationv1.TokenRequest{} }

// Destroy implements rest.Storage; there is nothing to release.
func (r *tokenRequestREST) Destroy() {}

// NamespaceScoped implements rest.Scoper.
func (r *tokenRequestREST) NamespaceScoped() bool { return true }

// GroupVersionKind implements rest.GroupVersionKindProvider: the
// subresource of core/v1 serviceaccounts speaks authentication.k8s.io/v1.
func (r *tokenRequestREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return tokenRequestKind
}

// PreserveRequestObjectMetaSystemFieldsOnSubresourceCreate keeps the uid a
// client sends, so that it can be checked against the service account.
func (r *tokenRequestREST) PreserveRequestObjectMetaSystemFieldsOnSubresourceCreate() bool {
	return true
}

// Create implements rest.NamedCreater; name is the service account's.
func (r *tokenRequestREST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, opts *metav1.CreateOptions) (runtime.Object, error) {
	in, ok := obj.(*authenticationv1.TokenRequest)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected a TokenRequest, got %T", obj))
	}
	namespace, ok := request.NamespaceFrom(ctx)
	if !ok || namespace == "" {
		return nil, apierrors.NewBadRequest("a TokenRequest needs a namespace")
	}
	if r.cfg.Issuer == nil || r.cfg.Getter == nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("token issuing is not configured"))
	}
	var errs field.ErrorList
	if in.Name != "" && in.Name != name {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), in.Name, "must match the service account name if specified"))
	}
	if in.Namespace != "" && in.Namespace != namespace {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "namespace"), in.Namespace, "must match the service account namespace if specified"))
	}
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(tokenRequestKind.GroupKind(), name, errs)
	}

	sa, err := r.cfg.Getter.GetServiceAccount(ctx, namespace, name)
	if err != nil {
		return nil, tokenRequestStatusError(err)
	}
	if in.UID != "" && in.UID != sa.UID {
		return nil, apierrors.NewConflict(schema.GroupResource{Resource: "serviceaccounts"}, name,
			fmt.Errorf("the uid in the token request (%s) does not match the uid of the service account (%s)", in.UID, sa.UID))
	}

	out := in.DeepCopy()
	out.Name, out.Namespace, out.UID = sa.Name, sa.Namespace, sa.UID
	if len(out.Spec.Audiences) == 0 {
		out.Spec.Audiences = slices.Clone(r.cfg.APIAudiences)
	}
	if out.Spec.ExpirationSeconds == nil {
		secs := int64(tokenRequestDefaultExpiration / time.Second)
		out.Spec.ExpirationSeconds = &secs
	}
	now := r.now()
	out.CreationTimestamp = metav1.NewTime(now)
	out.Status = authenticationv1.TokenRequestStatus{}
	if errs := r.validate(&out.Spec); len(errs) > 0 {
		return nil, apierrors.NewInvalid(tokenRequestKind.GroupKind(), name, errs)
	}
	if createValidation != nil {
		if err := createValidation(ctx, out.DeepCopy()); err != nil {
			return nil, err
		}
	}

	expiration := time.Duration(*out.Spec.ExpirationSeconds) * time.Second
	claims := serviceaccount.Claims{
		Namespace:          sa.Namespace,
		ServiceAccountName: sa.Name,
		ServiceAccountUID:  sa.UID,
		Audiences:          out.Spec.Audiences,
		Expiration:         expiration,
		ID:                 uuid.NewString(),
		Now:                now,
	}
	if ref := out.Spec.BoundObjectRef; ref != nil {
		if err := r.bind(ctx, namespace, name, ref, &claims); err != nil {
			return nil, err
		}
	}
	if opts != nil && dryrun.IsDryRun(opts.DryRun) {
		// Issuing a credential is the side effect a dry run must not have.
		return out, nil
	}

	token, err := r.cfg.Issuer.Issue(claims)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	out.Status = authenticationv1.TokenRequestStatus{
		Token:               token,
		ExpirationTimestamp: metav1.NewTime(now.Add(expiration)),
	}
	audit.AddAuditAnnotation(ctx, apiserversa.IssuedCredentialIDAuditAnnotationKey, tokenjwt.CredentialIDForJTI(claims.ID))
	return out, nil
}

// validate checks a defaulted spec.
func (r *tokenRequestREST) validate(spec *authenticationv1.TokenRequestSpec) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if len(spec.Audiences) == 0 {
		errs = append(errs, field.Required(p.Child("audiences"), "at least one audience is required"))
	}
	for i, a := range spec.Audiences {
		if a == "" {
			errs = append(errs, field.Invalid(p.Child("audiences").Index(i), a, "must not be empty"))
		}
	}
	minSecs, maxSecs := int64(tokenRequestMinExpiration/time.Second), int64(r.cfg.MaxExpiration/time.Second)
	if s := *spec.ExpirationSeconds; s < minSecs || s > maxSecs {
		errs = append(errs, field.Invalid(p.Child("expirationSeconds"), s,
			fmt.Sprintf("must be between %d and %d seconds", minSecs, maxSecs)))
	}
	if ref := spec.BoundObjectRef; ref != nil {
		rp := p.Child("boundObjectRef")
		switch ref.Kind {
		case "Pod", "Secret", "Node":
		default:
			errs = append(errs, field.NotSupported(rp.Child("kind"), ref.Kind, []string{"Pod", "Secret", "Node"}))
		}
		if ref.APIVersion != "" && ref.APIVersion != "v1" {
			errs = append(errs, field.NotSupported(rp.Child("apiVersion"), ref.APIVersion, []string{"v1"}))
		}
		if ref.Name == "" {
			errs = append(errs, field.Required(rp.Child("name"), "the name of the object to bind the token to"))
		}
	}
	return errs
}

// bind looks up the object ref names and records it in claims.
func (r *tokenRequestREST) bind(ctx context.Context, namespace, saName string, ref *authenticationv1.BoundObjectReference, claims *serviceaccount.Claims) error {
	var uid types.UID
	switch ref.Kind {
	case "Pod":
		pod, err := r.cfg.Getter.GetPod(ctx, namespace, ref.Name)
		if err != nil {
			return tokenRequestStatusError(err)
		}
		if pod.Spec.ServiceAccountName != saName {
			return apierrors.NewBadRequest(fmt.Sprintf("cannot bind a token of service account %q to pod %q, which runs as service account %q", saName, pod.Name, pod.Spec.ServiceAccountName))
		}
		uid = pod.UID
		claims.Pod = &serviceaccount.ObjectRef{Name: pod.Name, UID: pod.UID}
		if pod.Spec.NodeName != "" {
			// The node is information for whoever checks the token; a
			// missing Node object still leaves its name.
			claims.Node = &serviceaccount.ObjectRef{Name: pod.Spec.NodeName}
			node, err := r.cfg.Getter.GetNode(ctx, pod.Spec.NodeName)
			switch {
			case err == nil:
				claims.Node.UID = node.UID
			case !apierrors.IsNotFound(err):
				return apierrors.NewInternalError(err)
			}
		}
	case "Secret":
		secret, err := r.cfg.Getter.GetSecret(ctx, namespace, ref.Name)
		if err != nil {
			return tokenRequestStatusError(err)
		}
		uid = secret.UID
		claims.Secret = &serviceaccount.ObjectRef{Name: secret.Name, UID: secret.UID}
	case "Node":
		node, err := r.cfg.Getter.GetNode(ctx, ref.Name)
		if err != nil {
			return tokenRequestStatusError(err)
		}
		uid = node.UID
		claims.Node = &serviceaccount.ObjectRef{Name: node.Name, UID: node.UID}
	}
	if ref.UID != "" && ref.UID != uid {
		return apierrors.NewConflict(corev1.Resource(lower(ref.Kind)+"s"), ref.Name,
			fmt.Errorf("the uid in the bound object reference (%s) does not match the object's (%s); it may have been deleted and recreated", ref.UID, uid))
	}
	return nil
}

// tokenRequestStatusError passes API errors (404 and the like) through and
// turns anything else into a 500.
func tokenRequestStatusError(err error) error {
	var status *apierrors.StatusError
	if errors.As(err, &status) {
		return status
	}
	return apierrors.NewInternalError(err)
}
