package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	bootstrapsecrets "k8s.io/cluster-bootstrap/util/secrets"

	"tether/pki"
)

// Join token defaults and limits.
const (
	defaultTokenTTL = time.Hour
	// maxTokenTTL bounds --ttl: a join token is a credential that lets any
	// machine that holds it become a node, so it is short-lived by design.
	maxTokenTTL = 24 * time.Hour
	minTokenTTL = time.Second // the expiration is stored to the second
	// defaultNodeTokenGroup is the extra group of tokens made for nodes.
	defaultNodeTokenGroup = "system:bootstrappers:tether:default-node-token"
	// defaultAdminKubeconfig is where `tether server` writes its admin
	// kubeconfig with the default --data-dir.
	defaultAdminKubeconfig = "/var/lib/tether/server/admin.kubeconfig"
	tokenRequestTimeout    = 30 * time.Second
)

// Seams for tests.
var (
	// newClientForToken returns an admin client and its configuration for
	// the kubeconfig file(s) at kubeconfig (a path, or a list joined like
	// $KUBECONFIG).
	newClientForToken = loadTokenClient
	// clusterInfoWait bounds how long `token create` waits for the cluster
	// to sign cluster-info with the new token.
	clusterInfoWait = 10 * time.Second
	// clusterInfoPoll is how often it looks.
	clusterInfoPoll = 200 * time.Millisecond
)

// tokenOptions are the flags of `tether token` and its subcommands.
type tokenOptions struct {
	Kubeconfig  string
	TTL         time.Duration
	Description string
	Usages      []string
	Groups      []string
	// groupsSet reports whether --groups was given.
	groupsSet bool
}

func newTokenCommand(stdout io.Writer) *cobra.Command {
	o := &tokenOptions{}
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and delete join tokens (bootstrap tokens)",
		Long: `A join token lets a machine join the cluster as a node: "tether token create"
prints the complete "tether agent" command to run on it. Tokens expire (1h by
default, 24h at most) and are deleted by the server once expired.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.PersistentFlags().StringVar(&o.Kubeconfig, "kubeconfig", "",
		"kubeconfig of a cluster admin (default: $KUBECONFIG, else "+defaultAdminKubeconfig+")")

	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print the command that joins a node with it",
		Long: `Create a bootstrap token (Secret kube-system/bootstrap-token-<id>) and print,
as the last line, the command that joins a machine to the cluster with it:

  tether agent --server https://<address>:<port> --token <id>.<secret> --ca-cert-hash sha256:<hex>

The --ca-cert-hash pins the server CA: the agent refuses a server whose CA does
not match it. The token is a secret until it expires.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.groupsSet = cmd.Flags().Changed("groups")
			return o.create(cmd.Context(), stdout)
		},
	}
	f := create.Flags()
	f.DurationVar(&o.TTL, "ttl", defaultTokenTTL, "how long the token is valid (at most 24h)")
	f.StringVar(&o.Description, "description", "", "a note on what the token is for, shown by \"tether token list\"")
	f.StringSliceVar(&o.Usages, "usages", []string{"signing", "authentication"},
		"what the token may be used for: signing (lets a node verify cluster-info) and authentication (lets a node request its certificate)")
	f.StringSliceVar(&o.Groups, "groups", []string{defaultNodeTokenGroup},
		"extra groups the token authenticates as, each matching "+bootstrapapi.BootstrapGroupPattern)

	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (their IDs, never their secrets)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return o.list(cmd.Context(), stdout) },
	}
	del := &cobra.Command{
		Use:   "delete <id|id.secret>...",
		Short: "Delete join tokens by ID or by the whole token",
		Args:  cobra.MinimumNArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return o.delete(cmd.Context(), stdout, args) },
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// kubeconfig returns the kubeconfig path(s) to use and how they were
// chosen, for error messages.
func (o *tokenOptions) kubeconfig() (path, source string) {
	if o.Kubeconfig != "" {
		return o.Kubeconfig, "--kubeconfig"
	}
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		return env, "$" + clientcmd.RecommendedConfigPathEnvVar
	}
	return defaultAdminKubeconfig, "the default --kubeconfig"
}

// client returns an admin client, with an error that says which file and
// flag to fix.
func (o *tokenOptions) client() (kubernetes.Interface, *rest.Config, error) {
	path, source := o.kubeconfig()
	client, cfg, err := newClientForToken(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load kubeconfig %s (from %s): %w; pass --kubeconfig with a cluster admin's kubeconfig (on the server: %s, readable by root)",
			path, source, err, defaultAdminKubeconfig)
	}
	return client, cfg, nil
}

func loadTokenClient(kubeconfig string) (kubernetes.Interface, *rest.Config, error) {
	rules := &clientcmd.ClientConfigLoadingRules{}
	if paths := filepath.SplitList(kubeconfig); len(paths) == 1 {
		rules.ExplicitPath = paths[0] // a missing file is an error, not an empty config
	} else {
		rules.Precedence = paths
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = tokenRequestTimeout
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	return client, cfg, nil
}

// validate checks the flags of `token create`, reporting every problem at
// once.
func (o *tokenOptions) validate() error {
	var errs []error
	switch {
	case o.TTL <= 0:
		errs = append(errs, fmt.Errorf("--ttl %v: a join token must expire; pass a duration such as --ttl 1h (at most %v)", o.TTL, shortDuration(maxTokenTTL)))
	case o.TTL < minTokenTTL:
		errs = append(errs, fmt.Errorf("--ttl %v is shorter than %v, the resolution of a token's expiration", o.TTL, minTokenTTL))
	case o.TTL > maxTokenTTL:
		errs = append(errs, fmt.Errorf("--ttl %v is longer than the %v maximum: a join token lets any machine that holds it join the cluster, so it is kept short-lived; create a new token when you need one",
			o.TTL, shortDuration(maxTokenTTL)))
	}
	if len(o.Usages) == 0 {
		errs = append(errs, errors.New("--usages is empty: a join token needs signing and authentication"))
	} else if err := bootstraputil.ValidateUsages(o.Usages); err != nil {
		errs = append(errs, fmt.Errorf("--usages: %w", err))
	}
	for _, g := range o.Groups {
		if err := bootstraputil.ValidateBootstrapGroupName(g); err != nil {
			errs = append(errs, fmt.Errorf("--groups: %w", err))
		}
	}
	if o.groupsSet && len(o.Groups) > 0 && !slices.Contains(o.Usages, "authentication") {
		errs = append(errs, errors.New("--groups needs the authentication usage: add authentication to --usages"))
	}
	if strings.ContainsFunc(o.Description, unicode.IsControl) {
		errs = append(errs, errors.New("--description must not contain control characters such as newlines or tabs"))
	}
	return errors.Join(errs...)
}

// create implements `tether token create`.
func (o *tokenOptions) create(ctx context.Context, stdout io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	client, restCfg, err := o.client()
	if err != nil {
		return err
	}

	// Find the server URL and CA first, so that a failure leaves no token
	// behind.
	info, err := discoverServer(ctx, client, restCfg)
	if err != nil {
		return err
	}
	for _, note := range info.notes {
		fmt.Fprintln(stdout, note)
	}

	id, secret, expires, err := o.createSecret(ctx, client)
	if err != nil {
		return err
	}
	token := bootstraputil.TokenFromIDAndSecret(id, secret)
	fmt.Fprintf(stdout, "Created bootstrap token %s (Secret %s/%s), valid until %s (%v).\n",
		id, metav1.NamespaceSystem, bootstraputil.BootstrapTokenSecretName(id), expires.Format(time.RFC3339), shortDuration(o.TTL))

	if !slices.Contains(o.Usages, "authentication") {
		fmt.Fprintln(stdout, "Warning: the token lacks the authentication usage: a node cannot request its certificate with it.")
	}
	if slices.Contains(o.Usages, "signing") {
		signed, err := waitForSignature(ctx, client, id, secret)
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("interrupted while waiting for cluster-info to be signed; token %s exists and expires on its own, or delete it with \"tether token delete %s\": %w", id, id, ctx.Err())
		case err != nil:
			fmt.Fprintf(stdout, "Warning: %v. A node cannot verify the server until it is; check that the server runs its bootstrap-signer controller.\n", err)
		default:
			// Print what the node will verify: the content that was signed.
			if signed.server != info.server || signed.pin != info.pin {
				fmt.Fprintf(stdout, "cluster-info now names %s (CA %s) instead of %s (CA %s); using it.\n", signed.server, signed.pin, info.server, info.pin)
			}
			info = signed
			fmt.Fprintf(stdout, "cluster-info is signed with the token: a joining node can check that it names the server and the server CA it was given.\n")
		}
	} else {
		fmt.Fprintln(stdout, "Warning: the token lacks the signing usage: a node cannot verify cluster-info with it.")
	}

	if isLoopback(info.server) {
		fmt.Fprintf(stdout, "Note: the server advertises %s, a loopback address that only this machine can reach; for other machines, restart \"tether server\" with --advertise-address set to an address they can reach.\n", info.server)
	}
	fmt.Fprintln(stdout, "To join a machine to the cluster, run this on it as root (the token is a secret until it expires):")
	_, err = fmt.Fprintf(stdout, "tether agent --server %s --token %s --ca-cert-hash %s\n", info.server, token, info.pin)
	return err
}

// createSecret generates a token and stores it; it retries when the
// random ID is taken.
func (o *tokenOptions) createSecret(ctx context.Context, client kubernetes.Interface) (id, secret string, expires time.Time, err error) {
	for range 3 {
		token, err := bootstraputil.GenerateBootstrapToken()
		if err != nil {
			return "", "", time.Time{}, fmt.Errorf("generate token: %w", err)
		}
		id, secret, _ = strings.Cut(token, ".")
		expires = time.Now().Add(o.TTL).UTC().Truncate(time.Second)
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: bootstraputil.BootstrapTokenSecretName(id)},
			Type:       bootstrapapi.SecretTypeBootstrapToken,
			Data: map[string][]byte{
				bootstrapapi.BootstrapTokenIDKey:         []byte(id),
				bootstrapapi.BootstrapTokenSecretKey:     []byte(secret),
				bootstrapapi.BootstrapTokenExpirationKey: []byte(expires.Format(time.RFC3339)),
			},
		}
		if o.Description != "" {
			s.Data[bootstrapapi.BootstrapTokenDescriptionKey] = []byte(o.Description)
		}
		for _, u := range o.Usages {
			s.Data[bootstrapapi.BootstrapTokenUsagePrefix+u] = []byte("true")
		}
		if slices.Contains(o.Usages, "authentication") && len(o.Groups) > 0 {
			s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey] = []byte(strings.Join(slices.Compact(slices.Sorted(slices.Values(o.Groups))), ","))
		}
		_, err = client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			continue // another token has this ID; draw again
		}
		if err != nil {
			return "", "", time.Time{}, fmt.Errorf("create secret %s/%s: %w", metav1.NamespaceSystem, s.Name, err)
		}
		return id, secret, expires, nil
	}
	return "", "", time.Time{}, errors.New("create token: three random token IDs were all taken; try again")
}

// serverInfo is what a joining node is told about the server.
type serverInfo struct {
	server string // https URL
	pin    string // sha256:<hex> of the server CA's public key
	notes  []string
}

// discoverServer returns the server URL and CA pin from cluster-info, as
// nodes will see them, or from the admin kubeconfig when cluster-info does
// not exist (yet).
func discoverServer(ctx context.Context, client kubernetes.Interface, restCfg *rest.Config) (serverInfo, error) {
	cm, err := client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if err == nil {
		info, err := clusterInfoServer(cm)
		if err != nil {
			return serverInfo{}, err
		}
		return info, nil
	}
	if !apierrors.IsNotFound(err) {
		return serverInfo{}, fmt.Errorf("read configmap %s/%s: %w", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo, err)
	}

	caPEM := restCfg.CAData
	if len(caPEM) == 0 && restCfg.CAFile != "" {
		if caPEM, err = os.ReadFile(restCfg.CAFile); err != nil {
			return serverInfo{}, fmt.Errorf("read the server CA of the kubeconfig: %w", err)
		}
	}
	if len(caPEM) == 0 {
		return serverInfo{}, fmt.Errorf("configmap %s/%s does not exist and the kubeconfig names no certificate authority: cannot tell nodes which CA to trust; pass --kubeconfig with the server's admin kubeconfig (%s)",
			metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo, defaultAdminKubeconfig)
	}
	pin, err := caPin(caPEM)
	if err != nil {
		return serverInfo{}, fmt.Errorf("the kubeconfig's certificate authority: %w", err)
	}
	return serverInfo{
		server: restCfg.Host,
		pin:    pin,
		notes: []string{fmt.Sprintf("Note: configmap %s/%s does not exist yet; using the server URL and CA of the kubeconfig.",
			metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo)},
	}, nil
}

// clusterInfoServer reads the server URL and CA pin out of cluster-info.
func clusterInfoServer(cm *corev1.ConfigMap) (serverInfo, error) {
	where := fmt.Sprintf("configmap %s/%s", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo)
	cfg, err := clientcmd.Load([]byte(cm.Data[bootstrapapi.KubeConfigKey]))
	if err != nil {
		return serverInfo{}, fmt.Errorf("%s: parse %s: %w", where, bootstrapapi.KubeConfigKey, err)
	}
	cluster := kubeconfigCluster(cfg)
	if cluster == nil || cluster.Server == "" {
		return serverInfo{}, fmt.Errorf("%s: its %s names no cluster server", where, bootstrapapi.KubeConfigKey)
	}
	pin, err := caPin(cluster.CertificateAuthorityData)
	if err != nil {
		return serverInfo{}, fmt.Errorf("%s: certificate-authority-data: %w", where, err)
	}
	return serverInfo{server: cluster.Server, pin: pin}, nil
}

// kubeconfigCluster returns the cluster a kubeconfig describes: the
// unnamed one (as in cluster-info), else the current context's, else the
// only one.
func kubeconfigCluster(cfg *clientcmdapi.Config) *clientcmdapi.Cluster {
	if c := cfg.Clusters[""]; c != nil {
		return c
	}
	if ctx := cfg.Contexts[cfg.CurrentContext]; ctx != nil && cfg.Clusters[ctx.Cluster] != nil {
		return cfg.Clusters[ctx.Cluster]
	}
	if len(cfg.Clusters) == 1 {
		for _, c := range cfg.Clusters {
			return c
		}
	}
	return nil
}

// caPin returns the pin of the first certificate of a CA bundle.
func caPin(caPEM []byte) (string, error) {
	if len(caPEM) == 0 {
		return "", errors.New("empty CA certificate")
	}
	cert, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return "", err
	}
	return pki.Pin(cert), nil
}

// waitForSignature waits until cluster-info carries a valid signature made
// with the token, and returns the server it names.
func waitForSignature(ctx context.Context, client kubernetes.Interface, id, secret string) (serverInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterInfoWait)
	defer cancel()
	key := bootstrapapi.JWSSignatureKeyPrefix + id
	ticker := time.NewTicker(clusterInfoPoll)
	defer ticker.Stop()
	where := fmt.Sprintf("configmap %s/%s", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo)
	last := where + " has no signature " + key
	for {
		cm, err := client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			last = where + " does not exist"
		case err != nil && ctx.Err() == nil:
			last = fmt.Sprintf("read %s: %v", where, err)
		case err == nil && cm.Data[key] == "":
			last = where + " has no signature " + key
		case err == nil && !jws.DetachedTokenIsValid(cm.Data[key], cm.Data[bootstrapapi.KubeConfigKey], id, secret):
			// Stale: made before the content changed; the controller
			// signs it again.
			last = fmt.Sprintf("the signature %s in %s does not match its content", key, where)
		case err == nil:
			return clusterInfoServer(cm)
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return serverInfo{}, fmt.Errorf("cluster-info is not signed with token %s after %v: %s", id, clusterInfoWait, last)
			}
			return serverInfo{}, ctx.Err()
		case <-ticker.C:
		}
	}
}

func isLoopback(server string) bool {
	u, err := url.Parse(server)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// list implements `tether token list`.
func (o *tokenOptions) list(ctx context.Context, stdout io.Writer) error {
	client, _, err := o.client()
	if err != nil {
		return err
	}
	secrets, err := client.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("type", string(bootstrapapi.SecretTypeBootstrapToken)).String(),
	})
	if err != nil {
		return fmt.Errorf("list secrets in %s: %w", metav1.NamespaceSystem, err)
	}
	var rows [][]string
	now := time.Now()
	for i := range secrets.Items {
		s := &secrets.Items[i]
		id, ok := bootstrapsecrets.ParseName(s.Name)
		if !ok || s.Type != bootstrapapi.SecretTypeBootstrapToken {
			continue
		}
		rows = append(rows, tokenRow(s, id, now))
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(stdout, "No bootstrap tokens found.")
		return err
	}
	slices.SortFunc(rows, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	tw := tabwriter.NewWriter(stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "TOKEN\tTTL\tEXPIRES\tUSAGES\tDESCRIPTION\tEXTRA GROUPS")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// tokenRow returns the columns of one token; never its secret.
func tokenRow(s *corev1.Secret, id string, now time.Time) []string {
	ttl, expires := "<forever>", "<never>"
	if exp := bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenExpirationKey); exp != "" {
		expires = printable(exp)
		switch t, err := time.Parse(time.RFC3339, exp); {
		case err != nil:
			ttl = "<invalid>"
		case !t.After(now):
			ttl = "<expired>"
		default:
			ttl = duration.HumanDuration(t.Sub(now))
		}
	}
	var usages []string
	for k, v := range s.Data {
		if u, ok := strings.CutPrefix(k, bootstrapapi.BootstrapTokenUsagePrefix); ok && string(v) == "true" {
			usages = append(usages, u)
		}
	}
	slices.Sort(usages)
	return []string{
		id + ".****",
		ttl,
		expires,
		orNone(strings.Join(usages, ",")),
		orNone(printable(bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenDescriptionKey))),
		orNone(printable(bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenExtraGroupsKey))),
	}
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// printable replaces control characters (which would break the table) by
// spaces.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// delete implements `tether token delete`.
func (o *tokenOptions) delete(ctx context.Context, stdout io.Writer, args []string) error {
	type target struct{ id, secret string }
	var targets []target
	var errs []error
	for _, a := range args {
		switch {
		case bootstraputil.IsValidBootstrapToken(a):
			id, secret, _ := strings.Cut(a, ".")
			targets = append(targets, target{id, secret})
		case bootstraputil.IsValidBootstrapTokenID(a):
			targets = append(targets, target{id: a})
		default:
			// Never echo what may be a mistyped secret.
			shown := a
			if before, _, found := strings.Cut(a, "."); found {
				shown = before + ".…"
			}
			errs = append(errs, fmt.Errorf("%q is neither a token ID ([a-z0-9]{6}) nor a token ([a-z0-9]{6}.[a-z0-9]{16}); \"tether token list\" shows the IDs", shown))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	client, _, err := o.client()
	if err != nil {
		return err
	}
	for _, t := range targets {
		if err := deleteToken(ctx, client, t.id, t.secret); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(stdout, "Deleted bootstrap token %s.\n", t.id)
	}
	return errors.Join(errs...)
}

// deleteToken deletes the token with ID id; if secret is not empty, only
// if it is that token's secret.
func deleteToken(ctx context.Context, client kubernetes.Interface, id, secret string) error {
	name := bootstraputil.BootstrapTokenSecretName(id)
	notFound := fmt.Errorf("bootstrap token %s not found (no secret %s/%s); \"tether token list\" shows the tokens that exist", id, metav1.NamespaceSystem, name)
	secrets := client.CoreV1().Secrets(metav1.NamespaceSystem)
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return notFound
	}
	if err != nil {
		return fmt.Errorf("bootstrap token %s: read secret %s/%s: %w", id, metav1.NamespaceSystem, name, err)
	}
	if s.Type != bootstrapapi.SecretTypeBootstrapToken {
		return fmt.Errorf("secret %s/%s has type %q, not %q: it is not a bootstrap token, so it is left alone", metav1.NamespaceSystem, name, s.Type, bootstrapapi.SecretTypeBootstrapToken)
	}
	if secret != "" && subtle.ConstantTimeCompare(s.Data[bootstrapapi.BootstrapTokenSecretKey], []byte(secret)) != 1 {
		return fmt.Errorf("bootstrap token %s: the secret part does not match the stored token; to delete token %s anyway, pass only its ID", id, id)
	}
	opts := metav1.DeleteOptions{}
	if s.UID != "" {
		uid := s.UID
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err = secrets.Delete(ctx, name, opts)
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return notFound
	case apierrors.IsConflict(err):
		return fmt.Errorf("bootstrap token %s was deleted and created again while deleting it; check \"tether token list\" and run the command again", id)
	default:
		return fmt.Errorf("bootstrap token %s: delete secret %s/%s: %w", id, metav1.NamespaceSystem, name, err)
	}
}

// shortDuration prints 1h rather than 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
