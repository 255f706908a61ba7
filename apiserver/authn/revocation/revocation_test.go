package revocation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	x509request "k8s.io/apiserver/pkg/authentication/request/x509"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"tether/pki"
)

func startList(t *testing.T, client *fake.Clientset) (*List, informers.SharedInformerFactory) {
	t.Helper()
	f := informers.NewSharedInformerFactory(client, 0)
	l := New(f)
	f.Start(t.Context().Done())
	t.Cleanup(f.Shutdown)
	for typ, ok := range f.WaitForCacheSync(t.Context().Done()) {
		if !ok {
			t.Fatalf("informer for %v did not sync", typ)
		}
	}
	if !cache.WaitForCacheSync(t.Context().Done(), l.HasSynced) {
		t.Fatal("the list did not sync")
	}
	return l, f
}

// eventually polls cond for up to ten seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestListFollowsConfigMap(t *testing.T) {
	other := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "unrelated"},
		Data:       map[string]string{"ff": "not a revocation"},
	}
	listed := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: Name},
		Data:       map[string]string{"00AB": "leading zeros and upper case", "not-hex": "ignored"},
	}
	client := fake.NewClientset(other, listed)
	l, _ := startList(t, client)

	if !l.Revoked(big.NewInt(0xab)) {
		t.Error("Revoked(0xab) = false, want true (key 00AB)")
	}
	if l.Revoked(big.NewInt(0xff)) {
		t.Error("Revoked(0xff) = true, but only an unrelated ConfigMap lists it")
	}
	if l.Revoked(nil) {
		t.Error("Revoked(nil) = true")
	}

	serial, _ := new(big.Int).SetString("3f2a9c0d1e5b7a8c9d0e1f2a3b4c5d6e", 16)
	if err := Add(t.Context(), client, "node node-1 revoked 2026-11-03", serial); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the added serial to be revoked", func() bool { return l.Revoked(serial) })

	if err := client.CoreV1().ConfigMaps(Namespace).Delete(t.Context(), Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the list to empty", func() bool { return !l.Revoked(serial) && !l.Revoked(big.NewInt(0xab)) })
}

func TestNewLeavesTheFactoryConfigMapInformerAlone(t *testing.T) {
	f := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	l := New(f)
	if f.Core().V1().ConfigMaps().Informer() == l.informer {
		t.Error("the factory's ConfigMap informer is the list's filtered informer")
	}
}

func TestAdd(t *testing.T) {
	client := fake.NewClientset()
	cms := client.CoreV1().ConfigMaps(Namespace)
	if err := Add(t.Context(), client, "first", big.NewInt(1), big.NewInt(0xabc)); err != nil {
		t.Fatalf("Add to a missing ConfigMap: %v", err)
	}
	// One conflicting update, as when another writer got there first.
	conflicts := 1
	client.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts > 0 {
			conflicts--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, Name, nil)
		}
		return false, nil, nil
	})
	if err := Add(t.Context(), client, "second", big.NewInt(1), big.NewInt(2)); err != nil {
		t.Fatalf("Add after a conflict: %v", err)
	}
	cm, err := cms.Get(t.Context(), Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"1": "first", "abc": "first", "2": "second"}
	if len(cm.Data) != len(want) {
		t.Errorf("data = %v, want %v", cm.Data, want)
	}
	for k, v := range want {
		if cm.Data[k] != v {
			t.Errorf("data[%s] = %q, want %q", k, cm.Data[k], v)
		}
	}

	if err := Add(t.Context(), client, "x"); err == nil {
		t.Error("Add with no serials succeeded, want an error")
	}
	if err := Add(t.Context(), client, "x", nil); err == nil {
		t.Error("Add(nil serial) succeeded, want an error")
	}
}

// TestWrapX509 drives the client-certificate authenticator over real TLS on
// loopback, with one revoked and one good certificate from the same CA.
func TestWrapX509(t *testing.T) {
	ca, err := pki.NewCA("test client CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFor := func(cn string) tls.Certificate {
		certPEM, keyPEM, err := ca.NewKeyAndCert(pki.CertRequest{
			CommonName: cn, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour,
		})
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	revoked, good := certFor("system:node:node-1"), certFor("alice")

	l := New(informers.NewSharedInformerFactory(fake.NewClientset(), 0))
	l.update(&corev1.ConfigMap{Data: map[string]string{revoked.Leaf.SerialNumber.Text(16): "node node-1 revoked"}})

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	auth := WrapX509(x509request.New(x509.VerifyOptions{
		Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, x509request.CommonNameUserConversion), l)

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, ok, err := auth.AuthenticateRequest(r)
		if !ok || err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(resp.User.GetName()))
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	tests := []struct {
		name string
		cert *tls.Certificate
		want int
	}{
		{"revoked certificate", &revoked, http.StatusUnauthorized},
		{"good certificate", &good, http.StatusOK},
		{"no certificate", nil, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := srv.Client().Transport.(*http.Transport).Clone()
			if tt.cert != nil {
				tr.TLSClientConfig.Certificates = []tls.Certificate{*tt.cert}
			}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("GET with %s = %d, want %d", tt.name, resp.StatusCode, tt.want)
			}
		})
	}

	// The error names the certificate, so the log says who was refused.
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{revoked.Leaf}}
	if _, ok, err := auth.AuthenticateRequest(req); ok || err == nil {
		t.Errorf("AuthenticateRequest(revoked) = ok %v, err %v; want an error", ok, err)
	}
}
