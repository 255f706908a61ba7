package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

// The review APIs answer a question in the response to a POST and store
// nothing: "whose token is this?" (TokenReview), "who am I?"
// (SelfSubjectReview), "may this user do that?" (the access reviews) and
// "what may I do here?" (SelfSubjectRulesReview). Their storages implement
// rest.Creater and no read verb, so the generic installer gives them a POST
// route and discovery lists "create" only.

// ReviewConfig is what the review APIs consult. ReviewStorage keeps its
// own copy; the config is not changed afterwards.
type ReviewConfig struct {
	// Tokens authenticates the token of a TokenReview. It should be the
	// bearer-token authenticators the server uses for requests, with the
	// audience-agnostic ones (static, bootstrap tokens) wrapped by
	// authenticator.WrapAudienceAgnosticToken(APIAudiences, …), so that they
	// report which audiences they accepted. If nil, tokenreviews is not
	// served.
	Tokens authenticator.Token
	// APIAudiences are the audiences a TokenReview asks for when its
	// spec.audiences is empty. If both are empty, no audience is asked for
	// and the authenticator applies its own default.
	APIAudiences []string
	// Authorizer answers subjectaccessreviews, localsubjectaccessreviews and
	// selfsubjectaccessreviews. If nil, those three are not served.
	Authorizer authorizer.Authorizer
	// Rules lists a user's permissions for selfsubjectrulesreviews. If nil,
	// selfsubjectrulesreviews is not served.
	Rules authorizer.RuleResolver
}

// ReviewStorage returns the storages of the review APIs, keyed by resource:
// tokenreviews and selfsubjectreviews for authentication.k8s.io/v1, and
// subjectaccessreviews, localsubjectaccessreviews, selfsubjectaccessreviews
// and selfsubjectrulesreviews for authorization.k8s.io/v1. A resource whose
// dependency in cfg is nil is left out.
func ReviewStorage(cfg ReviewConfig) (authentication map[string]rest.Storage, authorization map[string]rest.Storage) {
	cfg.APIAudiences = slices.Clone(cfg.APIAudiences)

	authentication = map[string]rest.Storage{
		"selfsubjectreviews": &reviewREST[*authenticationv1.SelfSubjectReview]{
			kind:     authenticationv1.SchemeGroupVersion.WithKind("SelfSubjectReview"),
			singular: "selfsubjectreview",
			newObj:   func() *authenticationv1.SelfSubjectReview { return &authenticationv1.SelfSubjectReview{} },
			answer:   reviewSelfSubject,
		},
	}
	if cfg.Tokens != nil {
		authentication["tokenreviews"] = &reviewREST[*authenticationv1.TokenReview]{
			kind:     authenticationv1.SchemeGroupVersion.WithKind("TokenReview"),
			singular: "tokenreview",
			newObj:   func() *authenticationv1.TokenReview { return &authenticationv1.TokenReview{} },
			check:    reviewCheckToken,
			answer: func(ctx context.Context, tr *authenticationv1.TokenReview) (runtime.Object, error) {
				return reviewToken(ctx, cfg.Tokens, cfg.APIAudiences, tr)
			},
		}
	}

	authorization = map[string]rest.Storage{}
	if az := cfg.Authorizer; az != nil {
		authorization["subjectaccessreviews"] = &reviewREST[*authorizationv1.SubjectAccessReview]{
			kind:     authorizationv1.SchemeGroupVersion.WithKind("SubjectAccessReview"),
			singular: "subjectaccessreview",
			newObj:   func() *authorizationv1.SubjectAccessReview { return &authorizationv1.SubjectAccessReview{} },
			check:    reviewCheckSAR,
			answer: func(ctx context.Context, sar *authorizationv1.SubjectAccessReview) (runtime.Object, error) {
				sar.Status = reviewDecide(ctx, az, reviewSubject(sar.Spec), sar.Spec.ResourceAttributes, sar.Spec.NonResourceAttributes)
				return sar, nil
			},
		}
		authorization["localsubjectaccessreviews"] = &reviewREST[*authorizationv1.LocalSubjectAccessReview]{
			kind:       authorizationv1.SchemeGroupVersion.WithKind("LocalSubjectAccessReview"),
			singular:   "localsubjectaccessreview",
			namespaced: true,
			newObj:     func() *authorizationv1.LocalSubjectAccessReview { return &authorizationv1.LocalSubjectAccessReview{} },
			check:      reviewCheckLocalSAR,
			answer: func(ctx context.Context, sar *authorizationv1.LocalSubjectAccessReview) (runtime.Object, error) {
				sar.Status = reviewDecide(ctx, az, reviewSubject(sar.Spec), sar.Spec.ResourceAttributes, sar.Spec.NonResourceAttributes)
				return sar, nil
			},
		}
		authorization["selfsubjectaccessreviews"] = &reviewREST[*authorizationv1.SelfSubjectAccessReview]{
			kind:     authorizationv1.SchemeGroupVersion.WithKind("SelfSubjectAccessReview"),
			singular: "selfsubjectaccessreview",
			newObj:   func() *authorizationv1.SelfSubjectAccessReview { return &authorizationv1.SelfSubjectAccessReview{} },
			check:    reviewCheckSSAR,
			answer: func(ctx context.Context, sar *authorizationv1.SelfSubjectAccessReview) (runtime.Object, error) {
				u, _ := request.UserFrom(ctx) // present: checked by reviewCheckSSAR
				sar.Status = reviewDecide(ctx, az, u, sar.Spec.ResourceAttributes, sar.Spec.NonResourceAttributes)
				return sar, nil
			},
		}
	}
	if rules := cfg.Rules; rules != nil {
		authorization["selfsubjectrulesreviews"] = &reviewREST[*authorizationv1.SelfSubjectRulesReview]{
			kind:     authorizationv1.SchemeGroupVersion.WithKind("SelfSubjectRulesReview"),
			singular: "selfsubjectrulesreview",
			newObj:   func() *authorizationv1.SelfSubjectRulesReview { return &authorizationv1.SelfSubjectRulesReview{} },
			check:    reviewCheckSSRR,
			answer: func(ctx context.Context, rr *authorizationv1.SelfSubjectRulesReview) (runtime.Object, error) {
				u, _ := request.UserFrom(ctx) // present: checked by reviewCheckSSRR
				rr.Status = reviewRules(ctx, rules, u, rr.Spec.Namespace)
				return rr, nil
			},
		}
	}
	return authentication, authorization
}

// reviewREST is the storage of one review kind. A POST is checked (400 or
// 422 on a malformed request), passed to validating admission, then
// answered; the answer is the request object with its status filled in.
//
// It deliberately implements no Getter, Lister, Updater, Patcher, Watcher or
// deleter: the generic installer derives the routes from the interfaces a
// storage implements, and a review has nothing to read back.
type reviewREST[T runtime.Object] struct {
	kind       schema.GroupVersionKind
	singular   string
	namespaced bool
	newObj     func() T
	// check validates the request and may complete it (it runs before
	// admission). If nil, every request of the right type is accepted.
	check func(ctx context.Context, in T) error
	// answer fills in the status.
	answer func(ctx context.Context, in T) (runtime.Object, error)
}

var (
	_ rest.Storage              = (*reviewREST[*authenticationv1.TokenReview])(nil)
	_ rest.Creater              = (*reviewREST[*authenticationv1.TokenReview])(nil)
	_ rest.Scoper               = (*reviewREST[*authenticationv1.TokenReview])(nil)
	_ rest.SingularNameProvider = (*reviewREST[*authenticationv1.TokenReview])(nil)
)

// New implements rest.Storage.
func (r *reviewREST[T]) New() runtime.Object { return r.newObj() }

// Destroy implements rest.Storage; there is nothing to release.
func (r *reviewREST[T]) Destroy() {}

// NamespaceScoped implements rest.Scoper.
func (r *reviewREST[T]) NamespaceScoped() bool { return r.namespaced }

// GetSingularName implements rest.SingularNameProvider.
func (r *reviewREST[T]) GetSingularName() string { return r.singular }

// Create implements rest.Creater: it answers the review in obj.
func (r *reviewREST[T]) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	in, ok := obj.(T)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected a %s, got %T", r.kind.Kind, obj))
	}
	if r.check != nil {
		if err := r.check(ctx, in); err != nil {
			return nil, err
		}
	}
	if createValidation != nil {
		if err := createValidation(ctx, obj.DeepCopyObject()); err != nil {
			return nil, err
		}
	}
	return r.answer(ctx, in)
}

// reviewInvalid turns field errors into a 422 for kind, or nil.
func reviewInvalid(kind string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(schema.GroupKind{Group: authorizationv1.GroupName, Kind: kind}, "", errs)
}

// reviewUser returns the requesting user, or a 400 if there is none (the
// authentication filter always sets one on a served request).
func reviewUser(ctx context.Context) (user.Info, error) {
	u, ok := request.UserFrom(ctx)
	if !ok || u == nil {
		return nil, apierrors.NewBadRequest("the request has no user")
	}
	return u, nil
}

// TokenReview.

func reviewCheckToken(ctx context.Context, tr *authenticationv1.TokenReview) error {
	if ns := request.NamespaceValue(ctx); ns != "" {
		return apierrors.NewBadRequest(fmt.Sprintf("a TokenReview is not namespaced, but namespace %q was given", ns))
	}
	// Upstream answers a missing token with 400, not 422: the check lives in
	// the storage, not in a validator.
	if tr.Spec.Token == "" {
		return apierrors.NewBadRequest("spec.token is required for a TokenReview")
	}
	return nil
}

// reviewToken authenticates tr.Spec.Token for the audiences asked for (or
// the API audiences) and reports who it belongs to.
func reviewToken(ctx context.Context, tokens authenticator.Token, apiAuds []string, tr *authenticationv1.TokenReview) (runtime.Object, error) {
	token := tr.Spec.Token
	auds := authenticator.Audiences(tr.Spec.Audiences)
	if len(auds) == 0 {
		auds = apiAuds
	}

	// The token is judged on its own: the context carries neither the
	// reviewer's identity nor the audiences the authentication filter put
	// there for the reviewer's own request, only its cancellation.
	actx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	if len(auds) > 0 {
		actx = authenticator.WithAudiences(actx, auds)
	}
	resp, ok, err := tokens.AuthenticateToken(actx, token)

	// Whatever the client sent as status is discarded.
	tr.Status = authenticationv1.TokenReviewStatus{}
	if err != nil {
		tr.Status.Error = reviewRedact(err.Error(), token)
	}
	if !ok || resp == nil || resp.User == nil {
		return tr, nil
	}
	// An authenticator that accepts a token must say for which of the
	// requested audiences; one that does not is misconfigured (an
	// audience-agnostic authenticator that was not wrapped), and accepting
	// its answer would let a token meant for another audience through.
	if len(auds) > 0 && len(auds.Intersect(resp.Audiences)) == 0 {
		return nil, apierrors.NewInternalError(errors.New("the token authenticator confirmed none of the requested audiences"))
	}
	tr.Status.Authenticated = true
	tr.Status.User = reviewUserInfo(reviewAuthenticated(resp.User))
	tr.Status.Audiences = resp.Audiences
	return tr, nil
}

// reviewAuthenticated adds system:authenticated to the groups of u, as the
// request chain does for every authenticated request, unless u is the
// anonymous user or already has system:authenticated or
// system:unauthenticated.
func reviewAuthenticated(u user.Info) user.Info {
	if u.GetName() == user.Anonymous {
		return u
	}
	groups := u.GetGroups()
	if slices.Contains(groups, user.AllAuthenticated) || slices.Contains(groups, user.AllUnauthenticated) {
		return u
	}
	return &user.DefaultInfo{
		Name:   u.GetName(),
		UID:    u.GetUID(),
		Groups: append(slices.Clip(groups), user.AllAuthenticated),
		Extra:  u.GetExtra(),
	}
}

// reviewRedact removes the token from an authenticator's error message, so
// that a response (and the audit log of it) never repeats a credential in
// a field meant for diagnostics.
func reviewRedact(msg, token string) string {
	if token == "" {
		return msg
	}
	return strings.ReplaceAll(msg, token, "[redacted]")
}

func reviewUserInfo(u user.Info) authenticationv1.UserInfo {
	info := authenticationv1.UserInfo{
		Username: u.GetName(),
		UID:      u.GetUID(),
		Groups:   u.GetGroups(),
	}
	if extra := u.GetExtra(); len(extra) > 0 {
		info.Extra = make(map[string]authenticationv1.ExtraValue, len(extra))
		for k, v := range extra {
			info.Extra[k] = authenticationv1.ExtraValue(v)
		}
	}
	return info
}

// SelfSubjectReview.

func reviewSelfSubject(ctx context.Context, ssr *authenticationv1.SelfSubjectReview) (runtime.Object, error) {
	u, err := reviewUser(ctx)
	if err != nil {
		return nil, err
	}
	ssr.CreationTimestamp = metav1.NewTime(time.Now())
	ssr.Status = authenticationv1.SelfSubjectReviewStatus{UserInfo: reviewUserInfo(u)}
	return ssr, nil
}

// The access reviews.

// reviewCheckMetaEmpty reports metadata a review may not carry: all of it,
// except the field manager's managedFields and, for a local review, the
// namespace.
func reviewCheckMetaEmpty(m metav1.ObjectMeta, allowNamespace bool) field.ErrorList {
	m.ManagedFields = nil
	if allowNamespace {
		m.Namespace = ""
	}
	if apiequality.Semantic.DeepEqual(metav1.ObjectMeta{}, m) {
		return nil
	}
	msg := "must be empty"
	if allowNamespace {
		msg = "must be empty except for namespace"
	}
	return field.ErrorList{field.Forbidden(field.NewPath("metadata"), msg)}
}

// reviewCheckAttributes requires exactly one of the two attribute kinds.
// Field and label selectors in resourceAttributes are accepted but not
// passed to the authorizer.
func reviewCheckAttributes(ra *authorizationv1.ResourceAttributes, nra *authorizationv1.NonResourceAttributes) field.ErrorList {
	spec := field.NewPath("spec")
	switch {
	case ra != nil && nra != nil:
		return field.ErrorList{field.Invalid(spec.Child("nonResourceAttributes"), "", "may not be set together with resourceAttributes")}
	case ra == nil && nra == nil:
		return field.ErrorList{field.Invalid(spec.Child("resourceAttributes"), "", "exactly one of resourceAttributes and nonResourceAttributes must be set")}
	}
	return nil
}

func reviewCheckSubject(s authorizationv1.SubjectAccessReviewSpec) field.ErrorList {
	if s.User == "" && len(s.Groups) == 0 {
		return field.ErrorList{field.Invalid(field.NewPath("spec", "user"), s.User, "at least one of user and groups must be set")}
	}
	return nil
}

func reviewCheckSAR(_ context.Context, sar *authorizationv1.SubjectAccessReview) error {
	errs := reviewCheckAttributes(sar.Spec.ResourceAttributes, sar.Spec.NonResourceAttributes)
	errs = append(errs, reviewCheckSubject(sar.Spec)...)
	errs = append(errs, reviewCheckMetaEmpty(sar.ObjectMeta, false)...)
	return reviewInvalid("SubjectAccessReview", errs)
}

// reviewCheckLocalSAR checks a LocalSubjectAccessReview: it is served
// under a namespace, is about resources in that namespace only, and must
// name it in both metadata.namespace (set from the URL when empty, as the
// generic create handler does) and spec.resourceAttributes.namespace.
func reviewCheckLocalSAR(ctx context.Context, sar *authorizationv1.LocalSubjectAccessReview) error {
	ns := request.NamespaceValue(ctx)
	if ns == "" {
		return apierrors.NewBadRequest("a LocalSubjectAccessReview must be created in a namespace")
	}
	switch sar.Namespace {
	case "":
		sar.Namespace = ns
	case ns:
	default:
		return apierrors.NewBadRequest(fmt.Sprintf("metadata.namespace %q does not match the namespace of the request %q", sar.Namespace, ns))
	}
	errs := reviewCheckAttributes(sar.Spec.ResourceAttributes, sar.Spec.NonResourceAttributes)
	errs = append(errs, reviewCheckSubject(sar.Spec)...)
	errs = append(errs, reviewCheckMetaEmpty(sar.ObjectMeta, true)...)
	if ra := sar.Spec.ResourceAttributes; ra != nil && ra.Namespace != sar.Namespace {
		errs = append(errs, field.Invalid(field.NewPath("spec", "resourceAttributes", "namespace"), ra.Namespace, "must match metadata.namespace"))
	}
	if sar.Spec.NonResourceAttributes != nil {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "nonResourceAttributes"), "not allowed in a LocalSubjectAccessReview"))
	}
	return reviewInvalid("LocalSubjectAccessReview", errs)
}

func reviewCheckSSAR(ctx context.Context, sar *authorizationv1.SelfSubjectAccessReview) error {
	errs := reviewCheckAttributes(sar.Spec.ResourceAttributes, sar.Spec.NonResourceAttributes)
	errs = append(errs, reviewCheckMetaEmpty(sar.ObjectMeta, false)...)
	if err := reviewInvalid("SelfSubjectAccessReview", errs); err != nil {
		return err
	}
	_, err := reviewUser(ctx)
	return err
}

// reviewSubject is the user a SubjectAccessReview asks about.
func reviewSubject(s authorizationv1.SubjectAccessReviewSpec) user.Info {
	u := &user.DefaultInfo{Name: s.User, UID: s.UID, Groups: s.Groups}
	if len(s.Extra) > 0 {
		u.Extra = make(map[string][]string, len(s.Extra))
		for k, v := range s.Extra {
			u.Extra[k] = v
		}
	}
	return u
}

// reviewAttributes builds the question put to the authorizer. Exactly one
// of ra and nra is non-nil (checked before). An empty API version means
// any version.
func reviewAttributes(u user.Info, ra *authorizationv1.ResourceAttributes, nra *authorizationv1.NonResourceAttributes) authorizer.AttributesRecord {
	if ra == nil {
		return authorizer.AttributesRecord{User: u, Verb: nra.Verb, Path: nra.Path}
	}
	version := ra.Version
	if version == "" {
		version = "*"
	}
	return authorizer.AttributesRecord{
		User:            u,
		ResourceRequest: true,
		Verb:            ra.Verb,
		Namespace:       ra.Namespace,
		APIGroup:        ra.Group,
		APIVersion:      version,
		Resource:        ra.Resource,
		Subresource:     ra.Subresource,
		Name:            ra.Name,
	}
}

// reviewDecide asks az and reports its decision. No opinion is reported
// as neither allowed nor denied.
func reviewDecide(ctx context.Context, az authorizer.Authorizer, u user.Info, ra *authorizationv1.ResourceAttributes, nra *authorizationv1.NonResourceAttributes) authorizationv1.SubjectAccessReviewStatus {
	decision, reason, err := az.Authorize(ctx, reviewAttributes(u, ra, nra))
	st := authorizationv1.SubjectAccessReviewStatus{
		Allowed: decision == authorizer.DecisionAllow,
		Denied:  decision == authorizer.DecisionDeny,
		Reason:  reason,
	}
	if err != nil {
		st.EvaluationError = err.Error()
	}
	return st
}

// SelfSubjectRulesReview.

func reviewCheckSSRR(ctx context.Context, rr *authorizationv1.SelfSubjectRulesReview) error {
	if _, err := reviewUser(ctx); err != nil {
		return err
	}
	if rr.Spec.Namespace == "" {
		return apierrors.NewBadRequest("spec.namespace is required for a SelfSubjectRulesReview")
	}
	return nil
}

// reviewRules lists what u may do in namespace. The lists are never nil, so
// that they encode as [] (the API marks them required).
func reviewRules(ctx context.Context, rules authorizer.RuleResolver, u user.Info, namespace string) authorizationv1.SubjectRulesReviewStatus {
	res, nonRes, incomplete, err := rules.RulesFor(ctx, u, namespace)
	st := authorizationv1.SubjectRulesReviewStatus{
		ResourceRules:    make([]authorizationv1.ResourceRule, 0, len(res)),
		NonResourceRules: make([]authorizationv1.NonResourceRule, 0, len(nonRes)),
		Incomplete:       incomplete,
	}
	for _, r := range res {
		st.ResourceRules = append(st.ResourceRules, authorizationv1.ResourceRule{
			Verbs:         r.GetVerbs(),
			APIGroups:     r.GetAPIGroups(),
			Resources:     r.GetResources(),
			ResourceNames: r.GetResourceNames(),
		})
	}
	for _, r := range nonRes {
		st.NonResourceRules = append(st.NonResourceRules, authorizationv1.NonResourceRule{
			Verbs:           r.GetVerbs(),
			NonResourceURLs: r.GetNonResourceURLs(),
		})
	}
	if err != nil {
		st.EvaluationError = err.Error()
	}
	return st
}
