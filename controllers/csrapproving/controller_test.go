package csrapproving

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// start runs a controller against a fake clientset holding objs until the
// test ends. The fake answers SubjectAccessReviews from allow ("<user>
// <subresource>"). It must be called inside a synctest bubble.
func start(t *testing.T, allow map[string]bool, objs ...runtime.Object) *fake.Clientset {
	t.Helper()
	client := fake.NewClientset(objs...)
	client.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		ra := sar.Spec.ResourceAttributes
		if ra == nil || ra.Group != "certificates.k8s.io" || ra.Resource != "certificatesigningrequests" || ra.Verb != "create" {
			t.Errorf("unexpected SubjectAccessReview %+v", sar.Spec)
			return true, sar, nil
		}
		sar.Status.Allowed = allow[sar.Spec.User+" "+ra.Subresource]
		return true, sar, nil
	})
	c, err := New(Config{Client: client, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
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
	return client
}

func conditions(t *testing.T, client *fake.Clientset, name string) []certificatesv1.CertificateSigningRequestCondition {
	t.Helper()
	csr, err := client.CertificatesV1().CertificateSigningRequests().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return csr.Status.Conditions
}

func TestControllerDecides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		named := func(name string, r request) *certificatesv1.CertificateSigningRequest {
			csr := r.build(t)
			csr.Name, csr.UID = name, types.UID("uid-"+name)
			return csr
		}
		bootstrap := named("bootstrap", clientRequest())
		unauthorized := named("unauthorized", with(clientRequest(), func(r *request) { r.user = "system:bootstrap:zzzzzz" }))
		serving := named("serving", servingRequest())
		prefix := named("prefix", with(servingRequest(), func(r *request) { r.dns = []string{"node-10"} }))
		other := named("other", with(clientRequest(), func(r *request) { r.signer = certificatesv1.KubeAPIServerClientSignerName; r.cn = "admin" }))
		client := start(t, map[string]bool{bootstrapUser + " nodeclient": true},
			node("node-1", "InternalIP=10.0.0.1", "Hostname=node-1"),
			bootstrap, unauthorized, serving, prefix, other)
		synctest.Wait()

		want := map[string]struct {
			typ    certificatesv1.RequestConditionType
			reason string
		}{
			"bootstrap":    {certificatesv1.CertificateApproved, ReasonApproved},
			"unauthorized": {certificatesv1.CertificateDenied, ReasonNotAuthorized},
			"serving":      {certificatesv1.CertificateApproved, ReasonApproved},
			"prefix":       {certificatesv1.CertificateDenied, ReasonSANNotAllowed},
		}
		for name, w := range want {
			conds := conditions(t, client, name)
			if len(conds) != 1 || conds[0].Type != w.typ || conds[0].Reason != w.reason || conds[0].Status != corev1.ConditionTrue || conds[0].Message == "" {
				t.Errorf("%s: conditions = %+v, want one %s condition with reason %s", name, conds, w.typ, w.reason)
			}
		}
		if conds := conditions(t, client, "other"); len(conds) != 0 {
			t.Errorf("other signer: conditions = %+v, want none", conds)
		}

		events, err := client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, ev := range events.Items {
			o := ev.InvolvedObject
			if o.Kind != "CertificateSigningRequest" || o.APIVersion != "certificates.k8s.io/v1" || string(o.UID) != "uid-"+o.Name {
				t.Errorf("event %s: involvedObject = %+v", ev.Name, o)
			}
			if ev.Message == "" || ev.Count != 1 || ev.Source.Component == "" {
				t.Errorf("event %s = %+v, want a message, count 1 and a source", ev.Name, ev)
			}
			got[o.Name] = ev.Reason
		}
		wantEvents := map[string]string{"bootstrap": EventApproved, "unauthorized": EventDenied, "serving": EventApproved, "prefix": EventDenied}
		if len(got) != len(wantEvents) || len(events.Items) != len(wantEvents) {
			t.Errorf("events = %v (%d), want %v", got, len(events.Items), wantEvents)
		}
		for name, reason := range wantEvents {
			if got[name] != reason {
				t.Errorf("event for %s has reason %q, want %q", name, got[name], reason)
			}
		}
	})
}

func TestControllerDecidesNewRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := start(t, map[string]bool{node1User + " selfnodeclient": true})
		synctest.Wait()

		renewal := with(clientRequest(), func(r *request) { r.user, r.groups = node1User, []string{nodesGroup} }).build(t)
		renewal.Name = "renewal"
		if _, err := client.CertificatesV1().CertificateSigningRequests().Create(t.Context(), renewal, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// No Node yet: a serving request is denied.
		early := servingRequest().build(t)
		early.Name = "early"
		if _, err := client.CertificatesV1().CertificateSigningRequests().Create(t.Context(), early, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()

		if conds := conditions(t, client, "renewal"); len(conds) != 1 || conds[0].Type != certificatesv1.CertificateApproved {
			t.Errorf("renewal: conditions = %+v, want Approved", conds)
		}
		if conds := conditions(t, client, "early"); len(conds) != 1 || conds[0].Type != certificatesv1.CertificateDenied || conds[0].Reason != ReasonNodeNotFound {
			t.Errorf("early: conditions = %+v, want Denied/%s", conds, ReasonNodeNotFound)
		}
	})
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{Workers: -1, ResyncPeriod: -1})
	if err == nil {
		t.Fatal("New(bad config) = nil error")
	}
	for _, want := range []string{"Client", "Workers", "ResyncPeriod"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New error %q does not mention %s", err, want)
		}
	}
}
