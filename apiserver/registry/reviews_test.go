package registry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	restful "github.com/emicklei/go-restful/v3"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints"
	"k8s.io/apiserver/pkg/endpoints/filters"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"tether/apiserver/scheme"
)

// reviewGoodToken is the only token reviewTokens accepts.
const reviewGoodToken = "good-token"

// reviewTokens accepts reviewGoodToken for the audiences it is asked for
// (or "api" when none is asked for), fails with an error quoting any token
// starting with "bad", and does not recognise anything else.
func reviewTokens(seen *[]string) authenticator.Token {
	return authenticator.TokenFunc(func(ctx context.Context, token string) (*authenticator.Response, bool, error) {
		auds, _ := authenticator.AudiencesFrom(ctx)
		if seen != nil {
			*seen = auds
		}
		if _, ok := request.UserFrom(ctx); ok {
			return nil, false, errors.New("the reviewer's user leaked into the token's context")
		}
		switch {
		case token == reviewGoodToken:
			granted := authenticator.Audiences(auds).Intersect(authenticator.Audiences{"api", "vault"})
			if len(auds) == 0 {
				granted = authenticator.Audiences{"api"}
			}
			return &authenticator.Response{
				Audiences: granted,
				User: &user.DefaultInfo{
					Name: "alice", UID: "uid-1", Groups: []string{"devs"},
					Extra: map[string][]string{"scopes": {"a", "b"}},
				},
			}, true, nil
		case strings.HasPrefix(token, "bad"):
			return nil, false, errors.New("token " + token + " is malformed")
		}
		return nil, false, nil
	})
}

// reviewAuthz records the attributes it is asked about and decides by verb:
// "get" is allowed, "delete" denied, anything else gets no opinion.
type reviewAuthz struct{ got authorizer.Attributes }

func (a *reviewAuthz) authorizer() authorizer.Authorizer {
	return authorizer.AuthorizerFunc(func(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
		a.got = attrs
		switch attrs.GetVerb() {
		case "get":
			return authorizer.DecisionAllow, "role says so", nil
		case "delete":
			return authorizer.DecisionDeny, "never", nil
		case "explode":
			return authorizer.DecisionNoOpinion, "", errors.New("webhook down")
		}
		return authorizer.DecisionNoOpinion, "", nil
	})
}

// reviewRuleResolver returns fixed rules and records whom it was asked about.
type reviewRuleResolver struct {
	res        []authorizer.ResourceRuleInfo
	nonRes     []authorizer.NonResourceRuleInfo
	incomplete bool
	err        error

	user      user.Info
	namespace string
}

func (r *reviewRuleResolver) RulesFor(_ context.Context, u user.Info, ns string) ([]authorizer.ResourceRuleInfo, []authorizer.NonResourceRuleInfo, bool, error) {
	r.user, r.namespace = u, ns
	return r.res, r.nonRes, r.incomplete, r.err
}

var reviewAlice = &user.DefaultInfo{
	Name: "alice", UID: "uid-1", Groups: []string{"devs", user.AllAuthenticated},
	Extra: map[string][]string{"scopes": {"a"}},
}

func reviewCtx(t *testing.T, ns string, u user.Info) context.Context {
	ctx := t.Context()
	if ns != "" {
		ctx = request.WithNamespace(ctx, ns)
	}
	if u != nil {
		ctx = request.WithUser(ctx, u)
	}
	return ctx
}

// reviewCreate posts obj to the storage named resource, as the generic
// create handler would.
func reviewCreate(t *testing.T, m map[string]rest.Storage, resource string, ctx context.Context, obj runtime.Object) (runtime.Object, error) {
	t.Helper()
	s, ok := m[resource]
	if !ok {
		t.Fatalf("no storage for %s", resource)
	}
	return s.(rest.Creater).Create(ctx, obj, nil, &metav1.CreateOptions{})
}

// reviewCode returns the HTTP status of err (0 for nil).
func reviewCode(err error) int {
	if err == nil {
		return 0
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return int(st.Status().Code)
	}
	return -1
}

func TestTokenReview(t *testing.T) {
	tests := []struct {
		name      string
		ns        string
		spec      authenticationv1.TokenReviewSpec
		apiAuds   []string
		wantCode  int
		wantAsked []string
		want      authenticationv1.TokenReviewStatus
	}{
		{
			name: "valid token", spec: authenticationv1.TokenReviewSpec{Token: reviewGoodToken},
			apiAuds: []string{"api"}, wantAsked: []string{"api"},
			want: authenticationv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{"api"},
				User: authenticationv1.UserInfo{
					Username: "alice", UID: "uid-1", Groups: []string{"devs", user.AllAuthenticated},
					Extra: map[string]authenticationv1.ExtraValue{"scopes": {"a", "b"}},
				},
			},
		},
		{
			name:    "requested audiences win over the API audiences",
			spec:    authenticationv1.TokenReviewSpec{Token: reviewGoodToken, Audiences: []string{"vault", "other"}},
			apiAuds: []string{"api"}, wantAsked: []string{"vault", "other"},
			want: authenticationv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{"vault"},
				User: authenticationv1.UserInfo{
					Username: "alice", UID: "uid-1", Groups: []string{"devs", user.AllAuthenticated},
					Extra: map[string]authenticationv1.ExtraValue{"scopes": {"a", "b"}},
				},
			},
		},
		{
			name: "no audiences anywhere", spec: authenticationv1.TokenReviewSpec{Token: reviewGoodToken},
			want: authenticationv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{"api"},
				User: authenticationv1.UserInfo{
					Username: "alice", UID: "uid-1", Groups: []string{"devs", user.AllAuthenticated},
					Extra: map[string]authenticationv1.ExtraValue{"scopes": {"a", "b"}},
				},
			},
		},
		{
			name:      "authenticator confirms no requested audience",
			spec:      authenticationv1.TokenReviewSpec{Token: reviewGoodToken, Audiences: []string{"elsewhere"}},
			wantAsked: []string{"elsewhere"}, wantCode: http.StatusInternalServerError,
		},
		{
			name: "unknown token", spec: authenticationv1.TokenReviewSpec{Token: "who-knows"},
			apiAuds: []string{"api"}, wantAsked: []string{"api"},
		},
		{
			name: "authenticator error does not repeat the token", spec: authenticationv1.TokenReviewSpec{Token: "bad-secret"},
			apiAuds: []string{"api"}, wantAsked: []string{"api"},
			want: authenticationv1.TokenReviewStatus{Error: "token [redacted] is malformed"},
		},
		{name: "empty token", wantCode: http.StatusBadRequest},
		{name: "namespaced request", ns: "ns1", spec: authenticationv1.TokenReviewSpec{Token: reviewGoodToken}, wantCode: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []string
			authn, _ := ReviewStorage(ReviewConfig{Tokens: reviewTokens(&asked), APIAudiences: tt.apiAuds})
			in := &authenticationv1.TokenReview{
				Spec: tt.spec,
				// A status sent by the client is never part of the answer.
				Status: authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "forged"}},
			}
			out, err := reviewCreate(t, authn, "tokenreviews", reviewCtx(t, tt.ns, reviewAlice), in)
			if got := reviewCode(err); got != tt.wantCode {
				t.Fatalf("Create() error = %v (code %d), want code %d", err, got, tt.wantCode)
			}
			if !slices.Equal(asked, tt.wantAsked) {
				t.Errorf("authenticator asked for audiences %q, want %q", asked, tt.wantAsked)
			}
			if err != nil {
				return
			}
			got := out.(*authenticationv1.TokenReview)
			if !reflect.DeepEqual(got.Status, tt.want) {
				t.Errorf("status = %+v, want %+v", got.Status, tt.want)
			}
			if got.Spec.Token != tt.spec.Token {
				t.Errorf("spec.token changed to %q", got.Spec.Token)
			}
		})
	}
}

func TestSelfSubjectReview(t *testing.T) {
	authn, _ := ReviewStorage(ReviewConfig{})
	if _, ok := authn["tokenreviews"]; ok {
		t.Error("tokenreviews served without a token authenticator")
	}
	out, err := reviewCreate(t, authn, "selfsubjectreviews", reviewCtx(t, "", reviewAlice), &authenticationv1.SelfSubjectReview{})
	if err != nil {
		t.Fatalf("Create() = %v", err)
	}
	got := out.(*authenticationv1.SelfSubjectReview)
	want := authenticationv1.UserInfo{
		Username: "alice", UID: "uid-1", Groups: []string{"devs", user.AllAuthenticated},
		Extra: map[string]authenticationv1.ExtraValue{"scopes": {"a"}},
	}
	if !reflect.DeepEqual(got.Status.UserInfo, want) {
		t.Errorf("userInfo = %+v, want %+v", got.Status.UserInfo, want)
	}
	if got.CreationTimestamp.IsZero() {
		t.Error("creationTimestamp not set")
	}

	_, err = reviewCreate(t, authn, "selfsubjectreviews", reviewCtx(t, "", nil), &authenticationv1.SelfSubjectReview{})
	if got := reviewCode(err); got != http.StatusBadRequest {
		t.Errorf("Create() without a user = %v, want 400", err)
	}
}

func TestSubjectAccessReview(t *testing.T) {
	pods := func(verb string) *authorizationv1.ResourceAttributes {
		return &authorizationv1.ResourceAttributes{Namespace: "ns1", Verb: verb, Resource: "pods", Name: "p"}
	}
	tests := []struct {
		name     string
		sar      authorizationv1.SubjectAccessReview
		wantCode int
		want     authorizationv1.SubjectAccessReviewStatus
		wantAsk  *authorizer.AttributesRecord
	}{
		{
			name: "allowed",
			sar: authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: "bob", UID: "u2", Groups: []string{"g"}, Extra: map[string]authorizationv1.ExtraValue{"k": {"v"}},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: "ns1", Verb: "get", Group: "apps", Resource: "deployments", Subresource: "scale", Name: "d",
					FieldSelector: &authorizationv1.FieldSelectorAttributes{RawSelector: "metadata.name=d"},
				},
			}},
			want: authorizationv1.SubjectAccessReviewStatus{Allowed: true, Reason: "role says so"},
			wantAsk: &authorizer.AttributesRecord{
				User:            &user.DefaultInfo{Name: "bob", UID: "u2", Groups: []string{"g"}, Extra: map[string][]string{"k": {"v"}}},
				ResourceRequest: true, Verb: "get", Namespace: "ns1", APIGroup: "apps", APIVersion: "*",
				Resource: "deployments", Subresource: "scale", Name: "d",
			},
		},
		{
			name: "denied",
			sar:  authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: "bob", ResourceAttributes: pods("delete")}},
			want: authorizationv1.SubjectAccessReviewStatus{Denied: true, Reason: "never"},
		},
		{
			name: "no opinion",
			sar:  authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{Groups: []string{"g"}, ResourceAttributes: pods("list")}},
			want: authorizationv1.SubjectAccessReviewStatus{},
		},
		{
			name: "evaluation error",
			sar:  authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: "bob", ResourceAttributes: pods("explode")}},
			want: authorizationv1.SubjectAccessReviewStatus{EvaluationError: "webhook down"},
		},
		{
			name: "non-resource",
			sar: authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: "bob", NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/healthz", Verb: "get"},
			}},
			want:    authorizationv1.SubjectAccessReviewStatus{Allowed: true, Reason: "role says so"},
			wantAsk: &authorizer.AttributesRecord{User: &user.DefaultInfo{Name: "bob"}, Verb: "get", Path: "/healthz"},
		},
		{
			name: "both attribute kinds",
			sar: authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: "bob", ResourceAttributes: pods("get"), NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/", Verb: "get"},
			}},
			wantCode: http.StatusUnprocessableEntity,
		},
		{
			name:     "no attributes",
			sar:      authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: "bob"}},
			wantCode: http.StatusUnprocessableEntity,
		},
		{
			name:     "no user or groups",
			sar:      authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{ResourceAttributes: pods("get")}},
			wantCode: http.StatusUnprocessableEntity,
		},
		{
			name: "metadata set",
			sar: authorizationv1.SubjectAccessReview{
				ObjectMeta: metav1.ObjectMeta{Name: "x"},
				Spec:       authorizationv1.SubjectAccessReviewSpec{User: "bob", ResourceAttributes: pods("get")},
			},
			wantCode: http.StatusUnprocessableEntity,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			az := &reviewAuthz{}
			_, authz := ReviewStorage(ReviewConfig{Authorizer: az.authorizer()})
			out, err := reviewCreate(t, authz, "subjectaccessreviews", reviewCtx(t, "", reviewAlice), tt.sar.DeepCopy())
			if got := reviewCode(err); got != tt.wantCode {
				t.Fatalf("Create() error = %v (code %d), want code %d", err, got, tt.wantCode)
			}
			if err != nil {
				if az.got != nil {
					t.Errorf("authorizer asked about an invalid review: %+v", az.got)
				}
				return
			}
			if got := out.(*authorizationv1.SubjectAccessReview).Status; got != tt.want {
				t.Errorf("status = %+v, want %+v", got, tt.want)
			}
			if tt.wantAsk != nil && !reflect.DeepEqual(az.got, *tt.wantAsk) {
				t.Errorf("authorizer asked %#v, want %#v", az.got, *tt.wantAsk)
			}
		})
	}
}

func TestLocalSubjectAccessReview(t *testing.T) {
	spec := func(ns string) authorizationv1.SubjectAccessReviewSpec {
		return authorizationv1.SubjectAccessReviewSpec{User: "bob", ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "pods"}}
	}
	tests := []struct {
		name     string
		reqNS    string
		sar      authorizationv1.LocalSubjectAccessReview
		wantCode int
	}{
		{name: "namespace from the request", reqNS: "ns1", sar: authorizationv1.LocalSubjectAccessReview{Spec: spec("ns1")}},
		{name: "namespace in metadata", reqNS: "ns1", sar: authorizationv1.LocalSubjectAccessReview{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1"}, Spec: spec("ns1")}},
		{name: "spec names another namespace", reqNS: "ns1", sar: authorizationv1.LocalSubjectAccessReview{Spec: spec("ns2")}, wantCode: http.StatusUnprocessableEntity},
		{name: "spec names no namespace", reqNS: "ns1", sar: authorizationv1.LocalSubjectAccessReview{Spec: spec("")}, wantCode: http.StatusUnprocessableEntity},
		{name: "metadata names another namespace", reqNS: "ns1", sar: authorizationv1.LocalSubjectAccessReview{ObjectMeta: metav1.ObjectMeta{Namespace: "ns2"}, Spec: spec("ns2")}, wantCode: http.StatusBadRequest},
		{name: "no request namespace", sar: authorizationv1.LocalSubjectAccessReview{Spec: spec("ns1")}, wantCode: http.StatusBadRequest},
		{
			name: "non-resource", reqNS: "ns1",
			sar: authorizationv1.LocalSubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: "bob", NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/", Verb: "get"},
			}},
			wantCode: http.StatusUnprocessableEntity,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			az := &reviewAuthz{}
			_, authz := ReviewStorage(ReviewConfig{Authorizer: az.authorizer()})
			if !authz["localsubjectaccessreviews"].(rest.Scoper).NamespaceScoped() {
				t.Fatal("localsubjectaccessreviews is not namespaced")
			}
			out, err := reviewCreate(t, authz, "localsubjectaccessreviews", reviewCtx(t, tt.reqNS, reviewAlice), tt.sar.DeepCopy())
			if got := reviewCode(err); got != tt.wantCode {
				t.Fatalf("Create() error = %v (code %d), want code %d", err, got, tt.wantCode)
			}
			if err != nil {
				return
			}
			got := out.(*authorizationv1.LocalSubjectAccessReview)
			if !got.Status.Allowed || got.Namespace != tt.reqNS || az.got.GetNamespace() != tt.reqNS {
				t.Errorf("review = %+v in namespace %q, authorizer asked about %q; want allowed in %q", got.Status, got.Namespace, az.got.GetNamespace(), tt.reqNS)
			}
		})
	}
}

func TestSelfSubjectAccessReview(t *testing.T) {
	az := &reviewAuthz{}
	_, authz := ReviewStorage(ReviewConfig{Authorizer: az.authorizer()})
	in := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: "ns1", Verb: "get", Resource: "secrets"},
	}}

	out, err := reviewCreate(t, authz, "selfsubjectaccessreviews", reviewCtx(t, "", reviewAlice), in.DeepCopy())
	if err != nil {
		t.Fatalf("Create() = %v", err)
	}
	if got := out.(*authorizationv1.SelfSubjectAccessReview).Status; !got.Allowed {
		t.Errorf("status = %+v, want allowed", got)
	}
	if az.got.GetUser() != reviewAlice {
		t.Errorf("authorizer asked about %+v, want the requesting user %+v", az.got.GetUser(), reviewAlice)
	}

	_, err = reviewCreate(t, authz, "selfsubjectaccessreviews", reviewCtx(t, "", nil), in.DeepCopy())
	if got := reviewCode(err); got != http.StatusBadRequest {
		t.Errorf("Create() without a user = %v, want 400", err)
	}

	both := in.DeepCopy()
	both.Spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Path: "/", Verb: "get"}
	_, err = reviewCreate(t, authz, "selfsubjectaccessreviews", reviewCtx(t, "", reviewAlice), both)
	if got := reviewCode(err); got != http.StatusUnprocessableEntity {
		t.Errorf("Create() with both attribute kinds = %v, want 422", err)
	}
}

// reviewRule implements both rule interfaces of the authorizer package.
type reviewRule struct{ verbs, groups, resources, names, urls []string }

func (r reviewRule) GetVerbs() []string           { return r.verbs }
func (r reviewRule) GetAPIGroups() []string       { return r.groups }
func (r reviewRule) GetResources() []string       { return r.resources }
func (r reviewRule) GetResourceNames() []string   { return r.names }
func (r reviewRule) GetNonResourceURLs() []string { return r.urls }

func TestSelfSubjectRulesReview(t *testing.T) {
	rr := &reviewRuleResolver{
		res: []authorizer.ResourceRuleInfo{
			reviewRule{verbs: []string{"get", "list"}, groups: []string{""}, resources: []string{"pods"}},
			reviewRule{verbs: []string{"update"}, groups: []string{"apps"}, resources: []string{"deployments"}, names: []string{"web"}},
		},
		nonRes:     []authorizer.NonResourceRuleInfo{reviewRule{verbs: []string{"get"}, urls: []string{"/healthz"}}},
		incomplete: true,
		err:        errors.New("one authorizer cannot list rules"),
	}
	_, authz := ReviewStorage(ReviewConfig{Rules: rr})
	if len(authz) != 1 {
		t.Errorf("served %d authorization resources without an authorizer, want only selfsubjectrulesreviews", len(authz))
	}
	in := &authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: "ns1"}}
	out, err := reviewCreate(t, authz, "selfsubjectrulesreviews", reviewCtx(t, "", reviewAlice), in)
	if err != nil {
		t.Fatalf("Create() = %v", err)
	}
	want := authorizationv1.SubjectRulesReviewStatus{
		ResourceRules: []authorizationv1.ResourceRule{
			{Verbs: []string{"get", "list"}, APIGroups: []string{""}, Resources: []string{"pods"}},
			{Verbs: []string{"update"}, APIGroups: []string{"apps"}, Resources: []string{"deployments"}, ResourceNames: []string{"web"}},
		},
		NonResourceRules: []authorizationv1.NonResourceRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/healthz"}}},
		Incomplete:       true,
		EvaluationError:  "one authorizer cannot list rules",
	}
	if got := out.(*authorizationv1.SelfSubjectRulesReview).Status; !reflect.DeepEqual(got, want) {
		t.Errorf("status = %+v, want %+v", got, want)
	}
	if rr.user != reviewAlice || rr.namespace != "ns1" {
		t.Errorf("rules asked for %+v in %q, want the requesting user in ns1", rr.user, rr.namespace)
	}

	// No rules still encode as empty lists: the API marks them required.
	empty := &reviewRuleResolver{}
	_, authz = ReviewStorage(ReviewConfig{Rules: empty})
	out, err = reviewCreate(t, authz, "selfsubjectrulesreviews", reviewCtx(t, "", reviewAlice), in.DeepCopy())
	if err != nil {
		t.Fatalf("Create() = %v", err)
	}
	b, err := json.Marshal(out.(*authorizationv1.SelfSubjectRulesReview).Status)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"resourceRules":[],"nonResourceRules":[],"incomplete":false}`; got != want {
		t.Errorf("empty status = %s, want %s", got, want)
	}

	_, err = reviewCreate(t, authz, "selfsubjectrulesreviews", reviewCtx(t, "", reviewAlice), &authorizationv1.SelfSubjectRulesReview{})
	if got := reviewCode(err); got != http.StatusBadRequest {
		t.Errorf("Create() without spec.namespace = %v, want 400", err)
	}
}

// TestReviewStorageShape checks what the generic installer looks at: a
// review is created and never read back.
func TestReviewStorageShape(t *testing.T) {
	authn, authz := ReviewStorage(ReviewConfig{
		Tokens: reviewTokens(nil), Authorizer: (&reviewAuthz{}).authorizer(), Rules: &reviewRuleResolver{},
	})
	wantKinds := map[string]schema.GroupVersionKind{
		"tokenreviews":              authenticationv1.SchemeGroupVersion.WithKind("TokenReview"),
		"selfsubjectreviews":        authenticationv1.SchemeGroupVersion.WithKind("SelfSubjectReview"),
		"subjectaccessreviews":      authorizationv1.SchemeGroupVersion.WithKind("SubjectAccessReview"),
		"localsubjectaccessreviews": authorizationv1.SchemeGroupVersion.WithKind("LocalSubjectAccessReview"),
		"selfsubjectaccessreviews":  authorizationv1.SchemeGroupVersion.WithKind("SelfSubjectAccessReview"),
		"selfsubjectrulesreviews":   authorizationv1.SchemeGroupVersion.WithKind("SelfSubjectRulesReview"),
	}
	all := map[string]rest.Storage{}
	for k, v := range authn {
		all[k] = v
	}
	for k, v := range authz {
		all[k] = v
	}
	if len(all) != len(wantKinds) {
		t.Errorf("served %d resources, want %d", len(all), len(wantKinds))
	}
	for resource, gvk := range wantKinds {
		s, ok := all[resource]
		if !ok {
			t.Errorf("%s not served", resource)
			continue
		}
		if got, err := scheme.KindFor(s.New()); err != nil || got != gvk {
			t.Errorf("%s: New() is %v (%v), want %v", resource, got, err, gvk)
		}
		if n := s.(rest.SingularNameProvider).GetSingularName(); n+"s" != resource {
			t.Errorf("%s: singular name %q", resource, n)
		}
		if _, ok := s.(rest.Creater); !ok {
			t.Errorf("%s is not a rest.Creater", resource)
		}
		if _, ok := s.(rest.Scoper); !ok {
			t.Errorf("%s is not a rest.Scoper", resource)
		}
		for name, ok := range map[string]bool{
			"Getter":           reviewIs[rest.Getter](s),
			"Lister":           reviewIs[rest.Lister](s),
			"Updater":          reviewIs[rest.Updater](s),
			"Patcher":          reviewIs[rest.Patcher](s),
			"Watcher":          reviewIs[rest.Watcher](s),
			"GracefulDeleter":  reviewIs[rest.GracefulDeleter](s),
			"CollectionDelete": reviewIs[rest.CollectionDeleter](s),
			"NamedCreater":     reviewIs[rest.NamedCreater](s),
		} {
			if ok {
				t.Errorf("%s implements rest.%s; a review is only created", resource, name)
			}
		}
	}

	// A decoded object of another kind is refused.
	_, err := reviewCreate(t, authz, "subjectaccessreviews", reviewCtx(t, "", reviewAlice), &authorizationv1.SelfSubjectAccessReview{})
	if got := reviewCode(err); got != http.StatusBadRequest {
		t.Errorf("Create(wrong kind) = %v, want 400", err)
	}

	// Validating admission sees a copy and can refuse.
	var admitted runtime.Object
	deny := func(_ context.Context, obj runtime.Object) error {
		admitted = obj
		return apierrors.NewForbidden(schema.GroupResource{}, "", errors.New("no"))
	}
	in := &authenticationv1.SelfSubjectReview{}
	_, err = authn["selfsubjectreviews"].(rest.Creater).Create(reviewCtx(t, "", reviewAlice), in, deny, &metav1.CreateOptions{})
	if got := reviewCode(err); got != http.StatusForbidden {
		t.Errorf("Create() refused by admission = %v, want 403", err)
	}
	if admitted == nil || admitted == runtime.Object(in) {
		t.Errorf("admission saw %p, want a copy of %p", admitted, in)
	}
}

func reviewIs[I any](s rest.Storage) bool {
	_, ok := s.(I)
	return ok
}

// TestReviewInstall installs the storages with the generic installer, as
// the server does, and posts to them over HTTP.
func TestReviewInstall(t *testing.T) {
	authn, authz := ReviewStorage(ReviewConfig{
		Tokens: reviewTokens(nil), APIAudiences: []string{"api"},
		Authorizer: (&reviewAuthz{}).authorizer(), Rules: &reviewRuleResolver{},
	})
	container := restful.NewContainer()
	verbs := map[string][]string{}
	for gv, storage := range map[schema.GroupVersion]map[string]rest.Storage{
		authenticationv1.SchemeGroupVersion: authn,
		authorizationv1.SchemeGroupVersion:  authz,
	} {
		g := &endpoints.APIGroupVersion{
			Root:                       "/apis",
			GroupVersion:               gv,
			Storage:                    storage,
			Serializer:                 scheme.Codecs,
			ParameterCodec:             scheme.ParameterCodec,
			Typer:                      scheme.Scheme,
			Creater:                    scheme.Scheme,
			Convertor:                  scheme.Scheme,
			ConvertabilityChecker:      scheme.Scheme,
			Defaulter:                  scheme.Scheme,
			UnsafeConvertor:            runtime.UnsafeObjectConvertor(scheme.Scheme),
			Namer:                      runtime.Namer(meta.NewAccessor()),
			TypeConverter:              managedfields.NewDeducedTypeConverter(),
			EquivalentResourceRegistry: runtime.NewEquivalentResourceRegistry(),
			Admit:                      admission.NewChainHandler(),
		}
		resources, _, err := g.InstallREST(container)
		if err != nil {
			t.Fatalf("InstallREST(%s) = %v", gv, err)
		}
		for _, r := range resources {
			verbs[r.Resource] = r.Verbs
		}
	}
	if len(verbs) != 6 {
		t.Errorf("installed %d resources, want 6: %v", len(verbs), verbs)
	}
	for r, v := range verbs {
		if !slices.Equal(v, []string{"create"}) {
			t.Errorf("%s verbs = %q, want [create]", r, v)
		}
	}

	handler := filters.WithRequestInfo(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		container.ServeHTTP(w, r.WithContext(request.WithUser(r.Context(), reviewAlice)))
	}), &request.RequestInfoFactory{APIPrefixes: sets.NewString("api", "apis"), GrouplessAPIPrefixes: sets.NewString("api")})
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)

	tests := []struct {
		name, method, path, body string
		wantCode                 int
		wantBody                 string
	}{
		{
			name: "token review", method: http.MethodPost, path: "/apis/authentication.k8s.io/v1/tokenreviews",
			body:     `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"good-token"}}`,
			wantCode: http.StatusCreated, wantBody: `"authenticated":true`,
		},
		{
			name: "empty token", method: http.MethodPost, path: "/apis/authentication.k8s.io/v1/tokenreviews",
			body: `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{}}`, wantCode: http.StatusBadRequest,
		},
		{
			name: "who am i", method: http.MethodPost, path: "/apis/authentication.k8s.io/v1/selfsubjectreviews",
			body:     `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`,
			wantCode: http.StatusCreated, wantBody: `"username":"alice"`,
		},
		{
			name: "self access review", method: http.MethodPost, path: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
			body:     `{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":"get","resource":"pods"}}}`,
			wantCode: http.StatusCreated, wantBody: `"allowed":true`,
		},
		{
			name: "local access review", method: http.MethodPost, path: "/apis/authorization.k8s.io/v1/namespaces/ns1/localsubjectaccessreviews",
			body:     `{"apiVersion":"authorization.k8s.io/v1","kind":"LocalSubjectAccessReview","spec":{"user":"bob","resourceAttributes":{"namespace":"ns1","verb":"delete","resource":"pods"}}}`,
			wantCode: http.StatusCreated, wantBody: `"denied":true`,
		},
		{
			name: "local access review in another namespace", method: http.MethodPost, path: "/apis/authorization.k8s.io/v1/namespaces/ns1/localsubjectaccessreviews",
			body:     `{"apiVersion":"authorization.k8s.io/v1","kind":"LocalSubjectAccessReview","metadata":{"namespace":"ns2"},"spec":{"user":"bob","resourceAttributes":{"namespace":"ns2","verb":"get","resource":"pods"}}}`,
			wantCode: http.StatusBadRequest,
		},
		{
			name: "access review with both attribute kinds", method: http.MethodPost, path: "/apis/authorization.k8s.io/v1/subjectaccessreviews",
			body:     `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"bob","resourceAttributes":{"verb":"get"},"nonResourceAttributes":{"path":"/","verb":"get"}}}`,
			wantCode: http.StatusUnprocessableEntity,
		},
		{
			name: "rules review", method: http.MethodPost, path: "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
			body:     `{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectRulesReview","spec":{"namespace":"ns1"}}`,
			wantCode: http.StatusCreated, wantBody: `"resourceRules":[]`,
		},
		{name: "no get", method: http.MethodGet, path: "/apis/authorization.k8s.io/v1/subjectaccessreviews/x", wantCode: http.StatusNotFound},
		{name: "no list", method: http.MethodGet, path: "/apis/authorization.k8s.io/v1/subjectaccessreviews", wantCode: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body strings.Builder
			if _, err := io.Copy(&body, resp.Body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode || !strings.Contains(body.String(), tt.wantBody) {
				t.Errorf("%s %s = %d %s, want %d containing %s", tt.method, tt.path, resp.StatusCode, body.String(), tt.wantCode, tt.wantBody)
			}
		})
	}
}
