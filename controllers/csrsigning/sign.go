package csrsigning

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"tether/controllers/internal/certrequest"
	"tether/pki"
)

// Identities of nodes, as the client-certificate authenticator reads them.
const (
	nodeUserPrefix = "system:node:"
	nodesGroup     = "system:nodes"
)

// signers are the signer names this controller issues for.
var signers = []string{
	certificatesv1.KubeAPIServerClientSignerName,
	certificatesv1.KubeAPIServerClientKubeletSignerName,
	certificatesv1.KubeletServingSignerName,
}

// signable reports whether csr is for one of our signers, approved, not
// denied, not failed and not issued yet.
func signable(csr *certificatesv1.CertificateSigningRequest) bool {
	if !slices.Contains(signers, csr.Spec.SignerName) || len(csr.Status.Certificate) > 0 {
		return false
	}
	approved := false
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return false
		case certificatesv1.CertificateApproved:
			approved = c.Status == corev1.ConditionTrue
		}
	}
	return approved
}

// A requestError says why a request cannot be signed: the request itself
// is wrong, and trying again will not help. It becomes a Failed condition.
type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{msg: fmt.Sprintf(format, args...)}
}

// profile is what a signer issues: which CA signs, the extended key usage
// its certificates carry, and the key usages a request may list.
type profile struct {
	ca       *pki.CA
	usage    x509.ExtKeyUsage
	required certificatesv1.KeyUsage
	allowed  []certificatesv1.KeyUsage
	check    func(req *x509.CertificateRequest) error
}

// issuer signs approved requests for the three built-in signers.
type issuer struct {
	clientCA, serverCA *pki.CA
	maxDuration        time.Duration
}

func (s *issuer) profile(signer string) (profile, bool) {
	clientUsages := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageClientAuth}
	switch signer {
	case certificatesv1.KubeAPIServerClientSignerName:
		return profile{ca: s.clientCA, usage: x509.ExtKeyUsageClientAuth, required: certificatesv1.UsageClientAuth, allowed: clientUsages, check: checkClient}, true
	case certificatesv1.KubeAPIServerClientKubeletSignerName:
		return profile{ca: s.clientCA, usage: x509.ExtKeyUsageClientAuth, required: certificatesv1.UsageClientAuth, allowed: clientUsages, check: checkKubeletClient}, true
	case certificatesv1.KubeletServingSignerName:
		return profile{
			ca: s.serverCA, usage: x509.ExtKeyUsageServerAuth, required: certificatesv1.UsageServerAuth,
			allowed: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth},
			check:   checkKubeletServing,
		}, true
	}
	return profile{}, false
}

// validity is how long a certificate for csr is valid: what the request
// asks for in spec.expirationSeconds, at most maxDuration, and maxDuration
// when it asks for nothing.
func (s *issuer) validity(csr *certificatesv1.CertificateSigningRequest) time.Duration {
	if e := csr.Spec.ExpirationSeconds; e != nil {
		if d := time.Duration(*e) * time.Second; d > 0 && d < s.maxDuration {
			return d
		}
	}
	return s.maxDuration
}

// sign issues the certificate csr asks for. The subject is the request's
// CN and O, the subject alternative names its DNS names and IP addresses,
// the extended key usage the signer's, the key the request's (whose
// signature is checked). An error of type *requestError means the request
// cannot be signed.
func (s *issuer) sign(csr *certificatesv1.CertificateSigningRequest) (*x509.Certificate, error) {
	p, ok := s.profile(csr.Spec.SignerName)
	if !ok {
		return nil, badRequest("signer %q is not served here", csr.Spec.SignerName)
	}
	req, err := certrequest.Parse(csr.Spec.Request)
	if err != nil {
		return nil, &requestError{msg: err.Error()}
	}
	for _, u := range csr.Spec.Usages {
		if !slices.Contains(p.allowed, u) {
			return nil, badRequest("usage %q is not allowed for signer %s", u, csr.Spec.SignerName)
		}
	}
	if !slices.Contains(csr.Spec.Usages, p.required) {
		return nil, badRequest("signer %s issues only %q certificates, and the request does not list that usage", csr.Spec.SignerName, p.required)
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return nil, badRequest("email and URI subject alternative names are not supported by signer %s", csr.Spec.SignerName)
	}
	if err := p.check(req); err != nil {
		return nil, err
	}
	cert, err := p.ca.Issue(pki.CertRequest{
		CommonName:   req.Subject.CommonName,
		Organization: req.Subject.Organization,
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPAddresses,
		Usages:       []x509.ExtKeyUsage{p.usage},
		Validity:     s.validity(csr),
	}, req.PublicKey)
	if err != nil {
		return nil, &requestError{msg: err.Error()}
	}
	return cert, nil
}

// checkClient: any user may be named, but someone must be.
func checkClient(req *x509.CertificateRequest) error {
	if req.Subject.CommonName == "" {
		return badRequest("subject CN is empty: a client certificate names its user in CN")
	}
	return nil
}

// checkKubeletClient accepts only a node identity and no SANs. The
// approver checks the same; the signer checks again because an
// administrator may approve by hand.
func checkKubeletClient(req *x509.CertificateRequest) error {
	if err := checkNodeSubject(req); err != nil {
		return err
	}
	if len(req.DNSNames) > 0 || len(req.IPAddresses) > 0 {
		return badRequest("a node client certificate has no subject alternative names")
	}
	return nil
}

// checkKubeletServing accepts only a node identity with at least one DNS
// or IP SAN.
func checkKubeletServing(req *x509.CertificateRequest) error {
	if err := checkNodeSubject(req); err != nil {
		return err
	}
	if len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return badRequest("a kubelet serving certificate needs at least one DNS or IP subject alternative name")
	}
	return nil
}

func checkNodeSubject(req *x509.CertificateRequest) error {
	if name, ok := strings.CutPrefix(req.Subject.CommonName, nodeUserPrefix); !ok || name == "" {
		return badRequest("subject CN %q is not system:node:<node name>", req.Subject.CommonName)
	}
	if o := req.Subject.Organization; len(o) != 1 || o[0] != nodesGroup {
		return badRequest("subject O %q must be exactly [%s]", o, nodesGroup)
	}
	return nil
}
