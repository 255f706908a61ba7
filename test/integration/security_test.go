package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/http"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"tether/apiserver"
	"tether/apiserver/authn/revocation"
	"tether/apiserver/authn/serviceaccount"
	"tether/pki"
	"tether/test/framework"
)

// invalidationTimeout is how long a credential that was just invalidated
// (its pod or service account deleted, its serial revoked) may keep
// working: verified tokens are cached for up to 10 s.
const invalidationTimeout = 15 * time.Second

// securityCase is one cell of the security matrix: an identity doing an
// action, and the HTTP status code it must get.
type securityCase struct {
	who  *identity
	act  action
	want int
	// eventually marks a credential invalidated during the setup: the
	// case polls until it gets want (the token cache may answer for up to
	// 10 s), and logs how long that took.
	eventually bool
	// user, for a whoami action, is the user name the review must report.
	user string
}

// TestSecurityMatrix runs every identity the API server knows (and some it
// must not) against the actions that tell them apart, on one cluster.
func TestSecurityMatrix(t *testing.T) {
	c := framework.StartCluster(t)
	ctx := t.Context()
	client := fastClient(t, c)
	f := fixtures{t: t, client: client}
	clientCA := c.ControlPlane.PKI().ClientCA
	const ns = "sec"
	core := client.CoreV1()
	rbac := client.RbacV1()
	create := metav1.CreateOptions{}

	// Namespace, nodes, service accounts, secrets, config maps.
	_, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, create)
	f.must("namespace", err)
	for _, n := range []string{"node-a", "node-b"} {
		_, err := core.Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, create)
		f.must("node "+n, err)
	}
	sas := map[string]*corev1.ServiceAccount{}
	for _, name := range []string{"sa-a", "sa-b", "reader", "bound", "recreated"} {
		sa, err := core.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, create)
		f.must("service account "+name, err)
		sas[name] = sa
	}
	for _, name := range []string{"secret-a", "secret-b", "secret-plain"} {
		_, err := core.Secrets(ns).Create(ctx, secretObj(ns, name), create)
		f.must("secret "+name, err)
	}
	for _, name := range []string{"cm-a", "cm-b", "cm-plain"} {
		_, err := core.ConfigMaps(ns).Create(ctx, configMapObj(ns, name), create)
		f.must("config map "+name, err)
	}

	// Pods: pod-a on node-a uses secret-a and cm-a as sa-a; pod-b on
	// node-b uses secret-b and cm-b as sa-b; pod-b-shared on node-b runs
	// as sa-a (so node-a is related to sa-a, but not to that pod); the
	// victims are deleted by the matrix.
	pods := map[string]*corev1.Pod{}
	for _, p := range []*corev1.Pod{
		nodePod("pod-a", "node-a", "sa-a", "secret-a", "cm-a"),
		nodePod("pod-b", "node-b", "sa-b", "secret-b", "cm-b"),
		nodePod("pod-b-shared", "node-b", "sa-a", "", ""),
		nodePod("bound-pod", "node-a", "bound", "", ""),
		nodePod("victim-admin", "", "", "", ""),
		nodePod("victim-editor", "", "", "", ""),
		nodePod("victim-viewer", "", "", "", ""),
		nodePod("victim-node-a", "node-a", "", "", ""),
	} {
		created, err := core.Pods(ns).Create(ctx, p, create)
		f.must("pod "+p.Name, err)
		pods[p.Name] = created
	}

	// RBAC.
	sec := func(b *rbacv1.RoleBinding) {
		_, err := rbac.RoleBindings(ns).Create(ctx, b, create)
		f.must("role binding "+b.Name, err)
	}
	sec(roleBinding(ns, "viewers", "ClusterRole", "view",
		userSubject("viewer"), userSubject("revoked-user"), userSubject("expired-user"),
		userSubject("foreign-user"), saSubject(ns, "reader"), saSubject(ns, "bound"), saSubject(ns, "recreated")))
	sec(roleBinding(ns, "editors", "ClusterRole", "edit", userSubject("editor")))
	_, err = rbac.Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{Verbs: []string{"get", "list"}, APIGroups: []string{""}, Resources: []string{"pods"}}},
	}, create)
	f.must("role pod-reader", err)
	// rbac-manager may write roles and bindings in sec and read pods, no
	// more: it must not be able to grant itself anything else.
	_, err = rbac.Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "rbac-manager"},
		Rules: []rbacv1.PolicyRule{
			{Verbs: []string{"get", "list", "create", "update", "patch", "delete"}, APIGroups: []string{rbacv1.GroupName}, Resources: []string{"roles", "rolebindings"}},
			{Verbs: []string{"get", "list"}, APIGroups: []string{""}, Resources: []string{"pods"}},
		},
	}, create)
	f.must("role rbac-manager", err)
	sec(roleBinding(ns, "rbac-manager", "Role", "rbac-manager", userSubject("rbac-manager")))
	// binder may create role bindings in sec and bind cluster-admin (only).
	_, err = rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "sec-test:binder"},
		Rules: []rbacv1.PolicyRule{
			{Verbs: []string{"create"}, APIGroups: []string{rbacv1.GroupName}, Resources: []string{"rolebindings"}},
			{Verbs: []string{"bind"}, APIGroups: []string{rbacv1.GroupName}, Resources: []string{"clusterroles"}, ResourceNames: []string{"cluster-admin"}},
		},
	}, create)
	f.must("cluster role sec-test:binder", err)
	sec(roleBinding(ns, "binder", "ClusterRole", "sec-test:binder", userSubject("binder")))
	// impersonator may impersonate users (not groups).
	_, err = rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "sec-test:impersonate-users"},
		Rules:      []rbacv1.PolicyRule{{Verbs: []string{"impersonate"}, APIGroups: []string{""}, Resources: []string{"users"}}},
	}, create)
	f.must("cluster role sec-test:impersonate-users", err)
	_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "sec-test:impersonator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "sec-test:impersonate-users"},
		Subjects:   []rbacv1.Subject{userSubject("impersonator")},
	}, create)
	f.must("cluster role binding sec-test:impersonator", err)

	// Bootstrap tokens and the kube-public config maps. One token asks
	// for the group system:masters, which bootstrap tokens may not have.
	masters := bootstrapTokenSecret("mastrs", "0123456789abcdef", time.Now().Add(time.Hour), true)
	masters.StringData["auth-extra-groups"] = "system:masters"
	for _, s := range []*corev1.Secret{
		bootstrapTokenSecret("abcdef", "0123456789abcdef", time.Now().Add(time.Hour), true),
		bootstrapTokenSecret("expird", "0123456789abcdef", time.Now().Add(-time.Hour), true),
		bootstrapTokenSecret("nouse0", "0123456789abcdef", time.Now().Add(time.Hour), false),
		masters,
	} {
		_, err := core.Secrets(metav1.NamespaceSystem).Create(ctx, s, create)
		f.must("bootstrap token secret "+s.Name, err)
	}
	for _, name := range []string{"cluster-info", "other-info"} {
		_, err := core.ConfigMaps(metav1.NamespacePublic).Create(ctx, configMapObj(metav1.NamespacePublic, name), create)
		if err != nil && !apierrors.IsAlreadyExists(err) {
			f.must("kube-public config map "+name, err)
		}
	}

	// Identities.
	adminCfg := c.Admin
	admin := newIdentity(t, "admin", adminCfg)
	anonymous := newIdentity(t, "anonymous", anonymousConfig(c))
	cert := func(name, cn string, groups ...string) *identity {
		cfg, _ := clientCert(t, c, clientCA, cn, groups...)
		return newIdentity(t, name, cfg)
	}
	viewerCfg, _ := clientCert(t, c, clientCA, "viewer")
	viewer := newIdentity(t, "viewer", viewerCfg)
	editorCfg, _ := clientCert(t, c, clientCA, "editor")
	editor := newIdentity(t, "editor", editorCfg)
	nodeA := cert("node-a", "system:node:node-a", "system:nodes")
	nodeB := cert("node-b", "system:node:node-b", "system:nodes")
	rbacManager := cert("rbac-manager", "rbac-manager")
	// A node's user name without the system:nodes group is not a node.
	notANode := cert("node-a-without-nodes-group", "system:node:node-a")
	binder := cert("binder", "binder")
	impersonatorCfg, _ := clientCert(t, c, clientCA, "impersonator")

	otherCA, err := pki.NewCA("another-client-ca", time.Hour)
	f.must("another CA", err)
	foreignCfg, _ := clientCert(t, c, otherCA, "foreign-user")
	foreignCert := newIdentity(t, "cert-from-other-ca", foreignCfg)
	expiredCert := newIdentity(t, "expired-cert", expiredClientCert(t, c, clientCA, "expired-user"))
	// A certificate from the server CA, and one from the client CA without
	// the client-auth usage, both claiming system:masters.
	serverCACfg, _ := clientCert(t, c, c.ControlPlane.PKI().ServerCA, "server-ca-user", "system:masters")
	serverCACert := newIdentity(t, "cert-from-server-ca", serverCACfg)
	serverUsageCert := newIdentity(t, "cert-without-client-auth-usage", certWithUsage(t, c, clientCA, "server-usage-user", x509.ExtKeyUsageServerAuth, "system:masters"))
	revokedCfg, revokedX509 := clientCert(t, c, clientCA, "revoked-user")
	revokedCert := newIdentity(t, "revoked-cert", revokedCfg)

	bootstrapValid := newIdentity(t, "bootstrap-token", tokenConfig(c, "abcdef.0123456789abcdef"))
	bootstrapWrongSecret := newIdentity(t, "bootstrap-token-wrong-secret", tokenConfig(c, "abcdef.0123456789abcdee"))
	bootstrapExpired := newIdentity(t, "bootstrap-token-expired", tokenConfig(c, "expird.0123456789abcdef"))
	bootstrapNoUsage := newIdentity(t, "bootstrap-token-no-auth-usage", tokenConfig(c, "nouse0.0123456789abcdef"))
	bootstrapMasters := newIdentity(t, "bootstrap-token-extra-group-system:masters", tokenConfig(c, "mastrs.0123456789abcdef"))
	garbageToken := newIdentity(t, "garbage-token", tokenConfig(c, "not-a-token-at-all"))

	saToken := newIdentity(t, "sa-token", tokenConfig(c, f.tokenFor(ns, "reader", authenticationv1.TokenRequestSpec{})))
	saWrongAudience := newIdentity(t, "sa-token-wrong-audience", tokenConfig(c, f.tokenFor(ns, "reader", authenticationv1.TokenRequestSpec{Audiences: []string{"other"}})))
	reader := sas["reader"]
	forge := func(key *ecdsa.PrivateKey, iss string, now time.Time) string {
		t.Helper()
		is, err := serviceaccount.NewIssuer(key, iss)
		f.must("issuer", err)
		tok, err := is.Issue(serviceaccount.Claims{
			Namespace: ns, ServiceAccountName: reader.Name, ServiceAccountUID: reader.UID,
			Audiences: []string{apiserver.DefaultServiceAccountIssuer}, Expiration: time.Hour, Now: now,
		})
		f.must("forged token", err)
		return tok
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.must("another service-account key", err)
	saKey := c.ControlPlane.PKI().ServiceAccountKey
	// The control: a token made outside the server with the real key works,
	// so the other-key token fails for its signature alone.
	saRealKey := newIdentity(t, "sa-token-signed-outside-with-real-key", tokenConfig(c, forge(saKey, apiserver.DefaultServiceAccountIssuer, time.Now())))
	saOtherKey := newIdentity(t, "sa-token-other-key", tokenConfig(c, forge(otherKey, apiserver.DefaultServiceAccountIssuer, time.Now())))
	saOtherIssuer := newIdentity(t, "sa-token-other-issuer", tokenConfig(c, forge(saKey, "https://issuer.example", time.Now())))
	saExpired := newIdentity(t, "sa-token-expired", tokenConfig(c, forge(saKey, apiserver.DefaultServiceAccountIssuer, time.Now().Add(-3*time.Hour))))

	boundPod := pods["bound-pod"]
	saPodDeleted := newIdentity(t, "sa-token-pod-deleted", tokenConfig(c, f.tokenFor(ns, "bound", authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: boundPod.Name, UID: boundPod.UID},
	})))
	saRecreated := newIdentity(t, "sa-token-sa-recreated", tokenConfig(c, f.tokenFor(ns, "recreated", authenticationv1.TokenRequestSpec{})))

	// Impersonation.
	adminAsViewer := newIdentity(t, "admin-as-viewer", impersonating(adminCfg, "viewer"))
	viewerAsAdmin := newIdentity(t, "viewer-as-admin", impersonating(viewerCfg, "admin", "system:masters"))
	viewerAsEditor := newIdentity(t, "viewer-as-editor", impersonating(viewerCfg, "editor"))
	impersonatorAsViewer := newIdentity(t, "impersonator-as-viewer", impersonating(impersonatorCfg, "viewer"))
	impersonatorAsMasters := newIdentity(t, "impersonator-as-viewer-in-system:masters", impersonating(impersonatorCfg, "viewer", "system:masters"))
	readerName := "system:serviceaccount:" + ns + ":reader"
	impersonatorWithExtra := newIdentity(t, "impersonator-as-viewer-with-extra", func() *rest.Config {
		cfg := impersonating(impersonatorCfg, "viewer")
		cfg.Impersonate.Extra = map[string][]string{"scopes": {"all"}}
		return cfg
	}())
	impersonatorWithUID := newIdentity(t, "impersonator-as-viewer-with-uid", func() *rest.Config {
		cfg := impersonating(impersonatorCfg, "viewer")
		cfg.Impersonate.UID = "1234"
		return cfg
	}())
	editorAsSA := newIdentity(t, "editor-as-sa-reader", impersonating(editorCfg, readerName))
	viewerAsSA := newIdentity(t, "viewer-as-sa-reader", impersonating(viewerCfg, readerName))

	// Paths.
	nsPath := "/api/v1/namespaces/" + ns
	podsPath, secretsPath, cmsPath := nsPath+"/pods", nsPath+"/secrets", nsPath+"/configmaps"
	rbacPath := "/apis/rbac.authorization.k8s.io/v1/namespaces/" + ns
	listPods := get("list-pods", podsPath)
	getPod := get("get-pod", podsPath+"/pod-a")
	listSecrets := get("list-secrets", secretsPath)
	getSecret := get("get-secret", secretsPath+"/secret-plain")
	listCMs := get("list-configmaps", cmsPath)
	getCM := get("get-configmap", cmsPath+"/cm-plain")
	newCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "created-"}, Data: map[string]string{"a": "b"}}
	createCM := post(t, "create-configmap", cmsPath, newCM)
	getNodes := get("get-nodes", "/api/v1/nodes")
	listCSRs := get("list-csrs", "/apis/certificates.k8s.io/v1/certificatesigningrequests")
	me := whoami(t)
	tokenReq := func(name, sa, pod string) action {
		p := pods[pod]
		return post(t, name, nsPath+"/serviceaccounts/"+sa+"/token", &authenticationv1.TokenRequest{
			TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
			Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID,
			}},
		})
	}
	bind := func(name, kind, role string) action {
		b := roleBinding(ns, "", kind, role, userSubject("lucky"))
		b.GenerateName = "escalation-"
		return post(t, name, rbacPath+"/rolebindings", b)
	}
	createRole := func(name string, rules ...rbacv1.PolicyRule) action {
		return post(t, name, rbacPath+"/roles", &rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
			ObjectMeta: metav1.ObjectMeta{GenerateName: "escalation-"},
			Rules:      rules,
		})
	}
	saTokenReq := post(t, "create-token-for-sa-reader", nsPath+"/serviceaccounts/reader/token", &authenticationv1.TokenRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
	})
	statusPatch := `{"status":{"capacity":{"pods":"110"}}}`

	// Wait until the fixtures have reached the authorizers' caches, and
	// check that the credentials about to be invalidated work.
	expectCode(t, viewer, listPods, http.StatusOK, 10*time.Second)
	expectCode(t, editor, getSecret, http.StatusOK, 10*time.Second)
	expectCode(t, rbacManager, get("list-roles", rbacPath+"/roles"), http.StatusOK, 10*time.Second)
	expectCode(t, nodeA, get("", secretsPath+"/secret-a"), http.StatusOK, 10*time.Second)
	expectCode(t, nodeB, get("", secretsPath+"/secret-b"), http.StatusOK, 10*time.Second)
	expectCode(t, impersonatorAsViewer, listPods, http.StatusOK, 10*time.Second)
	expectCode(t, revokedCert, listPods, http.StatusOK, 10*time.Second)
	expectCode(t, saPodDeleted, listPods, http.StatusOK, 10*time.Second)
	expectCode(t, saRecreated, listPods, http.StatusOK, 10*time.Second)

	// Invalidate: revoke a serial, delete a pod a token is bound to, and
	// delete and re-create a service account a token names.
	invalidated := time.Now()
	f.must("revoke", revocation.Add(ctx, client, "security matrix", revokedX509.SerialNumber))
	zero := int64(0)
	f.must("delete bound-pod", core.Pods(ns).Delete(ctx, boundPod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	f.must("delete service account recreated", core.ServiceAccounts(ns).Delete(ctx, "recreated", metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	framework.Eventually(t, 10*time.Second, func() (bool, error) {
		_, perr := core.Pods(ns).Get(ctx, boundPod.Name, metav1.GetOptions{})
		_, serr := core.ServiceAccounts(ns).Get(ctx, "recreated", metav1.GetOptions{})
		if !apierrors.IsNotFound(perr) || !apierrors.IsNotFound(serr) {
			return false, fmt.Errorf("pod: %v; service account: %v", perr, serr)
		}
		return true, nil
	})
	again, err := core.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "recreated"}}, create)
	f.must("re-create service account recreated", err)
	if again.UID == sas["recreated"].UID {
		t.Fatalf("re-created service account has the old uid %s", again.UID)
	}

	cases := []securityCase{
		// Anonymous: only health, version, OIDC discovery and cluster-info.
		{who: anonymous, act: get("healthz", "/healthz"), want: 200},
		{who: anonymous, act: get("livez", "/livez"), want: 200},
		{who: anonymous, act: get("readyz", "/readyz"), want: 200},
		{who: anonymous, act: get("version", "/version"), want: 200},
		{who: anonymous, act: get("openid-configuration", "/.well-known/openid-configuration"), want: 200},
		{who: anonymous, act: get("jwks", "/openid/v1/jwks"), want: 200},
		{who: anonymous, act: get("get-cluster-info", "/api/v1/namespaces/kube-public/configmaps/cluster-info"), want: 200},
		{who: anonymous, act: del("delete-cluster-info", "/api/v1/namespaces/kube-public/configmaps/cluster-info"), want: 401},
		{who: anonymous, act: mergePatch("patch-cluster-info", "/api/v1/namespaces/kube-public/configmaps/cluster-info", `{"data":{"x":"y"}}`), want: 401},
		{who: anonymous, act: get("get-other-kube-public-configmap", "/api/v1/namespaces/kube-public/configmaps/other-info"), want: 401},
		{who: anonymous, act: get("list-kube-public-configmaps", "/api/v1/namespaces/kube-public/configmaps"), want: 401},
		{who: anonymous, act: get("api", "/api"), want: 401},
		{who: anonymous, act: get("apis", "/apis"), want: 401},
		{who: anonymous, act: listPods, want: 401},
		{who: anonymous, act: getSecret, want: 401},
		{who: anonymous, act: createCM, want: 401},
		{who: anonymous, act: me, want: 401},

		// Admin (system:masters certificate).
		{who: admin, act: listPods, want: 200},
		{who: admin, act: listSecrets, want: 200},
		{who: admin, act: getSecret, want: 200},
		{who: admin, act: listCMs, want: 200},
		{who: admin, act: createCM, want: 201},
		{who: admin, act: del("delete-pod", podsPath+"/victim-admin"), want: 200},
		{who: admin, act: getNodes, want: 200},
		{who: admin, act: get("api", "/api"), want: 200},

		// view in sec.
		{who: viewer, act: listPods, want: 200},
		{who: viewer, act: getPod, want: 200},
		{who: viewer, act: listCMs, want: 200},
		{who: viewer, act: getCM, want: 200},
		{who: viewer, act: listSecrets, want: 403},
		{who: viewer, act: getSecret, want: 403},
		{who: viewer, act: createCM, want: 403},
		{who: viewer, act: del("delete-pod", podsPath+"/victim-viewer"), want: 403},
		{who: viewer, act: getNodes, want: 403},
		{who: viewer, act: get("list-pods-in-default", "/api/v1/namespaces/default/pods"), want: 403},
		{who: viewer, act: bind("bind-view", "ClusterRole", "view"), want: 403},
		{who: viewer, act: get("api", "/api"), want: 200},
		{who: viewer, act: saTokenReq, want: 403},
		{who: viewer, act: me, want: 201, user: "viewer"},

		// edit in sec.
		{who: editor, act: listSecrets, want: 200},
		{who: editor, act: getSecret, want: 200},
		{who: editor, act: createCM, want: 201},
		{who: editor, act: del("delete-pod", podsPath+"/victim-editor"), want: 200},
		{who: editor, act: getNodes, want: 403},
		{who: editor, act: saTokenReq, want: 201},
		{who: editor, act: get("list-secrets-in-kube-system", "/api/v1/namespaces/kube-system/secrets"), want: 403},
		{who: editor, act: bind("bind-view", "ClusterRole", "view"), want: 403},

		// Node A and node B: only what their own pods use.
		{who: nodeA, act: get("get-secret-of-own-pod", secretsPath+"/secret-a"), want: 200},
		{who: nodeA, act: get("get-secret-of-node-b", secretsPath+"/secret-b"), want: 403},
		{who: nodeA, act: get("get-unreferenced-secret", secretsPath+"/secret-plain"), want: 403},
		{who: nodeA, act: listSecrets, want: 403},
		{who: nodeA, act: get("list-secret-of-own-pod-by-name", secretsPath+"?fieldSelector=metadata.name%3Dsecret-a"), want: 200},
		{who: nodeA, act: get("list-secret-of-node-b-by-name", secretsPath+"?fieldSelector=metadata.name%3Dsecret-b"), want: 403},
		{who: nodeA, act: get("get-configmap-of-own-pod", cmsPath+"/cm-a"), want: 200},
		{who: nodeA, act: get("get-configmap-of-node-b", cmsPath+"/cm-b"), want: 403},
		{who: nodeA, act: listPods, want: 200},
		{who: nodeA, act: getNodes, want: 200},
		{who: nodeA, act: mergePatch("update-own-status", "/api/v1/nodes/node-a/status", statusPatch), want: 200},
		{who: nodeA, act: mergePatch("update-node-b-status", "/api/v1/nodes/node-b/status", statusPatch), want: 403},
		{who: nodeA, act: mergePatch("label-node-b", "/api/v1/nodes/node-b", `{"metadata":{"labels":{"x":"y"}}}`), want: 403},
		{who: nodeA, act: tokenReq("token-for-own-pod", "sa-a", "pod-a"), want: 201},
		{who: nodeA, act: post(t, "unbound-token-for-own-pod-sa", nsPath+"/serviceaccounts/sa-a/token", &authenticationv1.TokenRequest{
			TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
		}), want: 403},
		{who: nodeA, act: tokenReq("token-for-pod-on-node-b", "sa-b", "pod-b"), want: 403},
		{who: nodeA, act: tokenReq("token-for-pod-on-node-b-with-shared-sa", "sa-a", "pod-b-shared"), want: 403},
		{who: nodeA, act: del("delete-pod-on-node-b", podsPath+"/pod-b"), want: 403},
		{who: nodeA, act: del("delete-own-pod", podsPath+"/victim-node-a"), want: 200},
		{who: nodeA, act: createCM, want: 403},
		{who: notANode, act: get("get-secret-of-node-a-pod", secretsPath+"/secret-a"), want: 403},
		{who: notANode, act: listPods, want: 403},
		{who: nodeB, act: get("get-secret-of-own-pod", secretsPath+"/secret-b"), want: 200},
		{who: nodeB, act: get("get-secret-of-node-a", secretsPath+"/secret-a"), want: 403},
		{who: nodeB, act: mergePatch("update-own-status", "/api/v1/nodes/node-b/status", statusPatch), want: 200},
		{who: nodeB, act: tokenReq("token-for-own-pod", "sa-b", "pod-b"), want: 201},
		{who: nodeB, act: tokenReq("token-for-pod-on-node-a", "sa-a", "pod-a"), want: 403},

		// Bootstrap tokens.
		{who: bootstrapValid, act: me, want: 201, user: "system:bootstrap:abcdef"},
		{who: bootstrapValid, act: listCSRs, want: 200},
		{who: bootstrapValid, act: listPods, want: 403},
		{who: bootstrapValid, act: get("get-own-token-secret", "/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef"), want: 403},
		{who: bootstrapWrongSecret, act: me, want: 401},
		{who: bootstrapExpired, act: me, want: 401},
		{who: bootstrapExpired, act: listCSRs, want: 401},
		{who: bootstrapNoUsage, act: me, want: 401},
		{who: bootstrapMasters, act: listSecrets, want: 401},
		{who: garbageToken, act: me, want: 401},

		// Service-account tokens.
		{who: saToken, act: me, want: 201, user: readerName},
		{who: saToken, act: listPods, want: 200},
		{who: saToken, act: getSecret, want: 403},
		{who: saToken, act: getNodes, want: 403},
		{who: saToken, act: saTokenReq, want: 403},
		{who: saRealKey, act: listPods, want: 200},
		{who: saWrongAudience, act: listPods, want: 401},
		{who: saOtherKey, act: listPods, want: 401},
		{who: saOtherIssuer, act: listPods, want: 401},
		{who: saExpired, act: listPods, want: 401},
		{who: saPodDeleted, act: listPods, want: 401, eventually: true},
		{who: saRecreated, act: listPods, want: 401, eventually: true},

		// Client certificates that must not work.
		{who: foreignCert, act: listPods, want: 401},
		{who: expiredCert, act: listPods, want: 401},
		{who: serverCACert, act: listSecrets, want: 401},
		{who: serverUsageCert, act: listSecrets, want: 401},
		{who: revokedCert, act: listPods, want: 401, eventually: true},

		// Impersonation.
		{who: adminAsViewer, act: me, want: 201, user: "viewer"},
		{who: adminAsViewer, act: listPods, want: 200},
		{who: adminAsViewer, act: getSecret, want: 403},
		{who: viewerAsAdmin, act: listPods, want: 403},
		{who: viewerAsEditor, act: getSecret, want: 403},
		{who: viewerAsSA, act: listPods, want: 403},
		{who: impersonatorAsViewer, act: me, want: 201, user: "viewer"},
		{who: impersonatorAsViewer, act: listPods, want: 200},
		{who: impersonatorAsViewer, act: getSecret, want: 403},
		{who: impersonatorAsMasters, act: listPods, want: 403},
		{who: impersonatorWithExtra, act: listPods, want: 403},
		{who: impersonatorWithUID, act: listPods, want: 403},
		{who: editorAsSA, act: me, want: 201, user: readerName},
		{who: editorAsSA, act: getSecret, want: 403},

		// Escalation through the RBAC API.
		{who: rbacManager, act: bind("bind-cluster-admin", "ClusterRole", "cluster-admin"), want: 403},
		{who: rbacManager, act: bind("bind-edit", "ClusterRole", "edit"), want: 403},
		{who: rbacManager, act: createRole("create-role-with-rules-not-held",
			rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"secrets"}}), want: 403},
		{who: rbacManager, act: createRole("create-role-with-wildcard",
			rbacv1.PolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}}), want: 403},
		{who: rbacManager, act: createRole("create-role-with-rules-held",
			rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"pods"}}), want: 201},
		{who: rbacManager, act: mergePatch("widen-own-role", rbacPath+"/roles/rbac-manager",
			`{"rules":[{"verbs":["*"],"apiGroups":["*"],"resources":["*"]}]}`), want: 403},
		{who: rbacManager, act: bind("bind-role-with-rules-held", "Role", "pod-reader"), want: 201},
		{who: rbacManager, act: post(t, "create-clusterrolebinding-cluster-admin", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "escalation-"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []rbacv1.Subject{userSubject("rbac-manager")},
		}), want: 403},
		{who: binder, act: bind("bind-cluster-admin-with-bind-verb", "ClusterRole", "cluster-admin"), want: 201},
		{who: binder, act: bind("bind-admin-without-bind-verb", "ClusterRole", "admin"), want: 403},
	}

	seen := map[string]bool{}
	for _, tc := range cases {
		name := tc.who.name + "/" + tc.act.name
		if seen[name] {
			t.Fatalf("two cases named %q", name)
		}
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			a := tc.act
			if tc.eventually {
				// These wait for the token cache; they run together after
				// the others, each timed from the invalidation.
				t.Parallel()
				var got int
				var body []byte
				framework.Eventually(t, invalidationTimeout, func() (bool, error) {
					var err error
					got, body, err = tc.who.do(t.Context(), a.method, a.path, a.contentType, a.body)
					if err != nil {
						return false, err
					}
					if got != tc.want {
						return false, fmt.Errorf("%s %s = %d, want %d: %s", a.method, a.path, got, tc.want, brief(body))
					}
					return true, nil
				})
				t.Logf("%s: %s %s = %d %.1fs after the credential was invalidated", tc.who.name, a.method, a.path, got, time.Since(invalidated).Seconds())
				return
			}
			got, body, err := tc.who.do(t.Context(), a.method, a.path, a.contentType, a.body)
			if err != nil {
				t.Fatalf("%s %s: %v", a.method, a.path, err)
			}
			if got != tc.want {
				t.Fatalf("%s %s = %d, want %d: %s", a.method, a.path, got, tc.want, brief(body))
			}
			if tc.user != "" {
				u, err := reviewedUser(body)
				if err != nil {
					t.Fatal(err)
				}
				if u != tc.user {
					t.Errorf("whoami user = %q, want %q", u, tc.user)
				}
			}
		})
	}
	t.Logf("security matrix: %d cases", len(cases))
	if len(cases) < 50 {
		t.Errorf("security matrix has %d cases, want at least 50", len(cases))
	}
}
