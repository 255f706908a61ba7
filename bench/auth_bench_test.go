package bench

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"text/tabwriter"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"tether/apiserver/authz/rbac"
	"tether/pki"
	"tether/test/framework"
)

// The shape of the authentication benchmark. Each identity is measured
// twice, in the order admin, cert, token, token, cert, admin, so that a
// drift over the run (heap growth, a warming cache, a neighbour) weighs on
// all three alike; the two halves are merged.
const (
	authNS          = "bench-auth"
	authSA          = "bench"
	authUser        = "bench-user"
	authRole        = "bench-configmap-reader"
	authPhase       = 5 * time.Second
	authTokenTTL    = 3600 // seconds
	authTolerance   = 0.10 // token within 10 % of cert
	rbacRoles       = 1000 // Roles, and as many RoleBindings
	rbacNamespaces  = 50
	rbacCalls       = 100000
	rbacDecisionMax = 20 * time.Microsecond
)

// BenchmarkAuth compares GET throughput and cost with the admin client
// certificate (system:masters, decided by the privileged-group authorizer),
// a non-master client certificate and a service-account token (both decided
// by RBAC), then times single RBAC decisions with 1,000 Roles and 1,000
// RoleBindings. It ignores b.N beyond one run.
func BenchmarkAuth(b *testing.B) {
	ctx := b.Context()
	out := os.Stdout
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(200))
	}

	// The RBAC decision first, while the process holds nothing else.
	decisions, policy := rbacDecisions(b)
	runtime.GC()

	cl := framework.StartCluster(b)
	admin := newClient(b, cl.Admin, "tether-bench-auth/setup")

	// The namespace, the object, and the RBAC grant both non-master
	// identities go through: a RoleBinding of a ClusterRole that allows
	// get on configmaps.
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: authNS}}, metav1.CreateOptions{}); err != nil {
		b.Fatalf("create namespace %s: %v", authNS, err)
	}
	if _, err := admin.CoreV1().ConfigMaps(authNS).Create(ctx, configMap(getName, "x"), metav1.CreateOptions{}); err != nil {
		b.Fatalf("create %s: %v", getName, err)
	}
	if _, err := admin.CoreV1().ServiceAccounts(authNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: authSA}}, metav1.CreateOptions{}); err != nil {
		b.Fatalf("create service account %s: %v", authSA, err)
	}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: authRole},
		Rules:      []rbacv1.PolicyRule{{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"configmaps"}}},
	}, metav1.CreateOptions{}); err != nil {
		b.Fatalf("create clusterrole %s: %v", authRole, err)
	}
	if _, err := admin.RbacV1().RoleBindings(authNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: authRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: authRole},
		Subjects: []rbacv1.Subject{
			{Kind: rbacv1.ServiceAccountKind, Namespace: authNS, Name: authSA},
			{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: authUser},
		},
	}, metav1.CreateOptions{}); err != nil {
		b.Fatalf("create rolebinding %s: %v", authRole, err)
	}

	// The credentials: a bound service-account token and a client
	// certificate of a user outside system:masters.
	ttl := int64(authTokenTTL)
	tr, err := admin.CoreV1().ServiceAccounts(authNS).CreateToken(ctx, authSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatalf("TokenRequest for %s/%s: %v", authNS, authSA, err)
	}
	tokenCfg := rest.AnonymousClientConfig(cl.Admin) // server CA, no client certificate
	tokenCfg.BearerToken = tr.Status.Token
	certPEM, keyPEM, err := cl.ControlPlane.PKI().ClientCA.NewKeyAndCert(pki.CertRequest{
		CommonName: authUser,
		Usages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Validity:   time.Hour,
	})
	if err != nil {
		b.Fatalf("issue a client certificate for %s: %v", authUser, err)
	}
	certCfg := rest.AnonymousClientConfig(cl.Admin)
	certCfg.CertData, certCfg.KeyData = certPEM, keyPEM

	type identity struct {
		name, authn, authz string
		cfg                *rest.Config
		cs                 []*kubernetes.Clientset
		s                  sample
	}
	ids := []*identity{
		{name: "admin cert (core)", authn: "client cert, cached chain", authz: "system:masters", cfg: cl.Admin},
		{name: "user cert", authn: "client cert, cached chain", authz: "RBAC RoleBinding", cfg: certCfg},
		{name: "SA token", authn: "SA JWT, token cache", authz: "RBAC RoleBinding", cfg: tokenCfg},
	}
	admin0, cert, token := ids[0], ids[1], ids[2]
	for _, id := range ids {
		id.cs = make([]*kubernetes.Clientset, clients)
		for i := range id.cs {
			id.cs[i] = newClient(b, id.cfg, fmt.Sprintf("tether-bench-auth/%s/%d", id.name, i))
		}
	}
	// The RBAC informers see the binding shortly after it is written.
	deadline := time.Now().Add(15 * time.Second)
	for _, id := range []*identity{cert, token} {
		for {
			_, err := id.cs[0].CoreV1().ConfigMaps(authNS).Get(ctx, getName, metav1.GetOptions{})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: GET %s/%s still fails: %v", id.name, authNS, getName, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// One request per client opens its connection (and fills the
	// certificate-chain and token caches).
	for _, id := range ids {
		for _, c := range id.cs {
			if _, err := c.CoreV1().ConfigMaps(authNS).Get(ctx, getName, metav1.GetOptions{}); err != nil {
				b.Fatalf("%s: warm-up GET: %v", id.name, err)
			}
		}
	}
	conns := establishedTo(cl.URL)

	b.ResetTimer()
	for _, id := range []*identity{admin0, cert, token, token, cert, admin0} {
		cs := id.cs
		stop := profile(b, "auth-"+map[*identity]string{admin0: "admin", cert: "cert", token: "token"}[id])
		s := runFor(ctx, clients, authPhase, func(ctx context.Context, w, _ int) error {
			_, err := cs[w].CoreV1().ConfigMaps(authNS).Get(ctx, getName, metav1.GetOptions{})
			return err
		})
		stop()
		id.s = mergeAuthSamples(id.s, s)
	}
	b.StopTimer()

	// Report.
	fmt.Fprintf(out, "\n== tether authentication benchmark (%s, GOMAXPROCS=%d, NumCPU=%d, %s) ==\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "server %s over TLS, protobuf, no client rate limit, %d clients per identity each on its own HTTP/2 connection (%d established after warm-up)\n", cl.URL, clients, conns)
	fmt.Fprintf(out, "GET one ConfigMap (quorum read) in a closed loop; each identity runs twice for %s (order admin, cert, token, token, cert, admin), halves merged\n", authPhase)
	fmt.Fprintf(out, "\"user cert\" is CN=%s and \"SA token\" system:serviceaccount:%s:%s (TokenRequest, %d s), both allowed by one RoleBinding of ClusterRole %s\n\n", authUser, authNS, authSA, authTokenTTL, authRole)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "identity\tauthentication\tauthorization\treq/s\tp50\tp99\tCPU/op\tbg\t\treq/s ÷core\tCPU/op ÷core\t")
	noisy := false
	for _, id := range ids {
		name := id.name
		if id.s.noisy() {
			name, noisy = "* "+name, true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%.2f\t\t%.2f\t%.2f\t\n", name, id.authn, id.authz,
			id.s.rate(), ms(id.s.pct(0.5)), ms(id.s.pct(0.99)), us(id.s.cpuPerOp()), id.s.background(),
			id.s.rate()/admin0.s.rate(), ratio(id.s.cpuPerOp(), admin0.s.cpuPerOp()))
	}
	tw.Flush()
	if noisy {
		fmt.Fprintf(out, "* other processes used more than %.1f cores during this row: its figures are not comparable; re-run on an idle machine\n", noisyCores)
	}
	rateRatio := token.s.rate() / cert.s.rate()
	cpuRatio := ratio(token.s.cpuPerOp(), cert.s.cpuPerOp())
	p99Ratio := ratio(token.s.pct(0.99), cert.s.pct(0.99))
	fmt.Fprintf(out, "token ÷ user cert: req/s %.3f, CPU/op %.3f, p99 %.2f\n", rateRatio, cpuRatio, p99Ratio)
	for _, id := range ids {
		if id.s.errs > 0 {
			fmt.Fprintf(out, "ERRORS with %s: %d (first: %v)\n", id.name, id.s.errs, id.s.firstErr)
			b.Errorf("%s: %d errors", id.name, id.s.errs)
		}
	}

	fmt.Fprintf(out, "\nRBAC decision: rbac.Authorizer.Authorize alone, one goroutine, %d calls per case; cache holds %s\n", rbacCalls, policy)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tuser\trequest\tdecision\tns/op\tallocs/op\t")
	slowest := time.Duration(0)
	for _, d := range decisions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f\t%.1f\t\n", d.name, d.user, d.request, d.decision,
			float64(d.perOp)/float64(time.Nanosecond), d.allocs)
		slowest = max(slowest, d.perOp)
	}
	tw.Flush()

	tokenOK := rateRatio >= 1-authTolerance && cpuRatio <= 1+authTolerance
	rbacOK := slowest <= rbacDecisionMax
	fmt.Fprintf(out, "\nTargets (%d cores)\n", runtime.GOMAXPROCS(0))
	for _, t := range []struct {
		name, figure string
		ok, noisy    bool
	}{
		{"token auth within 10 % of cert auth (RBAC)", fmt.Sprintf("req/s %.0f vs %.0f = %.3f, CPU/op %s vs %s = %.3f", token.s.rate(), cert.s.rate(), rateRatio, us(token.s.cpuPerOp()), us(cert.s.cpuPerOp()), cpuRatio), tokenOK, token.s.noisy() || cert.s.noisy()},
		{"RBAC decision ≤20µs (1,000 roles + bindings)", fmt.Sprintf("slowest case %.2fµs", float64(slowest)/float64(time.Microsecond)), rbacOK, false},
	} {
		verdict := "PASS"
		if !t.ok {
			verdict = "MISS"
		}
		if t.noisy {
			t.figure += " (* rows: not comparable)"
		}
		fmt.Fprintf(out, "  %s  %-46s %s\n", verdict, t.name, t.figure)
	}
	fmt.Fprintln(out)

	b.ReportMetric(admin0.s.rate(), "admin_get_req/s")
	b.ReportMetric(cert.s.rate(), "cert_get_req/s")
	b.ReportMetric(token.s.rate(), "token_get_req/s")
	b.ReportMetric(rateRatio, "token/cert_req/s")
	b.ReportMetric(cpuRatio, "token/cert_cpu/op")
	b.ReportMetric(float64(slowest)/float64(time.Nanosecond), "rbac_max_ns/op")
}

// mergeAuthSamples merges two phases of the same identity: their
// latencies, wall time, CPU and errors add up.
func mergeAuthSamples(a, b sample) sample {
	lat := append(slices.Clone(a.lat), b.lat...)
	slices.Sort(lat)
	first := a.firstErr
	if first == nil {
		first = b.firstErr
	}
	return sample{lat: lat, wall: a.wall + b.wall, cpu: a.cpu + b.cpu, others: a.others + b.others,
		errs: a.errs + b.errs, firstErr: first}
}

// rbacDecision is one timed case of the RBAC micro-benchmark.
type rbacDecision struct {
	name, user, request, decision string
	perOp                         time.Duration
	allocs                        float64
}

// rbacDecisions builds an rbac.Authorizer over a fake clientset's informers,
// fills their indexers with the default policy, rbacRoles Roles and as many
// RoleBindings, and times rbacCalls Authorize calls for each case. It
// returns the cases and a description of what the cache holds.
func rbacDecisions(b *testing.B) ([]rbacDecision, string) {
	b.Helper()
	factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	a := rbac.New(factory)
	v1 := factory.Rbac().V1()
	roles, clusterRoles := v1.Roles().Informer().GetIndexer(), v1.ClusterRoles().Informer().GetIndexer()
	roleBindings, clusterRoleBindings := v1.RoleBindings().Informer().GetIndexer(), v1.ClusterRoleBindings().Informer().GetIndexer()
	add := func(idx cache.Indexer, obj any) {
		if err := idx.Add(obj); err != nil {
			b.Fatalf("rbac: add %T: %v", obj, err)
		}
	}
	crs, crbs, rs, rbs := rbac.DefaultPolicy()
	for i := range crs {
		add(clusterRoles, &crs[i])
	}
	for i := range crbs {
		add(clusterRoleBindings, &crbs[i])
	}
	for i := range rs {
		add(roles, &rs[i])
	}
	for i := range rbs {
		add(roleBindings, &rbs[i])
	}
	// Role i in namespace ns-(i%50) lets user-i and the namespace's
	// service account sa-i do anything with configmaps and read pods.
	for i := range rbacRoles {
		ns, name := fmt.Sprintf("ns-%d", i%rbacNamespaces), fmt.Sprintf("role-%d", i)
		add(roles, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Rules: []rbacv1.PolicyRule{
				{Verbs: []string{"*"}, APIGroups: []string{""}, Resources: []string{"configmaps"}},
				{Verbs: []string{"get", "list"}, APIGroups: []string{"", "apps"}, Resources: []string{"pods", fmt.Sprintf("r%d", i)}},
			},
		})
		add(roleBindings, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("rb-%d", i)},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{
				{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: fmt.Sprintf("user-%d", i)},
				{Kind: rbacv1.ServiceAccountKind, Name: fmt.Sprintf("sa-%d", i)},
			},
		})
	}
	policy := fmt.Sprintf("%d Roles and %d RoleBindings in %d namespaces + the default policy (%d ClusterRoles, %d ClusterRoleBindings, %d Role, %d RoleBinding)",
		rbacRoles, rbacRoles, rbacNamespaces, len(crs), len(crbs), len(rs), len(rbs))

	nobody := &user.DefaultInfo{Name: "alice", Groups: []string{"team-x", user.AllAuthenticated}}
	sa := &user.DefaultInfo{Name: "system:serviceaccount:ns-7:sa-7",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:ns-7", user.AllAuthenticated}}
	root := &user.DefaultInfo{Name: "root", Groups: []string{user.SystemPrivilegedGroup, user.AllAuthenticated}}
	get := func(u user.Info, verb, resource string) authorizer.AttributesRecord {
		return authorizer.AttributesRecord{User: u, Verb: verb, APIVersion: "v1", Resource: resource,
			Namespace: "ns-7", Name: "x", ResourceRequest: true}
	}
	cases := []struct {
		name, user, request string
		attrs               authorizer.AttributesRecord
		allow               bool
	}{
		{"no match", "alice (team-x, system:authenticated)", "get pods in ns-7", get(nobody, "get", "pods"), false},
		{"role binding", "system:serviceaccount:ns-7:sa-7", "update configmaps in ns-7", get(sa, "update", "configmaps"), true},
		{"cluster-admin", "root (system:masters)", "delete pods in ns-7", get(root, "delete", "pods"), true},
	}
	ctx := context.Background()
	var out []rbacDecision
	for _, c := range cases {
		var attrs authorizer.Attributes = c.attrs // boxed once, as the handler chain does
		want := authorizer.DecisionNoOpinion
		if c.allow {
			want = authorizer.DecisionAllow
		}
		for range 1000 { // warm-up
			a.Authorize(ctx, attrs)
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start := time.Now()
		for range rbacCalls {
			if d, _, _ := a.Authorize(ctx, attrs); d != want {
				b.Fatalf("rbac %s: Authorize() = %v, want %v", c.name, d, want)
			}
		}
		elapsed := time.Since(start)
		runtime.ReadMemStats(&m1)
		decision := "no opinion"
		if c.allow {
			decision = "allow"
		}
		out = append(out, rbacDecision{name: c.name, user: c.user, request: c.request, decision: decision,
			perOp: elapsed / rbacCalls, allocs: float64(m1.Mallocs-m0.Mallocs) / rbacCalls})
	}
	return out, policy
}
