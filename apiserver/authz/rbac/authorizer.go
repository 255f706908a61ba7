// Package rbac is tether's role-based access control: the authorizer that
// decides requests from the Roles, ClusterRoles, RoleBindings and
// ClusterRoleBindings of rbac.authorization.k8s.io/v1, the default policy
// every cluster starts with, and Reconcile, which writes that policy through
// the API at every start.
//
// The authorizer reads the four kinds from a client-go informer cache. The
// bindings are indexed by subject, so a decision looks only at the bindings
// that name the requesting user, one of its groups or its service account,
// however many bindings the cluster holds. Its semantics are those of
// Kubernetes RBAC: it only ever allows (or has no opinion), a RoleBinding
// grants its role's rules in its own namespace, a ClusterRoleBinding grants
// them everywhere, and rules match verbs, API groups, resources (with "*"
// and "*/<subresource>"), resource names and non-resource URLs (with a
// trailing "*") exactly as upstream; match.go spells the rules out.
package rbac

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// subjectIndex names the informer index of bindings by subject. A
// ClusterRoleBinding is indexed under "user:<name>", "group:<name>" and
// "sa:<namespace>:<name>" for each of its subjects; a RoleBinding under the
// same keys prefixed with "<namespace>/", its own namespace, so that a
// lookup for one namespace never sees the bindings of the others. A
// service-account subject of a RoleBinding without a namespace is indexed
// in the binding's namespace, which is what it means.
const subjectIndex = "tether.rbac/subject"

// Authorizer is the RBAC authorizer. Create it with New before the informer
// factory is started; it is safe for concurrent use.
type Authorizer struct {
	roles               cache.Indexer
	clusterRoles        cache.Indexer
	roleBindings        cache.Indexer
	clusterRoleBindings cache.Indexer
	// indexed reports whether the binding indexers carry subjectIndex; if
	// not (it could not be added), bindings are scanned.
	rbIndexed, crbIndexed bool

	synced []cache.InformerSynced
}

var (
	_ authorizer.Authorizer   = (*Authorizer)(nil)
	_ authorizer.RuleResolver = (*Authorizer)(nil)
)

// New returns an Authorizer reading from the RBAC informers of factory. It
// registers the four informers (so that factory.Start starts them) and the
// subject index on the two binding informers. The caller starts the factory
// and should wait for HasSynced before serving: until then decisions are
// made from an incomplete cache.
func New(factory informers.SharedInformerFactory) *Authorizer {
	v1 := factory.Rbac().V1()
	ri, cri := v1.Roles().Informer(), v1.ClusterRoles().Informer()
	rbi, crbi := v1.RoleBindings().Informer(), v1.ClusterRoleBindings().Informer()
	a := &Authorizer{
		roles:               ri.GetIndexer(),
		clusterRoles:        cri.GetIndexer(),
		roleBindings:        rbi.GetIndexer(),
		clusterRoleBindings: crbi.GetIndexer(),
		synced:              []cache.InformerSynced{ri.HasSynced, cri.HasSynced, rbi.HasSynced, crbi.HasSynced},
	}
	a.rbIndexed = addSubjectIndex(rbi, roleBindingSubjectKeys)
	a.crbIndexed = addSubjectIndex(crbi, clusterRoleBindingSubjectKeys)
	return a
}

// addSubjectIndex adds the subject index to inf and reports whether the
// index is there afterwards. It is when a second Authorizer shares the
// factory: the first added the same index.
func addSubjectIndex(inf cache.SharedIndexInformer, keys cache.IndexFunc) bool {
	_ = inf.AddIndexers(cache.Indexers{subjectIndex: keys})
	_, ok := inf.GetIndexer().GetIndexers()[subjectIndex]
	return ok
}

// HasSynced reports whether the four informer caches have synced.
func (a *Authorizer) HasSynced() bool {
	for _, s := range a.synced {
		if !s() {
			return false
		}
	}
	return true
}

func subjectKey(kind, namespace, name string) string {
	switch kind {
	case rbacv1.UserKind:
		return "user:" + name
	case rbacv1.GroupKind:
		return "group:" + name
	case rbacv1.ServiceAccountKind:
		return "sa:" + namespace + ":" + name
	}
	return ""
}

func clusterRoleBindingSubjectKeys(obj interface{}) ([]string, error) {
	b, ok := obj.(*rbacv1.ClusterRoleBinding)
	if !ok {
		return nil, fmt.Errorf("rbac: index: unexpected %T", obj)
	}
	keys := make([]string, 0, len(b.Subjects))
	for _, s := range b.Subjects {
		if k := subjectKey(s.Kind, s.Namespace, s.Name); k != "" && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

func roleBindingSubjectKeys(obj interface{}) ([]string, error) {
	b, ok := obj.(*rbacv1.RoleBinding)
	if !ok {
		return nil, fmt.Errorf("rbac: index: unexpected %T", obj)
	}
	keys := make([]string, 0, len(b.Subjects))
	for _, s := range b.Subjects {
		ns := s.Namespace
		if ns == "" {
			ns = b.Namespace
		}
		if k := subjectKey(s.Kind, ns, s.Name); k != "" {
			k = b.Namespace + "/" + k
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	return keys, nil
}

// userKeys holds the subject index keys of one user, in the order the
// bindings are visited: the user name, its service account (if it is one),
// then its groups. Keys of role bindings carry the namespace prefix.
type userKeys struct {
	u      user.Info
	name   string // user name
	saNS   string // service-account namespace and name, if the user is one
	saName string
	isSA   bool
	groups []string
}

func newUserKeys(u user.Info) userKeys {
	k := userKeys{u: u, name: u.GetName(), groups: u.GetGroups()}
	if rest, ok := strings.CutPrefix(k.name, serviceaccount.ServiceAccountUsernamePrefix); ok {
		// Namespaces cannot contain ':', so the first one separates the
		// namespace from the name. A subject matches exactly when
		// prefix+namespace+":"+name is the user name, whichever ':' that is,
		// and the index key "sa:"+rest is that same comparison.
		if ns, name, ok := strings.Cut(rest, ":"); ok {
			k.isSA, k.saNS, k.saName = true, ns, name
		}
	}
	return k
}

// count is the number of keys: user, service account, groups.
func (k *userKeys) count() int { return 2 + len(k.groups) }

// key returns key i with the given prefix ("" or "<namespace>/"), or "" if
// key i does not exist (the service-account key of a user that is not one).
func (k *userKeys) key(prefix string, i int) string {
	switch {
	case i == 0:
		return prefix + "user:" + k.name
	case i == 1:
		if !k.isSA {
			return ""
		}
		return prefix + "sa:" + k.saNS + ":" + k.saName
	default:
		return prefix + "group:" + k.groups[i-2]
	}
}

// firstMatch returns the index of the first key (in key order) that one of
// subjects matches, and that subject. bindingNS is the namespace of a
// RoleBinding ("" for a ClusterRoleBinding): it is the namespace of its
// service-account subjects that name none. A binding found under key i is
// visited only if firstMatch returns i, so that a binding naming both the
// user and one of its groups is visited once.
func (k *userKeys) firstMatch(subjects []rbacv1.Subject, bindingNS string) (int, *rbacv1.Subject) {
	best, bestSubject := -1, (*rbacv1.Subject)(nil)
	for si := range subjects {
		s := &subjects[si]
		i := -1
		switch s.Kind {
		case rbacv1.UserKind:
			if s.Name == k.name {
				i = 0
			}
		case rbacv1.ServiceAccountKind:
			ns := s.Namespace
			if ns == "" {
				ns = bindingNS
			}
			if k.isSA && ns == k.saNS && s.Name == k.saName {
				i = 1
			}
		case rbacv1.GroupKind:
			if g := slices.Index(k.groups, s.Name); g >= 0 {
				i = 2 + g
			}
		}
		if i >= 0 && (best < 0 || i < best) {
			best, bestSubject = i, s
		}
	}
	return best, bestSubject
}

// ruleSource says where a set of rules came from, for reasons and errors.
type ruleSource struct {
	crb     *rbacv1.ClusterRoleBinding
	rb      *rbacv1.RoleBinding
	subject *rbacv1.Subject
}

func (s ruleSource) String() string {
	if s.crb != nil {
		return fmt.Sprintf("ClusterRoleBinding %q of ClusterRole %q to %s", s.crb.Name, s.crb.RoleRef.Name, describeSubject(s.subject, ""))
	}
	return fmt.Sprintf("RoleBinding %q of %s %q to %s", s.rb.Namespace+"/"+s.rb.Name, s.rb.RoleRef.Kind, s.rb.RoleRef.Name, describeSubject(s.subject, s.rb.Namespace))
}

func describeSubject(s *rbacv1.Subject, bindingNS string) string {
	if s.Kind == rbacv1.ServiceAccountKind {
		ns := s.Namespace
		if ns == "" {
			ns = bindingNS
		}
		return fmt.Sprintf("%s %q", s.Kind, ns+"/"+s.Name)
	}
	return fmt.Sprintf("%s %q", s.Kind, s.Name)
}

// visitor receives the rules of each binding that applies to a user, in
// order: cluster role bindings first, then role bindings of the namespace.
// err is set (and rules nil) when the binding's role cannot be found. It
// returns false to stop.
type visitor func(src ruleSource, rules []rbacv1.PolicyRule, err error) bool

// visit calls v for each binding that applies to u in namespace (cluster
// role bindings only if namespace is empty) until v returns false.
func (a *Authorizer) visit(u user.Info, namespace string, v visitor) {
	k := newUserKeys(u)
	if !a.visitClusterRoleBindings(&k, v) || namespace == "" {
		return
	}
	a.visitRoleBindings(&k, namespace, v)
}

func (a *Authorizer) visitClusterRoleBindings(k *userKeys, v visitor) bool {
	if !a.crbIndexed {
		for _, obj := range a.clusterRoleBindings.List() {
			b := obj.(*rbacv1.ClusterRoleBinding)
			if i, s := k.firstMatch(b.Subjects, ""); i >= 0 && !a.visitClusterRoleBinding(b, s, v) {
				return false
			}
		}
		return true
	}
	for i := range k.count() {
		key := k.key("", i)
		if key == "" {
			continue
		}
		objs, _ := a.clusterRoleBindings.ByIndex(subjectIndex, key)
		for _, obj := range objs {
			b := obj.(*rbacv1.ClusterRoleBinding)
			if first, s := k.firstMatch(b.Subjects, ""); first == i && !a.visitClusterRoleBinding(b, s, v) {
				return false
			}
		}
	}
	return true
}

func (a *Authorizer) visitClusterRoleBinding(b *rbacv1.ClusterRoleBinding, s *rbacv1.Subject, v visitor) bool {
	src := ruleSource{crb: b, subject: s}
	if b.RoleRef.Kind != "ClusterRole" {
		return v(src, nil, fmt.Errorf("rbac: %v: roleRef kind %q is not ClusterRole", src, b.RoleRef.Kind))
	}
	rules, err := a.clusterRoleRules(b.RoleRef.Name)
	return v(src, rules, err)
}

func (a *Authorizer) visitRoleBindings(k *userKeys, namespace string, v visitor) bool {
	if !a.rbIndexed {
		objs, err := a.roleBindings.ByIndex(cache.NamespaceIndex, namespace)
		if err != nil {
			// The namespace index is not there either: scan.
			for _, obj := range a.roleBindings.List() {
				if obj.(*rbacv1.RoleBinding).Namespace == namespace {
					objs = append(objs, obj)
				}
			}
		}
		for _, obj := range objs {
			b := obj.(*rbacv1.RoleBinding)
			if i, s := k.firstMatch(b.Subjects, namespace); i >= 0 && !a.visitRoleBinding(b, s, v) {
				return false
			}
		}
		return true
	}
	prefix := namespace + "/"
	for i := range k.count() {
		key := k.key(prefix, i)
		if key == "" {
			continue
		}
		objs, _ := a.roleBindings.ByIndex(subjectIndex, key)
		for _, obj := range objs {
			b := obj.(*rbacv1.RoleBinding)
			if first, s := k.firstMatch(b.Subjects, b.Namespace); first == i && !a.visitRoleBinding(b, s, v) {
				return false
			}
		}
	}
	return true
}

func (a *Authorizer) visitRoleBinding(b *rbacv1.RoleBinding, s *rbacv1.Subject, v visitor) bool {
	src := ruleSource{rb: b, subject: s}
	var rules []rbacv1.PolicyRule
	var err error
	switch b.RoleRef.Kind {
	case "Role":
		rules, err = a.roleRules(b.Namespace, b.RoleRef.Name)
	case "ClusterRole":
		rules, err = a.clusterRoleRules(b.RoleRef.Name)
	default:
		err = fmt.Errorf("rbac: %v: unknown roleRef kind %q", src, b.RoleRef.Kind)
	}
	return v(src, rules, err)
}

func (a *Authorizer) clusterRoleRules(name string) ([]rbacv1.PolicyRule, error) {
	obj, ok, err := a.clusterRoles.GetByKey(name)
	if err != nil {
		return nil, fmt.Errorf("rbac: get clusterrole %q: %w", name, err)
	}
	if !ok {
		return nil, apierrors.NewNotFound(rbacv1.Resource("clusterroles"), name)
	}
	return obj.(*rbacv1.ClusterRole).Rules, nil
}

func (a *Authorizer) roleRules(namespace, name string) ([]rbacv1.PolicyRule, error) {
	obj, ok, err := a.roles.GetByKey(namespace + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("rbac: get role %s/%s: %w", namespace, name, err)
	}
	if !ok {
		return nil, apierrors.NewNotFound(rbacv1.Resource("roles"), name)
	}
	return obj.(*rbacv1.Role).Rules, nil
}

// ClusterRoleRules returns the rules of the named ClusterRole from the
// cache, or a NotFound error. The returned slice must not be modified.
func (a *Authorizer) ClusterRoleRules(_ context.Context, name string) ([]rbacv1.PolicyRule, error) {
	return a.clusterRoleRules(name)
}

// RoleRules returns the rules of the named Role from the cache, or a
// NotFound error. The returned slice must not be modified.
func (a *Authorizer) RoleRules(_ context.Context, namespace, name string) ([]rbacv1.PolicyRule, error) {
	return a.roleRules(namespace, name)
}

// Authorize implements authorizer.Authorizer. It allows a request that a
// rule of a role bound to the user permits, and otherwise has no opinion;
// it never denies. The reason of an allow names the binding, its role and
// the subject that matched; the reason of no opinion lists the bound roles
// that could not be found, if any.
func (a *Authorizer) Authorize(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	u := attrs.GetUser()
	if u == nil {
		return authorizer.DecisionNoOpinion, "", nil
	}
	namespace := ""
	if attrs.IsResourceRequest() {
		namespace = attrs.GetNamespace()
	}
	var (
		allowedBy *ruleSource
		errs      []error
	)
	a.visit(u, namespace, func(src ruleSource, rules []rbacv1.PolicyRule, err error) bool {
		if err != nil {
			errs = append(errs, err)
			return true
		}
		for i := range rules {
			if ruleAllows(attrs, &rules[i]) {
				allowedBy = &src
				return false
			}
		}
		return true
	})
	if allowedBy != nil {
		return authorizer.DecisionAllow, "RBAC: allowed by " + allowedBy.String(), nil
	}
	if len(errs) > 0 {
		return authorizer.DecisionNoOpinion, "RBAC: " + errors.Join(errs...).Error(), nil
	}
	return authorizer.DecisionNoOpinion, "", nil
}

// ConditionsAwareAuthorize implements authorizer.Authorizer; RBAC decisions
// are unconditional.
func (a *Authorizer) ConditionsAwareAuthorize(ctx context.Context, attrs authorizer.Attributes) authorizer.ConditionsAwareDecision {
	return authorizer.ConditionsAwareDecisionFromParts(a.Authorize(ctx, attrs))
}

// EvaluateConditions implements authorizer.Authorizer. RBAC never returns
// a conditional decision, so there is nothing to evaluate; it fails closed.
func (a *Authorizer) EvaluateConditions(context.Context, authorizer.ConditionsAwareDecision, authorizer.ConditionsData) (authorizer.Decision, string, error) {
	return authorizer.DecisionDeny, "", authorizer.ErrorConditionEvaluationNotSupported
}

// PolicyRules returns every rule that applies to u in namespace: the rules
// of the roles of all cluster role bindings naming u, and, if namespace is
// not empty, of the role bindings in namespace naming u. Escalation checks
// compare a new role's rules with these. If some bound roles cannot be
// found, PolicyRules returns the rules it did find together with an error
// naming the others; a caller may go on with the partial list, which can
// only grant less.
func (a *Authorizer) PolicyRules(_ context.Context, u user.Info, namespace string) ([]rbacv1.PolicyRule, error) {
	var (
		out  []rbacv1.PolicyRule
		errs []error
	)
	a.visit(u, namespace, func(_ ruleSource, rules []rbacv1.PolicyRule, err error) bool {
		if err != nil {
			errs = append(errs, err)
		}
		out = append(out, rules...)
		return true
	})
	return out, errors.Join(errs...)
}

// RulesFor implements authorizer.RuleResolver for SelfSubjectRulesReview:
// the rules of PolicyRules split into resource and non-resource rules. The
// list is incomplete, and the error says why, when a bound role is missing.
func (a *Authorizer) RulesFor(ctx context.Context, u user.Info, namespace string) ([]authorizer.ResourceRuleInfo, []authorizer.NonResourceRuleInfo, bool, error) {
	rules, err := a.PolicyRules(ctx, u, namespace)
	var (
		res    []authorizer.ResourceRuleInfo
		nonRes []authorizer.NonResourceRuleInfo
	)
	for _, r := range rules {
		if len(r.Resources) > 0 {
			res = append(res, &authorizer.DefaultResourceRuleInfo{
				Verbs: r.Verbs, APIGroups: r.APIGroups, Resources: r.Resources, ResourceNames: r.ResourceNames,
			})
		}
		if len(r.NonResourceURLs) > 0 {
			nonRes = append(nonRes, &authorizer.DefaultNonResourceRuleInfo{Verbs: r.Verbs, NonResourceURLs: r.NonResourceURLs})
		}
	}
	return res, nonRes, err != nil, err
}
