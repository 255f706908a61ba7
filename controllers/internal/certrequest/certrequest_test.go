package certrequest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

func requestDER(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:n1", Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func TestParse(t *testing.T) {
	der := requestDER(t)
	tampered := bytes.Clone(der)
	tampered[len(tampered)-1] ^= 0xff // inside the signature
	encode := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }

	tests := []struct {
		name    string
		data    []byte
		wantErr string // empty: success
	}{
		{"valid", encode("CERTIFICATE REQUEST", der), ""},
		{"not PEM", []byte("hello"), "not a PEM CERTIFICATE REQUEST"},
		{"wrong block type", encode("CERTIFICATE", der), "not a PEM CERTIFICATE REQUEST"},
		{"not a request", encode("CERTIFICATE REQUEST", []byte{1, 2, 3}), "spec.request: "},
		{"bad signature", encode("CERTIFICATE REQUEST", tampered), "spec.request: signature: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := Parse(tc.data)
			if tc.wantErr == "" {
				if err != nil || req.Subject.CommonName != "system:node:n1" {
					t.Fatalf("Parse() = %v, %v; want the request", req, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse() error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestRecorderEvent(t *testing.T) {
	client := fake.NewClientset()
	r := Recorder{Client: client, Component: "test-controller", Logger: slog.New(slog.DiscardHandler)}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "req", UID: "uid-req", ResourceVersion: "7"},
	}
	r.Event(t.Context(), csr, corev1.EventTypeWarning, "Why", strings.Repeat("x", 2*maxMessage))

	events, err := client.CoreV1().Events(metav1.NamespaceDefault).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list events: %v", err)
	}
	if len(events.Items) != 1 {
		t.Fatalf("events = %d, want 1", len(events.Items))
	}
	ev := events.Items[0]
	want := corev1.ObjectReference{Kind: "CertificateSigningRequest", APIVersion: "certificates.k8s.io/v1", Name: "req", UID: "uid-req", ResourceVersion: "7"}
	if ev.InvolvedObject != want {
		t.Errorf("involvedObject = %+v, want %+v", ev.InvolvedObject, want)
	}
	if ev.Type != corev1.EventTypeWarning || ev.Reason != "Why" || len(ev.Message) != maxMessage || ev.Count != 1 ||
		ev.Source.Component != "test-controller" || ev.ReportingController != "test-controller" || !strings.HasPrefix(ev.Name, "req.") {
		t.Errorf("event = %+v, want a Warning Why from test-controller, its message cut to %d bytes", ev, maxMessage)
	}
}

func TestRecorderEventFailureIsLogged(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "events", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("apiserver away")
	})
	var logs bytes.Buffer
	r := Recorder{Client: client, Component: "test-controller", Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	r.Event(t.Context(), &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Name: "req"}}, corev1.EventTypeNormal, "Done", "ok")
	if got := logs.String(); !strings.Contains(got, "record event") || !strings.Contains(got, "apiserver away") {
		t.Errorf("log = %q, want the failure to record the event", got)
	}
}
