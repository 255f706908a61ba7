package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"tether/apiserver/authn/revocation"
	"tether/pki"
)

// nodeCSRs makes certificate signing requests: issued ones carry a
// certificate from ca, pending ones only the request.
type nodeCSRs struct {
	t  *testing.T
	ca *pki.CA
}

func (f nodeCSRs) request(cn string) []byte {
	f.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		f.t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// issued returns an issued request and the serial of its certificate.
func (f nodeCSRs) issued(name, signer, cn string) (*certificatesv1.CertificateSigningRequest, *big.Int) {
	f.t.Helper()
	certPEM, _, err := f.ca.NewKeyAndCert(pki.CertRequest{
		CommonName: cn, Organization: []string{"system:nodes"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		f.t.Fatal(err)
	}
	csr := f.pending(name, signer, cn)
	csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}}
	csr.Status.Certificate = certPEM
	return csr, cert.SerialNumber
}

func (f nodeCSRs) pending(name, signer, cn string) *certificatesv1.CertificateSigningRequest {
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request: f.request(cn), SignerName: signer,
			Usages: []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth},
		},
	}
}

func nodeObject(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// useNodeClient makes `tether node` use client, and checks the kubeconfig
// path it is asked for.
func useNodeClient(t *testing.T, client kubernetes.Interface, wantPath string) {
	t.Helper()
	old := newClientForNode
	t.Cleanup(func() { newClientForNode = old })
	newClientForNode = func(path string) (kubernetes.Interface, error) {
		if path != wantPath {
			t.Errorf("kubeconfig path = %q, want %q", path, wantPath)
		}
		return client, nil
	}
}

func runNode(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newNodeCommand(&out, &errOut)
	cmd.SetArgs(args)
	cmd.SetOut(&errOut)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

func revokedKeys(t *testing.T, client kubernetes.Interface) map[string]string {
	t.Helper()
	cm, err := client.CoreV1().ConfigMaps(revocation.Namespace).Get(t.Context(), revocation.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data
}

func TestNodeRevoke(t *testing.T) {
	ca, err := pki.NewCA("test-client-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := nodeCSRs{t: t, ca: ca}
	clientCSR, clientSerial := f.issued("node-1-client", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:node:node-1")
	servingCSR, servingSerial := f.issued("node-1-serving", certificatesv1.KubeletServingSignerName, "system:node:node-1")
	adminCSR, adminSerial := f.issued("node-1-by-admin", certificatesv1.KubeAPIServerClientSignerName, "system:node:node-1")
	otherNodeCSR, otherNodeSerial := f.issued("node-10-client", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:node:node-10")
	customCSR, customSerial := f.issued("custom", "example.com/signer", "system:node:node-1")
	lateCSR, lateSerial := f.issued("node-1-late", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:node:node-1")
	client := fake.NewClientset(
		clientCSR, servingCSR, adminCSR, otherNodeCSR, customCSR,
		f.pending("node-1-pending", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:node:node-1"),
		f.pending("node-10-pending", certificatesv1.KubeletServingSignerName, "system:node:node-10"),
		nodeObject("node-1"), nodeObject("node-10"),
	)
	// A renewal is signed while the command runs: after its first list,
	// before it writes the deny-list.
	signed := false
	client.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !signed {
			signed = true
			if err := client.Tracker().Add(lateCSR); err != nil {
				t.Error(err)
			}
		}
		return false, nil, nil
	})
	useNodeClient(t, client, "admin.conf")

	stdout, stderr, err := runNode(t, "revoke", "node-1", "--kubeconfig", "admin.conf", "--serial", "0A:BC")
	if err != nil {
		t.Fatalf("tether node revoke: %v\nstderr: %s", err, stderr)
	}

	keys := revokedKeys(t, client)
	for name, s := range map[string]*big.Int{
		"client": clientSerial, "serving": servingSerial, "admin-issued": adminSerial, "late": lateSerial, "--serial": big.NewInt(0xabc),
	} {
		reason, ok := keys[s.Text(16)]
		if !ok {
			t.Errorf("the %s certificate (serial %s) is not revoked; deny-list %v", name, s.Text(16), keys)
		} else if !strings.HasPrefix(reason, "node node-1 revoked 2") {
			t.Errorf("reason for %s = %q, want \"node node-1 revoked <time>\"", name, reason)
		}
	}
	for name, s := range map[string]*big.Int{"node-10's": otherNodeSerial, "custom signer's": customSerial} {
		if _, ok := keys[s.Text(16)]; ok {
			t.Errorf("the %s certificate was revoked", name)
		}
	}
	if len(keys) != 5 {
		t.Errorf("deny-list has %d entries, want 5: %v", len(keys), keys)
	}

	if _, err := client.CoreV1().Nodes().Get(t.Context(), "node-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get node-1 after revoke: err = %v, want NotFound", err)
	}
	if _, err := client.CoreV1().Nodes().Get(t.Context(), "node-10", metav1.GetOptions{}); err != nil {
		t.Errorf("node-10 after revoking node-1: %v", err)
	}

	csr, err := client.CertificatesV1().CertificateSigningRequests().Get(t.Context(), "node-1-pending", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := csr.Status.Conditions; len(c) != 1 || c[0].Type != certificatesv1.CertificateDenied || c[0].Reason != nodeRevokedReason {
		t.Errorf("node-1's pending request: conditions %+v, want Denied/%s", c, nodeRevokedReason)
	}
	csr, err = client.CertificatesV1().CertificateSigningRequests().Get(t.Context(), "node-10-pending", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.Status.Conditions) != 0 {
		t.Errorf("node-10's pending request: conditions %+v, want none", csr.Status.Conditions)
	}

	for _, want := range []string{
		"Revoked 5 certificate(s) of node node-1",
		clientSerial.Text(16), servingSerial.Text(16), adminSerial.Text(16), lateSerial.Text(16), "serial abc  from --serial",
		"CSR node-1-serving (kubernetes.io/kubelet-serving)",
		"Denied 1 pending",
		"Deleted Node node-1.",
		"401 Unauthorized",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output does not contain %q:\n%s", want, stdout)
		}
	}
}

func TestNodeRevokeMissingNode(t *testing.T) {
	ca, err := pki.NewCA("test-client-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	csr, serial := nodeCSRs{t: t, ca: ca}.issued("gone-client", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:node:gone")
	client := fake.NewClientset(csr)
	t.Setenv("KUBECONFIG", "from-env.conf")
	useNodeClient(t, client, "from-env.conf")

	stdout, _, err := runNode(t, "revoke", "gone")
	if err != nil {
		t.Fatalf("tether node revoke gone: %v", err)
	}
	if _, ok := revokedKeys(t, client)[serial.Text(16)]; !ok {
		t.Error("the certificate of a node without a Node object was not revoked")
	}
	if !strings.Contains(stdout, "Node gone did not exist.") {
		t.Errorf("output does not say the Node did not exist:\n%s", stdout)
	}
}

func TestNodeRevokeNothingFound(t *testing.T) {
	client := fake.NewClientset(nodeObject("node-1"))
	useNodeClient(t, client, "admin.conf")
	_, _, err := runNode(t, "revoke", "node-1", "--kubeconfig", "admin.conf")
	if err == nil || !strings.Contains(err.Error(), "--serial") || !strings.Contains(err.Error(), "nothing was revoked") {
		t.Fatalf("revoke with no certificate: err = %v, want an error that says nothing was revoked and mentions --serial", err)
	}
	if _, err := client.CoreV1().Nodes().Get(t.Context(), "node-1", metav1.GetOptions{}); err != nil {
		t.Errorf("the Node was deleted although nothing was revoked: %v", err)
	}
	if keys := revokedKeys(t, client); keys != nil {
		t.Errorf("deny-list written: %v", keys)
	}
}

func TestNodeRevokeErrors(t *testing.T) {
	old := newClientForNode
	t.Cleanup(func() { newClientForNode = old })
	newClientForNode = func(string) (kubernetes.Interface, error) { return nil, errors.New("no such file") }

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no name", []string{"revoke"}, "accepts 1 arg"},
		{"invalid name", []string{"revoke", "Node_1"}, "not valid"},
		{"bad serial", []string{"revoke", "node-1", "--serial", "xyz"}, `--serial "xyz"`},
		{"zero serial", []string{"revoke", "node-1", "--serial", "0"}, "positive"},
		{"bad kubeconfig", []string{"revoke", "node-1", "--kubeconfig", "nope.conf"}, "load kubeconfig nope.conf (from --kubeconfig): no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runNode(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("tether node %v: err = %v, want it to contain %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestParseNodeSerial(t *testing.T) {
	tests := []struct {
		in   string
		want int64 // 0: error
	}{
		{"abc", 0xabc},
		{"0ABC", 0xabc},
		{"0xabc", 0xabc},
		{"0a:bc", 0xabc},
		{" 0a:bc ", 0xabc},
		{"", 0},
		{"0x", 0},
		{"00", 0},
		{"-1", 0},
		{"g1", 0},
	}
	for _, tt := range tests {
		got, err := parseNodeSerial(tt.in)
		switch {
		case tt.want == 0 && err == nil:
			t.Errorf("parseNodeSerial(%q) = %v, want an error", tt.in, got)
		case tt.want != 0 && (err != nil || got.Int64() != tt.want):
			t.Errorf("parseNodeSerial(%q) = %v, %v; want %x", tt.in, got, err, tt.want)
		}
	}
}
