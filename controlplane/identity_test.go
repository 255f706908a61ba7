package controlplane

import (
	"testing"
	"time"

	"tether/pki"
)

func TestIdentityRenewsAtSeventyPercent(t *testing.T) {
	ca, err := pki.NewCA("test-client-ca", time.Hour*24*365)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id := newIdentity(ca, "system:kube-controller-manager")
	id.now = func() time.Time { return now }

	first, err := id.certificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := first.Leaf.Subject.CommonName; got != "system:kube-controller-manager" {
		t.Errorf("certificate CN = %q, want system:kube-controller-manager", got)
	}
	now = now.Add(id.lifetime * 6 / 10)
	if again, _ := id.certificate(nil); again != first {
		t.Errorf("certificate renewed at 60%% of its lifetime, want the same one until 70%%")
	}
	now = now.Add(id.lifetime * 2 / 10)
	renewed, err := id.certificate(nil)
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
