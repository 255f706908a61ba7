package main

// `tether paths`: what each communication path of the cluster (DESIGN.md,
// P0–P10) uses right now, and a live check of each.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"tether/apiserver/kubeletclient"
	"tether/apiserver/peers"
	"tether/controllers/rootcacert"
	"tether/kubelet"
	"tether/pki"
	"tether/tunnel"
)

// Defaults and limits of `tether paths`.
const (
	pathsDefaultImage = "tether.local/busybox:latest"
	pathsDefaultWait  = 60 * time.Second
	// pathsLeaseFresh is how recently a node's lease must have been renewed.
	pathsLeaseFresh = 40 * time.Second
	// pathsReportGrace is how long after joining a node may not have
	// reported its certificates' expiry yet (it does with its first
	// status update, a heartbeat after joining).
	pathsReportGrace = time.Minute
	// pathsRequestTimeout bounds each API request.
	pathsRequestTimeout = 15 * time.Second
	// pathsDialTimeout bounds a TCP dial and TLS handshake with a kubelet.
	pathsDialTimeout = 5 * time.Second
	// pathsCleanupTimeout bounds deleting the throwaway namespace.
	pathsCleanupTimeout = 20 * time.Second
	// pathsNamespacePrefix starts the name of the throwaway namespace.
	pathsNamespacePrefix = "tether-paths-"
	// pathsProbeContainer is the container of every probe pod.
	pathsProbeContainer = "probe"
	// pathsKubectlMount is where the kubectl binary is mounted in a probe pod.
	pathsKubectlMount = "/kubectl"
	// pathsManagedBy labels what `tether paths` creates.
	pathsManagedBy = "tether-paths"
	// pathsLogFailures is how many log fetches in a row must fail with a
	// 5xx before a node's probe is given up early (its kubelet is not
	// reachable through the API server, so the probe cannot be seen).
	pathsLogFailures = 3
)

// pathsPoll is how often probe pods are looked at; tests shorten it.
var pathsPoll = time.Second

// pathResult is the outcome of a live check.
type pathResult string

const (
	resultPass pathResult = "PASS"
	resultFail pathResult = "FAIL"
	resultSkip pathResult = "SKIP"
)

// pathNodeCheck is the outcome of a path's check on one node.
type pathNodeCheck struct {
	Node   string     `json:"node"`
	Result pathResult `json:"result"`
	Reason string     `json:"reason"`
}

// pathCheck is one communication path: what it uses and how its live
// check went.
type pathCheck struct {
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Port     string          `json:"port"`
	Identity string          `json:"identity"`
	CA       string          `json:"ca"`
	Verified string          `json:"verified"`
	Result   pathResult      `json:"result"`
	Reason   string          `json:"reason"`
	Nodes    []pathNodeCheck `json:"nodes,omitempty"`
}

// pathsReport is the whole report.
type pathsReport struct {
	Server    string       `json:"server"`
	Namespace string       `json:"namespace,omitempty"`
	Paths     []*pathCheck `json:"paths"`
}

// pathNames are the paths of DESIGN.md in report order.
var pathNames = []struct{ id, name string }{
	{"P0", "node joins the cluster"},
	{"P1", "client → apiserver"},
	{"P2", "kubelet → apiserver"},
	{"P3", "pod → apiserver"},
	{"P4", "controllers → apiserver"},
	{"P5", "apiserver → kubelet"},
	{"P6", "kubelet serving cert"},
	{"P7", "kubelet API authn/authz"},
	{"P8", "apiserver proxy"},
	{"P9", "apiserver → node (SSH)"},
	{"P10", "apiserver → node (tunnel)"},
}

func newPathsReport(server string) *pathsReport {
	r := &pathsReport{Server: server}
	for _, p := range pathNames {
		r.Paths = append(r.Paths, &pathCheck{ID: p.id, Name: p.name, Port: "-", Identity: "-", CA: "-", Verified: "-"})
	}
	return r
}

// path returns the path with id; it panics for an unknown id.
func (r *pathsReport) path(id string) *pathCheck {
	for _, p := range r.Paths {
		if p.ID == id {
			return p
		}
	}
	panic("tether paths: unknown path " + id)
}

func (p *pathCheck) set(res pathResult, format string, args ...any) {
	p.Result, p.Reason = res, fmt.Sprintf(format, args...)
}

// fail marks the path failed, keeping earlier failure reasons.
func (p *pathCheck) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.Result == resultFail && p.Reason != "" {
		msg = p.Reason + "; " + msg
	}
	p.Result, p.Reason = resultFail, msg
}

// node records the outcome on one node, replacing an earlier one.
func (p *pathCheck) node(name string, res pathResult, format string, args ...any) {
	c := pathNodeCheck{Node: name, Result: res, Reason: fmt.Sprintf(format, args...)}
	for i := range p.Nodes {
		if p.Nodes[i].Node == name {
			p.Nodes[i] = c
			return
		}
	}
	p.Nodes = append(p.Nodes, c)
}

func (p *pathCheck) nodeResult(name string) (pathNodeCheck, bool) {
	for _, c := range p.Nodes {
		if c.Node == name {
			return c, true
		}
	}
	return pathNodeCheck{}, false
}

// settle derives the path's result from its nodes': FAIL naming the
// failed nodes if any failed; else the result already set, if any; else
// PASS with passReason if any node passed, else SKIP with skipReason.
func (p *pathCheck) settle(passReason, skipReason string) {
	var failed []string
	passed := 0
	for _, c := range p.Nodes {
		switch c.Result {
		case resultFail:
			failed = append(failed, c.Node+": "+c.Reason)
		case resultPass:
			passed++
		}
	}
	switch {
	case len(failed) > 0:
		p.fail("%s", strings.Join(failed, "; "))
	case p.Result != "":
	case passed > 0:
		p.set(resultPass, "%s", passReason)
	default:
		p.set(resultSkip, "%s", skipReason)
	}
}

// failed returns the failed paths, each with the nodes it failed on, as
// "P5 (node-2)".
func (r *pathsReport) failed() []string {
	var out []string
	for _, p := range r.Paths {
		if p.Result != resultFail {
			continue
		}
		var nodes []string
		for _, c := range p.Nodes {
			if c.Result == resultFail {
				nodes = append(nodes, c.Node)
			}
		}
		if len(nodes) > 0 {
			out = append(out, fmt.Sprintf("%s (%s)", p.ID, strings.Join(nodes, ", ")))
		} else {
			out = append(out, p.ID)
		}
	}
	return out
}

// exitError is the error `tether paths` ends with: nil when no check
// failed.
func (r *pathsReport) exitError() error {
	failed := r.failed()
	if len(failed) == 0 {
		return nil
	}
	noun := "path"
	if len(failed) > 1 {
		noun = "paths"
	}
	return fmt.Errorf("%d %s failed: %s", len(failed), noun, strings.Join(failed, ", "))
}

// writeTable prints the report as a table: one row per path and, below a
// path checked per node, one indented row per node.
func (r *pathsReport) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "PATH\tDESCRIPTION\tPORT\tIDENTITY\tCA\tVERIFIED\tCHECK\tREASON\n")
	for _, p := range r.Paths {
		res := p.Result
		if res == "" {
			res = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Name, p.Port, p.Identity, p.CA, p.Verified, res, oneLine(p.Reason))
		for _, c := range p.Nodes {
			fmt.Fprintf(tw, "\t  %s\t\t\t\t\t%s\t%s\n", c.Node, c.Result, oneLine(c.Reason))
		}
	}
	return tw.Flush()
}

func (r *pathsReport) writeJSON(w io.Writer) error {
	out := struct {
		*pathsReport
		Failed []string `json:"failed"`
	}{r, r.failed()}
	if out.Failed == nil {
		out.Failed = []string{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

// oneLine keeps a reason on one table row.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// pathsOptions are the flags of `tether paths`.
type pathsOptions struct {
	Kubeconfig string
	Image      string
	Kubectl    string
	Timeout    time.Duration
	Output     string
}

func newPathsCommand(stdout, stderr io.Writer) *cobra.Command {
	o := &pathsOptions{}
	cmd := &cobra.Command{
		Use:   "paths",
		Short: "Show and check every communication path of the cluster (P0–P10)",
		Long: `Show, for each communication path of the cluster (P0–P10 in
docs/architecture.md), what it uses right now — port, identity, CA, whether
the peer is verified — and check it live: PASS, FAIL or SKIP with a reason.

To check the paths from pods (P3) and to the kubelets (P5), it creates a
throwaway namespace tether-paths-<random> with one probe pod per
schedulable Ready node, running --image with the static kubectl binary
--kubectl mounted read-only: the pod asks the API server who it is through
the kubernetes Service, and its log is read through the API server from its
kubelet. The namespace is deleted at the end, also on failure or Ctrl-C.

The kubelets (P6, P7) are dialled directly from where this command runs;
a kubelet that cannot be reached from here is skipped.

It exits non-zero, naming the failed paths, if any check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig of a cluster admin (default: $KUBECONFIG, else "+nodeAdminKubeconfig+")")
	f.StringVar(&o.Image, "image", pathsDefaultImage, "image of the probe pods (needs sh; `make busybox-image` imports the default)")
	f.StringVar(&o.Kubectl, "kubectl", "", "path, on the nodes, of a static kubectl binary to mount in the probe pods (default: kubectl in $PATH, symlinks resolved)")
	f.DurationVar(&o.Timeout, "timeout", pathsDefaultWait, "how long to wait for the probe namespace and pods")
	f.StringVarP(&o.Output, "output", "o", "table", "output format: table or json")
	return cmd
}

func (o *pathsOptions) kubeconfig() string {
	if o.Kubeconfig != "" {
		return o.Kubeconfig
	}
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		return env
	}
	return nodeAdminKubeconfig
}

func (o *pathsOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	if o.Output != "table" && o.Output != "json" {
		return fmt.Errorf("--output %q is not supported: use table or json", o.Output)
	}
	if o.Timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, not %s", o.Timeout)
	}
	if o.Image == "" {
		return errors.New("--image must not be empty")
	}
	cfg, err := loadPathsConfig(o.kubeconfig())
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	r := &pathsRunner{o: o, cfg: cfg, client: client, stderr: stderr, now: time.Now, report: newPathsReport(cfg.Host)}
	r.run(ctx)
	if o.Output == "json" {
		err = r.report.writeJSON(stdout)
	} else {
		err = r.report.writeTable(stdout)
	}
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("interrupted: the report above is incomplete")
	}
	return r.report.exitError()
}

func loadPathsConfig(kubeconfig string) (*rest.Config, error) {
	rules := &clientcmd.ClientConfigLoadingRules{}
	if paths := filepath.SplitList(kubeconfig); len(paths) == 1 {
		rules.ExplicitPath = paths[0]
	} else {
		rules.Precedence = paths
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = pathsRequestTimeout
	}
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}

// pathsRunner runs the checks and fills in the report.
type pathsRunner struct {
	o      *pathsOptions
	cfg    *rest.Config
	client kubernetes.Interface
	stderr io.Writer
	now    func() time.Time
	report *pathsReport

	// serverCA verifies the kubelets: the bundle the cluster hands to its
	// pods (kube-root-ca.crt), which is the server CA.
	serverCA    *x509.CertPool
	serverCerts []*x509.Certificate
	nodes       []corev1.Node
	apiPort     string       // the secure port, from the kubeconfig
	http        *http.Client // the kubeconfig's client for raw requests
	// proxyHealth is what went wrong with each node's
	// nodes/<n>/proxy/healthz ("" if nothing), from checkProxy.
	proxyHealth map[string]string
}

func (r *pathsRunner) progress(format string, args ...any) {
	fmt.Fprintf(r.stderr, "tether paths: "+format+"\n", args...)
}

func (r *pathsRunner) run(ctx context.Context) {
	r.progress("checking the cluster at %s", r.cfg.Host)
	reachable := r.checkClient(ctx)
	r.report.path("P9").set(resultSkip, "not available yet (egress mode ssh)")
	if !reachable {
		for _, p := range r.report.Paths {
			if p.Result == "" {
				p.set(resultSkip, "the API server is not reachable (see P1)")
			}
		}
		return
	}
	r.loadServerCA(ctx)
	nodes, err := r.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		for _, id := range []string{"P0", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P10"} {
			r.report.path(id).fail("list nodes: %v", err)
		}
		return
	}
	r.nodes = nodes.Items
	slices.SortFunc(r.nodes, func(a, b corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	r.checkJoin(ctx)
	r.checkKubeletClients(ctx)
	r.checkKubelets(ctx)
	r.checkProxy(ctx)
	r.checkTunnels()
	r.probe(ctx)
}

// checkClient checks P1 and reports whether the API server answered.
func (r *pathsRunner) checkClient(ctx context.Context) bool {
	p := r.report.path("P1")
	u, err := url.Parse(r.cfg.Host)
	if err != nil || u.Host == "" {
		p.fail("kubeconfig server %q is not a URL", r.cfg.Host)
		return false
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	r.apiPort = port
	p.Port = port
	if u.Scheme != "https" {
		p.fail("kubeconfig server %s is not https", r.cfg.Host)
	}
	switch {
	case r.cfg.Insecure:
		p.CA, p.Verified = "none (insecure-skip-tls-verify)", "no"
		p.fail("the kubeconfig sets insecure-skip-tls-verify: the API server is not verified; set certificate-authority-data to the server CA")
	case len(r.cfg.CAData) > 0 || r.cfg.CAFile != "":
		p.CA = "kubeconfig CA"
		if ca := r.kubeconfigCA(); ca != nil {
			p.CA = "kubeconfig CA (" + ca.Subject.CommonName + ")"
		}
	default:
		p.CA = "system roots"
	}
	p.Identity = kubeconfigAuthMethod(r.cfg)

	rt, err := rest.TransportFor(r.cfg)
	if err != nil {
		p.fail("transport: %v", err)
		return false
	}
	hc := &http.Client{Transport: rt, Timeout: pathsRequestTimeout}
	r.http = hc
	base := strings.TrimRight(r.cfg.Host, "/")
	get := func(path string) (*http.Response, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return nil, nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp, body, err
	}
	resp, body, err := get("/version")
	if err != nil {
		p.fail("GET /version: %v", err)
		return false
	}
	var facts []string
	if resp.TLS != nil {
		facts = append(facts, tls.VersionName(resp.TLS.Version))
		if len(resp.TLS.VerifiedChains) > 0 {
			if p.Verified == "-" {
				p.Verified = "yes"
			}
		} else {
			p.Verified = "no"
		}
	}
	if resp.StatusCode != http.StatusOK {
		p.fail("GET /version: %s", resp.Status)
	} else {
		var v struct {
			GitVersion string `json:"gitVersion"`
		}
		_ = json.Unmarshal(body, &v)
		facts = append(facts, "/version "+v.GitVersion)
	}
	resp, body, err = get("/readyz")
	switch {
	case err != nil:
		p.fail("GET /readyz: %v", err)
	case resp.StatusCode != http.StatusOK:
		p.fail("GET /readyz: %s %s", resp.Status, strings.TrimSpace(string(body)))
	default:
		facts = append(facts, "/readyz ok")
	}
	ssr, err := r.client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		p.fail("SelfSubjectReview: %v", err)
	} else {
		p.Identity = describeUser(ssr.Status.UserInfo) + " (" + p.Identity + ")"
	}
	if p.Result != resultFail {
		p.set(resultPass, "%s", strings.Join(facts, ", "))
	}
	return true
}

// kubeconfigCA returns the first certificate of the kubeconfig's CA.
func (r *pathsRunner) kubeconfigCA() *x509.Certificate {
	data := r.cfg.CAData
	if len(data) == 0 && r.cfg.CAFile != "" {
		data, _ = os.ReadFile(r.cfg.CAFile)
	}
	ca, err := pki.ParseCertPEM(data)
	if err != nil {
		return nil
	}
	return ca
}

// kubeconfigAuthMethod names how the kubeconfig authenticates.
func kubeconfigAuthMethod(cfg *rest.Config) string {
	switch {
	case len(cfg.CertData) > 0 || cfg.CertFile != "":
		return "x509"
	case cfg.BearerToken != "" || cfg.BearerTokenFile != "":
		return "token"
	case cfg.ExecProvider != nil:
		return "exec plugin"
	case cfg.AuthProvider != nil:
		return "auth provider"
	case cfg.Username != "":
		return "basic auth"
	}
	return "anonymous"
}

// describeUser is a user name with its groups, without the implicit
// system:authenticated.
func describeUser(u authenticationv1.UserInfo) string {
	var groups []string
	for _, g := range u.Groups {
		if g != "system:authenticated" {
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return u.Username
	}
	return u.Username + " [" + strings.Join(groups, ",") + "]"
}

// loadServerCA loads the bundle the cluster publishes as
// kube-root-ca.crt (the server CA); the kubeconfig's CA if there is none.
func (r *pathsRunner) loadServerCA(ctx context.Context) {
	var data []byte
	cm, err := r.client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, rootcacert.ConfigMapName, metav1.GetOptions{})
	if err == nil {
		data = []byte(cm.Data[rootcacert.Key])
	} else {
		data = r.cfg.CAData
		if len(data) == 0 && r.cfg.CAFile != "" {
			data, _ = os.ReadFile(r.cfg.CAFile)
		}
	}
	pool := x509.NewCertPool()
	if len(data) == 0 || !pool.AppendCertsFromPEM(data) {
		return
	}
	r.serverCA = pool
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			r.serverCerts = append(r.serverCerts, c)
		}
	}
}

// checkJoin checks P0: cluster-info is published, holds the server CA,
// and is signed for the join tokens in use.
func (r *pathsRunner) checkJoin(ctx context.Context) {
	p := r.report.path("P0")
	p.Identity = "bootstrap token → system:node:<name>"
	p.CA, p.Verified = "server CA (pinned)", "yes"
	cm, err := r.client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if err != nil {
		p.fail("ConfigMap %s/%s: %v", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo, err)
		return
	}
	kc, err := clientcmd.Load([]byte(cm.Data[bootstrapapi.KubeConfigKey]))
	if err != nil || len(kc.Clusters) == 0 {
		p.fail("cluster-info holds no kubeconfig with a cluster (%v)", err)
		return
	}
	var cluster *clientcmdapi.Cluster
	for _, c := range kc.Clusters {
		cluster = c
		break
	}
	if u, err := url.Parse(cluster.Server); err == nil && u.Port() != "" {
		p.Port = u.Port()
	}
	ca, err := pki.ParseCertPEM(cluster.CertificateAuthorityData)
	if err != nil {
		p.fail("cluster-info's CA: %v", err)
		return
	}
	pin := pki.Pin(ca)
	p.CA = "server CA, pin " + shortPin(pin)
	if len(r.serverCerts) > 0 && !slices.ContainsFunc(r.serverCerts, ca.Equal) {
		p.fail("cluster-info's CA (%s, %s) is not in the server CA bundle the cluster gives its pods (kube-root-ca.crt)", ca.Subject.CommonName, pin)
		return
	}
	signed := 0
	for k := range cm.Data {
		if strings.HasPrefix(k, bootstrapapi.JWSSignatureKeyPrefix) {
			signed++
		}
	}
	tokens := fmt.Sprintf("signed for %d join token(s)", signed)
	if signed == 0 {
		tokens = "no join token now (tether token create makes one)"
	}
	p.set(resultPass, "cluster-info at %s, %s; %d node(s) joined", cluster.Server, tokens, len(r.nodes))
}

// shortPin abbreviates a sha256:<hex> pin for the table.
func shortPin(pin string) string {
	if len(pin) > len("sha256:")+12 {
		return pin[:len("sha256:")+12] + "…"
	}
	return pin
}

// checkKubeletClients checks P2 on every node: Ready, lease fresh, client
// certificate valid.
func (r *pathsRunner) checkKubeletClients(ctx context.Context) {
	p := r.report.path("P2")
	p.Port, p.Identity, p.CA, p.Verified = r.report.path("P0").Port, "system:node:<name> (x509)", "server CA", "yes"
	if p.Port == "-" {
		p.Port = r.apiPort
	}
	now := r.now()
	for _, n := range r.nodes {
		var problems, facts []string
		if c := nodeCondition(&n, corev1.NodeReady); c == nil {
			problems = append(problems, "no Ready condition")
		} else if c.Status != corev1.ConditionTrue {
			problems = append(problems, fmt.Sprintf("Ready=%s (%s: %s)", c.Status, c.Reason, c.Message))
		} else {
			facts = append(facts, "Ready")
		}
		lease, err := r.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, n.Name, metav1.GetOptions{})
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("lease: %v", err))
		case lease.Spec.RenewTime == nil:
			problems = append(problems, "lease never renewed")
		default:
			age := now.Sub(lease.Spec.RenewTime.Time)
			if age >= pathsLeaseFresh {
				problems = append(problems, fmt.Sprintf("lease last renewed %s ago (want < %s)", duration.HumanDuration(age), pathsLeaseFresh))
			} else {
				facts = append(facts, "lease renewed "+duration.HumanDuration(max(age, 0))+" ago")
			}
		}
		if msg, ok := certExpiry(&n, kubelet.ClientCertExpiryAnnotation, "client", now); ok {
			facts = append(facts, msg)
		} else {
			problems = append(problems, msg)
		}
		if len(problems) > 0 {
			p.node(n.Name, resultFail, "%s", strings.Join(problems, "; "))
		} else {
			p.node(n.Name, resultPass, "%s", strings.Join(facts, ", "))
		}
	}
	p.settle(fmt.Sprintf("%d node(s) Ready with fresh leases and valid client certificates", len(r.nodes)), "no nodes")
}

func nodeCondition(n *corev1.Node, typ corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// certExpiry reads a certificate expiry annotation of n: a description
// and whether the certificate is valid now. A node reports its
// certificates with its first status update after joining: until
// pathsReportGrace after it joined, a missing annotation is no failure.
func certExpiry(n *corev1.Node, annotation, what string, now time.Time) (string, bool) {
	value := n.Annotations[annotation]
	if value == "" {
		if age := now.Sub(n.CreationTimestamp.Time); age < pathsReportGrace {
			return fmt.Sprintf("%s cert expiry not reported yet (joined %s ago)", what, duration.HumanDuration(max(age, 0))), true
		}
		return fmt.Sprintf("no %s certificate expiry reported (annotation %s)", what, annotation), false
	}
	t, err := time.Parse(time.RFC3339, value)
	if err != nil {
		return fmt.Sprintf("annotation %s=%q is not RFC 3339", annotation, value), false
	}
	if !now.Before(t) {
		return fmt.Sprintf("%s certificate expired %s ago (%s)", what, duration.HumanDuration(now.Sub(t)), value), false
	}
	return fmt.Sprintf("%s cert expires in %s", what, duration.HumanDuration(t.Sub(now))), true
}

// kubeletAddress returns the address of a node's kubelet API: its first
// InternalIP (else its first address) and its advertised port.
func kubeletAddress(n *corev1.Node) (host, port string) {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			host = a.Address
			break
		}
	}
	if host == "" && len(n.Status.Addresses) > 0 {
		host = n.Status.Addresses[0].Address
	}
	p := n.Status.DaemonEndpoints.KubeletEndpoint.Port
	if p == 0 {
		p = kubelet.DefaultKubeletPort
	}
	return host, strconv.Itoa(int(p))
}

// kubeletProbe is what dialling a kubelet from here found.
type kubeletProbe struct {
	unreachable error             // the TCP dial failed
	tlsErr      error             // the handshake failed (certificate or other)
	leaf        *x509.Certificate // the verified serving certificate
	anonCode    int               // status of an anonymous GET /pods
	anonErr     error
}

// dialKubelet connects to a kubelet, verifies its serving certificate for
// host against roots and sends an anonymous GET /pods.
func dialKubelet(ctx context.Context, host, port string, roots *x509.CertPool) kubeletProbe {
	var res kubeletProbe
	ctx, cancel := context.WithTimeout(ctx, pathsDialTimeout)
	defer cancel()
	addr := net.JoinHostPort(host, port)
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		res.unreachable = err
		return res
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	conn := tls.Client(raw, &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12})
	if err := conn.HandshakeContext(ctx); err != nil {
		res.tlsErr = err
		return res
	}
	res.leaf = conn.ConnectionState().PeerCertificates[0]
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/pods", nil)
	req.Close = true
	if err := req.Write(conn); err != nil {
		res.anonErr = err
		return res
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		res.anonErr = err
		return res
	}
	resp.Body.Close()
	res.anonCode = resp.StatusCode
	return res
}

// checkKubelets checks P6 and P7 on every node by dialling its kubelet
// from here.
func (r *pathsRunner) checkKubelets(ctx context.Context) {
	p6, p7 := r.report.path("P6"), r.report.path("P7")
	p6.Identity, p6.CA, p6.Verified = "system:node:<name> (serving)", "server CA", "yes"
	p7.Identity, p7.CA, p7.Verified = "x509 or token; SAR authz; no anonymous", "server CA", "yes"
	ports := map[string]bool{}
	probes := make([]kubeletProbe, len(r.nodes))
	var wg sync.WaitGroup
	for i := range r.nodes {
		host, port := kubeletAddress(&r.nodes[i])
		ports[port] = true
		if host == "" || r.serverCA == nil {
			continue
		}
		wg.Go(func() { probes[i] = dialKubelet(ctx, host, port, r.serverCA) })
	}
	wg.Wait()
	portList := slices.Sorted(maps.Keys(ports))
	if len(portList) > 0 {
		p6.Port, p7.Port = strings.Join(portList, ","), strings.Join(portList, ",")
	}
	now := r.now()
	for i, n := range r.nodes {
		host, port := kubeletAddress(&n)
		addr := net.JoinHostPort(host, port)
		pr := probes[i]
		expiry, valid := certExpiry(&n, kubelet.ServingCertExpiryAnnotation, "serving", now)
		switch {
		case host == "":
			p6.node(n.Name, resultFail, "the Node has no address")
			p7.node(n.Name, resultSkip, "the Node has no address")
			continue
		case r.serverCA == nil:
			p7.node(n.Name, resultSkip, "no server CA to verify the kubelet with (kube-root-ca.crt missing)")
		case pr.unreachable != nil:
			p7.node(n.Name, resultSkip, "kubelet at %s not reachable from here: %v", addr, pr.unreachable)
		case pr.tlsErr != nil:
			p7.node(n.Name, resultFail, "TLS with the kubelet at %s failed: %v", addr, pr.tlsErr)
		case pr.anonErr != nil:
			p7.node(n.Name, resultFail, "anonymous GET /pods at %s: %v", addr, pr.anonErr)
		case pr.anonCode == http.StatusUnauthorized:
			p7.node(n.Name, resultPass, "anonymous GET /pods at %s: 401", addr)
		default:
			p7.node(n.Name, resultFail, "anonymous GET /pods at %s got %d %s, want 401", addr, pr.anonCode, http.StatusText(pr.anonCode))
		}
		switch {
		case pr.tlsErr != nil:
			var verr *tls.CertificateVerificationError
			if errors.As(pr.tlsErr, &verr) {
				p6.node(n.Name, resultFail, "the certificate at %s is not valid for the server CA: %v", addr, verr.Err)
			} else {
				p6.node(n.Name, resultFail, "TLS with the kubelet at %s failed: %v", addr, pr.tlsErr)
			}
		case pr.leaf != nil:
			p6.node(n.Name, resultPass, "the certificate at %s verifies for %s (issuer %s, expires in %s)", addr, host, pr.leaf.Issuer.CommonName, duration.HumanDuration(pr.leaf.NotAfter.Sub(now)))
		case !valid:
			p6.node(n.Name, resultFail, "%s", expiry)
		default:
			p6.node(n.Name, resultPass, "%s (not checked live: kubelet not reachable from here)", expiry)
		}
	}
	p6.settle("serving certificates valid, issued by the server CA", "no nodes")
	p7.settle("kubelets refuse anonymous requests", "no kubelet reachable from here")
}

// pathsProbe is the probe pod on one node.
type pathsProbe struct {
	node     string
	pod      string
	hostname string // the node's kubernetes.io/hostname label; "" if nodeName is set
	done     bool
	logFails int // log fetches in a row answered with a 5xx
	lastPod  *corev1.Pod
}

// probeNodes returns the nodes a probe pod can run on and why the others
// cannot.
func probeNodes(nodes []corev1.Node) (ok []corev1.Node, skipped map[string]string) {
	skipped = map[string]string{}
	for _, n := range nodes {
		if c := nodeCondition(&n, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
			skipped[n.Name] = "not probed: the node is not Ready"
			continue
		}
		if n.Spec.Unschedulable {
			skipped[n.Name] = "not probed: the node is cordoned"
			continue
		}
		tainted := ""
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				tainted = t.Key
				break
			}
		}
		if tainted != "" {
			skipped[n.Name] = "not probed: the node has taint " + tainted
			continue
		}
		ok = append(ok, n)
	}
	return ok, skipped
}

// resolveKubectl returns the kubectl binary to mount: --kubectl or kubectl
// in $PATH, symlinks resolved, which must be a statically linked ELF file.
func resolveKubectl(flag string) (string, error) {
	path := flag
	if path == "" {
		p, err := exec.LookPath("kubectl")
		if err != nil {
			return "", errors.New("no kubectl in $PATH; pass --kubectl with the path of a static kubectl binary")
		}
		path = p
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	f, err := elf.Open(abs)
	if err != nil {
		return "", fmt.Errorf("kubectl %s is not an ELF binary (%v); pass --kubectl with a static kubectl binary", abs, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("kubectl %s is dynamically linked and cannot run in the probe image; pass --kubectl with a static kubectl binary", abs)
		}
	}
	return abs, nil
}

// probePodName names the probe pod of a node.
func probePodName(node string, i int) string {
	name := "probe-" + node
	if len(name) > validation.DNS1123LabelMaxLength || len(validation.IsDNS1123Label(name)) > 0 {
		name = fmt.Sprintf("probe-%d", i)
	}
	return name
}

// probePod is the probe pod for a node: it runs command with kubectl
// mounted, if there is one.
func (r *pathsRunner) probePod(pr *pathsProbe, n *corev1.Node, command []string, kubectlPath string) *corev1.Pod {
	grace := int64(1)
	deadline := int64(r.o.Timeout/time.Second) + 30
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pr.pod, Labels: map[string]string{"app.kubernetes.io/managed-by": pathsManagedBy}},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			ActiveDeadlineSeconds:         &deadline,
			Containers: []corev1.Container{{
				Name: pathsProbeContainer, Image: r.o.Image, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: command,
			}},
		},
	}
	if pr.hostname != "" {
		pod.Spec.NodeSelector = map[string]string{corev1.LabelHostname: pr.hostname}
	} else {
		pod.Spec.NodeName = n.Name
	}
	if kubectlPath != "" {
		file := corev1.HostPathFile
		pod.Spec.Volumes = []corev1.Volume{{Name: "kubectl", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: kubectlPath, Type: &file}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "kubectl", MountPath: pathsKubectlMount, ReadOnly: true}}
	}
	return pod
}

// imageReasons are the waiting reasons of an image that is not there.
var imageReasons = map[string]bool{"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true}

// stuckReasons are waiting reasons a probe container does not get out of.
var stuckReasons = map[string]bool{"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true}

func probeWaiting(p *corev1.Pod) *corev1.ContainerStateWaiting {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil {
			return cs.State.Waiting
		}
	}
	return nil
}

// probe checks P3, P4 and P5 with a throwaway namespace and a probe pod
// per node.
func (r *pathsRunner) probe(ctx context.Context) {
	p3, p4, p5 := r.report.path("P3"), r.report.path("P4"), r.report.path("P5")
	p4.Port, p4.Identity, p4.CA, p4.Verified = r.apiPort+" (in-process)", "system:kube-controller-manager, system:kube-scheduler (x509)", "server CA", "yes"
	p5.Identity, p5.CA, p5.Verified = kubeletclient.User+" (x509)", "server CA", "yes"
	p5.Port = r.report.path("P7").Port
	p3.CA, p3.Verified = "server CA (ca.crt)", "yes"
	r.checkServiceVIP(ctx, p3)

	nodes, skipped := probeNodes(r.nodes)
	for _, n := range r.nodes {
		if why, ok := skipped[n.Name]; ok {
			p3.node(n.Name, resultSkip, "%s", why)
			p5.node(n.Name, resultSkip, "%s", why)
		}
	}
	kubectlPath, kubectlErr := resolveKubectl(r.o.Kubectl)
	ns := pathsNamespacePrefix + utilrand.String(5)
	wantUser := "system:serviceaccount:" + ns + ":default"
	p3.Identity = "ServiceAccount default (bound token)"
	r.report.Namespace = ns

	_, err := r.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"app.kubernetes.io/managed-by": pathsManagedBy}}}, metav1.CreateOptions{})
	if err != nil {
		p3.fail("create namespace %s: %v", ns, err)
		p4.fail("create namespace %s: %v", ns, err)
		p5.fail("create namespace %s: %v", ns, err)
		return
	}
	r.progress("created namespace %s", ns)
	defer r.deleteNamespace(ctx, ns)

	waitCtx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()

	// P4: the controllers fill the namespace in.
	start := r.now()
	r.progress("waiting for the default service account and kube-root-ca.crt in %s…", ns)
	var saErr, cmErr error
	for {
		_, saErr = r.client.CoreV1().ServiceAccounts(ns).Get(waitCtx, "default", metav1.GetOptions{})
		_, cmErr = r.client.CoreV1().ConfigMaps(ns).Get(waitCtx, rootcacert.ConfigMapName, metav1.GetOptions{})
		if (saErr == nil && cmErr == nil) || waitCtx.Err() != nil {
			break
		}
		select {
		case <-waitCtx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	filled := r.now().Sub(start)
	if saErr != nil {
		p4.fail("service account %s/default not created by the controllers: %v", ns, saErr)
	}
	if cmErr != nil {
		p4.fail("ConfigMap %s/%s not created by the controllers: %v", ns, rootcacert.ConfigMapName, cmErr)
	}
	for _, sar := range []struct {
		user string
		attr authorizationv1.ResourceAttributes
	}{
		{"system:kube-scheduler", authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods", Subresource: "binding"}},
		{"system:kube-controller-manager", authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "configmaps"}},
	} {
		res, err := r.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: sar.user, ResourceAttributes: &sar.attr}}, metav1.CreateOptions{})
		switch {
		case err != nil:
			p4.fail("SubjectAccessReview for %s: %v", sar.user, err)
		case !res.Status.Allowed:
			sub := sar.attr.Resource
			if sar.attr.Subresource != "" {
				sub += "/" + sar.attr.Subresource
			}
			p4.fail("%s may not %s %s (%s)", sar.user, sar.attr.Verb, sub, res.Status.Reason)
		}
	}
	if saErr != nil {
		p3.fail("no default service account in %s", ns)
		p5.settle("", "no probe pods (no default service account)")
		p4.settle("", "")
		return
	}

	// The probe pods.
	// No other flag: any override (even --request-timeout) makes kubectl
	// use its default localhost:8080 instead of the in-cluster config.
	// The name ends with a newline: the kubelet drops a last log line
	// without one.
	command := []string{pathsKubectlMount, "auth", "whoami", "-o", `jsonpath={.status.userInfo.username}{"\n"}`}
	if kubectlErr != nil {
		kubectlPath = ""
		command = []string{"sh", "-c", "echo tether-paths-probe"}
	}
	var probes []*pathsProbe
	for i := range nodes {
		n := &nodes[i]
		pr := &pathsProbe{node: n.Name, pod: probePodName(n.Name, i), hostname: n.Labels[corev1.LabelHostname]}
		_, err := r.client.CoreV1().Pods(ns).Create(waitCtx, r.probePod(pr, n, command, kubectlPath), metav1.CreateOptions{})
		if err != nil {
			p3.node(n.Name, resultFail, "create probe pod: %v", err)
			p5.node(n.Name, resultSkip, "no probe pod")
			continue
		}
		probes = append(probes, pr)
	}
	if len(probes) > 0 {
		names := make([]string, len(probes))
		for i, pr := range probes {
			names[i] = pr.node
		}
		r.progress("waiting for probe pods on %d node(s) (%s)…", len(probes), strings.Join(names, ", "))
	}
	r.waitProbes(waitCtx, ns, probes)

	// Results.
	for _, pr := range probes {
		r.probeResult(ctx, ns, pr, wantUser, kubectlErr == nil)
	}
	r.checkScheduled(ctx, ns, probes)
	if p4.Result != resultFail && saErr == nil && cmErr == nil {
		p4.set(resultPass, "default service account and kube-root-ca.crt created in %s", filled.Round(10*time.Millisecond))
	}
	p4.settle("", "")
	if kubectlErr != nil {
		if p3.Result != resultFail {
			p3.set(resultSkip, "%v", kubectlErr)
		}
	} else {
		p3.settle(fmt.Sprintf("%d probe pod(s) got %s through the kubernetes Service", len(probes), wantUser), "no node to probe")
	}
	p5.settle("probe logs read through the API server from every kubelet", "no node to probe")
}

// waitProbes waits until every probe pod ended or got stuck, or ctx ends.
func (r *pathsRunner) waitProbes(ctx context.Context, ns string, probes []*pathsProbe) {
	lastNote := r.now()
	for {
		var waiting []string
		for _, pr := range probes {
			if pr.done {
				continue
			}
			pod, err := r.client.CoreV1().Pods(ns).Get(ctx, pr.pod, metav1.GetOptions{})
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				waiting = append(waiting, pr.node+" ("+err.Error()+")")
				continue
			}
			pr.lastPod = pod
			if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				pr.done = true
				continue
			}
			if w := probeWaiting(pod); w != nil && (imageReasons[w.Reason] || stuckReasons[w.Reason]) {
				pr.done = true
				continue
			}
			if pod.Spec.NodeName != "" {
				// A kubelet that cannot be reached through the API
				// server will not let us see its probe: give up early.
				_, status, err := r.podLog(ctx, ns, pr.pod)
				if err != nil || status.Code >= 500 {
					pr.logFails++
					if pr.logFails >= pathsLogFailures {
						pr.done = true
						continue
					}
				} else {
					pr.logFails = 0
				}
			}
			waiting = append(waiting, pr.node+" ("+podState(pod)+")")
		}
		if len(waiting) == 0 || ctx.Err() != nil {
			return
		}
		if r.now().Sub(lastNote) >= 10*time.Second {
			r.progress("still waiting for probe pods on %s…", strings.Join(waiting, ", "))
			lastNote = r.now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pathsPoll):
		}
	}
}

// podLog reads the probe container's log through the API server
// (pods/log). A non-2xx answer is returned as the Status the API server
// sent; err is a failure to get an answer at all.
func (r *pathsRunner) podLog(ctx context.Context, ns, pod string) ([]byte, metav1.Status, error) {
	return r.rawGet(ctx, "/api/v1/namespaces/"+url.PathEscape(ns)+"/pods/"+url.PathEscape(pod)+
		"/log?container="+pathsProbeContainer+"&limitBytes=65536")
}

// rawGet GETs path (with its query) from the API server as text. A
// non-2xx answer is returned as the Status the API server sent; err is a
// failure to get an answer at all.
func (r *pathsRunner) rawGet(ctx context.Context, path string) ([]byte, metav1.Status, error) {
	u := strings.TrimRight(r.cfg.Host, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, metav1.Status{}, err
	}
	req.Header.Set("Accept", "text/plain, application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, metav1.Status{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, metav1.Status{}, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return body, metav1.Status{Code: int32(resp.StatusCode)}, nil
	}
	var st metav1.Status
	if json.Unmarshal(body, &st) != nil || st.Message == "" {
		st.Message = strings.TrimSpace(string(body))
		if st.Message == "" {
			st.Message = resp.Status
		}
	}
	st.Code = int32(resp.StatusCode)
	return nil, st, nil
}

// checkTunnels checks P10 on each node that keeps a tunnel (its agent
// runs with --tunnel): the API server reaches such a node only through
// it, so its kubelet answering nodes/<n>/proxy/healthz (checkProxy's
// request) proves the tunnel.
func (r *pathsRunner) checkTunnels() {
	p10 := r.report.path("P10")
	p10.Port, p10.Identity, p10.CA, p10.Verified = r.apiPort+" (the node dials out)", "system:node:<name> (x509)", "server CA", "yes"
	for _, n := range r.nodes {
		if n.Annotations[tunnel.EgressAnnotation] != tunnel.EgressTunnel {
			continue
		}
		if problem := r.proxyHealth[n.Name]; problem != "" {
			p10.node(n.Name, resultFail, "%s", problem)
		} else {
			p10.node(n.Name, resultPass, "its kubelet answered through its tunnel")
		}
	}
	p10.settle("nodes with --tunnel are reached through their tunnels", "no node keeps a tunnel (tether agent --tunnel)")
}

// checkProxy checks P8 on each node: the API server's proxy to the
// node's kubelet (nodes/proxy/healthz), which verifies the kubelet's
// serving certificate as P5 does. What went wrong, per node, is kept in
// r.proxyHealth for checkTunnels.
func (r *pathsRunner) checkProxy(ctx context.Context) {
	p8 := r.report.path("P8")
	p8.Port, p8.Identity, p8.CA, p8.Verified = r.apiPort+" → kubelet", kubeletclient.User+" (x509)", "server CA", "yes"
	r.proxyHealth = map[string]string{}
	for _, n := range r.nodes {
		path := "/api/v1/nodes/" + url.PathEscape(n.Name) + "/proxy/healthz"
		body, st, err := r.rawGet(ctx, path)
		var problem string
		switch {
		case err != nil:
			problem = fmt.Sprintf("GET %s: %v", path, err)
		case st.Code != http.StatusOK:
			problem = fmt.Sprintf("GET %s: %d %s", path, st.Code, st.Message)
		case strings.TrimSpace(string(body)) != "ok":
			problem = fmt.Sprintf("GET %s answered %q, want ok", path, clipText(string(body), 200))
		}
		r.proxyHealth[n.Name] = problem
		if problem != "" {
			p8.node(n.Name, resultFail, "%s", problem)
		} else {
			p8.node(n.Name, resultPass, "nodes/%s/proxy/healthz: ok", n.Name)
		}
	}
	p8.settle("the API server proxies to kubelets (nodes/proxy), verified", "no nodes")
}

// podState is a short description of where a pod is.
func podState(p *corev1.Pod) string {
	s := string(p.Status.Phase)
	if p.Spec.NodeName == "" {
		s += ", not scheduled"
	}
	if w := probeWaiting(p); w != nil {
		s += ", " + w.Reason
		if w.Message != "" {
			s += ": " + w.Message
		}
	}
	return s
}

// probeResult records P3 and P5 for one probe pod.
func (r *pathsRunner) probeResult(ctx context.Context, ns string, pr *pathsProbe, wantUser string, kubectl bool) {
	p3, p5 := r.report.path("P3"), r.report.path("P5")
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pathsRequestTimeout)
	if pod, err := r.client.CoreV1().Pods(ns).Get(gctx, pr.pod, metav1.GetOptions{}); err == nil {
		pr.lastPod = pod
	}
	cancel()
	pod := pr.lastPod
	// P5: the log through the API server from the kubelet.
	var logText string
	logOK := false
	switch {
	case pod == nil || pod.Spec.NodeName == "":
		p5.node(pr.node, resultSkip, "probe pod never scheduled")
	default:
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pathsRequestTimeout)
		b, st, err := r.podLog(lctx, ns, pr.pod)
		cancel()
		switch {
		case err != nil:
			p5.node(pr.node, resultFail, "GET pods/log of %s: %v", pr.pod, err)
		case st.Code < 300:
			logText, logOK = string(b), true
			p5.node(pr.node, resultPass, "log of %s read through the API server (%d bytes)", pr.pod, len(b))
		case st.Code == http.StatusBadRequest || st.Code == http.StatusNotFound:
			// The kubelet answered over verified TLS: the path works,
			// the container just has no log (yet).
			p5.node(pr.node, resultPass, "the kubelet answered: %s", st.Message)
		default:
			p5.node(pr.node, resultFail, "GET pods/log of %s: %d %s", pr.pod, st.Code, st.Message)
		}
	}

	// P3: the pod asked the API server who it is, through the VIP.
	if !kubectl {
		return
	}
	switch {
	case pod == nil:
		p3.node(pr.node, resultFail, "probe pod %s not found", pr.pod)
	case pod.Spec.NodeName == "":
		p3.node(pr.node, resultFail, "probe pod %s not scheduled within %s (see P4)", pr.pod, r.o.Timeout)
	case probeWaiting(pod) != nil && imageReasons[probeWaiting(pod).Reason]:
		w := probeWaiting(pod)
		p3.node(pr.node, resultFail, "image %s is not available on node %s (%s: %s): run `make busybox-image` there or pass --image", r.o.Image, pr.node, w.Reason, w.Message)
	case pod.Status.Phase == corev1.PodSucceeded:
		if !logOK {
			p3.node(pr.node, resultFail, "probe pod succeeded but its log could not be read (see P5)")
		} else if user := whoamiUser(logText); user != wantUser {
			p3.node(pr.node, resultFail, "the pod is %q to the API server, want %s (log %q)", user, wantUser, clipText(logText, 200))
		} else {
			p3.node(pr.node, resultPass, "%s via %s", user, r.vip())
		}
	case pod.Status.Phase == corev1.PodFailed:
		msg := strings.TrimSpace(logText)
		if msg == "" {
			msg = podState(pod)
			if pod.Status.Message != "" {
				msg += ": " + pod.Status.Message
			}
		}
		p3.node(pr.node, resultFail, "probe pod failed: %s", clipText(msg, 300))
	default:
		msg := podState(pod)
		if ev := r.lastWarning(ctx, ns, pr.pod); ev != "" {
			msg += "; " + ev
		}
		if c, ok := p5.nodeResult(pr.node); ok && c.Result == resultFail {
			msg += " (its kubelet cannot be reached through the API server, see P5)"
		}
		p3.node(pr.node, resultFail, "probe pod did not finish within %s: %s", r.o.Timeout, msg)
	}
}

// whoamiUser is the user name the probe printed: the last non-empty line
// of its log (kubectl may warn on stderr first).
func whoamiUser(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// lastWarning returns the message of the newest Warning event of a pod.
func (r *pathsRunner) lastWarning(ctx context.Context, ns, pod string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pathsRequestTimeout)
	defer cancel()
	evs, err := r.client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	if err != nil {
		return ""
	}
	var last *corev1.Event
	for i := range evs.Items {
		e := &evs.Items[i]
		if e.Type == corev1.EventTypeWarning && (last == nil || eventTime(e).After(eventTime(last))) {
			last = e
		}
	}
	if last == nil {
		return ""
	}
	return last.Reason + ": " + last.Message
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// checkScheduled records P4 per probe pod: scheduled by the scheduler.
func (r *pathsRunner) checkScheduled(ctx context.Context, ns string, probes []*pathsProbe) {
	p4 := r.report.path("P4")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pathsRequestTimeout)
	defer cancel()
	evs, err := r.client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		p4.fail("list events in %s: %v", ns, err)
		return
	}
	for _, pr := range probes {
		pod := pr.lastPod
		if pod == nil {
			continue
		}
		if pod.Spec.NodeName == "" {
			msg := "probe pod not scheduled"
			for _, e := range evs.Items {
				if e.InvolvedObject.Name == pr.pod && e.Reason == "FailedScheduling" {
					msg += ": " + e.Message
				}
			}
			p4.node(pr.node, resultFail, "%s", msg)
			continue
		}
		if pr.hostname == "" {
			p4.node(pr.node, resultSkip, "probe pod bound by nodeName (the node has no %s label)", corev1.LabelHostname)
			continue
		}
		if pod.Spec.NodeName != pr.node {
			p4.node(pr.node, resultFail, "probe pod for %s scheduled to %s", pr.node, pod.Spec.NodeName)
			continue
		}
		by := ""
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == pr.pod && e.Reason == "Scheduled" {
				by = e.Source.Component
				if by == "" {
					by = e.ReportingController
				}
			}
		}
		if by == "" {
			p4.node(pr.node, resultPass, "probe pod scheduled (no Scheduled event seen)")
		} else {
			p4.node(pr.node, resultPass, "probe pod scheduled by %s", by)
		}
	}
}

// vip is the kubernetes Service's address as the P3 row shows it.
func (r *pathsRunner) vip() string {
	return r.report.path("P3").Port
}

// checkServiceVIP records the kubernetes Service's VIP and checks that its
// endpoints are API servers.
func (r *pathsRunner) checkServiceVIP(ctx context.Context, p3 *pathCheck) {
	svc, err := r.client.CoreV1().Services(peers.ServiceNamespace).Get(ctx, peers.ServiceName, metav1.GetOptions{})
	if err != nil {
		p3.fail("Service %s/%s: %v", peers.ServiceNamespace, peers.ServiceName, err)
		return
	}
	port := int32(443)
	for _, sp := range svc.Spec.Ports {
		if sp.Name == peers.PortName || len(svc.Spec.Ports) == 1 {
			port = sp.Port
		}
	}
	vip := net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(port)))
	p3.Port = vip
	epSlices, err := r.client.DiscoveryV1().EndpointSlices(peers.ServiceNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + peers.ServiceName})
	if err != nil {
		p3.fail("EndpointSlices of %s/%s: %v", peers.ServiceNamespace, peers.ServiceName, err)
		return
	}
	var targets []string
	for _, sl := range epSlices.Items {
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				for _, pt := range sl.Ports {
					if pt.Port != nil {
						targets = append(targets, net.JoinHostPort(a, strconv.Itoa(int(*pt.Port))))
					}
				}
			}
		}
	}
	slices.Sort(targets)
	targets = slices.Compact(targets)
	if len(targets) == 0 {
		p3.fail("the kubernetes Service has no endpoints")
		return
	}
	known := r.apiServerEndpoints(ctx)
	for _, t := range targets {
		if !known[t] {
			p3.fail("endpoint %s of the kubernetes Service is not a known API server (%s)", t, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
	}
	p3.Port = vip + " → " + strings.Join(targets, ",")
}

// apiServerEndpoints returns the address:port of every API server: those
// in the servers' identity leases and the kubeconfig's.
func (r *pathsRunner) apiServerEndpoints(ctx context.Context) map[string]bool {
	known := map[string]bool{}
	if u, err := url.Parse(r.cfg.Host); err == nil && net.ParseIP(u.Hostname()) != nil {
		known[net.JoinHostPort(u.Hostname(), r.apiPort)] = true
	}
	leases, err := r.client.CoordinationV1().Leases(peers.LeaseNamespace).List(ctx, metav1.ListOptions{LabelSelector: peers.IdentityLabel + "=" + peers.IdentityValue})
	if err == nil {
		for _, l := range leases.Items {
			if ep := l.Annotations[peers.EndpointAnnotation]; ep != "" {
				known[ep] = true
			}
		}
	}
	return known
}

// deleteNamespace deletes the throwaway namespace, its probe pods first
// and at once, even when ctx has ended (Ctrl-C, timeout).
func (r *pathsRunner) deleteNamespace(ctx context.Context, ns string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pathsCleanupTimeout)
	defer cancel()
	zero := int64(0)
	if pods, err := r.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			_ = r.client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		}
	}
	err := r.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		r.progress("could not delete namespace %s: %v (delete it with: kubectl delete namespace %s)", ns, err, ns)
		return
	}
	r.progress("deleted namespace %s", ns)
}
