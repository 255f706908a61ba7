package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"tether/apiserver/authn/revocation"
	"tether/pki"
)

// Defaults of `tether node`.
const (
	// nodeAdminKubeconfig is where `tether server` writes its admin
	// kubeconfig with the default --data-dir.
	nodeAdminKubeconfig = "/var/lib/tether/server/admin.kubeconfig"
	nodeRequestTimeout  = 30 * time.Second
	// nodeRevokedReason is the reason of the Denied condition given to a
	// pending request for a revoked node's certificate.
	nodeRevokedReason = "NodeRevoked"
)

// newClientForNode returns an admin client for the kubeconfig file(s) at
// kubeconfig (a path, or a list joined like $KUBECONFIG). Tests replace it.
var newClientForNode = loadNodeClient

// nodeSigners are the signers whose certificates can carry a node's
// identity: the two a node asks for itself, and kube-apiserver-client, with
// which an administrator can issue CN=system:node:<name> too.
var nodeSigners = []string{
	certificatesv1.KubeAPIServerClientKubeletSignerName,
	certificatesv1.KubeletServingSignerName,
	certificatesv1.KubeAPIServerClientSignerName,
}

// nodeOptions are the flags of `tether node` and its subcommands.
type nodeOptions struct {
	Kubeconfig string
	Serials    []string
}

func newNodeCommand(stdout, stderr io.Writer) *cobra.Command {
	o := &nodeOptions{}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Manage the cluster's nodes",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.PersistentFlags().StringVar(&o.Kubeconfig, "kubeconfig", "",
		"kubeconfig of a cluster admin (default: $KUBECONFIG, else "+nodeAdminKubeconfig+")")

	revoke := &cobra.Command{
		Use:   "revoke <node name>",
		Short: "Revoke every certificate of a node and remove it from the cluster",
		Long: `Revoke a node: put every certificate issued to it on the API server's
deny-list (ConfigMap kube-system/tether-revoked-certificates), deny its
pending certificate requests, and delete its Node object.

The certificates are found through the certificate signing requests that
produced them: every issued request whose certificate names
CN=system:node:<node name>. Certificates whose request has been deleted
cannot be found that way; name them with --serial.

From then on, every request of the node's agent gets 401 Unauthorized, its
open watches are cut off, and the agent stops, saying it was revoked. To
bring the machine back, join it again with a fresh token.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.revoke(cmd.Context(), stdout, stderr, args[0])
		},
	}
	revoke.Flags().StringArrayVar(&o.Serials, "serial", nil,
		"also revoke the certificate with this serial number, in hex as openssl prints it (repeatable)")
	cmd.AddCommand(revoke)
	return cmd
}

// kubeconfig returns the kubeconfig path(s) to use and how they were
// chosen, for error messages.
func (o *nodeOptions) kubeconfig() (path, source string) {
	if o.Kubeconfig != "" {
		return o.Kubeconfig, "--kubeconfig"
	}
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		return env, "$" + clientcmd.RecommendedConfigPathEnvVar
	}
	return nodeAdminKubeconfig, "the default --kubeconfig"
}

func loadNodeClient(kubeconfig string) (kubernetes.Interface, error) {
	rules := &clientcmd.ClientConfigLoadingRules{}
	if paths := filepath.SplitList(kubeconfig); len(paths) == 1 {
		rules.ExplicitPath = paths[0] // a missing file is an error, not an empty config
	} else {
		rules.Precedence = paths
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = nodeRequestTimeout
	}
	return kubernetes.NewForConfig(cfg)
}

// revokedCert is one certificate being revoked and where it was found.
type revokedCert struct {
	serial   *big.Int
	source   string // "CSR <name> (<signer>)" or "--serial"
	notAfter time.Time
}

func (o *nodeOptions) revoke(ctx context.Context, stdout, stderr io.Writer, name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("node name %q is not valid: %s", name, strings.Join(errs, "; "))
	}
	var certs []revokedCert
	for _, s := range o.Serials {
		serial, err := parseNodeSerial(s)
		if err != nil {
			return err
		}
		certs = append(certs, revokedCert{serial: serial, source: "--serial"})
	}
	path, source := o.kubeconfig()
	client, err := newClientForNode(path)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s (from %s): %w; pass --kubeconfig with a cluster admin's kubeconfig (on the server: %s, readable by root)",
			path, source, err, nodeAdminKubeconfig)
	}
	user := "system:node:" + name

	found, pending, err := nodeCertificates(ctx, client, user, stderr)
	if err != nil {
		return err
	}
	certs = mergeRevoked(certs, found)
	if len(certs) == 0 {
		return fmt.Errorf("found no certificate issued to node %s (no issued certificate signing request names %s): nothing was revoked and the Node was left in place; "+
			"if its requests have been deleted, pass each certificate's serial number with --serial", name, user)
	}
	reason := fmt.Sprintf("node %s revoked %s", name, time.Now().UTC().Format(time.RFC3339))
	if err := revocation.Add(ctx, client, reason, serialsOf(certs)...); err != nil {
		return err
	}

	// A request approved or signed while we listed would give the node a
	// certificate not on the list: deny the pending ones, then look again.
	for _, csr := range pending {
		if err := denyNodeRequest(ctx, client, csr, name); err != nil {
			fmt.Fprintf(stderr, "warning: could not deny pending certificate signing request %s: %v\n", csr.Name, err)
		}
	}
	again, _, err := nodeCertificates(ctx, client, user, io.Discard)
	if err != nil {
		return err
	}
	if more := mergeRevoked(certs, again)[len(certs):]; len(more) > 0 {
		if err := revocation.Add(ctx, client, reason, serialsOf(more)...); err != nil {
			return err
		}
		certs = append(certs, more...)
	}

	nodeDeleted := true
	err = client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		nodeDeleted = false
	case err != nil:
		return fmt.Errorf("certificates revoked, but delete node %s: %w", name, err)
	}

	fmt.Fprintf(stdout, "Revoked %d certificate(s) of node %s:\n", len(certs), name)
	for _, c := range certs {
		line := fmt.Sprintf("  serial %s  from %s", c.serial.Text(16), c.source)
		if !c.notAfter.IsZero() {
			line += ", valid until " + c.notAfter.UTC().Format(time.RFC3339)
		}
		fmt.Fprintln(stdout, line)
	}
	if len(pending) > 0 {
		fmt.Fprintf(stdout, "Denied %d pending certificate signing request(s) for %s.\n", len(pending), user)
	}
	if nodeDeleted {
		fmt.Fprintf(stdout, "Deleted Node %s.\n", name)
	} else {
		fmt.Fprintf(stdout, "Node %s did not exist.\n", name)
	}
	fmt.Fprintf(stdout, "The node's agent now gets 401 Unauthorized on every request, its open requests to the API server are cut off, "+
		"and it stops, saying its certificate was revoked. To bring the machine back, join it again with a fresh token (tether token create).\n")
	return nil
}

// nodeCertificates lists the certificate signing requests of the node
// signers and returns the certificates issued for user, and the requests
// for user that are neither decided nor issued. Requests it cannot read are
// reported to warn and skipped.
func nodeCertificates(ctx context.Context, client kubernetes.Interface, user string, warn io.Writer) ([]revokedCert, []*certificatesv1.CertificateSigningRequest, error) {
	list, err := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("list certificate signing requests: %w", err)
	}
	var (
		certs   []revokedCert
		pending []*certificatesv1.CertificateSigningRequest
	)
	for i := range list.Items {
		csr := &list.Items[i]
		if !slices.Contains(nodeSigners, csr.Spec.SignerName) {
			continue
		}
		if len(csr.Status.Certificate) > 0 {
			cert, err := pki.ParseCertPEM(csr.Status.Certificate)
			if err != nil {
				fmt.Fprintf(warn, "warning: skipping certificate signing request %s: %v\n", csr.Name, err)
				continue
			}
			if cert.Subject.CommonName == user {
				certs = append(certs, revokedCert{
					serial:   cert.SerialNumber,
					source:   fmt.Sprintf("CSR %s (%s)", csr.Name, csr.Spec.SignerName),
					notAfter: cert.NotAfter,
				})
			}
			continue
		}
		if nodeRequestUndecided(csr) && requestSubject(csr) == user {
			pending = append(pending, csr)
		}
	}
	return certs, pending, nil
}

// nodeRequestUndecided reports whether csr has neither an Approved, a
// Denied nor a Failed condition.
func nodeRequestUndecided(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return false
		}
	}
	return true
}

// requestSubject returns the CN a request asks for, or "" if it cannot be
// read.
func requestSubject(csr *certificatesv1.CertificateSigningRequest) string {
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil {
		return ""
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return ""
	}
	return req.Subject.CommonName
}

func denyNodeRequest(ctx context.Context, client kubernetes.Interface, csr *certificatesv1.CertificateSigningRequest, name string) error {
	csr = csr.DeepCopy()
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type:           certificatesv1.CertificateDenied,
		Status:         corev1.ConditionTrue,
		Reason:         nodeRevokedReason,
		Message:        fmt.Sprintf("node %s was revoked with tether node revoke", name),
		LastUpdateTime: metav1.Now(),
	})
	_, err := client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// mergeRevoked returns have followed by the certificates of add whose
// serial is not in have yet.
func mergeRevoked(have, add []revokedCert) []revokedCert {
	out := slices.Clone(have)
	for _, c := range add {
		if !slices.ContainsFunc(out, func(o revokedCert) bool { return o.serial.Cmp(c.serial) == 0 }) {
			out = append(out, c)
		}
	}
	return out
}

func serialsOf(certs []revokedCert) []*big.Int {
	s := make([]*big.Int, len(certs))
	for i, c := range certs {
		s[i] = c.serial
	}
	return s
}

// parseNodeSerial reads a serial number in hex: "3f2a…", "0x3F2A…" or
// "3f:2a:…" as openssl prints it.
func parseNodeSerial(s string) (*big.Int, error) {
	h := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	h = strings.TrimPrefix(strings.TrimPrefix(h, "0x"), "0X")
	n, ok := new(big.Int).SetString(h, 16)
	if h == "" || !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("--serial %q is not a positive hexadecimal serial number (for example 3f:2a:9c or 3f2a9c)", s)
	}
	return n, nil
}
