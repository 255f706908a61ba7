package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"

	"tether/pki"
)

// ClusterInfoPath is where the API server publishes cluster-info; anonymous
// clients may read it.
const ClusterInfoPath = "/api/v1/namespaces/" + metav1.NamespacePublic + "/configmaps/" + bootstrapapi.ConfigMapClusterInfo

// reasonUnsigned is the TokenError reason when cluster-info carries no
// signature for the token.
const reasonUnsigned = "the token is not valid for signing cluster-info: unknown or expired token"

// errNoClusterInfo means the server has no cluster-info (yet).
var errNoClusterInfo = errors.New("bootstrap: the server publishes no kube-public/cluster-info ConfigMap")

// fetchClusterInfo reads cluster-info from server without verifying the
// server's certificate and without credentials: this is the one request
// made before the CA is known. What it returns is trusted only after
// verifyClusterInfo.
func fetchClusterInfo(ctx context.Context, server string) (*corev1.ConfigMap, error) {
	client := &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			// The server is not trusted yet: the JWS signature and the CA
			// pin check what it returns.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
		},
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+ClusterInfoPath, nil)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: fetch cluster-info from %s: %w", server, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: fetch cluster-info from %s: %w", server, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("bootstrap: fetch cluster-info from %s: %w", server, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w at %s", errNoClusterInfo, server)
	default:
		return nil, fmt.Errorf("bootstrap: fetch cluster-info from %s: %s: %s", server, resp.Status, strings.TrimSpace(string(body)))
	}
	cm := &corev1.ConfigMap{}
	if err := json.Unmarshal(body, cm); err != nil {
		return nil, fmt.Errorf("bootstrap: fetch cluster-info from %s: not a ConfigMap: %w", server, err)
	}
	return cm, nil
}

// trustedCA is the outcome of verifying cluster-info: the CA bundle to
// trust from now on and its pin.
type trustedCA struct {
	// PEM holds the CA certificates that matched a pin (all of them when
	// pinning was skipped).
	PEM []byte
	// Certs are the same certificates, parsed.
	Certs []*x509.Certificate
	// Pin is the pin of the first certificate in PEM.
	Pin string
	// Pinned is false when the CA was trusted without a pin.
	Pinned bool
}

// verifyClusterInfo checks cluster-info against the token and the CA pins
// and returns the CA to trust:
//
//  1. The ConfigMap must carry a detached JWS signature of its kubeconfig
//     under jws-kubeconfig-<tokenID>, made with the token's secret (HS256).
//     The server signs cluster-info for every valid token, so a missing
//     signature means the token is unknown or expired (a *TokenError); a
//     signature that does not verify means a wrong secret or a tampered
//     ConfigMap.
//  2. The kubeconfig's cluster must carry a CA bundle. Its certificates
//     whose pin is in pins are trusted; if none is, the result is a
//     *PinError naming the pins found and wanted. With no pins and
//     skipPin, every certificate of the bundle is trusted (trust on first
//     use); with neither, it is an error.
func verifyClusterInfo(cm *corev1.ConfigMap, tokenID, tokenSecret string, pins []string, skipPin bool) (*trustedCA, error) {
	kubeconfig, ok := cm.Data[bootstrapapi.KubeConfigKey]
	if !ok || kubeconfig == "" {
		return nil, fmt.Errorf("bootstrap: cluster-info has no %q entry", bootstrapapi.KubeConfigKey)
	}
	sig, ok := cm.Data[bootstrapapi.JWSSignatureKeyPrefix+tokenID]
	if !ok || sig == "" {
		return nil, &TokenError{ID: tokenID, Reason: reasonUnsigned}
	}
	if !jws.DetachedTokenIsValid(sig, kubeconfig, tokenID, tokenSecret) {
		return nil, &TokenError{ID: tokenID, Reason: "the cluster-info signature for this token does not verify: the token's secret is wrong, or cluster-info was altered on the way"}
	}

	cfg, err := clientcmd.Load([]byte(kubeconfig))
	if err != nil {
		return nil, fmt.Errorf("bootstrap: cluster-info kubeconfig: %w", err)
	}
	var caPEM []byte
	if c := cfg.Contexts[cfg.CurrentContext]; c != nil && cfg.Clusters[c.Cluster] != nil {
		caPEM = cfg.Clusters[c.Cluster].CertificateAuthorityData
	} else if len(cfg.Clusters) == 1 {
		for _, cl := range cfg.Clusters {
			caPEM = cl.CertificateAuthorityData
		}
	} else {
		return nil, fmt.Errorf("bootstrap: cluster-info kubeconfig has %d clusters and no current context", len(cfg.Clusters))
	}
	if len(caPEM) == 0 {
		return nil, errors.New("bootstrap: cluster-info kubeconfig has no certificate-authority-data")
	}
	certs, err := parseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: cluster-info CA bundle: %w", err)
	}

	if len(pins) == 0 {
		if !skipPin {
			return nil, errors.New("bootstrap: no --ca-cert-hash to check the cluster's CA against; pass the one `tether token create` printed")
		}
		return newTrustedCA(certs, false), nil
	}
	var matched []*x509.Certificate
	for _, c := range certs {
		if slices.Contains(pins, pki.Pin(c)) {
			matched = append(matched, c)
		}
	}
	if len(matched) == 0 {
		got := make([]string, len(certs))
		for i, c := range certs {
			got[i] = pki.Pin(c)
		}
		return nil, &PinError{Got: got, Want: pins}
	}
	return newTrustedCA(matched, true), nil
}

func newTrustedCA(certs []*x509.Certificate, pinned bool) *trustedCA {
	var bundle []byte
	for _, c := range certs {
		bundle = append(bundle, pki.EncodeCert(c)...)
	}
	return &trustedCA{PEM: bundle, Certs: certs, Pin: pki.Pin(certs[0]), Pinned: pinned}
}

// parseCerts returns every certificate of a PEM bundle; there is at least
// one. Blocks of other types are skipped.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("invalid certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

// NormalizePin returns pin in the canonical form "sha256:<64 lowercase
// hex>", accepting upper-case hex, or an error saying what is wrong.
func NormalizePin(pin string) (string, error) {
	hexPart, ok := strings.CutPrefix(pin, "sha256:")
	if !ok {
		return "", fmt.Errorf("CA pin %q does not start with \"sha256:\"", pin)
	}
	if len(hexPart) != 64 {
		return "", fmt.Errorf("CA pin %q: want 64 hex digits after \"sha256:\", got %d characters", pin, len(hexPart))
	}
	hexPart = strings.ToLower(hexPart)
	for _, r := range hexPart {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return "", fmt.Errorf("CA pin %q: %q is not a hex digit", pin, r)
		}
	}
	return "sha256:" + hexPart, nil
}
