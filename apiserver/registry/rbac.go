package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/component-helpers/auth/rbac/validation"
)

// The four kinds of rbac.authorization.k8s.io/v1. Their names are path
// segments rather than DNS names (system:kube-scheduler is a valid role
// name), as upstream.
//
// Writing them is guarded against privilege escalation (see RBACEscalation),
// which is why the storage is built with RBACStorage rather than NewStore.

// Roles is rbac.authorization.k8s.io/v1 Role.
var Roles = &Resource{
	GVK:            rbacv1.SchemeGroupVersion.WithKind("Role"),
	Resource:       "roles",
	Namespaced:     true,
	New:            func() runtime.Object { return &rbacv1.Role{} },
	NewList:        func() runtime.Object { return &rbacv1.RoleList{} },
	NameValidation: path.ValidatePathSegmentName,

	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		return rbacValidateRules(obj.(*rbacv1.Role).Rules, true)
	},

	Columns: rbacRoleColumns,
	Row: func(obj runtime.Object) []interface{} {
		r := obj.(*rbacv1.Role)
		return []interface{}{r.Name, rbacCreatedAt(r.CreationTimestamp)}
	},
}

// ClusterRoles is rbac.authorization.k8s.io/v1 ClusterRole.
var ClusterRoles = &Resource{
	GVK:            rbacv1.SchemeGroupVersion.WithKind("ClusterRole"),
	Resource:       "clusterroles",
	New:            func() runtime.Object { return &rbacv1.ClusterRole{} },
	NewList:        func() runtime.Object { return &rbacv1.ClusterRoleList{} },
	NameValidation: path.ValidatePathSegmentName,

	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		cr := obj.(*rbacv1.ClusterRole)
		errs := rbacValidateRules(cr.Rules, false)
		if cr.AggregationRule != nil {
			p := field.NewPath("aggregationRule", "clusterRoleSelectors")
			if len(cr.AggregationRule.ClusterRoleSelectors) == 0 {
				errs = append(errs, field.Required(p, "at least one clusterRoleSelector is required when aggregationRule is set"))
			}
			for i := range cr.AggregationRule.ClusterRoleSelectors {
				sel := &cr.AggregationRule.ClusterRoleSelectors[i]
				errs = append(errs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, p.Index(i))...)
			}
		}
		return errs
	},

	Columns: rbacRoleColumns,
	Row: func(obj runtime.Object) []interface{} {
		r := obj.(*rbacv1.ClusterRole)
		return []interface{}{r.Name, rbacCreatedAt(r.CreationTimestamp)}
	},
}

// RoleBindings is rbac.authorization.k8s.io/v1 RoleBinding.
var RoleBindings = &Resource{
	GVK:            rbacv1.SchemeGroupVersion.WithKind("RoleBinding"),
	Resource:       "rolebindings",
	Namespaced:     true,
	New:            func() runtime.Object { return &rbacv1.RoleBinding{} },
	NewList:        func() runtime.Object { return &rbacv1.RoleBindingList{} },
	NameValidation: path.ValidatePathSegmentName,

	Default: func(obj runtime.Object) {
		b := obj.(*rbacv1.RoleBinding)
		rbacDefaultBinding(&b.RoleRef, b.Subjects)
	},
	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		b := obj.(*rbacv1.RoleBinding)
		return rbacValidateBinding(b.RoleRef, b.Subjects, true)
	},
	ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
		b, o := obj.(*rbacv1.RoleBinding), old.(*rbacv1.RoleBinding)
		return append(rbacValidateRoleRefUpdate(b.RoleRef, o.RoleRef), rbacValidateBinding(b.RoleRef, b.Subjects, true)...)
	},

	Columns: rbacBindingColumns,
	Row: func(obj runtime.Object) []interface{} {
		b := obj.(*rbacv1.RoleBinding)
		return rbacBindingRow(b.Name, b.Namespace, b.RoleRef, b.Subjects, b.CreationTimestamp)
	},
}

// ClusterRoleBindings is rbac.authorization.k8s.io/v1 ClusterRoleBinding.
var ClusterRoleBindings = &Resource{
	GVK:            rbacv1.SchemeGroupVersion.WithKind("ClusterRoleBinding"),
	Resource:       "clusterrolebindings",
	New:            func() runtime.Object { return &rbacv1.ClusterRoleBinding{} },
	NewList:        func() runtime.Object { return &rbacv1.ClusterRoleBindingList{} },
	NameValidation: path.ValidatePathSegmentName,

	Default: func(obj runtime.Object) {
		b := obj.(*rbacv1.ClusterRoleBinding)
		rbacDefaultBinding(&b.RoleRef, b.Subjects)
	},
	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		b := obj.(*rbacv1.ClusterRoleBinding)
		return rbacValidateBinding(b.RoleRef, b.Subjects, false)
	},
	ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
		b, o := obj.(*rbacv1.ClusterRoleBinding), old.(*rbacv1.ClusterRoleBinding)
		return append(rbacValidateRoleRefUpdate(b.RoleRef, o.RoleRef), rbacValidateBinding(b.RoleRef, b.Subjects, false)...)
	},

	Columns: rbacBindingColumns,
	Row: func(obj runtime.Object) []interface{} {
		b := obj.(*rbacv1.ClusterRoleBinding)
		return rbacBindingRow(b.Name, "", b.RoleRef, b.Subjects, b.CreationTimestamp)
	},
}

var rbacRoleColumns = []metav1.TableColumnDefinition{
	NameColumn,
	{Name: "Created At", Type: "date", Description: "When the role was created."},
}

var rbacBindingColumns = []metav1.TableColumnDefinition{
	NameColumn,
	{Name: "Role", Type: "string", Description: "The role bound: its kind and name."},
	AgeColumn,
	{Name: "Users", Type: "string", Priority: 1, Description: "The users bound."},
	{Name: "Groups", Type: "string", Priority: 1, Description: "The groups bound."},
	{Name: "ServiceAccounts", Type: "string", Priority: 1, Description: "The service accounts bound, as namespace/name."},
}

func rbacCreatedAt(t metav1.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// rbacBindingRow is the table row of a binding; namespace is the binding's
// (empty for a ClusterRoleBinding) and names service accounts without one.
func rbacBindingRow(name, namespace string, ref rbacv1.RoleRef, subjects []rbacv1.Subject, created metav1.Time) []interface{} {
	var users, groups, sas []string
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			users = append(users, s.Name)
		case rbacv1.GroupKind:
			groups = append(groups, s.Name)
		case rbacv1.ServiceAccountKind:
			ns := s.Namespace
			if ns == "" {
				ns = namespace
			}
			sas = append(sas, ns+"/"+s.Name)
		}
	}
	return []interface{}{name, ref.Kind + "/" + ref.Name, Age(created),
		strings.Join(users, ", "), strings.Join(groups, ", "), strings.Join(sas, ", ")}
}

// rbacDefaultBinding fills the API groups a client may leave out: the
// roleRef's, and that of User and Group subjects.
func rbacDefaultBinding(ref *rbacv1.RoleRef, subjects []rbacv1.Subject) {
	if ref.APIGroup == "" {
		ref.APIGroup = rbacv1.GroupName
	}
	for i := range subjects {
		s := &subjects[i]
		if s.APIGroup == "" && (s.Kind == rbacv1.UserKind || s.Kind == rbacv1.GroupKind) {
			s.APIGroup = rbacv1.GroupName
		}
	}
}

// rbacValidateRules checks the rules of a role. A rule has verbs, and either
// API groups and resources or (in a ClusterRole only) non-resource URLs.
func rbacValidateRules(rules []rbacv1.PolicyRule, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	for i, r := range rules {
		p := field.NewPath("rules").Index(i)
		if len(r.Verbs) == 0 {
			errs = append(errs, field.Required(p.Child("verbs"), "verbs must contain at least one value"))
		}
		if len(r.NonResourceURLs) > 0 {
			if namespaced {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "namespaced rules cannot apply to non-resource URLs"))
			}
			if len(r.APIGroups) > 0 || len(r.Resources) > 0 || len(r.ResourceNames) > 0 {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "rules cannot apply to both regular resources and non-resource URLs"))
			}
			continue
		}
		if len(r.APIGroups) == 0 {
			errs = append(errs, field.Required(p.Child("apiGroups"), "resource rules must supply at least one api group"))
		}
		if len(r.Resources) == 0 {
			errs = append(errs, field.Required(p.Child("resources"), "resource rules must supply at least one resource"))
		}
	}
	return errs
}

// rbacValidateBinding checks the roleRef and subjects of a binding;
// namespaced is true for a RoleBinding, which may refer to a Role and whose
// service-account subjects default to its own namespace.
func rbacValidateBinding(ref rbacv1.RoleRef, subjects []rbacv1.Subject, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	rp := field.NewPath("roleRef")
	if ref.APIGroup != rbacv1.GroupName {
		errs = append(errs, field.NotSupported(rp.Child("apiGroup"), ref.APIGroup, []string{rbacv1.GroupName}))
	}
	kinds := []string{"ClusterRole"}
	if namespaced {
		kinds = []string{"Role", "ClusterRole"}
	}
	if !slices.Contains(kinds, ref.Kind) {
		errs = append(errs, field.NotSupported(rp.Child("kind"), ref.Kind, kinds))
	}
	if ref.Name == "" {
		errs = append(errs, field.Required(rp.Child("name"), ""))
	} else {
		for _, msg := range path.ValidatePathSegmentName(ref.Name, false) {
			errs = append(errs, field.Invalid(rp.Child("name"), ref.Name, msg))
		}
	}

	for i, s := range subjects {
		p := field.NewPath("subjects").Index(i)
		if s.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		}
		switch s.Kind {
		case rbacv1.ServiceAccountKind:
			if s.Name != "" {
				for _, msg := range apimachineryvalidation.NameIsDNSSubdomain(s.Name, false) {
					errs = append(errs, field.Invalid(p.Child("name"), s.Name, msg))
				}
			}
			if s.APIGroup != "" {
				errs = append(errs, field.NotSupported(p.Child("apiGroup"), s.APIGroup, []string{""}))
			}
			if !namespaced && s.Namespace == "" {
				errs = append(errs, field.Required(p.Child("namespace"), "a service account subject of a ClusterRoleBinding needs its namespace"))
			}
		case rbacv1.UserKind, rbacv1.GroupKind:
			if s.APIGroup != rbacv1.GroupName {
				errs = append(errs, field.NotSupported(p.Child("apiGroup"), s.APIGroup, []string{rbacv1.GroupName}))
			}
		default:
			errs = append(errs, field.NotSupported(p.Child("kind"), s.Kind,
				[]string{rbacv1.ServiceAccountKind, rbacv1.UserKind, rbacv1.GroupKind}))
		}
	}
	return errs
}

func rbacValidateRoleRefUpdate(ref, old rbacv1.RoleRef) field.ErrorList {
	if ref != old {
		return field.ErrorList{field.Invalid(field.NewPath("roleRef"), ref, "cannot change roleRef")}
	}
	return nil
}

// RBACRuleResolver lists the rules that apply to a user in a namespace: the
// rules of every cluster role binding naming the user, and, if namespace is
// not empty, of the role bindings in namespace. The RBAC authorizer
// (tether/apiserver/authz/rbac) implements it. An error with a non-empty
// list means some bound roles could not be found; the list is still used.
type RBACRuleResolver interface {
	PolicyRules(ctx context.Context, u user.Info, namespace string) ([]rbacv1.PolicyRule, error)
}

// RBACEscalation keeps the RBAC API from being a way around RBAC: a user may
// not create or change a role so that it holds rules the user does not
// hold, nor bind a role whose rules the user does not hold, unless granted
// that explicitly.
//
// Writing a Role or ClusterRole is allowed if the user may "escalate" that
// role (verb escalate on roles or clusterroles with the role's name, in its
// namespace), or if the user's own rules (in the role's namespace, or
// cluster-wide for a ClusterRole) cover every rule of the role as written —
// for an aggregated ClusterRole, the rules in the object. Setting, keeping or
// removing an aggregationRule without escalate needs full authority (every
// verb on every resource and URL), since it gathers rules from anywhere.
//
// Writing a RoleBinding or ClusterRoleBinding is allowed if the user may
// "bind" the referenced role (verb bind on roles or clusterroles with the
// roleRef's name, in the binding's namespace), or if the user's rules cover
// the referenced role's. Binding a role that does not exist needs bind.
//
// Members of system:masters pass every check, and so does an update that
// changes nothing but the fields the garbage collector and finalizers use.
// A refusal is 403 Forbidden naming the rules the user lacks.
type RBACEscalation struct {
	// Rules gives a user's own rules. Required.
	Rules RBACRuleResolver
	// Authorizer decides the escalate and bind checks; it should be the
	// server's full authorizer. Required.
	Authorizer authorizer.UnconditionalAuthorizer
	// Roles returns the rules of a Role. If nil, the roles storage built by
	// RBACStorage is read.
	Roles func(ctx context.Context, namespace, name string) ([]rbacv1.PolicyRule, error)
	// ClusterRoles returns the rules of a ClusterRole. If nil, the
	// clusterroles storage built by RBACStorage is read.
	ClusterRoles func(ctx context.Context, name string) ([]rbacv1.PolicyRule, error)
}

// RBACStorage returns the storage of roles, clusterroles, rolebindings and
// clusterrolebindings, keyed by resource, with writes guarded by esc (which
// is not changed; RBACStorage keeps a copy).
func RBACStorage(opts generic.RESTOptionsGetter, esc *RBACEscalation) (map[string]rest.Storage, error) {
	if esc == nil {
		return nil, errors.New("registry: rbac storage needs an RBACEscalation")
	}
	var errs []error
	if esc.Rules == nil {
		errs = append(errs, errors.New("registry: RBACEscalation.Rules is required"))
	}
	if esc.Authorizer == nil {
		errs = append(errs, errors.New("registry: RBACEscalation.Authorizer is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	e := *esc
	out := map[string]rest.Storage{}
	stores := map[string]*REST{}
	for _, res := range []*Resource{Roles, ClusterRoles, RoleBindings, ClusterRoleBindings} {
		s, _, err := NewStore(res, opts)
		if err != nil {
			for _, done := range stores {
				done.Destroy()
			}
			return nil, err
		}
		stores[res.Resource] = s
	}
	if e.Roles == nil {
		roles := stores[Roles.Resource]
		e.Roles = func(ctx context.Context, namespace, name string) ([]rbacv1.PolicyRule, error) {
			obj, err := roles.Get(request.WithNamespace(ctx, namespace), name, &metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return obj.(*rbacv1.Role).Rules, nil
		}
	}
	if e.ClusterRoles == nil {
		clusterRoles := stores[ClusterRoles.Resource]
		e.ClusterRoles = func(ctx context.Context, name string) ([]rbacv1.PolicyRule, error) {
			obj, err := clusterRoles.Get(request.WithNamespace(ctx, ""), name, &metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return obj.(*rbacv1.ClusterRole).Rules, nil
		}
	}
	out[Roles.Resource] = &rbacREST{REST: stores[Roles.Resource], check: e.checkRole}
	out[ClusterRoles.Resource] = &rbacREST{REST: stores[ClusterRoles.Resource], check: e.checkRole}
	out[RoleBindings.Resource] = &rbacREST{REST: stores[RoleBindings.Resource], check: e.checkBinding}
	out[ClusterRoleBindings.Resource] = &rbacREST{REST: stores[ClusterRoleBindings.Resource], check: e.checkBinding}
	return out, nil
}

// rbacREST is the generic storage of one RBAC resource with the escalation
// check run on the final object of every create and update, before the
// caller's validation (admission).
type rbacREST struct {
	*REST
	// check is called with old nil on create.
	check func(ctx context.Context, obj, old runtime.Object) error
}

var (
	_ rest.StandardStorage = (*rbacREST)(nil)
	_ rest.Patcher         = (*rbacREST)(nil)
)

// Create implements rest.Creater.
func (r *rbacREST) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, opts *metav1.CreateOptions) (runtime.Object, error) {
	return r.REST.Create(ctx, obj, r.createCheck(createValidation), opts)
}

// Update implements rest.Updater; patches and apply arrive here too.
func (r *rbacREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, opts *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.REST.Update(ctx, name, objInfo, r.createCheck(createValidation), r.updateCheck(updateValidation), forceAllowCreate, opts)
}

func (r *rbacREST) createCheck(next rest.ValidateObjectFunc) rest.ValidateObjectFunc {
	return func(ctx context.Context, obj runtime.Object) error {
		if err := r.check(ctx, obj, nil); err != nil {
			return err
		}
		if next != nil {
			return next(ctx, obj)
		}
		return nil
	}
}

func (r *rbacREST) updateCheck(next rest.ValidateObjectUpdateFunc) rest.ValidateObjectUpdateFunc {
	return func(ctx context.Context, obj, old runtime.Object) error {
		if err := r.check(ctx, obj, old); err != nil {
			return err
		}
		if next != nil {
			return next(ctx, obj, old)
		}
		return nil
	}
}

// rbacFullAuthority is what setting an aggregationRule needs.
var rbacFullAuthority = []rbacv1.PolicyRule{
	{Verbs: []string{rbacv1.VerbAll}, APIGroups: []string{rbacv1.APIGroupAll}, Resources: []string{rbacv1.ResourceAll}},
	{Verbs: []string{rbacv1.VerbAll}, NonResourceURLs: []string{rbacv1.NonResourceAll}},
}

// checkRole is the escalation check of a Role or ClusterRole write.
func (e *RBACEscalation) checkRole(ctx context.Context, obj, old runtime.Object) error {
	var (
		gr         schema.GroupResource
		namespace  string
		name       string
		rules      []rbacv1.PolicyRule
		aggregated bool
	)
	switch r := obj.(type) {
	case *rbacv1.Role:
		gr, namespace, name, rules = rbacv1.Resource("roles"), r.Namespace, r.Name, r.Rules
	case *rbacv1.ClusterRole:
		gr, name, rules = rbacv1.Resource("clusterroles"), r.Name, r.Rules
		aggregated = r.AggregationRule != nil
		if o, ok := old.(*rbacv1.ClusterRole); ok && o.AggregationRule != nil {
			aggregated = true
		}
	default:
		return apierrors.NewInternalError(fmt.Errorf("registry: rbac: unexpected %T", obj))
	}
	if old != nil && rbacOnlyGCFieldsChanged(obj, old) {
		return nil
	}
	u, ok := request.UserFrom(ctx)
	if !ok {
		return apierrors.NewForbidden(gr, name, errors.New("no user in the request"))
	}
	if rbacIsMaster(u) || e.allowed(ctx, u, "escalate", gr.Resource, namespace, name) {
		return nil
	}
	if err := e.covers(ctx, u, namespace, rules); err != nil {
		return apierrors.NewForbidden(gr, name, err)
	}
	if aggregated {
		if err := e.covers(ctx, u, "", rbacFullAuthority); err != nil {
			return apierrors.NewForbidden(gr, name, errors.New("must have cluster-admin privileges to use the aggregationRule"))
		}
	}
	return nil
}

// checkBinding is the escalation check of a RoleBinding or
// ClusterRoleBinding write.
func (e *RBACEscalation) checkBinding(ctx context.Context, obj, old runtime.Object) error {
	var (
		gr        schema.GroupResource
		namespace string
		name      string
		ref       rbacv1.RoleRef
	)
	switch b := obj.(type) {
	case *rbacv1.RoleBinding:
		gr, namespace, name, ref = rbacv1.Resource("rolebindings"), b.Namespace, b.Name, b.RoleRef
	case *rbacv1.ClusterRoleBinding:
		gr, name, ref = rbacv1.Resource("clusterrolebindings"), b.Name, b.RoleRef
	default:
		return apierrors.NewInternalError(fmt.Errorf("registry: rbac: unexpected %T", obj))
	}
	if old != nil && rbacOnlyGCFieldsChanged(obj, old) {
		return nil
	}
	u, ok := request.UserFrom(ctx)
	if !ok {
		return apierrors.NewForbidden(gr, name, errors.New("no user in the request"))
	}
	if rbacIsMaster(u) {
		return nil
	}
	resource := "clusterroles"
	if ref.Kind == "Role" {
		resource = "roles"
	}
	if e.allowed(ctx, u, "bind", resource, namespace, ref.Name) {
		return nil
	}
	var (
		rules []rbacv1.PolicyRule
		err   error
	)
	switch ref.Kind {
	case "Role":
		rules, err = e.Roles(ctx, namespace, ref.Name)
	case "ClusterRole":
		rules, err = e.ClusterRoles(ctx, ref.Name)
	default:
		// Validation refuses other kinds before this runs.
		return apierrors.NewForbidden(gr, name, fmt.Errorf("unknown roleRef kind %q", ref.Kind))
	}
	if apierrors.IsNotFound(err) {
		return apierrors.NewForbidden(gr, name, fmt.Errorf("%s %q does not exist; binding a role that does not exist yet needs the bind verb on it", ref.Kind, ref.Name))
	}
	if err != nil {
		return fmt.Errorf("registry: get %s %q: %w", ref.Kind, ref.Name, err)
	}
	if err := e.covers(ctx, u, namespace, rules); err != nil {
		return apierrors.NewForbidden(gr, name, err)
	}
	return nil
}

// allowed asks the authorizer whether u may use verb (escalate or bind) on
// the named role.
func (e *RBACEscalation) allowed(ctx context.Context, u user.Info, verb, resource, namespace, name string) bool {
	d, _, err := e.Authorizer.Authorize(ctx, authorizer.AttributesRecord{
		User:            u,
		Verb:            verb,
		APIGroup:        rbacv1.GroupName,
		APIVersion:      "*",
		Resource:        resource,
		Namespace:       namespace,
		Name:            name,
		ResourceRequest: true,
	})
	return err == nil && d == authorizer.DecisionAllow
}

// covers returns an error describing what u lacks if u's rules in namespace
// do not cover rules.
func (e *RBACEscalation) covers(ctx context.Context, u user.Info, namespace string, rules []rbacv1.PolicyRule) error {
	own, resolveErr := e.Rules.PolicyRules(ctx, u, namespace)
	ok, missing := validation.Covers(own, rules)
	if ok {
		return nil
	}
	msg := fmt.Sprintf("user %q (groups=%q) is attempting to grant RBAC permissions not currently held:\n%s",
		u.GetName(), u.GetGroups(), strings.Join(rbacDescribe(missing), "\n"))
	if resolveErr != nil {
		msg += "; resolution errors: " + resolveErr.Error()
	}
	return errors.New(msg)
}

// rbacDescribe lists broken-down rules compactly: the verbs of rules that
// differ only in their verb are put together, one line per group,
// resource and name (or URL), sorted.
func rbacDescribe(rules []rbacv1.PolicyRule) []string {
	type target struct{ group, resource, name, url string }
	verbs := map[target][]string{}
	var order []target
	for _, r := range rules {
		var t target
		if len(r.NonResourceURLs) > 0 {
			t.url = r.NonResourceURLs[0]
		} else {
			t.group, t.resource = r.APIGroups[0], r.Resources[0]
			if len(r.ResourceNames) > 0 {
				t.name = r.ResourceNames[0]
			}
		}
		if _, seen := verbs[t]; !seen {
			order = append(order, t)
		}
		for _, v := range r.Verbs {
			if !slices.Contains(verbs[t], v) {
				verbs[t] = append(verbs[t], v)
			}
		}
	}
	out := make([]string, 0, len(order))
	for _, t := range order {
		v := fmt.Sprintf("Verbs:%q", verbs[t])
		switch {
		case t.url != "":
			out = append(out, fmt.Sprintf("{NonResourceURLs:[%q], %s}", t.url, v))
		case t.name != "":
			out = append(out, fmt.Sprintf("{APIGroups:[%q], Resources:[%q], ResourceNames:[%q], %s}", t.group, t.resource, t.name, v))
		default:
			out = append(out, fmt.Sprintf("{APIGroups:[%q], Resources:[%q], %s}", t.group, t.resource, v))
		}
	}
	slices.Sort(out)
	return out
}

func rbacIsMaster(u user.Info) bool {
	return slices.Contains(u.GetGroups(), user.SystemPrivilegedGroup)
}

// rbacOnlyGCFieldsChanged reports whether an update changes nothing but
// owner references, finalizers and deletion bookkeeping (and the metadata
// the server keeps). The garbage collector must be able to make such
// updates to roles and bindings whose rules it does not hold.
func rbacOnlyGCFieldsChanged(obj, old runtime.Object) bool {
	o := obj.DeepCopyObject()
	om, err1 := meta.Accessor(o)
	oldm, err2 := meta.Accessor(old)
	if err1 != nil || err2 != nil {
		return false
	}
	om.SetOwnerReferences(oldm.GetOwnerReferences())
	om.SetFinalizers(oldm.GetFinalizers())
	om.SetDeletionTimestamp(oldm.GetDeletionTimestamp())
	om.SetDeletionGracePeriodSeconds(oldm.GetDeletionGracePeriodSeconds())
	om.SetManagedFields(oldm.GetManagedFields())
	om.SetResourceVersion(oldm.GetResourceVersion())
	om.SetGeneration(oldm.GetGeneration())
	om.SetSelfLink(oldm.GetSelfLink())
	return equality.Semantic.DeepEqual(o, old)
}
