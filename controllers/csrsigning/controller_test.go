package csrsigning

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"tether/pki"
)

type request struct {
	name       string
	signer     string
	cn         string
	org        []string
	dns        []string
	ips        []net.IP
	usages     []certificatesv1.KeyUsage
	expiration int32 // seconds; 0: unset
	conditions []certificatesv1.RequestConditionType
	tamper     bool
}

func (r request) build(t *testing.T, key crypto.Signer) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: r.cn, Organization: r.org},
		DNSNames:    r.dns,
		IPAddresses: r.ips,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	if r.tamper {
		der[len(der)-3] ^= 0xff
	}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: r.name, UID: types.UID("uid-" + r.name)},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: r.signer,
			Usages:     r.usages,
		},
	}
	if r.expiration != 0 {
		csr.Spec.ExpirationSeconds = &r.expiration
	}
	for _, c := range r.conditions {
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{Type: c, Status: corev1.ConditionTrue})
	}
	return csr
}

var (
	approved    = []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved}
	clientUsage = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	serverUsage = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth}
)

type fixture struct {
	client             *fake.Clientset
	clientCA, serverCA *pki.CA
}

// start runs a signer with a 24h MaxDuration on objs until the test ends.
// It must be called inside a synctest bubble.
func start(t *testing.T, maxDuration time.Duration, objs ...runtime.Object) *fixture {
	t.Helper()
	clientCA, err := pki.NewCA("test-client-ca", 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverCA, err := pki.NewCA("test-server-ca", 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(objs...)
	c, err := New(Config{Client: client, ClientCA: clientCA, ServerCA: serverCA, MaxDuration: maxDuration,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run() returned %v before Ready", err)
	}
	return &fixture{client: client, clientCA: clientCA, serverCA: serverCA}
}

func (f *fixture) get(t *testing.T, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	csr, err := f.client.CertificatesV1().CertificateSigningRequests().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return csr
}

// issued returns the certificate of the named request, failing the test if
// there is none.
func (f *fixture) issued(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	csr := f.get(t, name)
	if len(csr.Status.Certificate) == 0 {
		t.Fatalf("%s: no certificate; conditions %+v", name, csr.Status.Conditions)
	}
	cert, err := pki.ParseCertPEM(csr.Status.Certificate)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cert
}

func verify(cert *x509.Certificate, ca *pki.CA, usage x509.ExtKeyUsage) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: time.Now()})
	return err
}

func TestSigner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		node := request{signer: certificatesv1.KubeAPIServerClientKubeletSignerName, cn: "system:node:node-1", org: []string{"system:nodes"}, usages: clientUsage}
		reqs := []request{
			with(node, func(r *request) { r.name = "kubelet-client"; r.conditions = approved }),
			{name: "user-client", signer: certificatesv1.KubeAPIServerClientSignerName, cn: "alice", org: []string{"dev"},
				usages: clientUsage, expiration: 3600, conditions: approved},
			{name: "serving", signer: certificatesv1.KubeletServingSignerName, cn: "system:node:node-1", org: []string{"system:nodes"},
				dns: []string{"node-1"}, ips: []net.IP{net.ParseIP("10.0.0.1")}, usages: serverUsage, expiration: 48 * 3600, conditions: approved},
			with(node, func(r *request) { r.name = "pending" }),
			with(node, func(r *request) {
				r.name, r.conditions = "denied", []certificatesv1.RequestConditionType{certificatesv1.CertificateDenied}
			}),
			with(node, func(r *request) {
				r.name, r.conditions = "failed", []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved, certificatesv1.CertificateFailed}
			}),
			with(node, func(r *request) { r.name, r.signer, r.conditions = "custom-signer", "example.com/signer", approved }),
			// Approved by hand, but not something these signers issue.
			with(node, func(r *request) { r.name, r.usages, r.conditions = "server-usage-on-client", serverUsage, approved }),
			with(node, func(r *request) { r.name, r.org, r.conditions = "masters-node", []string{"system:masters"}, approved }),
			with(node, func(r *request) { r.name, r.dns, r.conditions = "client-with-san", []string{"node-1"}, approved }),
			with(node, func(r *request) { r.name, r.tamper, r.conditions = "bad-signature", true, approved }),
		}
		var objs []runtime.Object
		for _, r := range reqs {
			objs = append(objs, r.build(t, key))
		}
		f := start(t, 0, objs...)
		synctest.Wait()
		now := time.Now()

		// Node client: client CA, client auth only, default 24h.
		cert := f.issued(t, "kubelet-client")
		if err := verify(cert, f.clientCA, x509.ExtKeyUsageClientAuth); err != nil {
			t.Errorf("kubelet-client does not chain to the client CA: %v", err)
		}
		if verify(cert, f.serverCA, x509.ExtKeyUsageAny) == nil {
			t.Error("kubelet-client chains to the server CA")
		}
		checkCert(t, "kubelet-client", cert, &key.PublicKey, "system:node:node-1", []string{"system:nodes"}, x509.ExtKeyUsageClientAuth, now, 24*time.Hour)
		if len(cert.DNSNames)+len(cert.IPAddresses) != 0 {
			t.Errorf("kubelet-client has SANs %v %v", cert.DNSNames, cert.IPAddresses)
		}

		// Any user's client certificate: expirationSeconds honoured.
		cert = f.issued(t, "user-client")
		if err := verify(cert, f.clientCA, x509.ExtKeyUsageClientAuth); err != nil {
			t.Errorf("user-client does not chain to the client CA: %v", err)
		}
		checkCert(t, "user-client", cert, &key.PublicKey, "alice", []string{"dev"}, x509.ExtKeyUsageClientAuth, now, time.Hour)

		// Serving: server CA, server auth, SANs copied, 48h capped at 24h.
		cert = f.issued(t, "serving")
		if err := verify(cert, f.serverCA, x509.ExtKeyUsageServerAuth); err != nil {
			t.Errorf("serving does not chain to the server CA: %v", err)
		}
		if verify(cert, f.clientCA, x509.ExtKeyUsageAny) == nil {
			t.Error("serving chains to the client CA")
		}
		checkCert(t, "serving", cert, &key.PublicKey, "system:node:node-1", []string{"system:nodes"}, x509.ExtKeyUsageServerAuth, now, 24*time.Hour)
		if !slices.Equal(cert.DNSNames, []string{"node-1"}) || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
			t.Errorf("serving SANs = %v %v, want [node-1] [10.0.0.1]", cert.DNSNames, cert.IPAddresses)
		}
		if err := cert.VerifyHostname("10.0.0.1"); err != nil {
			t.Errorf("serving: %v", err)
		}

		// Untouched.
		for _, name := range []string{"pending", "denied", "failed", "custom-signer"} {
			csr := f.get(t, name)
			orig := slices.IndexFunc(reqs, func(r request) bool { return r.name == name })
			if len(csr.Status.Certificate) != 0 || len(csr.Status.Conditions) != len(reqs[orig].conditions) {
				t.Errorf("%s was touched: certificate %d bytes, conditions %+v", name, len(csr.Status.Certificate), csr.Status.Conditions)
			}
		}

		// Failed, with a message.
		for name, want := range map[string]string{
			"server-usage-on-client": `"server auth" is not allowed`,
			"masters-node":           "system:masters",
			"client-with-san":        "no subject alternative names",
			"bad-signature":          "signature",
		} {
			csr := f.get(t, name)
			i := slices.IndexFunc(csr.Status.Conditions, func(c certificatesv1.CertificateSigningRequestCondition) bool {
				return c.Type == certificatesv1.CertificateFailed
			})
			if len(csr.Status.Certificate) != 0 || i < 0 {
				t.Errorf("%s: certificate %d bytes, conditions %+v; want a Failed condition and no certificate", name, len(csr.Status.Certificate), csr.Status.Conditions)
				continue
			}
			if c := csr.Status.Conditions[i]; c.Reason != ReasonFailed || c.Status != corev1.ConditionTrue || !strings.Contains(c.Message, want) {
				t.Errorf("%s: Failed condition = %+v, want reason %s and a message containing %q", name, c, ReasonFailed, want)
			}
		}

		// Events.
		events, err := f.client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, ev := range events.Items {
			got[ev.InvolvedObject.Name] = ev.Reason
			if ev.InvolvedObject.Kind != "CertificateSigningRequest" || ev.InvolvedObject.UID != types.UID("uid-"+ev.InvolvedObject.Name) {
				t.Errorf("event %s: involvedObject = %+v", ev.Name, ev.InvolvedObject)
			}
		}
		want := map[string]string{
			"kubelet-client": EventSigned, "user-client": EventSigned, "serving": EventSigned,
			"server-usage-on-client": EventSigningFailed, "masters-node": EventSigningFailed,
			"client-with-san": EventSigningFailed, "bad-signature": EventSigningFailed,
		}
		if len(events.Items) != len(want) {
			t.Errorf("%d events (%v), want %d", len(events.Items), got, len(want))
		}
		for name, reason := range want {
			if got[name] != reason {
				t.Errorf("event for %s: reason %q, want %q", name, got[name], reason)
			}
		}
	})
}

// TestSignerApprovedLater: a pending request is signed once it is
// approved, with the requested lifetime under a short MaxDuration cap.
func TestSignerApprovedLater(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		short := request{name: "short", signer: certificatesv1.KubeAPIServerClientKubeletSignerName, cn: "system:node:node-1",
			org: []string{"system:nodes"}, usages: clientUsage, expiration: 600}
		long := with(short, func(r *request) { r.name, r.expiration = "long", 3600 })
		f := start(t, 30*time.Minute, short.build(t, key), long.build(t, key))
		synctest.Wait()
		if csr := f.get(t, "short"); len(csr.Status.Certificate) != 0 {
			t.Fatal("a pending request was signed")
		}

		for _, name := range []string{"short", "long"} {
			csr := f.get(t, name)
			csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
				Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "Test",
			})
			if _, err := f.client.CertificatesV1().CertificateSigningRequests().UpdateApproval(t.Context(), name, csr, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		now := time.Now()
		checkCert(t, "short", f.issued(t, "short"), &key.PublicKey, "system:node:node-1", []string{"system:nodes"}, x509.ExtKeyUsageClientAuth, now, 10*time.Minute)
		checkCert(t, "long", f.issued(t, "long"), &key.PublicKey, "system:node:node-1", []string{"system:nodes"}, x509.ExtKeyUsageClientAuth, now, 30*time.Minute)
	})
}

func checkCert(t *testing.T, name string, cert *x509.Certificate, pub crypto.PublicKey, cn string, org []string, usage x509.ExtKeyUsage, now time.Time, validity time.Duration) {
	t.Helper()
	if cert.Subject.CommonName != cn || !slices.Equal(cert.Subject.Organization, org) {
		t.Errorf("%s: subject %v, want CN=%s O=%v", name, cert.Subject, cn, org)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{usage}) {
		t.Errorf("%s: ExtKeyUsage = %v, want [%v]", name, cert.ExtKeyUsage, usage)
	}
	if cert.IsCA {
		t.Errorf("%s: is a CA", name)
	}
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		t.Errorf("%s: public key is not the request's", name)
	}
	// Certificates carry whole seconds; in the bubble, signing happened at now.
	if want := now.Add(-time.Minute).Truncate(time.Second); !cert.NotBefore.Equal(want) {
		t.Errorf("%s: NotBefore = %v, want %v", name, cert.NotBefore, want)
	}
	if want := now.Add(validity).Truncate(time.Second); !cert.NotAfter.Equal(want) {
		t.Errorf("%s: NotAfter = %v, want %v (validity %v)", name, cert.NotAfter, want, validity)
	}
}

func with(r request, f func(*request)) request {
	f(&r)
	return r
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{MaxDuration: -1, Workers: -1, ResyncPeriod: -1, ServerCA: &pki.CA{}})
	if err == nil {
		t.Fatal("New(bad config) = nil error")
	}
	for _, want := range []string{"Client is", "ClientCA", "ServerCA", "MaxDuration", "Workers", "ResyncPeriod"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New error %q does not mention %s", err, want)
		}
	}
}
