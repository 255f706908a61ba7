package rbac

import (
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
)

// Labels and annotations of the default policy.
const (
	// BootstrappingLabel marks every object of the default policy, with the
	// value "rbac-defaults", as upstream.
	BootstrappingLabel = "kubernetes.io/bootstrapping"
	bootstrappingValue = "rbac-defaults"

	// The labels the aggregated roles admin, edit and view select.
	aggregateToAdmin = "rbac.authorization.k8s.io/aggregate-to-admin"
	aggregateToEdit  = "rbac.authorization.k8s.io/aggregate-to-edit"
	aggregateToView  = "rbac.authorization.k8s.io/aggregate-to-view"
)

// Identities the default policy grants to. tether's in-process components
// use the same client identities as upstream's separate binaries.
const (
	bootstrappersGroup   = "system:bootstrappers"
	kubeletAPIClientUser = "kube-apiserver-kubelet-client"
)

// API groups named by the default policy.
const (
	coreGroup          = ""
	appsGroup          = "apps"
	authenticationGrp  = "authentication.k8s.io"
	authorizationGroup = "authorization.k8s.io"
	autoscalingGroup   = "autoscaling"
	batchGroup         = "batch"
	certificatesGroup  = "certificates.k8s.io"
	coordinationGroup  = "coordination.k8s.io"
	discoveryGroup     = "discovery.k8s.io"
	eventsGroup        = "events.k8s.io"
	networkingGroup    = "networking.k8s.io"
	policyGroup        = "policy"
	storageGroup       = "storage.k8s.io"
)

var (
	readVerbs  = []string{"get", "list", "watch"}
	writeVerbs = []string{"create", "delete", "deletecollection", "patch", "update"}
	// controllerVerbs are the verbs of system:kube-controller-manager: every
	// ordinary verb, none of the special ones (bind, escalate, impersonate,
	// approve, sign, use) that it is granted one by one.
	controllerVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)

// ruleBuilder builds one PolicyRule: rule(verbs...).groups(...).resources(...).
type ruleBuilder struct{ r rbacv1.PolicyRule }

// The builder copies every list, so that no two rules share one and a
// caller may change what DefaultPolicy returns.
func rule(verbs ...string) ruleBuilder {
	return ruleBuilder{rbacv1.PolicyRule{Verbs: slices.Clone(verbs)}}
}

func (b ruleBuilder) groups(g ...string) ruleBuilder    { b.r.APIGroups = slices.Clone(g); return b }
func (b ruleBuilder) resources(r ...string) ruleBuilder { b.r.Resources = slices.Clone(r); return b }
func (b ruleBuilder) names(n ...string) ruleBuilder     { b.r.ResourceNames = slices.Clone(n); return b }
func (b ruleBuilder) urls(u ...string) ruleBuilder      { b.r.NonResourceURLs = slices.Clone(u); return b }

func rules(bs ...ruleBuilder) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, len(bs))
	for i, b := range bs {
		out[i] = b.r
	}
	return out
}

func join(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func defaultMeta(name, namespace string, extraLabels ...string) metav1.ObjectMeta {
	labels := map[string]string{BootstrappingLabel: bootstrappingValue}
	for i := 0; i+1 < len(extraLabels); i += 2 {
		labels[extraLabels[i]] = extraLabels[i+1]
	}
	return metav1.ObjectMeta{
		Name:        name,
		Namespace:   namespace,
		Labels:      labels,
		Annotations: map[string]string{rbacv1.AutoUpdateAnnotationKey: "true"},
	}
}

func clusterRole(name string, rs []rbacv1.PolicyRule, extraLabels ...string) rbacv1.ClusterRole {
	return rbacv1.ClusterRole{ObjectMeta: defaultMeta(name, "", extraLabels...), Rules: rs}
}

// aggregated returns a ClusterRole whose rules the aggregation controller
// gathers from the cluster roles labelled selectLabel=true.
func aggregated(name, selectLabel string, extraLabels ...string) rbacv1.ClusterRole {
	r := clusterRole(name, nil, extraLabels...)
	r.AggregationRule = &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{
		{MatchLabels: map[string]string{selectLabel: "true"}},
	}}
	return r
}

func userSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
}

func groupSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
}

// clusterBinding binds the ClusterRole of the same name to subjects.
func clusterBinding(role string, subjects ...rbacv1.Subject) rbacv1.ClusterRoleBinding {
	return rbacv1.ClusterRoleBinding{
		ObjectMeta: defaultMeta(role, ""),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   subjects,
	}
}

// eventWriting lets a component record events in either events API.
func eventWriting() ruleBuilder {
	return rule("create", "patch", "update").groups(coreGroup, eventsGroup).resources("events")
}

// ClusterInfoReader is the Role (and RoleBinding) in kube-public that lets
// anyone, anonymous users included, read the cluster-info ConfigMap that
// joining nodes and kubeadm-style tooling look for.
const ClusterInfoReader = "tether:cluster-info-reader"

// DefaultPolicy returns the RBAC objects every tether cluster has. Each
// carries the label kubernetes.io/bootstrapping=rbac-defaults and the
// annotation rbac.authorization.kubernetes.io/autoupdate=true; Reconcile
// keeps them present at every start unless an administrator sets the
// annotation to "false". Each call returns fresh objects.
//
// The user-facing roles follow upstream: cluster-admin (everything, bound to
// system:masters), and admin, edit and view, which are aggregated from the
// cluster roles labelled rbac.authorization.k8s.io/aggregate-to-<role> —
// view is part of edit, edit part of admin. Their rules live in
// system:aggregate-to-admin, -edit and -view and cover what tether serves
// plus the apps, batch, autoscaling, policy and networking resources a
// cluster may serve later; like upstream, view cannot read secrets and
// neither edit nor admin can write endpoints or endpoint slices.
//
// The system roles give the control-plane identities what they use:
// system:kube-scheduler, system:kube-controller-manager (which every
// controller tether runs in-process shares; see below), system:node-proxier
// for the service proxy, system:kubelet-api-admin for the apiserver's client
// of the kubelet API, and the bootstrap and discovery roles. system:node
// exists for compatibility but is bound to nobody: nodes are authorized by
// the Node authorizer, and upstream binds it to nobody either.
//
// system:kube-controller-manager: upstream gives each controller its own
// service account and role. tether runs all its controllers in one process
// under the one client identity system:kube-controller-manager, so that
// identity holds the ordinary verbs on every resource of every group, plus
// approve and sign for certificate signers and escalate on ClusterRoles
// (the aggregation controller writes rules it does not otherwise hold). It
// holds neither bind, impersonate nor any non-resource URL.
func DefaultPolicy() (clusterRoles []rbacv1.ClusterRole, clusterRoleBindings []rbacv1.ClusterRoleBinding, roles []rbacv1.Role, roleBindings []rbacv1.RoleBinding) {
	authenticated := groupSubject(user.AllAuthenticated)
	clusterRoles = []rbacv1.ClusterRole{
		clusterRole("cluster-admin", rules(
			rule("*").groups("*").resources("*"),
			rule("*").urls("*"),
		)),
		aggregated("admin", aggregateToAdmin),
		aggregated("edit", aggregateToEdit, aggregateToAdmin, "true"),
		aggregated("view", aggregateToView, aggregateToEdit, "true"),
		clusterRole("system:aggregate-to-admin", adminRules(), aggregateToAdmin, "true"),
		clusterRole("system:aggregate-to-edit", editRules(), aggregateToEdit, "true"),
		clusterRole("system:aggregate-to-view", viewRules(), aggregateToView, "true"),

		clusterRole("system:basic-user", rules(
			rule("create").groups(authorizationGroup).resources("selfsubjectaccessreviews", "selfsubjectrulesreviews"),
			rule("create").groups(authenticationGrp).resources("selfsubjectreviews"),
		)),
		clusterRole("system:discovery", rules(
			rule("get").urls("/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*",
				"/version", "/version/", "/healthz", "/livez", "/readyz"),
		)),
		clusterRole("system:public-info-viewer", rules(
			rule("get").urls("/healthz", "/livez", "/readyz", "/version", "/version/"),
		)),
		clusterRole("system:service-account-issuer-discovery", rules(
			rule("get").urls("/.well-known/openid-configuration", "/.well-known/openid-configuration/",
				"/openid/v1/jwks", "/openid/v1/jwks/"),
		)),

		clusterRole("system:node-bootstrapper", rules(
			rule("create", "get", "list", "watch").groups(certificatesGroup).resources("certificatesigningrequests"),
		)),
		clusterRole("system:certificates.k8s.io:certificatesigningrequests:nodeclient", rules(
			rule("create").groups(certificatesGroup).resources("certificatesigningrequests/nodeclient"),
		)),
		clusterRole("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", rules(
			rule("create").groups(certificatesGroup).resources("certificatesigningrequests/selfnodeclient"),
		)),
		clusterRole("system:node", rules(
			// What the Node authorizer's own rules leave to RBAC, kept small:
			// delegated authentication and authorization of kubelet API
			// callers, and the node's own certificate requests.
			rule("create").groups(authenticationGrp).resources("tokenreviews"),
			rule("create").groups(authorizationGroup).resources("subjectaccessreviews", "localsubjectaccessreviews"),
			rule("create", "get", "list", "watch").groups(certificatesGroup).resources("certificatesigningrequests"),
			rule("create").groups(certificatesGroup).resources("certificatesigningrequests/selfnodeclient"),
		)),

		clusterRole("system:kubelet-api-admin", rules(
			rule("get", "list", "watch", "proxy").groups(coreGroup).resources("nodes"),
			rule("*").groups(coreGroup).resources("nodes/proxy", "nodes/log", "nodes/stats", "nodes/metrics",
				"nodes/spec", "nodes/healthz", "nodes/pods", "nodes/configz"),
		)),
		clusterRole("system:kube-scheduler", schedulerRules()),
		clusterRole("system:kube-controller-manager", rules(
			rule(controllerVerbs...).groups("*").resources("*"),
			rule("approve", "sign").groups(certificatesGroup).resources("signers"),
			rule("escalate").groups(rbacv1.GroupName).resources("clusterroles"),
		)),
		clusterRole("system:node-proxier", rules(
			rule(readVerbs...).groups(coreGroup).resources("services", "endpoints", "nodes"),
			rule(readVerbs...).groups(discoveryGroup).resources("endpointslices"),
			eventWriting(),
		)),
	}

	clusterRoleBindings = []rbacv1.ClusterRoleBinding{
		clusterBinding("cluster-admin", groupSubject(user.SystemPrivilegedGroup)),
		clusterBinding("system:basic-user", authenticated),
		clusterBinding("system:discovery", authenticated),
		clusterBinding("system:public-info-viewer", authenticated, groupSubject(user.AllUnauthenticated)),
		clusterBinding("system:service-account-issuer-discovery", groupSubject(serviceaccount.AllServiceAccountsGroup)),
		clusterBinding("system:node-bootstrapper", groupSubject(bootstrappersGroup)),
		clusterBinding("system:certificates.k8s.io:certificatesigningrequests:nodeclient", groupSubject(bootstrappersGroup)),
		clusterBinding("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", groupSubject(user.NodesGroup)),
		clusterBinding("system:kubelet-api-admin", userSubject(kubeletAPIClientUser)),
		clusterBinding("system:kube-scheduler", userSubject(user.KubeScheduler)),
		clusterBinding("system:kube-controller-manager", userSubject(user.KubeControllerManager)),
		clusterBinding("system:node-proxier", userSubject(user.KubeProxy)),
	}

	roles = []rbacv1.Role{{
		ObjectMeta: defaultMeta(ClusterInfoReader, "kube-public"),
		Rules:      rules(rule("get").groups(coreGroup).resources("configmaps").names("cluster-info")),
	}}
	roleBindings = []rbacv1.RoleBinding{{
		ObjectMeta: defaultMeta(ClusterInfoReader, "kube-public"),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: ClusterInfoReader},
		Subjects:   []rbacv1.Subject{userSubject(user.Anonymous), groupSubject(user.AllUnauthenticated)},
	}}
	return clusterRoles, clusterRoleBindings, roles, roleBindings
}

// viewRules are the rules of view: reading what a namespace holds, except
// secrets and what would reveal them (exec, attach, proxies).
func viewRules() []rbacv1.PolicyRule {
	return rules(
		rule(readVerbs...).groups(coreGroup).resources(
			"pods", "pods/log", "pods/status",
			"services", "services/status", "endpoints",
			"configmaps", "serviceaccounts", "events",
			"persistentvolumeclaims", "persistentvolumeclaims/status",
			"replicationcontrollers", "replicationcontrollers/scale", "replicationcontrollers/status",
			"limitranges", "resourcequotas", "resourcequotas/status",
			"bindings", "namespaces/status"),
		rule(readVerbs...).groups(coreGroup).resources("namespaces"),
		rule(readVerbs...).groups(eventsGroup).resources("events"),
		rule(readVerbs...).groups(coordinationGroup).resources("leases"),
		rule(readVerbs...).groups(discoveryGroup).resources("endpointslices"),
		rule(readVerbs...).groups(appsGroup).resources(
			"controllerrevisions",
			"daemonsets", "daemonsets/status",
			"deployments", "deployments/scale", "deployments/status",
			"replicasets", "replicasets/scale", "replicasets/status",
			"statefulsets", "statefulsets/scale", "statefulsets/status"),
		rule(readVerbs...).groups(autoscalingGroup).resources("horizontalpodautoscalers", "horizontalpodautoscalers/status"),
		rule(readVerbs...).groups(batchGroup).resources("cronjobs", "cronjobs/status", "jobs", "jobs/status"),
		rule(readVerbs...).groups(policyGroup).resources("poddisruptionbudgets", "poddisruptionbudgets/status"),
		rule(readVerbs...).groups(networkingGroup).resources("ingresses", "ingresses/status", "networkpolicies"),
	)
}

// editRules are what edit adds to view: changing workloads, secrets and
// configuration, and reaching into pods. Not RBAC, not endpoints.
func editRules() []rbacv1.PolicyRule {
	return rules(
		rule("impersonate").groups(coreGroup).resources("serviceaccounts"),
		rule(writeVerbs...).groups(coreGroup).resources("pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"),
		rule("create").groups(coreGroup).resources("pods/eviction"),
		rule(writeVerbs...).groups(coreGroup).resources(
			"replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
			"services", "services/proxy", "persistentvolumeclaims", "configmaps", "secrets", "events"),
		rule("create").groups(coreGroup).resources("serviceaccounts/token"),
		rule(readVerbs...).groups(coreGroup).resources(
			"pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets", "services/proxy"),
		rule(writeVerbs...).groups(eventsGroup).resources("events"),
		rule(writeVerbs...).groups(coordinationGroup).resources("leases"),
		rule(writeVerbs...).groups(appsGroup).resources(
			"daemonsets", "deployments", "deployments/rollback", "deployments/scale",
			"replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"),
		rule(writeVerbs...).groups(autoscalingGroup).resources("horizontalpodautoscalers"),
		rule(writeVerbs...).groups(batchGroup).resources("cronjobs", "jobs"),
		rule(writeVerbs...).groups(policyGroup).resources("poddisruptionbudgets"),
		rule(writeVerbs...).groups(networkingGroup).resources("ingresses", "networkpolicies"),
	)
}

// adminRules are what admin adds to edit: access control in the namespace.
func adminRules() []rbacv1.PolicyRule {
	return rules(
		rule("create").groups(authorizationGroup).resources("localsubjectaccessreviews"),
		rule(join(readVerbs, writeVerbs)...).groups(rbacv1.GroupName).resources("roles", "rolebindings"),
	)
}

// schedulerRules are those of system:kube-scheduler: read what placement
// depends on, bind pods, report through events and hold its leader lease.
func schedulerRules() []rbacv1.PolicyRule {
	return rules(
		// Delegated authentication and authorization of its own endpoints.
		rule("create").groups(authenticationGrp).resources("tokenreviews"),
		rule("create").groups(authorizationGroup).resources("subjectaccessreviews"),
		eventWriting(),
		// Leader election.
		rule("create").groups(coordinationGroup).resources("leases"),
		rule("get", "update").groups(coordinationGroup).resources("leases").names("kube-scheduler"),
		// The pods it places and the nodes it places them on.
		rule(readVerbs...).groups(coreGroup).resources("nodes"),
		rule("get", "list", "watch", "delete").groups(coreGroup).resources("pods"),
		rule("create").groups(coreGroup).resources("pods/binding", "bindings"),
		rule("patch", "update").groups(coreGroup).resources("pods/status"),
		// What selects pods, and what pods use.
		rule(readVerbs...).groups(coreGroup).resources(
			"namespaces", "services", "endpoints", "replicationcontrollers",
			"persistentvolumeclaims", "persistentvolumes"),
		rule(readVerbs...).groups(appsGroup).resources("replicasets", "statefulsets"),
		rule(readVerbs...).groups(policyGroup).resources("poddisruptionbudgets"),
		rule(readVerbs...).groups(storageGroup).resources(
			"storageclasses", "csinodes", "csidrivers", "csistoragecapacities", "volumeattachments"),
	)
}
