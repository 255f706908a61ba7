package csrapproving

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"slices"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"tether/controllers/internal/certrequest"
)

// Identities of nodes, as the client-certificate authenticator reads them
// from a certificate's subject.
const (
	nodeUserPrefix = "system:node:"
	nodesGroup     = "system:nodes"
)

// The subresources of certificatesigningrequests whose create permission
// allows a node client certificate to be approved: nodeclient for a
// certificate of any node (bootstrap tokens hold it), selfnodeclient for a
// node renewing its own certificate.
const (
	SubresourceNodeClient     = "nodeclient"
	SubresourceSelfNodeClient = "selfnodeclient"
)

// Reasons of the conditions the approver adds. AutoApproved is the reason
// upstream's approver uses too; the denial reasons say which check failed.
const (
	ReasonApproved            = "AutoApproved"
	ReasonInvalidRequest      = "InvalidRequest"
	ReasonSubjectNotAllowed   = "SubjectNotAllowed"
	ReasonSANNotAllowed       = "SANNotAllowed"
	ReasonUsageNotAllowed     = "UsageNotAllowed"
	ReasonKeyNotAllowed       = "KeyNotAllowed"
	ReasonRequesterNotAllowed = "RequesterNotAllowed"
	ReasonNotAuthorized       = "RequesterNotAuthorized"
	ReasonNodeNotFound        = "NodeNotFound"
)

// An Action is what the approver does with a request.
type Action int

const (
	// Skip leaves the request alone: another signer's, or already decided.
	Skip Action = iota
	// Approve adds an Approved condition.
	Approve
	// Deny adds a Denied condition.
	Deny
)

func (a Action) String() string {
	switch a {
	case Skip:
		return "Skip"
	case Approve:
		return "Approve"
	case Deny:
		return "Deny"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// A Decision is the outcome for one request. Reason and Message go into
// the condition the approver adds; they are empty for Skip.
type Decision struct {
	Action  Action
	Reason  string
	Message string
}

func deny(reason, format string, args ...any) Decision {
	return Decision{Action: Deny, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// facts answers the questions a decision needs beyond the request itself.
// The controller asks the apiserver; tests answer from tables.
type facts interface {
	// node returns the named Node, or nil if there is none.
	node(ctx context.Context, name string) (*corev1.Node, error)
	// allowed reports whether the requester of csr may create
	// certificatesigningrequests/<subresource>, and why not if it may not.
	allowed(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, subresource string) (ok bool, why string, err error)
}

// decide decides on one request. It approves only node client certificates
// whose requester is authorized to ask for them, and node serving
// certificates that name nothing but the requesting node's own addresses;
// it denies every other request to those two signers, and skips requests
// to any other signer and requests that are already decided. An error
// means a fact could not be learned; the caller tries again later.
func decide(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, f facts) (Decision, error) {
	if decided(csr) {
		return Decision{Action: Skip}, nil
	}
	switch csr.Spec.SignerName {
	case certificatesv1.KubeAPIServerClientKubeletSignerName:
		return decideClient(ctx, csr, f)
	case certificatesv1.KubeletServingSignerName:
		return decideServing(ctx, csr, f)
	}
	return Decision{Action: Skip}, nil
}

// decided reports whether csr is approved, denied, failed or issued: no
// longer the approver's business.
func decided(csr *certificatesv1.CertificateSigningRequest) bool {
	if len(csr.Status.Certificate) > 0 {
		return true
	}
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return true
		}
	}
	return false
}

// decideClient decides on a request to kubernetes.io/kube-apiserver-client-kubelet.
func decideClient(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, f facts) (Decision, error) {
	req, err := certrequest.Parse(csr.Spec.Request)
	if err != nil {
		return deny(ReasonInvalidRequest, "%v", err), nil
	}
	if d, ok := checkNodeSubject(req.Subject); !ok {
		return d, nil
	}
	if sans := listSANs(req); len(sans) > 0 {
		return deny(ReasonSANNotAllowed, "a node client certificate has no subject alternative names; the request has %s", strings.Join(sans, ", ")), nil
	}
	if d, ok := checkUsages(csr.Spec.Usages, "node client",
		[]certificatesv1.KeyUsage{certificatesv1.UsageClientAuth},
		[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment}); !ok {
		return d, nil
	}
	if d, ok := checkKey(req.PublicKey); !ok {
		return d, nil
	}

	// The permission asked for depends on who asks: a node renewing its own
	// certificate needs selfnodeclient, anyone else (a bootstrap token)
	// nodeclient. As upstream, a node renewing may also use nodeclient.
	subresources := []string{SubresourceNodeClient}
	if csr.Spec.Username == req.Subject.CommonName {
		subresources = []string{SubresourceSelfNodeClient, SubresourceNodeClient}
	}
	var whys []string
	for _, sub := range subresources {
		ok, why, err := f.allowed(ctx, csr, sub)
		if err != nil {
			return Decision{}, err
		}
		if ok {
			return Decision{Action: Approve, Reason: ReasonApproved, Message: fmt.Sprintf(
				"auto-approved node client certificate for %s: requester %s may create certificatesigningrequests/%s",
				req.Subject.CommonName, csr.Spec.Username, sub)}, nil
		}
		if why != "" {
			whys = append(whys, why)
		}
	}
	perms := make([]string, len(subresources))
	for i, sub := range subresources {
		perms[i] = "certificatesigningrequests/" + sub
	}
	msg := fmt.Sprintf("requester %q (groups %v) may not create %s, which a client certificate for %s needs",
		csr.Spec.Username, csr.Spec.Groups, strings.Join(perms, " or "), req.Subject.CommonName)
	if len(whys) > 0 {
		msg += ": " + strings.Join(whys, "; ")
	}
	return deny(ReasonNotAuthorized, "%s", msg), nil
}

// decideServing decides on a request to kubernetes.io/kubelet-serving.
func decideServing(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, f facts) (Decision, error) {
	user := csr.Spec.Username
	nodeName, isNode := strings.CutPrefix(user, nodeUserPrefix)
	if !isNode || nodeName == "" || !slices.Contains(csr.Spec.Groups, nodesGroup) {
		return deny(ReasonRequesterNotAllowed,
			"requester %q is not a node: a kubelet serving certificate is approved only for the node itself (user system:node:<name> in group %s)", user, nodesGroup), nil
	}
	req, err := certrequest.Parse(csr.Spec.Request)
	if err != nil {
		return deny(ReasonInvalidRequest, "%v", err), nil
	}
	if cn := req.Subject.CommonName; cn != user {
		return deny(ReasonSubjectNotAllowed, "subject CN %q is not the requester %q: a node may ask only for its own serving certificate", cn, user), nil
	}
	if d, ok := checkNodeSubject(req.Subject); !ok {
		return d, nil
	}
	if d, ok := checkUsages(csr.Spec.Usages, "kubelet serving",
		[]certificatesv1.KeyUsage{certificatesv1.UsageServerAuth, certificatesv1.UsageDigitalSignature},
		[]certificatesv1.KeyUsage{certificatesv1.UsageKeyEncipherment}); !ok {
		return d, nil
	}
	if d, ok := checkKey(req.PublicKey); !ok {
		return d, nil
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		var sans []string
		for _, e := range req.EmailAddresses {
			sans = append(sans, "email:"+e)
		}
		for _, u := range req.URIs {
			sans = append(sans, "URI:"+u.String())
		}
		return deny(ReasonSANNotAllowed, "a kubelet serving certificate names only DNS names and IP addresses; the request has %s", strings.Join(sans, ", ")), nil
	}
	if len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return deny(ReasonSANNotAllowed, "a kubelet serving certificate needs at least one DNS or IP subject alternative name, one of node %s's addresses", nodeName), nil
	}

	node, err := f.node(ctx, nodeName)
	if err != nil {
		return Decision{}, err
	}
	if node == nil {
		return deny(ReasonNodeNotFound, "node %q does not exist: a serving certificate names only addresses of a registered Node", nodeName), nil
	}
	return matchAddresses(req, node), nil
}

// matchAddresses approves req if every SAN is exactly one of the node's
// addresses: IP SANs compared as IP addresses with the InternalIP and
// ExternalIP addresses, DNS SANs compared byte for byte with the Hostname,
// InternalDNS and ExternalDNS addresses. There is no prefix or suffix match,
// no case folding and no DNS resolution.
func matchAddresses(req *x509.CertificateRequest, node *corev1.Node) Decision {
	var ips []net.IP
	var names []string
	for _, a := range node.Status.Addresses {
		switch a.Type {
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			if ip := net.ParseIP(a.Address); ip != nil {
				ips = append(ips, ip)
			}
		case corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			names = append(names, a.Address)
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(ips, ip.Equal) {
			return deny(ReasonSANNotAllowed, "IP SAN %s is not an InternalIP or ExternalIP address of node %s (its addresses: %s)", ip, node.Name, addressList(node))
		}
	}
	for _, name := range req.DNSNames {
		if !slices.Contains(names, name) {
			return deny(ReasonSANNotAllowed, "DNS SAN %q is not a Hostname, InternalDNS or ExternalDNS address of node %s (its addresses: %s)", name, node.Name, addressList(node))
		}
	}
	return Decision{Action: Approve, Reason: ReasonApproved, Message: fmt.Sprintf(
		"auto-approved kubelet serving certificate for node %s: every subject alternative name is one of its addresses", node.Name)}
}

func addressList(node *corev1.Node) string {
	if len(node.Status.Addresses) == 0 {
		return "none"
	}
	s := make([]string, 0, len(node.Status.Addresses))
	for _, a := range node.Status.Addresses {
		s = append(s, string(a.Type)+"="+a.Address)
	}
	return strings.Join(s, ", ")
}

// checkNodeSubject checks the parts of a subject that the client-certificate
// authenticator turns into an identity: CN must be system:node:<a valid
// node name> and O exactly [system:nodes]. Other subject attributes name
// nobody, and the signer does not copy them into the certificate.
func checkNodeSubject(s pkix.Name) (Decision, bool) {
	name, ok := strings.CutPrefix(s.CommonName, nodeUserPrefix)
	if !ok || name == "" {
		return deny(ReasonSubjectNotAllowed, "subject CN %q is not system:node:<node name>", s.CommonName), false
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return deny(ReasonSubjectNotAllowed, "subject CN %q does not name a valid node: %s", s.CommonName, strings.Join(errs, "; ")), false
	}
	if len(s.Organization) != 1 || s.Organization[0] != nodesGroup {
		return deny(ReasonSubjectNotAllowed, "subject O %q must be exactly [%s]", s.Organization, nodesGroup), false
	}
	return Decision{}, true
}

// checkUsages checks that usages holds every required usage and nothing
// beyond the required and optional ones.
func checkUsages(usages []certificatesv1.KeyUsage, kind string, required, optional []certificatesv1.KeyUsage) (Decision, bool) {
	for _, u := range usages {
		if !slices.Contains(required, u) && !slices.Contains(optional, u) {
			return deny(ReasonUsageNotAllowed, "usage %q is not allowed in a %s certificate (required: %s; optional: %s)",
				u, kind, usageList(required), usageList(optional)), false
		}
	}
	for _, u := range required {
		if !slices.Contains(usages, u) {
			return deny(ReasonUsageNotAllowed, "usage %q is required in a %s certificate (required: %s; optional: %s)",
				u, kind, usageList(required), usageList(optional)), false
		}
	}
	return Decision{}, true
}

func usageList(us []certificatesv1.KeyUsage) string {
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = string(u)
	}
	return strings.Join(s, ", ")
}

// checkKey allows ECDSA keys on P-256, P-384 and P-521 and RSA keys of at
// least 2048 bits.
func checkKey(pub any) (Decision, bool) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return Decision{}, true
		}
		return deny(ReasonKeyNotAllowed, "ECDSA curve %s is not allowed; use P-256, P-384 or P-521", k.Curve.Params().Name), false
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return Decision{}, true
		}
		return deny(ReasonKeyNotAllowed, "RSA key of %d bits is too short; use at least 2048", k.N.BitLen()), false
	}
	return deny(ReasonKeyNotAllowed, "key type %T is not allowed; use ECDSA or RSA", pub), false
}

// listSANs lists every subject alternative name of req, prefixed by kind.
func listSANs(req *x509.CertificateRequest) []string {
	var sans []string
	for _, n := range req.DNSNames {
		sans = append(sans, "DNS:"+n)
	}
	for _, ip := range req.IPAddresses {
		sans = append(sans, "IP:"+ip.String())
	}
	for _, e := range req.EmailAddresses {
		sans = append(sans, "email:"+e)
	}
	for _, u := range req.URIs {
		sans = append(sans, "URI:"+u.String())
	}
	return sans
}
