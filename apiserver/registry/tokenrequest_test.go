package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"tether/apiserver/authn/serviceaccount"
)

// trGetter is an in-memory serviceaccount.ObjectGetter keyed by
// "namespace/name" (nodes by name).
type trGetter struct {
	sas     map[string]*corev1.ServiceAccount
	pods    map[string]*corev1.Pod
	secrets map[string]*corev1.Secret
	nodes   map[string]*corev1.Node
}

func trFind[T any](m map[string]T, key, resource, name string) (T, error) {
	if o, ok := m[key]; ok {
		return o, nil
	}
	var zero T
	return zero, apierrors.NewNotFound(corev1.Resource(resource), name)
}

func (g *trGetter) GetServiceAccount(_ context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	return trFind(g.sas, ns+"/"+name, "serviceaccounts", name)
}

func (g *trGetter) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	return trFind(g.pods, ns+"/"+name, "pods", name)
}

func (g *trGetter) GetSecret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	return trFind(g.secrets, ns+"/"+name, "secrets", name)
}

func (g *trGetter) GetNode(_ context.Context, name string) (*corev1.Node, error) {
	return trFind(g.nodes, name, "nodes", name)
}

func trObjects() *trGetter {
	m := func(ns, name, uid string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)}
	}
	return &trGetter{
		sas: map[string]*corev1.ServiceAccount{"team/app": {ObjectMeta: m("team", "app", "sa-uid")}},
		pods: map[string]*corev1.Pod{
			"team/web":      {ObjectMeta: m("team", "web", "pod-uid"), Spec: corev1.PodSpec{ServiceAccountName: "app", NodeName: "n1"}},
			"team/orphan":   {ObjectMeta: m("team", "orphan", "orphan-uid"), Spec: corev1.PodSpec{ServiceAccountName: "app", NodeName: "gone"}},
			"team/pending":  {ObjectMeta: m("team", "pending", "pending-uid"), Spec: corev1.PodSpec{ServiceAccountName: "app"}},
			"team/stranger": {ObjectMeta: m("team", "stranger", "stranger-uid"), Spec: corev1.PodSpec{ServiceAccountName: "default"}},
		},
		secrets: map[string]*corev1.Secret{"team/s": {ObjectMeta: m("team", "s", "secret-uid")}},
		nodes:   map[string]*corev1.Node{"n1": {ObjectMeta: m("", "n1", "node-uid")}},
	}
}

var (
	trNow       = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	trAudiences = []string{"https://kubernetes.default.svc"}
)

const trIssuer = "https://kubernetes.default.svc.cluster.local"

func trSetup(t *testing.T, max time.Duration) (*tokenRequestREST, authenticator.Token) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := serviceaccount.NewIssuer(key, trIssuer)
	if err != nil {
		t.Fatal(err)
	}
	g := trObjects()
	r := NewTokenRequestStorage(TokenRequestConfig{Issuer: iss, Getter: g, APIAudiences: trAudiences, MaxExpiration: max}).(*tokenRequestREST)
	r.now = func() time.Time { return trNow }
	auth := serviceaccount.NewAuthenticator(serviceaccount.AuthenticatorConfig{
		Keys: []*ecdsa.PublicKey{&key.PublicKey}, Issuer: trIssuer, Audiences: trAudiences, Getter: g,
		Now: func() time.Time { return trNow.Add(time.Minute) },
	})
	return r, auth
}

func trSeconds(s int64) *int64 { return &s }

func trCtx(t *testing.T) context.Context { return request.WithNamespace(t.Context(), "team") }

func TestTokenRequestStorageKind(t *testing.T) {
	r, _ := trSetup(t, 0)
	if gvk := r.GroupVersionKind(corev1.SchemeGroupVersion); gvk != authenticationv1.SchemeGroupVersion.WithKind("TokenRequest") {
		t.Errorf("GroupVersionKind() = %v, want authentication.k8s.io/v1 TokenRequest", gvk)
	}
	if !r.NamespaceScoped() {
		t.Error("NamespaceScoped() = false, want true")
	}
	if _, ok := r.New().(*authenticationv1.TokenRequest); !ok {
		t.Errorf("New() = %T, want *TokenRequest", r.New())
	}
}

func TestTokenRequestIssues(t *testing.T) {
	tests := []struct {
		name      string
		spec      authenticationv1.TokenRequestSpec
		wantAuds  []string
		wantSecs  int64
		wantExtra map[string][]string // without the credential id
		authAuds  authenticator.Audiences
	}{
		{
			name:      "defaults",
			wantAuds:  trAudiences,
			wantSecs:  3600,
			wantExtra: map[string][]string{},
		},
		{
			name:      "audiences and the longest expiration",
			spec:      authenticationv1.TokenRequestSpec{Audiences: []string{"vault"}, ExpirationSeconds: trSeconds(172800)},
			wantAuds:  []string{"vault"},
			wantSecs:  172800,
			wantExtra: map[string][]string{},
			authAuds:  authenticator.Audiences{"vault"},
		},
		{
			name: "bound to a pod",
			spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind: "Pod", APIVersion: "v1", Name: "web", UID: "pod-uid",
			}},
			wantAuds: trAudiences,
			wantSecs: 3600,
			wantExtra: map[string][]string{
				"authentication.kubernetes.io/pod-name":  {"web"},
				"authentication.kubernetes.io/pod-uid":   {"pod-uid"},
				"authentication.kubernetes.io/node-name": {"n1"},
				"authentication.kubernetes.io/node-uid":  {"node-uid"},
			},
		},
		{
			name:     "bound to a pod whose node object is gone",
			spec:     authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", Name: "orphan"}},
			wantAuds: trAudiences,
			wantSecs: 3600,
			wantExtra: map[string][]string{
				"authentication.kubernetes.io/pod-name":  {"orphan"},
				"authentication.kubernetes.io/pod-uid":   {"orphan-uid"},
				"authentication.kubernetes.io/node-name": {"gone"},
			},
		},
		{
			name:     "bound to an unscheduled pod",
			spec:     authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", Name: "pending"}},
			wantAuds: trAudiences,
			wantSecs: 3600,
			wantExtra: map[string][]string{
				"authentication.kubernetes.io/pod-name": {"pending"},
				"authentication.kubernetes.io/pod-uid":  {"pending-uid"},
			},
		},
		{
			name:      "bound to a secret",
			spec:      authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: "s"}},
			wantAuds:  trAudiences,
			wantSecs:  3600,
			wantExtra: map[string][]string{},
		},
		{
			name:     "bound to a node",
			spec:     authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: "n1", UID: "node-uid"}},
			wantAuds: trAudiences,
			wantSecs: 3600,
			wantExtra: map[string][]string{
				"authentication.kubernetes.io/node-name": {"n1"},
				"authentication.kubernetes.io/node-uid":  {"node-uid"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, auth := trSetup(t, 0)
			var validated runtime.Object
			validate := func(_ context.Context, obj runtime.Object) error { validated = obj; return nil }
			in := &authenticationv1.TokenRequest{Spec: tt.spec}
			before := in.DeepCopy()
			obj, err := r.Create(trCtx(t), "app", in, validate, &metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("Create() = %v", err)
			}
			out := obj.(*authenticationv1.TokenRequest)
			if out.Name != "app" || out.Namespace != "team" || out.UID != "sa-uid" {
				t.Errorf("metadata = %s/%s uid %s, want team/app uid sa-uid", out.Namespace, out.Name, out.UID)
			}
			if !reflect.DeepEqual(out.Spec.Audiences, tt.wantAuds) || out.Spec.ExpirationSeconds == nil || *out.Spec.ExpirationSeconds != tt.wantSecs {
				t.Errorf("spec = %v, %v; want audiences %v, %d seconds", out.Spec.Audiences, out.Spec.ExpirationSeconds, tt.wantAuds, tt.wantSecs)
			}
			if want := trNow.Add(time.Duration(tt.wantSecs) * time.Second); !out.Status.ExpirationTimestamp.Time.Equal(want) {
				t.Errorf("expirationTimestamp = %v, want %v", out.Status.ExpirationTimestamp, want)
			}
			if v, ok := validated.(*authenticationv1.TokenRequest); !ok || v.Spec.ExpirationSeconds == nil || v.Status.Token != "" {
				t.Errorf("createValidation saw %#v, want the defaulted request without a token", validated)
			}
			if !reflect.DeepEqual(in, before) {
				t.Errorf("Create changed the request object to %+v", in)
			}

			ctx := t.Context()
			if tt.authAuds != nil {
				ctx = authenticator.WithAudiences(ctx, tt.authAuds)
			}
			resp, ok, err := auth.AuthenticateToken(ctx, out.Status.Token)
			if !ok {
				t.Fatalf("issued token does not authenticate: %v", err)
			}
			if got := resp.User.GetName(); got != "system:serviceaccount:team:app" {
				t.Errorf("user = %q, want system:serviceaccount:team:app", got)
			}
			extra := resp.User.GetExtra()
			if len(extra["authentication.kubernetes.io/credential-id"]) != 1 {
				t.Errorf("extra = %v, want a credential id", extra)
			}
			delete(extra, "authentication.kubernetes.io/credential-id")
			if !reflect.DeepEqual(extra, tt.wantExtra) {
				t.Errorf("extra = %v, want %v", extra, tt.wantExtra)
			}
		})
	}
}

func TestTokenRequestRejects(t *testing.T) {
	ref := func(kind, apiVersion, name, uid string) *authenticationv1.BoundObjectReference {
		return &authenticationv1.BoundObjectReference{Kind: kind, APIVersion: apiVersion, Name: name, UID: types.UID(uid)}
	}
	tests := []struct {
		name     string
		saName   string
		ctx      func(ctx context.Context) context.Context
		req      authenticationv1.TokenRequest
		max      time.Duration
		validate rest.ValidateObjectFunc
		code     int32
	}{
		{name: "no such service account", saName: "nobody", code: http.StatusNotFound},
		{name: "no namespace", ctx: func(context.Context) context.Context { return context.Background() }, code: http.StatusBadRequest},
		{name: "too short", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: trSeconds(599)}}, code: http.StatusUnprocessableEntity},
		{name: "too long", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: trSeconds(172801)}}, code: http.StatusUnprocessableEntity},
		{name: "longer than the configured maximum", max: time.Hour, req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: trSeconds(3601)}}, code: http.StatusUnprocessableEntity},
		{name: "empty audience", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"a", ""}}}, code: http.StatusUnprocessableEntity},
		{name: "name mismatch", req: authenticationv1.TokenRequest{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, code: http.StatusUnprocessableEntity},
		{name: "namespace mismatch", req: authenticationv1.TokenRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "other"}}, code: http.StatusUnprocessableEntity},
		{name: "service account uid mismatch", req: authenticationv1.TokenRequest{ObjectMeta: metav1.ObjectMeta{UID: "old-uid"}}, code: http.StatusConflict},
		{name: "unsupported kind", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref("Deployment", "apps/v1", "d", "")}}, code: http.StatusUnprocessableEntity},
		{name: "unsupported version", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref("Pod", "v2", "web", "")}}, code: http.StatusUnprocessableEntity},
		{name: "bound object without a name", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref("Pod", "v1", "", "")}}, code: http.StatusUnprocessableEntity},
		{name: "bound pod missing", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref("Pod", "v1", "nope", "")}}, code: http.StatusNotFound},
		{name: "bound pod of another service account", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref("Pod", "v1", "stranger", "")}}, code: http.StatusBadRequest},
		{name: "bound pod recreated", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref("Pod", "v1", "web", "old-uid")}}, code: http.StatusConflict},
		{name: "bound secret missing", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref("Secret", "v1", "nope", "")}}, code: http.StatusNotFound},
		{name: "bound node missing", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref("Node", "v1", "nope", "")}}, code: http.StatusNotFound},
		{name: "bound node recreated", req: authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref("Node", "v1", "n1", "old-uid")}}, code: http.StatusConflict},
		{
			name: "admission denies",
			validate: func(context.Context, runtime.Object) error {
				return apierrors.NewForbidden(corev1.Resource("serviceaccounts/token"), "app", errors.New("no"))
			},
			code: http.StatusForbidden,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := trSetup(t, tt.max)
			ctx := trCtx(t)
			if tt.ctx != nil {
				ctx = tt.ctx(ctx)
			}
			name := tt.saName
			if name == "" {
				name = "app"
			}
			obj, err := r.Create(ctx, name, tt.req.DeepCopy(), tt.validate, &metav1.CreateOptions{})
			if err == nil {
				t.Fatalf("Create() = %v, want an error with code %d", obj, tt.code)
			}
			var status apierrors.APIStatus
			if !errors.As(err, &status) || status.Status().Code != tt.code {
				t.Errorf("Create() error = %v (%T), want code %d", err, err, tt.code)
			}
		})
	}
}

func TestTokenRequestDryRunIssuesNoToken(t *testing.T) {
	r, _ := trSetup(t, 0)
	obj, err := r.Create(trCtx(t), "app", &authenticationv1.TokenRequest{}, nil, &metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	out := obj.(*authenticationv1.TokenRequest)
	if out.Status != (authenticationv1.TokenRequestStatus{}) {
		t.Errorf("dry-run status = %+v, want empty", out.Status)
	}
	if out.Spec.ExpirationSeconds == nil || *out.Spec.ExpirationSeconds != 3600 {
		t.Errorf("dry-run spec = %+v, want defaults applied", out.Spec)
	}
}

func TestTokenRequestUnconfigured(t *testing.T) {
	r := NewTokenRequestStorage(TokenRequestConfig{}).(rest.NamedCreater)
	_, err := r.Create(trCtx(t), "app", &authenticationv1.TokenRequest{}, nil, &metav1.CreateOptions{})
	if !apierrors.IsInternalError(err) {
		t.Errorf("Create() without an issuer = %v, want an internal error", err)
	}
}
