// Package bootstrap joins a node to a tether cluster (path P0) and gives it
// its first client credentials by TLS bootstrapping (path P2).
//
// A node starts with three things from `tether token create`: the server
// URL, a bootstrap token "<id>.<secret>" and the pin of the cluster's server
// CA (sha256 of its SubjectPublicKeyInfo). Join then
//
//  1. reads the kube-public/cluster-info ConfigMap without trusting the
//     server, checks the JWS signature the server made over it with the
//     token's secret (proving the server knows the token), and checks the
//     CA it names against the pin (proving it is the right cluster); from
//     then on the server's certificate is verified against that CA;
//  2. generates an ECDSA P-256 key on this machine (it never leaves it) and
//     submits a CSR for signer kubernetes.io/kube-apiserver-client-kubelet
//     with subject CN=system:node:<name>, O=system:nodes, authenticated by
//     the token;
//  3. waits for the server's approver and signer to issue the certificate;
//  4. writes a kubeconfig and the key and certificate under the data
//     directory (mode 0600). The kubeconfig names the certificate file
//     that the rotating certificate manager replaces, so it stays valid.
//
// Later runs reuse those credentials without a token. If the certificate
// expired meanwhile (the agent was down longer than it lived), Join joins
// again when it has a token, and otherwise fails with an ExpiredError that
// says when it expired and how to rejoin, instead of retrying. Rejoin
// discards valid credentials too (after the node was revoked).
package bootstrap

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/certificate/csr"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"tether/kubelet/certificate"
	"tether/pki"
)

// Files under the data directory.
const (
	// KubeconfigFile is the node's kubeconfig.
	KubeconfigFile = "kubeconfig"
	// PKIDir holds the node's key pairs (see package certificate).
	PKIDir = "pki"
)

// Steps is the number of progress steps of a join, counting the kubelet's
// registration as the last.
const Steps = 5

// Config configures Join.
type Config struct {
	// Server is the API server's https URL. Required to join; when the data
	// directory already holds credentials it may be empty, and otherwise
	// must name the server those credentials are for.
	Server string
	// Token is the bootstrap token, "<id>.<secret>". Required to join
	// unless GetToken is set; not used when valid credentials exist.
	Token string
	// GetToken, if Token is empty, is called for a token when one is
	// needed (the local agent of `tether server` creates one). May be nil.
	GetToken func(ctx context.Context) (string, error)
	// CACertHashes are the accepted pins of the server CA, each
	// "sha256:<hex>". At least one is required to join unless
	// InsecureSkipCAPin.
	CACertHashes []string
	// InsecureSkipCAPin trusts whatever CA cluster-info names when
	// CACertHashes is empty, after a loud warning. Only for tests and
	// labs: it lets anyone on the network path impersonate the cluster.
	InsecureSkipCAPin bool
	// Rejoin discards the credentials in DataDir and joins again with the
	// token (after the node's certificate was revoked, or to move it to
	// another cluster).
	Rejoin bool
	// NodeName is the node's name. Required.
	NodeName string
	// DataDir holds the kubeconfig and the pki directory. Required.
	DataDir string
	// SignatureWait is how long Join keeps re-reading cluster-info while it
	// is missing or carries no signature for the token: a token created a
	// moment ago is signed by the server within about a second. If 0, Join
	// fails at once.
	SignatureWait time.Duration
	// ApprovalTimeout bounds the wait for the CSR to be approved and
	// signed. If 0, five minutes.
	ApprovalTimeout time.Duration
	// Progress receives one line per step. If nil, progress is discarded.
	Progress io.Writer
	// Logger receives debug messages. If nil, they are discarded.
	Logger *slog.Logger
}

// Result describes the node's credentials after Join.
type Result struct {
	// Server is the API server's URL.
	Server string
	// CAPEM is the server CA bundle to verify the server with.
	CAPEM []byte
	// Kubeconfig is the path of the node's kubeconfig.
	Kubeconfig string
	// PKIDir holds the key pairs; the client pair has prefix
	// certificate.ClientPairPrefix.
	PKIDir string
	// Certificate is the node's current client certificate.
	Certificate *x509.Certificate
	// Joined is true when Join obtained new credentials, false when it
	// reused existing ones.
	Joined bool
}

// Join makes sure the node has valid client credentials in cfg.DataDir,
// obtaining them with the bootstrap token if needed (see the package
// documentation), and returns them.
func Join(ctx context.Context, cfg Config) (*Result, error) {
	var errs []error
	if cfg.NodeName == "" {
		errs = append(errs, errors.New("bootstrap: empty node name"))
	}
	if cfg.DataDir == "" {
		errs = append(errs, errors.New("bootstrap: empty data directory"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ApprovalTimeout <= 0 {
		cfg.ApprovalTimeout = 5 * time.Minute
	}
	j := &joiner{cfg: cfg, log: cfg.Logger.With("component", "bootstrap", "node", cfg.NodeName)}
	return j.join(ctx)
}

type joiner struct {
	cfg Config
	log *slog.Logger
}

func (j *joiner) progress(format string, args ...any) {
	fmt.Fprintf(j.cfg.Progress, format+"\n", args...)
}

func (j *joiner) join(ctx context.Context) (*Result, error) {
	cfg := j.cfg
	dir := cfg.DataDir
	creds, err := LoadCredentials(dir)
	switch {
	case err != nil && !cfg.Rejoin:
		return nil, fmt.Errorf("%w; to discard them and join again, start the agent with --rejoin and a fresh --token", err)
	case err != nil:
		j.log.Info("discarding unreadable credentials", "err", err)
	case creds != nil && !cfg.Rejoin:
		if creds.NodeName != cfg.NodeName {
			return nil, fmt.Errorf("bootstrap: the credentials in %s are for node %q, not %q; use --node-name %s, another --data-dir, or --rejoin with a fresh --token", dir, creds.NodeName, cfg.NodeName, creds.NodeName)
		}
		if cfg.Server != "" && !sameURL(cfg.Server, creds.Server) {
			return nil, fmt.Errorf("bootstrap: the credentials in %s are for the server %s, not %s; use another --data-dir, or --rejoin with a fresh --token to move this node", dir, creds.Server, cfg.Server)
		}
		if time.Now().Before(creds.Certificate.NotAfter) {
			note := ""
			if cfg.Token != "" {
				note = " (--token is not needed and was not used)"
			}
			j.progress("using existing credentials in %s: client certificate for %s valid until %s%s",
				dir, creds.Certificate.Subject.CommonName, creds.Certificate.NotAfter.UTC().Format(time.RFC3339), note)
			return &Result{Server: creds.Server, CAPEM: creds.CAPEM, Kubeconfig: creds.Kubeconfig, PKIDir: creds.PKIDir, Certificate: creds.Certificate}, nil
		}
		if cfg.Token == "" && cfg.GetToken == nil {
			return nil, &ExpiredError{Node: cfg.NodeName, NotAfter: creds.Certificate.NotAfter, DataDir: dir}
		}
		j.progress("the client certificate of node %s expired at %s while the agent was down; joining again with the token",
			cfg.NodeName, creds.Certificate.NotAfter.UTC().Format(time.RFC3339))
		if cfg.Server == "" {
			cfg.Server = creds.Server
		}
	}

	if cfg.Server == "" {
		return nil, fmt.Errorf("bootstrap: %s holds no credentials; --server, --token and --ca-cert-hash are needed to join a cluster (`tether token create` on the server prints them)", dir)
	}
	token := cfg.Token
	if token == "" && cfg.GetToken != nil {
		if token, err = cfg.GetToken(ctx); err != nil {
			return nil, fmt.Errorf("bootstrap: get a bootstrap token: %w", err)
		}
	}
	if token == "" {
		return nil, fmt.Errorf("bootstrap: %s holds no credentials; --token is needed to join (%s)", dir, rejoinHint)
	}
	if !bootstraputil.IsValidBootstrapToken(token) {
		return nil, errors.New("bootstrap: the token is not of the form <6 characters [a-z0-9]>.<16 characters [a-z0-9]>")
	}
	tokenID, tokenSecret, _ := strings.Cut(token, ".")

	// Step 1: cluster-info, verified by the token and the pin.
	ca, err := j.discover(ctx, cfg.Server, tokenID, tokenSecret)
	if err != nil {
		return nil, err
	}
	if ca.Pinned {
		j.progress("[1/%d] fetched cluster-info from %s and verified the CA pin %s", Steps, cfg.Server, ca.Pin)
	} else {
		j.progress("WARNING: --insecure-skip-ca-pin: trusting the CA %s that %s presented WITHOUT checking it against a pin. "+
			"Anyone on the network path could have impersonated the cluster and will receive this node's requests. Use --ca-cert-hash.", ca.Pin, cfg.Server)
		j.log.Warn("trusting the cluster CA without a pin (--insecure-skip-ca-pin)", "pin", ca.Pin, "server", cfg.Server)
		j.progress("[1/%d] fetched cluster-info from %s; its CA %s is trusted WITHOUT a pin", Steps, cfg.Server, ca.Pin)
	}

	// From here on the server is verified with the CA.
	client, err := kubernetes.NewForConfig(&rest.Config{
		Host:            cfg.Server,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca.PEM},
		UserAgent:       "tether-agent/bootstrap",
	})
	if err != nil {
		return nil, fmt.Errorf("bootstrap: client for %s: %w", cfg.Server, err)
	}

	// Step 2: a key made here and a CSR for it.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, certificate.ClientTemplate(cfg.NodeName), key)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: create CSR: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := client.CertificatesV1().CertificateSigningRequests().Create(cctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "node-csr-" + cfg.NodeName + "-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
			SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
			Usages:     certificate.ClientUsages,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, j.serverError(err, cfg.Server, tokenID, "submit the node's certificate signing request")
	}
	j.progress("[2/%d] generated the node's ECDSA P-256 key and submitted CSR %s for %s%s (signer %s)",
		Steps, req.Name, certificate.UserPrefix, cfg.NodeName, req.Spec.SignerName)

	// Step 3: wait for approval and the certificate.
	certPEM, err := j.waitForCertificate(ctx, client, req)
	if err != nil {
		return nil, err
	}
	cert, err := checkIssued(certPEM, key, cfg.NodeName)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: CSR %s: %w", req.Name, err)
	}
	j.progress("[3/%d] CSR %s approved and signed; client certificate valid until %s", Steps, req.Name, cert.NotAfter.UTC().Format(time.RFC3339))

	// Step 4: write the credentials.
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	res, err := writeCredentials(dir, cfg.Server, ca.PEM, certPEM, keyPEM, cfg.NodeName, j.cfg.Logger)
	if err != nil {
		return nil, err
	}
	res.Certificate = cert
	j.progress("[4/%d] wrote %s and the node's key and certificate in %s (mode 0600)", Steps, res.Kubeconfig, res.PKIDir)
	return res, nil
}

// discover fetches and verifies cluster-info, re-reading it for up to
// SignatureWait while it is missing or unsigned for the token.
func (j *joiner) discover(ctx context.Context, server, tokenID, tokenSecret string) (*trustedCA, error) {
	deadline := time.Now().Add(j.cfg.SignatureWait)
	waiting := false
	for {
		ca, err := j.discoverOnce(ctx, server, tokenID, tokenSecret)
		var te *TokenError
		retry := errors.Is(err, errNoClusterInfo) || (errors.As(err, &te) && te.Reason == reasonUnsigned)
		if err == nil || !retry || !time.Now().Before(deadline) {
			return ca, err
		}
		if !waiting {
			waiting = true
			j.progress("waiting for %s to sign cluster-info for token %s…", server, tokenID)
		}
		j.log.Debug("cluster-info not signed for the token yet", "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bootstrap: fetch cluster-info: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (j *joiner) discoverOnce(ctx context.Context, server, tokenID, tokenSecret string) (*trustedCA, error) {
	cm, err := fetchClusterInfo(ctx, server)
	if err != nil {
		return nil, err
	}
	ca, err := verifyClusterInfo(cm, tokenID, tokenSecret, j.cfg.CACertHashes, j.cfg.InsecureSkipCAPin)
	var pe *PinError
	if errors.As(err, &pe) {
		pe.Server = server
	}
	return ca, err
}

// waitForCertificate waits for the CSR to be approved and signed, printing
// progress every ten seconds, for at most ApprovalTimeout.
func (j *joiner) waitForCertificate(ctx context.Context, client kubernetes.Interface, req *certificatesv1.CertificateSigningRequest) ([]byte, error) {
	wctx, cancel := context.WithTimeout(ctx, j.cfg.ApprovalTimeout)
	defer cancel()
	type result struct {
		cert []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := csr.WaitForCertificate(wctx, client, req.Name, req.UID)
		done <- result{c, err}
	}()
	start := time.Now()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			switch {
			case r.err == nil:
				return r.cert, nil
			case ctx.Err() != nil:
				return nil, fmt.Errorf("bootstrap: wait for CSR %s: %w", req.Name, ctx.Err())
			case wctx.Err() != nil:
				return nil, fmt.Errorf("bootstrap: CSR %s was not approved and signed within %s; is the server's CSR approver running? (see `kubectl get csr %s`)", req.Name, j.cfg.ApprovalTimeout, req.Name)
			default:
				return nil, fmt.Errorf("bootstrap: CSR %s: %w", req.Name, r.err)
			}
		case <-tick.C:
			j.progress("      waiting for CSR %s to be approved and signed (%s)…", req.Name, time.Since(start).Round(time.Second))
		}
	}
}

// serverError turns an error from a request authenticated by the token
// into one that says what to do.
func (j *joiner) serverError(err error, server, tokenID, what string) error {
	var verr *tls.CertificateVerificationError
	switch {
	case apierrors.IsUnauthorized(err):
		return &TokenError{ID: tokenID, Reason: "the API server rejected it (401 Unauthorized): the token is expired or unknown"}
	case apierrors.IsForbidden(err):
		return fmt.Errorf("bootstrap: %s: the token is valid but may not do that: %w", what, err)
	case errors.As(err, &verr):
		return fmt.Errorf("bootstrap: %s: %s presents a serving certificate the pinned CA does not verify (%v); it is not the cluster the CA belongs to", what, server, verr.Err)
	}
	return fmt.Errorf("bootstrap: %s: %w", what, err)
}

// checkIssued parses the issued certificate and checks that it is for key
// and names the node.
func checkIssued(certPEM []byte, key *ecdsa.PrivateKey, node string) (*x509.Certificate, error) {
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("the issued certificate is not for the node's key")
	}
	if want := certificate.UserPrefix + node; cert.Subject.CommonName != want {
		return nil, fmt.Errorf("the issued certificate is for %q, not %q", cert.Subject.CommonName, want)
	}
	return cert, nil
}

// Credentials are a node's stored client credentials.
type Credentials struct {
	// Server and CAPEM are the cluster's URL and server CA bundle.
	Server string
	CAPEM  []byte
	// Kubeconfig and PKIDir are the paths of the kubeconfig and the key
	// pair directory.
	Kubeconfig, PKIDir string
	// Certificate is the current client certificate.
	Certificate *x509.Certificate
	// NodeName is the node the certificate is for.
	NodeName string
}

// LoadCredentials reads the credentials in dataDir. It returns nil and no
// error when dataDir holds none, and an error that names the file when they
// are incomplete or unreadable.
func LoadCredentials(dataDir string) (*Credentials, error) {
	path := filepath.Join(dataDir, KubeconfigFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: read the node's credentials: %w", err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		return nil, fmt.Errorf("bootstrap: %s: no current context with a cluster and a user", path)
	}
	cluster, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	if cluster.Server == "" || len(cluster.CertificateAuthorityData) == 0 {
		return nil, fmt.Errorf("bootstrap: %s: the cluster has no server or CA data", path)
	}
	if user.ClientCertificate == "" || user.ClientKey == "" {
		return nil, fmt.Errorf("bootstrap: %s: the user names no client certificate and key files", path)
	}
	pair, err := tls.LoadX509KeyPair(user.ClientCertificate, user.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: the node's client certificate (named in %s): %w", path, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %s: %w", user.ClientCertificate, err)
	}
	name, ok := strings.CutPrefix(leaf.Subject.CommonName, certificate.UserPrefix)
	if !ok {
		return nil, fmt.Errorf("bootstrap: %s: certificate for %q is not a node certificate", user.ClientCertificate, leaf.Subject.CommonName)
	}
	return &Credentials{
		Server:      cluster.Server,
		CAPEM:       cluster.CertificateAuthorityData,
		Kubeconfig:  path,
		PKIDir:      filepath.Join(dataDir, PKIDir),
		Certificate: leaf,
		NodeName:    name,
	}, nil
}

// writeCredentials replaces the pki directory with one holding the new
// client pair and writes a kubeconfig that names the pair's current file.
func writeCredentials(dataDir, server string, caPEM, certPEM, keyPEM []byte, node string, logger *slog.Logger) (*Result, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("bootstrap: create %s: %w", abs, err)
	}
	pkiDir := filepath.Join(abs, PKIDir)
	// Old pairs (an expired or revoked identity, its serving certificate)
	// must not be picked up again.
	if err := os.RemoveAll(pkiDir); err != nil {
		return nil, fmt.Errorf("bootstrap: remove old credentials: %w", err)
	}
	store, err := certificate.NewStore(pkiDir, certificate.ClientPairPrefix, logger)
	if err != nil {
		return nil, err
	}
	if _, err := store.Update(certPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("bootstrap: store the client certificate: %w", err)
	}
	pair := certificate.CurrentPath(pkiDir, certificate.ClientPairPrefix)
	user := certificate.UserPrefix + node
	kc := clientcmdapi.NewConfig()
	kc.Clusters["tether"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificate: pair, ClientKey: pair}
	kc.Contexts["tether"] = &clientcmdapi.Context{Cluster: "tether", AuthInfo: user}
	kc.CurrentContext = "tether"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: kubeconfig: %w", err)
	}
	path := filepath.Join(abs, KubeconfigFile)
	if err := pki.WriteFile(path, data); err != nil {
		return nil, err
	}
	return &Result{Server: server, CAPEM: caPEM, Kubeconfig: path, PKIDir: pkiDir, Joined: true}, nil
}

// sameURL reports whether two server URLs are the same, ignoring a
// trailing slash.
func sameURL(a, b string) bool {
	return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}
