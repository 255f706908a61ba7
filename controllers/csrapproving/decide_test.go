package csrapproving

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	bootstrapUser   = "system:bootstrap:abcdef"
	bootstrapGroups = "system:bootstrappers"
	node1User       = "system:node:node-1"
)

var (
	keyMu   sync.Mutex
	keyByID = map[string]crypto.Signer{}
)

// testKey returns a key of the named kind, generated once per test binary.
func testKey(t *testing.T, kind string) crypto.Signer {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	if k, ok := keyByID[kind]; ok {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "rsa2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa1024":
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatalf("generate %s key: %v", kind, err)
	}
	keyByID[kind] = k
	return k
}

// request describes a CSR for tests; the zero value of each field gets a
// sensible default in build.
type request struct {
	signer   string
	user     string
	groups   []string
	usages   []certificatesv1.KeyUsage
	cn       string
	org      []string
	dns      []string
	ips      []string
	emails   []string
	uris     []string
	key      string // testKey kind; "p256" if empty
	tamper   bool   // break the signature
	approved bool   // already approved
}

func (r request) build(t *testing.T) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	tmpl := &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: r.cn, Organization: r.org},
		DNSNames: r.dns,
	}
	for _, s := range r.ips {
		ip := net.ParseIP(s)
		if ip == nil {
			t.Fatalf("bad IP %q", s)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	tmpl.EmailAddresses = r.emails
	for _, s := range r.uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	kind := r.key
	if kind == "" {
		kind = "p256"
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, testKey(t, kind))
	if err != nil {
		t.Fatalf("create CSR: %v", err)
	}
	if r.tamper {
		der[len(der)-3] ^= 0xff
	}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-" + strings.ReplaceAll(r.cn, ":", "-"), UID: "uid-1"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: r.signer,
			Username:   r.user,
			Groups:     r.groups,
			Usages:     r.usages,
		},
	}
	if r.approved {
		csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}}
	}
	return csr
}

// clientRequest is a valid node client request for node-1 from a
// bootstrap token.
func clientRequest() request {
	return request{
		signer: certificatesv1.KubeAPIServerClientKubeletSignerName,
		user:   bootstrapUser,
		groups: []string{bootstrapGroups, "system:authenticated"},
		usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		cn:     node1User,
		org:    []string{nodesGroup},
	}
}

// servingRequest is a valid serving request from node-1 for its addresses.
func servingRequest() request {
	return request{
		signer: certificatesv1.KubeletServingSignerName,
		user:   node1User,
		groups: []string{nodesGroup, "system:authenticated"},
		usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
		cn:     node1User,
		org:    []string{nodesGroup},
		dns:    []string{"node-1"},
		ips:    []string{"10.0.0.1"},
	}
}

func with(r request, f func(*request)) request {
	f(&r)
	return r
}

// tableFacts answers from fixed nodes and permissions and records which
// permissions were asked about.
type tableFacts struct {
	nodes map[string]*corev1.Node
	// allow holds "<user> <subresource>" pairs that are allowed.
	allow map[string]bool
	asked []string
}

func (f *tableFacts) node(_ context.Context, name string) (*corev1.Node, error) {
	return f.nodes[name], nil
}

func (f *tableFacts) allowed(_ context.Context, csr *certificatesv1.CertificateSigningRequest, sub string) (bool, string, error) {
	f.asked = append(f.asked, sub)
	if f.allow[csr.Spec.Username+" "+sub] {
		return true, "", nil
	}
	return false, "no RBAC policy matched", nil
}

func node(name string, addrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		typ, addr, _ := strings.Cut(a, "=")
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeAddressType(typ), Address: addr})
	}
	return n
}

func TestDecide(t *testing.T) {
	nodes := map[string]*corev1.Node{
		"node-1":  node("node-1", "InternalIP=10.0.0.1", "Hostname=node-1", "ExternalDNS=node-1.example.com", "ExternalIP=fd00::1"),
		"node-2":  node("node-2", "InternalIP=10.0.0.2", "Hostname=node-2"),
		"node-10": node("node-10", "InternalIP=10.0.0.10", "Hostname=node-10"),
		// An IP address in a Hostname address and a name in an InternalIP
		// address match nothing.
		"node-3": node("node-3", "Hostname=10.0.0.3", "InternalIP=node-3"),
	}
	allow := map[string]bool{
		bootstrapUser + " " + SubresourceNodeClient:       true,
		node1User + " " + SubresourceSelfNodeClient:       true,
		"system:node:node-2 " + SubresourceSelfNodeClient: true,
	}

	tests := []struct {
		name       string
		req        request
		want       Action
		wantReason string
		wantInMsg  string   // a substring of the message
		wantAsked  []string // the permissions asked about, in order
	}{
		// Node client certificates.
		{
			name: "bootstrapper with nodeclient",
			req:  clientRequest(), want: Approve, wantReason: ReasonApproved,
			wantAsked: []string{SubresourceNodeClient},
		},
		{
			name: "bootstrapper without nodeclient (SAR denied)",
			req:  with(clientRequest(), func(r *request) { r.user = "system:bootstrap:zzzzzz" }),
			want: Deny, wantReason: ReasonNotAuthorized, wantInMsg: "certificatesigningrequests/nodeclient",
			wantAsked: []string{SubresourceNodeClient},
		},
		{
			name: "renewal by the same node with selfnodeclient",
			req: with(clientRequest(), func(r *request) {
				r.user, r.groups = node1User, []string{nodesGroup, "system:authenticated"}
			}),
			want: Approve, wantReason: ReasonApproved, wantInMsg: "selfnodeclient",
			wantAsked: []string{SubresourceSelfNodeClient},
		},
		{
			name: "node-2 asks for node-1's client certificate",
			req: with(clientRequest(), func(r *request) {
				r.user, r.groups = "system:node:node-2", []string{nodesGroup}
			}),
			want: Deny, wantReason: ReasonNotAuthorized, wantInMsg: "certificatesigningrequests/nodeclient",
			wantAsked: []string{SubresourceNodeClient},
		},
		{
			name: "client: RSA key with optional key encipherment",
			req: with(clientRequest(), func(r *request) {
				r.key = "rsa2048"
				r.usages = []certificatesv1.KeyUsage{certificatesv1.UsageKeyEncipherment, certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
			}),
			want: Approve, wantReason: ReasonApproved, wantAsked: []string{SubresourceNodeClient},
		},
		{
			name: "client: only client auth",
			req:  with(clientRequest(), func(r *request) { r.usages = []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth} }),
			want: Approve, wantReason: ReasonApproved, wantAsked: []string{SubresourceNodeClient},
		},
		{
			name: "client: wrong CN",
			req:  with(clientRequest(), func(r *request) { r.cn = "admin" }),
			want: Deny, wantReason: ReasonSubjectNotAllowed, wantInMsg: `"admin"`,
		},
		{
			name: "client: CN without a node name",
			req:  with(clientRequest(), func(r *request) { r.cn = "system:node:" }),
			want: Deny, wantReason: ReasonSubjectNotAllowed,
		},
		{
			name: "client: CN with an invalid node name",
			req:  with(clientRequest(), func(r *request) { r.cn = "system:node:Node_1" }),
			want: Deny, wantReason: ReasonSubjectNotAllowed, wantInMsg: "valid node",
		},
		{
			name: "client: wrong O",
			req:  with(clientRequest(), func(r *request) { r.org = []string{"system:masters"} }),
			want: Deny, wantReason: ReasonSubjectNotAllowed, wantInMsg: "system:masters",
		},
		{
			name: "client: extra O",
			req:  with(clientRequest(), func(r *request) { r.org = []string{nodesGroup, "system:masters"} }),
			want: Deny, wantReason: ReasonSubjectNotAllowed,
		},
		{
			name: "client: no O",
			req:  with(clientRequest(), func(r *request) { r.org = nil }),
			want: Deny, wantReason: ReasonSubjectNotAllowed,
		},
		{
			name: "client: DNS SAN",
			req:  with(clientRequest(), func(r *request) { r.dns = []string{"node-1"} }),
			want: Deny, wantReason: ReasonSANNotAllowed, wantInMsg: "DNS:node-1",
		},
		{
			name: "client: IP SAN",
			req:  with(clientRequest(), func(r *request) { r.ips = []string{"10.0.0.1"} }),
			want: Deny, wantReason: ReasonSANNotAllowed, wantInMsg: "IP:10.0.0.1",
		},
		{
			name: "client: URI SAN",
			req:  with(clientRequest(), func(r *request) { r.uris = []string{"spiffe://cluster/node-1"} }),
			want: Deny, wantReason: ReasonSANNotAllowed,
		},
		{
			name: "client: server auth usage",
			req: with(clientRequest(), func(r *request) {
				r.usages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth, certificatesv1.UsageServerAuth}
			}),
			want: Deny, wantReason: ReasonUsageNotAllowed, wantInMsg: `"server auth"`,
		},
		{
			name: "client: no client auth",
			req:  with(clientRequest(), func(r *request) { r.usages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature} }),
			want: Deny, wantReason: ReasonUsageNotAllowed, wantInMsg: `"client auth" is required`,
		},
		{
			name: "client: Ed25519 key",
			req:  with(clientRequest(), func(r *request) { r.key = "ed25519" }),
			want: Deny, wantReason: ReasonKeyNotAllowed,
		},
		{
			name: "client: short RSA key",
			req:  with(clientRequest(), func(r *request) { r.key = "rsa1024" }),
			want: Deny, wantReason: ReasonKeyNotAllowed, wantInMsg: "1024",
		},
		{
			name: "client: P-224 key",
			req:  with(clientRequest(), func(r *request) { r.key = "p224" }),
			want: Deny, wantReason: ReasonKeyNotAllowed,
		},
		{
			name: "client: broken signature",
			req:  with(clientRequest(), func(r *request) { r.tamper = true }),
			want: Deny, wantReason: ReasonInvalidRequest,
		},

		// Kubelet serving certificates.
		{
			name: "serving: IP and hostname of the node",
			req:  servingRequest(), want: Approve, wantReason: ReasonApproved,
		},
		{
			name: "serving: ExternalDNS and ExternalIP (IPv6, other spelling)",
			req: with(servingRequest(), func(r *request) {
				r.dns, r.ips = []string{"node-1.example.com"}, []string{"fd00:0:0::1"}
			}),
			want: Approve, wantReason: ReasonApproved,
		},
		{
			name: "serving: RSA with key encipherment",
			req: with(servingRequest(), func(r *request) {
				r.key = "rsa2048"
				r.usages = append(r.usages, certificatesv1.UsageKeyEncipherment)
			}),
			want: Approve, wantReason: ReasonApproved,
		},
		{
			name: "serving: DNS SAN is a prefix of the node's hostname",
			req: with(servingRequest(), func(r *request) {
				r.user, r.cn, r.dns, r.ips = "system:node:node-10", "system:node:node-10", []string{"node-1"}, nil
			}),
			want: Deny, wantReason: ReasonSANNotAllowed, wantInMsg: `DNS SAN "node-1"`,
		},
		{
			name: "serving: node's hostname is a prefix of the DNS SAN",
			req:  with(servingRequest(), func(r *request) { r.dns, r.ips = []string{"node-10"}, nil }),
			want: Deny, wantReason: ReasonSANNotAllowed, wantInMsg: `DNS SAN "node-10"`,
		},
		{
			name: "serving: IP SAN 10.0.0.10 for a node at 10.0.0.1",
			req:  with(servingRequest(), func(r *request) { r.ips = []string{"10.0.0.10"} }),
			want: Deny, wantReason: ReasonSANNotAllowed, wantInMsg: "IP SAN 10.0.0.10",
		},
		{
			name: "serving: IP SAN 10.0.0.1 for a node at 10.0.0.10",
			req: with(servingRequest(), func(r *request) {
				r.user, r.cn, r.dns, r.ips = "system:node:node-10", "system:node:node-10", []string{"node-10"}, []string{"10.0.0.1"}
			}),
			want: Deny, wantReason: ReasonSANNotAllowed, wantInMsg: "IP SAN 10.0.0.1 ",
		},
		{
			name: "serving: DNS SAN differs in case",
			req:  with(servingRequest(), func(r *request) { r.dns = []string{"Node-1"} }),
			want: Deny, wantReason: ReasonSANNotAllowed,
		},
		{
			name: "serving: DNS SAN is a subdomain of an address",
			req:  with(servingRequest(), func(r *request) { r.dns = []string{"evil.node-1.example.com"} }),
			want: Deny, wantReason: ReasonSANNotAllowed,
		},
		{
			name: "serving: one extra SAN",
			req:  with(servingRequest(), func(r *request) { r.dns = append(r.dns, "kubernetes.default.svc") }),
			want: Deny, wantReason: ReasonSANNotAllowed, wantInMsg: "kubernetes.default.svc",
		},
		{
			name: "serving: IP SAN matched against a Hostname address only",
			req: with(servingRequest(), func(r *request) {
				r.user, r.cn, r.dns, r.ips = "system:node:node-3", "system:node:node-3", nil, []string{"10.0.0.3"}
			}),
			want: Deny, wantReason: ReasonSANNotAllowed,
		},
		{
			name: "serving: DNS SAN matched against an InternalIP address only",
			req: with(servingRequest(), func(r *request) {
				r.user, r.cn, r.dns, r.ips = "system:node:node-3", "system:node:node-3", []string{"node-3"}, nil
			}),
			want: Deny, wantReason: ReasonSANNotAllowed,
		},
		{
			name: "serving: email SAN",
			req:  with(servingRequest(), func(r *request) { r.emails = []string{"root@node-1"} }),
			want: Deny, wantReason: ReasonSANNotAllowed, wantInMsg: "email:root@node-1",
		},
		{
			name: "serving: no SANs",
			req:  with(servingRequest(), func(r *request) { r.dns, r.ips = nil, nil }),
			want: Deny, wantReason: ReasonSANNotAllowed, wantInMsg: "at least one",
		},
		{
			name: "serving: client auth usage",
			req:  with(servingRequest(), func(r *request) { r.usages = append(r.usages, certificatesv1.UsageClientAuth) }),
			want: Deny, wantReason: ReasonUsageNotAllowed, wantInMsg: `"client auth"`,
		},
		{
			name: "serving: no server auth",
			req:  with(servingRequest(), func(r *request) { r.usages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature} }),
			want: Deny, wantReason: ReasonUsageNotAllowed, wantInMsg: `"server auth" is required`,
		},
		{
			name: "serving: no digital signature",
			req:  with(servingRequest(), func(r *request) { r.usages = []certificatesv1.KeyUsage{certificatesv1.UsageServerAuth} }),
			want: Deny, wantReason: ReasonUsageNotAllowed,
		},
		{
			name: "serving: requester is a bootstrap token",
			req:  with(servingRequest(), func(r *request) { r.user, r.groups = bootstrapUser, []string{bootstrapGroups} }),
			want: Deny, wantReason: ReasonRequesterNotAllowed, wantInMsg: bootstrapUser,
		},
		{
			name: "serving: requester claims a node name but is not in system:nodes",
			req:  with(servingRequest(), func(r *request) { r.groups = []string{"system:authenticated"} }),
			want: Deny, wantReason: ReasonRequesterNotAllowed,
		},
		{
			name: "serving: node-1 asks for node-2's serving certificate",
			req: with(servingRequest(), func(r *request) {
				r.cn, r.dns, r.ips = "system:node:node-2", []string{"node-2"}, []string{"10.0.0.2"}
			}),
			want: Deny, wantReason: ReasonSubjectNotAllowed, wantInMsg: "system:node:node-2",
		},
		{
			name: "serving: wrong O",
			req:  with(servingRequest(), func(r *request) { r.org = []string{nodesGroup, "system:masters"} }),
			want: Deny, wantReason: ReasonSubjectNotAllowed,
		},
		{
			name: "serving: unknown node",
			req: with(servingRequest(), func(r *request) {
				r.user, r.cn, r.dns, r.ips = "system:node:node-9", "system:node:node-9", []string{"node-9"}, nil
			}),
			want: Deny, wantReason: ReasonNodeNotFound, wantInMsg: `"node-9"`,
		},

		// Requests the approver leaves alone.
		{
			name: "other signer",
			req:  with(clientRequest(), func(r *request) { r.signer = certificatesv1.KubeAPIServerClientSignerName; r.cn = "admin" }),
			want: Skip,
		},
		{
			name: "custom signer",
			req:  with(servingRequest(), func(r *request) { r.signer = "example.com/serving" }),
			want: Skip,
		},
		{
			name: "already approved",
			req:  with(servingRequest(), func(r *request) { r.approved = true; r.dns = []string{"evil"} }),
			want: Skip,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &tableFacts{nodes: nodes, allow: allow}
			got, err := decide(t.Context(), tt.req.build(t), f)
			if err != nil {
				t.Fatalf("decide() error = %v", err)
			}
			if got.Action != tt.want || got.Reason != tt.wantReason {
				t.Errorf("decide() = %v %q (%s), want %v %q", got.Action, got.Reason, got.Message, tt.want, tt.wantReason)
			}
			if !strings.Contains(got.Message, tt.wantInMsg) {
				t.Errorf("decide() message = %q, want it to contain %q", got.Message, tt.wantInMsg)
			}
			if tt.want != Skip && got.Message == "" {
				t.Error("decide() message is empty")
			}
			if tt.wantAsked != nil && !slices.Equal(f.asked, tt.wantAsked) {
				t.Errorf("permissions asked = %v, want %v", f.asked, tt.wantAsked)
			}
			if tt.req.signer == certificatesv1.KubeletServingSignerName && len(f.asked) > 0 {
				t.Errorf("a serving request asked for permissions %v", f.asked)
			}
		})
	}
}
