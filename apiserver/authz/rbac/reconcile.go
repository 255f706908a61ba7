package rbac

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/component-helpers/auth/rbac/reconciliation"
)

// Reconcile writes the default policy through client, as the apiserver does
// at every start. It creates what is missing. An existing object whose
// annotation rbac.authorization.kubernetes.io/autoupdate is not "false"
// gains the rules, labels, annotations and aggregation selectors of the
// default that it lacks (what an administrator added stays), and an
// existing binding gains the missing subjects; a binding whose roleRef
// differs is deleted and created again, since a roleRef cannot change. An
// object annotated autoupdate=false is left alone. A conflicting write is
// retried. A second run against an unchanged cluster writes nothing.
//
// Reconcile goes on past an object it cannot write and returns the errors of
// all such objects joined. If log is nil, nothing is logged.
func Reconcile(ctx context.Context, client kubernetes.Interface, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "rbac-bootstrap")
	clusterRoles, clusterRoleBindings, roles, roleBindings := DefaultPolicy()

	var errs []error
	roleOwners := func(kind string, owner reconciliation.RuleOwner, m reconciliation.RuleOwnerModifier) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			opts := reconciliation.ReconcileRoleOptions{Role: owner, Confirm: true, Client: m}
			res, err := opts.Run()
			if err != nil {
				return err
			}
			logResult(log, kind, owner.GetNamespace(), owner.GetName(), string(res.Operation), res.Protected)
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("rbac: reconcile %s %s: %w", kind, qualified(owner.GetNamespace(), owner.GetName()), err))
		}
	}
	bindings := func(kind string, b reconciliation.RoleBinding, m reconciliation.RoleBindingModifier) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			opts := reconciliation.ReconcileRoleBindingOptions{RoleBinding: b, Confirm: true, Client: m}
			res, err := opts.Run()
			if err != nil {
				return err
			}
			logResult(log, kind, b.GetNamespace(), b.GetName(), string(res.Operation), res.Protected)
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("rbac: reconcile %s %s: %w", kind, qualified(b.GetNamespace(), b.GetName()), err))
		}
	}

	crm := clusterRoleModifier{ctx: ctx, client: client}
	for i := range clusterRoles {
		roleOwners("clusterrole", reconciliation.ClusterRoleRuleOwner{ClusterRole: &clusterRoles[i]}, crm)
	}
	crbm := clusterRoleBindingModifier{ctx: ctx, client: client}
	for i := range clusterRoleBindings {
		bindings("clusterrolebinding", reconciliation.ClusterRoleBindingAdapter{ClusterRoleBinding: &clusterRoleBindings[i]}, crbm)
	}
	rm := roleModifier{ctx: ctx, client: client}
	for i := range roles {
		roleOwners("role", reconciliation.RoleRuleOwner{Role: &roles[i]}, rm)
	}
	rbm := roleBindingModifier{ctx: ctx, client: client}
	for i := range roleBindings {
		bindings("rolebinding", reconciliation.RoleBindingAdapter{RoleBinding: &roleBindings[i]}, rbm)
	}
	return errors.Join(errs...)
}

func logResult(log *slog.Logger, kind, namespace, name, op string, protected bool) {
	switch {
	case protected && op != string(reconciliation.ReconcileNone):
		log.Info("default RBAC object differs but is not updated: autoupdate is false",
			"resource", kind, "namespace", namespace, "name", name)
	case op != string(reconciliation.ReconcileNone):
		log.Info("default RBAC object written", "resource", kind, "namespace", namespace, "name", name, "operation", op)
	}
}

func qualified(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// ensureNamespace creates namespace if it does not exist, so that the
// namespaced defaults can be written before anything else created it.
func ensureNamespace(ctx context.Context, client kubernetes.Interface, namespace string) error {
	_, err := client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		return err
	}
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// The modifiers below let the upstream reconciliation logic read and write
// through client with the caller's context.

type clusterRoleModifier struct {
	ctx    context.Context
	client kubernetes.Interface
}

func (m clusterRoleModifier) Get(_, name string) (reconciliation.RuleOwner, error) {
	r, err := m.client.RbacV1().ClusterRoles().Get(m.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.ClusterRoleRuleOwner{ClusterRole: r}, nil
}

func (m clusterRoleModifier) Create(in reconciliation.RuleOwner) (reconciliation.RuleOwner, error) {
	r, err := m.client.RbacV1().ClusterRoles().Create(m.ctx, in.GetObject().(*rbacv1.ClusterRole), metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.ClusterRoleRuleOwner{ClusterRole: r}, nil
}

func (m clusterRoleModifier) Update(in reconciliation.RuleOwner) (reconciliation.RuleOwner, error) {
	r, err := m.client.RbacV1().ClusterRoles().Update(m.ctx, in.GetObject().(*rbacv1.ClusterRole), metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.ClusterRoleRuleOwner{ClusterRole: r}, nil
}

type roleModifier struct {
	ctx    context.Context
	client kubernetes.Interface
}

func (m roleModifier) Get(namespace, name string) (reconciliation.RuleOwner, error) {
	r, err := m.client.RbacV1().Roles(namespace).Get(m.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.RoleRuleOwner{Role: r}, nil
}

func (m roleModifier) Create(in reconciliation.RuleOwner) (reconciliation.RuleOwner, error) {
	if err := ensureNamespace(m.ctx, m.client, in.GetNamespace()); err != nil {
		return nil, err
	}
	r, err := m.client.RbacV1().Roles(in.GetNamespace()).Create(m.ctx, in.GetObject().(*rbacv1.Role), metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.RoleRuleOwner{Role: r}, nil
}

func (m roleModifier) Update(in reconciliation.RuleOwner) (reconciliation.RuleOwner, error) {
	r, err := m.client.RbacV1().Roles(in.GetNamespace()).Update(m.ctx, in.GetObject().(*rbacv1.Role), metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.RoleRuleOwner{Role: r}, nil
}

type clusterRoleBindingModifier struct {
	ctx    context.Context
	client kubernetes.Interface
}

func (m clusterRoleBindingModifier) Get(_, name string) (reconciliation.RoleBinding, error) {
	b, err := m.client.RbacV1().ClusterRoleBindings().Get(m.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.ClusterRoleBindingAdapter{ClusterRoleBinding: b}, nil
}

func (m clusterRoleBindingModifier) Delete(_, name string, uid types.UID) error {
	return m.client.RbacV1().ClusterRoleBindings().Delete(m.ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
}

func (m clusterRoleBindingModifier) Create(in reconciliation.RoleBinding) (reconciliation.RoleBinding, error) {
	b, err := m.client.RbacV1().ClusterRoleBindings().Create(m.ctx, in.GetObject().(*rbacv1.ClusterRoleBinding), metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.ClusterRoleBindingAdapter{ClusterRoleBinding: b}, nil
}

func (m clusterRoleBindingModifier) Update(in reconciliation.RoleBinding) (reconciliation.RoleBinding, error) {
	b, err := m.client.RbacV1().ClusterRoleBindings().Update(m.ctx, in.GetObject().(*rbacv1.ClusterRoleBinding), metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.ClusterRoleBindingAdapter{ClusterRoleBinding: b}, nil
}

type roleBindingModifier struct {
	ctx    context.Context
	client kubernetes.Interface
}

func (m roleBindingModifier) Get(namespace, name string) (reconciliation.RoleBinding, error) {
	b, err := m.client.RbacV1().RoleBindings(namespace).Get(m.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.RoleBindingAdapter{RoleBinding: b}, nil
}

func (m roleBindingModifier) Delete(namespace, name string, uid types.UID) error {
	return m.client.RbacV1().RoleBindings(namespace).Delete(m.ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
}

func (m roleBindingModifier) Create(in reconciliation.RoleBinding) (reconciliation.RoleBinding, error) {
	if err := ensureNamespace(m.ctx, m.client, in.GetNamespace()); err != nil {
		return nil, err
	}
	b, err := m.client.RbacV1().RoleBindings(in.GetNamespace()).Create(m.ctx, in.GetObject().(*rbacv1.RoleBinding), metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.RoleBindingAdapter{RoleBinding: b}, nil
}

func (m roleBindingModifier) Update(in reconciliation.RoleBinding) (reconciliation.RoleBinding, error) {
	b, err := m.client.RbacV1().RoleBindings(in.GetNamespace()).Update(m.ctx, in.GetObject().(*rbacv1.RoleBinding), metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return reconciliation.RoleBindingAdapter{RoleBinding: b}, nil
}
