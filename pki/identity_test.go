package pki

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestIdentityRenewsBeforeExpiry(t *testing.T) {
	ca, err := NewCA("client-ca", 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(ca, 10*time.Hour, "kube-apiserver-kubelet-client")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id.now = func() time.Time { return now }
	first, err := id.GetClientCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	if leaf.Subject.CommonName != "kube-apiserver-kubelet-client" || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("certificate CN %q usages %v, want %q for client auth only", leaf.Subject.CommonName, leaf.ExtKeyUsage, "kube-apiserver-kubelet-client")
	}
	if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("certificate not issued by the client CA: %v", err)
	}
	now = now.Add(6 * time.Hour)
	if again, _ := id.GetClientCertificate(nil); again != first {
		t.Errorf("renewed at 60%% of the lifetime, want the same certificate until 70%%")
	}
	now = now.Add(2 * time.Hour)
	renewed, err := id.GetClientCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first || renewed.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Errorf("certificate not renewed at 80%% of its lifetime")
	}
}

func TestNewIdentityValidates(t *testing.T) {
	if _, err := NewIdentity(nil, -time.Second, ""); err == nil ||
		!strings.Contains(err.Error(), "client CA") || !strings.Contains(err.Error(), "user name") || !strings.Contains(err.Error(), "negative") {
		t.Errorf("NewIdentity(nil, -1s, \"\") = %v, want every problem reported", err)
	}
}

func TestIdentityRenewsAtSeventyPercent(t *testing.T) {
	ca, err := NewCA("test-client-ca", time.Hour*24*365)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id := mustIdentity(t, ca, "system:kube-controller-manager")
	id.now = func() time.Time { return now }

	first, err := id.GetClientCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := first.Leaf.Subject.CommonName; got != "system:kube-controller-manager" {
		t.Errorf("certificate CN = %q, want system:kube-controller-manager", got)
	}
	now = now.Add(id.lifetime * 6 / 10)
	if again, _ := id.GetClientCertificate(nil); again != first {
		t.Errorf("certificate renewed at 60%% of its lifetime, want the same one until 70%%")
	}
	now = now.Add(id.lifetime * 2 / 10)
	renewed, err := id.GetClientCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first {
		t.Fatalf("certificate not renewed at 80%% of its lifetime")
	}
	if renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Errorf("renewed certificate has the same serial")
	}
}

func mustIdentity(t *testing.T, ca *CA, user string) *Identity {
	t.Helper()
	id, err := NewIdentity(ca, 0, user)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
