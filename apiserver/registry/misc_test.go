package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

// miscPaths returns "type path" for each error, sorted, so that tests can
// compare what was reported and where.
func miscPaths(errs field.ErrorList) []string {
	var out []string
	for _, e := range errs {
		out = append(out, string(e.Type)+" "+e.Field)
	}
	slices.Sort(out)
	return out
}

// miscCheck compares the errors of one validation with the expected
// "type path" strings (in any order).
func miscCheck(t *testing.T, what string, errs field.ErrorList, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := miscPaths(errs); !slices.Equal(got, want) {
		t.Errorf("%s: errors = %q, want %q\n%v", what, got, want, errs)
	}
}

// miscValidate runs the full create validation of res (metadata included).
func miscValidate(res *Resource, obj runtime.Object) field.ErrorList {
	if res.Default != nil {
		res.Default(obj)
	}
	return newStrategy(res, false).Validate(context.Background(), obj)
}

// miscValidateUpdate runs the full update validation of res; both objects
// get a resource version so that the metadata checks pass.
func miscValidateUpdate(res *Resource, status bool, obj, old runtime.Object) field.ErrorList {
	if res.Default != nil {
		res.Default(obj)
	}
	return newStrategy(res, status).ValidateUpdate(context.Background(), obj, old)
}

func miscMeta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "ns1", ResourceVersion: "1"}
}

func TestConfigMapValidate(t *testing.T) {
	big := strings.Repeat("x", cmMaxSize)
	tests := []struct {
		name string
		cm   corev1.ConfigMap
		want []string
	}{
		{"valid", corev1.ConfigMap{ObjectMeta: miscMeta("a"), Data: map[string]string{"a.conf": "x", "_b-c": "y"}, BinaryData: map[string][]byte{"bin": {1}}}, nil},
		{"bad keys", corev1.ConfigMap{ObjectMeta: miscMeta("a"), Data: map[string]string{"a/b": "x"}, BinaryData: map[string][]byte{"..": {1}}},
			[]string{"FieldValueInvalid data[a/b]", "FieldValueInvalid binaryData[..]"}},
		{"key in both", corev1.ConfigMap{ObjectMeta: miscMeta("a"), Data: map[string]string{"k": "x"}, BinaryData: map[string][]byte{"k": {1}}},
			[]string{"FieldValueInvalid data[k]"}},
		{"too large", corev1.ConfigMap{ObjectMeta: miscMeta("a"), Data: map[string]string{"a": big}, BinaryData: map[string][]byte{"b": {1}}},
			[]string{"FieldValueTooLong data"}},
		{"bad name", corev1.ConfigMap{ObjectMeta: miscMeta("A_b")}, []string{"FieldValueInvalid metadata.name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			miscCheck(t, "Validate", miscValidate(ConfigMaps, &tt.cm), tt.want...)
		})
	}
}

func TestConfigMapImmutable(t *testing.T) {
	yes, no := true, false
	old := &corev1.ConfigMap{ObjectMeta: miscMeta("a"), Data: map[string]string{"a": "1"}, Immutable: &yes}
	tests := []struct {
		name   string
		mutate func(*corev1.ConfigMap)
		want   []string
	}{
		{"labels may change", func(c *corev1.ConfigMap) { c.Labels = map[string]string{"x": "y"} }, nil},
		{"data", func(c *corev1.ConfigMap) { c.Data["a"] = "2" }, []string{"FieldValueForbidden data"}},
		{"binaryData", func(c *corev1.ConfigMap) { c.BinaryData = map[string][]byte{"b": nil} }, []string{"FieldValueForbidden binaryData"}},
		{"unset immutable", func(c *corev1.ConfigMap) { c.Immutable = &no }, []string{"FieldValueForbidden immutable"}},
		{"drop immutable", func(c *corev1.ConfigMap) { c.Immutable = nil }, []string{"FieldValueForbidden immutable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cm := old.DeepCopy()
			tt.mutate(cm)
			miscCheck(t, "ValidateUpdate", miscValidateUpdate(ConfigMaps, false, cm, old), tt.want...)
		})
	}
	// A mutable ConfigMap may become immutable and change at once.
	mutable := old.DeepCopy()
	mutable.Immutable = nil
	cm := old.DeepCopy()
	cm.Data["a"] = "2"
	miscCheck(t, "ValidateUpdate(mutable)", miscValidateUpdate(ConfigMaps, false, cm, mutable))
}

func TestSecretValidate(t *testing.T) {
	tests := []struct {
		name   string
		secret corev1.Secret
		want   []string
	}{
		{"opaque", corev1.Secret{Data: map[string][]byte{"any": nil}}, nil},
		{"custom type", corev1.Secret{Type: "example.com/thing"}, nil},
		{"bad key", corev1.Secret{Data: map[string][]byte{"a b": nil}}, []string{"FieldValueInvalid data[a b]"}},
		{"too large", corev1.Secret{Data: map[string][]byte{"a": make([]byte, cmMaxSize), "b": {1}}}, []string{"FieldValueTooLong data"}},
		{"sa token without annotation", corev1.Secret{Type: corev1.SecretTypeServiceAccountToken},
			[]string{"FieldValueRequired metadata.annotations[kubernetes.io/service-account.name]"}},
		{"sa token", corev1.Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}}, Type: corev1.SecretTypeServiceAccountToken}, nil},
		{"dockerconfigjson missing", corev1.Secret{Type: corev1.SecretTypeDockerConfigJson}, []string{"FieldValueRequired data[.dockerconfigjson]"}},
		{"dockerconfigjson not json", corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{".dockerconfigjson": []byte("{")}},
			[]string{"FieldValueInvalid data[.dockerconfigjson]"}},
		{"dockerconfigjson", corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{".dockerconfigjson": []byte(`{"auths":{}}`)}}, nil},
		{"dockercfg missing", corev1.Secret{Type: corev1.SecretTypeDockercfg}, []string{"FieldValueRequired data[.dockercfg]"}},
		{"tls missing", corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": nil}}, []string{"FieldValueRequired data[tls.key]"}},
		{"tls", corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": nil, "tls.key": nil}}, nil},
		{"basic auth", corev1.Secret{Type: corev1.SecretTypeBasicAuth, Data: map[string][]byte{"password": nil}}, nil},
		{"basic auth empty", corev1.Secret{Type: corev1.SecretTypeBasicAuth},
			[]string{"FieldValueRequired data[username]", "FieldValueRequired data[password]"}},
		{"ssh", corev1.Secret{Type: corev1.SecretTypeSSHAuth}, []string{"FieldValueRequired data[ssh-privatekey]"}},
		{"bootstrap token", corev1.Secret{Type: corev1.SecretTypeBootstrapToken, Data: map[string][]byte{"token-id": []byte("abcdef")}},
			[]string{"FieldValueRequired data[token-secret]"}},
		{"stringData counts", corev1.Secret{Type: corev1.SecretTypeTLS, StringData: map[string]string{"tls.crt": "c", "tls.key": "k"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.secret.DeepCopy()
			s.Name, s.Namespace = "s", "ns1"
			miscCheck(t, "Validate", miscValidate(Secrets, s), tt.want...)
		})
	}
}

func TestSecretDefault(t *testing.T) {
	s := &corev1.Secret{Data: map[string][]byte{"a": []byte("1"), "b": []byte("2")}, StringData: map[string]string{"b": "3", "c": "4"}}
	Secrets.Default(s)
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("type = %q, want Opaque", s.Type)
	}
	if s.StringData != nil || string(s.Data["a"]) != "1" || string(s.Data["b"]) != "3" || string(s.Data["c"]) != "4" {
		t.Errorf("after Default: data = %q, stringData = %q; want stringData merged into data", s.Data, s.StringData)
	}
}

func TestSecretUpdate(t *testing.T) {
	yes := true
	old := &corev1.Secret{ObjectMeta: miscMeta("s"), Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"a": nil}}
	s := old.DeepCopy()
	s.Type = "example.com/other"
	miscCheck(t, "change type", miscValidateUpdate(Secrets, false, s, old), "FieldValueInvalid type")

	old.Immutable = &yes
	s = old.DeepCopy()
	s.StringData = map[string]string{"a": "x"}
	miscCheck(t, "change immutable data", miscValidateUpdate(Secrets, false, s, old), "FieldValueForbidden data")
	s = old.DeepCopy()
	s.Immutable = nil
	miscCheck(t, "clear immutable", miscValidateUpdate(Secrets, false, s, old), "FieldValueForbidden immutable")
}

func TestLeaseValidate(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	str := func(v string) *string { return &v }
	tests := []struct {
		name string
		spec coordinationv1.LeaseSpec
		want []string
	}{
		{"empty", coordinationv1.LeaseSpec{}, nil},
		{"valid", coordinationv1.LeaseSpec{HolderIdentity: str("n1"), LeaseDurationSeconds: i32(40), LeaseTransitions: i32(0)}, nil},
		{"zero duration", coordinationv1.LeaseSpec{LeaseDurationSeconds: i32(0)}, []string{"FieldValueInvalid spec.leaseDurationSeconds"}},
		{"negative transitions", coordinationv1.LeaseSpec{LeaseTransitions: i32(-1)}, []string{"FieldValueInvalid spec.leaseTransitions"}},
		{"preferred holder without strategy", coordinationv1.LeaseSpec{PreferredHolder: str("x")}, []string{"FieldValueForbidden spec.preferredHolder"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &coordinationv1.Lease{ObjectMeta: miscMeta("l"), Spec: tt.spec}
			miscCheck(t, "Validate", miscValidate(Leases, l), tt.want...)
		})
	}
}

func TestEventValidate(t *testing.T) {
	now := metav1.NowMicro()
	newStyle := corev1.Event{
		EventTime: now, ReportingController: "example.com/ctrl", ReportingInstance: "ctrl-1",
		Action: "Bind", Reason: "Scheduled", Type: corev1.EventTypeNormal,
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "ns1", Name: "p"},
	}
	tests := []struct {
		name   string
		res    *Resource
		mutate func(*corev1.Event)
		want   []string
	}{
		{"core old style", Events, func(e *corev1.Event) { *e = corev1.Event{Reason: "Started", Message: strings.Repeat("m", 2000)} }, nil},
		{"core cluster-scoped object", Events, func(e *corev1.Event) {
			*e = corev1.Event{InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "n"}}
		}, nil},
		{"core other namespace", Events, func(e *corev1.Event) { e.InvolvedObject.Namespace = "ns2" }, []string{"FieldValueInvalid involvedObject.namespace"}},
		{"core long reason", Events, func(e *corev1.Event) { e.EventTime = metav1.MicroTime{}; e.Reason = strings.Repeat("r", 129) }, []string{"FieldValueTooLong reason"}},
		{"core new style", Events, func(*corev1.Event) {}, nil},
		{"core new style incomplete", Events, func(e *corev1.Event) {
			e.ReportingController, e.ReportingInstance, e.Action, e.Reason = "", "", "", ""
			e.Message = strings.Repeat("m", 1025)
		}, []string{"FieldValueRequired reportingComponent", "FieldValueRequired reportingInstance", "FieldValueRequired action", "FieldValueRequired reason", "FieldValueTooLong message"}},
		{"v1 valid", EventsV1, func(*corev1.Event) {}, nil},
		{"v1 other namespace", EventsV1, func(e *corev1.Event) { e.InvolvedObject.Namespace = "ns2" }, []string{"FieldValueInvalid regarding.namespace"}},
		{"v1 needs eventTime", EventsV1, func(e *corev1.Event) { e.EventTime = metav1.MicroTime{} }, []string{"FieldValueRequired eventTime"}},
		{"v1 type", EventsV1, func(e *corev1.Event) { e.Type = "Bad" }, []string{"FieldValueNotSupported type"}},
		{"v1 bad controller", EventsV1, func(e *corev1.Event) { e.ReportingController = "a b" }, []string{"FieldValueInvalid reportingController"}},
		{"v1 long note", EventsV1, func(e *corev1.Event) { e.Message = strings.Repeat("m", 1025) }, []string{"FieldValueTooLong note"}},
		{"v1 deprecated fields", EventsV1, func(e *corev1.Event) {
			e.Count, e.Source.Component, e.FirstTimestamp = 2, "kubelet", metav1.Now()
		}, []string{"FieldValueInvalid deprecatedCount", "FieldValueInvalid deprecatedSource", "FieldValueInvalid deprecatedFirstTimestamp"}},
		{"v1 series", EventsV1, func(e *corev1.Event) { e.Series = &corev1.EventSeries{Count: 1} },
			[]string{"FieldValueInvalid series.count", "FieldValueRequired series.lastObservedTime"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStyle.DeepCopy()
			tt.mutate(e)
			e.ObjectMeta = miscMeta("e")
			miscCheck(t, "Validate", miscValidate(tt.res, e), tt.want...)
		})
	}
}

func TestEventV1Update(t *testing.T) {
	old := &corev1.Event{
		ObjectMeta: miscMeta("e"), EventTime: metav1.NowMicro(), ReportingController: "example.com/ctrl", ReportingInstance: "i",
		Action: "Bind", Reason: "Scheduled", Type: corev1.EventTypeNormal, Message: "hello",
	}
	e := old.DeepCopy()
	e.Series = &corev1.EventSeries{Count: 2, LastObservedTime: metav1.NowMicro()}
	e.EventTime = metav1.NewMicroTime(old.EventTime.Add(time.Nanosecond))
	miscCheck(t, "series", miscValidateUpdate(EventsV1, false, e, old))
	e = old.DeepCopy()
	e.Message, e.Reason = "changed", "Other"
	miscCheck(t, "note and reason", miscValidateUpdate(EventsV1, false, e, old), "FieldValueInvalid note", "FieldValueInvalid reason")
	// The core API lets old-style clients update counts and messages.
	miscCheck(t, "core", miscValidateUpdate(Events, false, e, old))
}

func TestEventRow(t *testing.T) {
	hourAgo := metav1.NewTime(time.Now().Add(-time.Hour))
	dayAgo := metav1.NewTime(time.Now().Add(-24 * time.Hour))
	tests := []struct {
		name string
		ev   corev1.Event
		want []interface{}
	}{
		{"old style", corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: "p.1"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "p", FieldPath: "spec.containers{c}"},
			Reason:         "Pulled", Message: " done\n", Type: "Normal", Count: 3,
			Source:         corev1.EventSource{Component: "kubelet", Host: "n1"},
			FirstTimestamp: dayAgo, LastTimestamp: hourAgo,
		}, []interface{}{"60m", "Normal", "Pulled", "pod/p", "spec.containers{c}", "kubelet, n1", "done", "24h", int64(3), "p.1"}},
		{"new style series", corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: "n.1"},
			InvolvedObject: corev1.ObjectReference{Kind: "Node"},
			Reason:         "Ready", Type: "Warning", ReportingController: "ctrl", ReportingInstance: "i",
			EventTime: metav1.MicroTime(dayAgo),
			Series:    &corev1.EventSeries{Count: 5, LastObservedTime: metav1.MicroTime(hourAgo)},
		}, []interface{}{"60m", "Warning", "Ready", "node", "", "ctrl, i", "", "24h", int64(5), "n.1"}},
		{"new style single", corev1.Event{EventTime: metav1.MicroTime(dayAgo), ReportingController: "ctrl"},
			[]interface{}{"24h", "", "", "", "", "ctrl", "", "24h", int64(1), ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := eventRow(&tt.ev)
			if len(got) != len(eventColumns) {
				t.Fatalf("eventRow() has %d cells, want %d (one per column)", len(got), len(eventColumns))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("eventRow() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEventFields(t *testing.T) {
	ev := &corev1.Event{
		InvolvedObject:      corev1.ObjectReference{Kind: "Pod", Namespace: "ns1", Name: "p", UID: "u1"},
		ReportingController: "example.com/ctrl", Type: "Normal", Reason: "R",
	}
	f := eventFields(ev)
	for k, want := range map[string]string{
		"involvedObject.kind": "Pod", "involvedObject.name": "p", "involvedObject.uid": "u1",
		"reportingComponent": "example.com/ctrl", "source": "example.com/ctrl", "type": "Normal", "reason": "R",
	} {
		if f[k] != want {
			t.Errorf("eventFields()[%q] = %q, want %q", k, f[k], want)
		}
	}
}

// miscCSRRequest returns a PEM certificate request signed by a new key.
func miscCSRRequest(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:n1"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// miscCertificate returns a PEM self-signed certificate.
func miscCertificate(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func miscCSR(t *testing.T) *certificatesv1.CertificateSigningRequest {
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-1", ResourceVersion: "1"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    miscCSRRequest(t),
			SignerName: "kubernetes.io/kube-apiserver-client-kubelet",
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
			Username:   "system:node:n1",
		},
	}
}

func TestCSRValidate(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	tampered := func(t *testing.T) []byte {
		block, _ := pem.Decode(miscCSRRequest(t))
		block.Bytes[len(block.Bytes)-1] ^= 0xff // break the signature
		return pem.EncodeToMemory(block)
	}
	tests := []struct {
		name   string
		mutate func(*testing.T, *certificatesv1.CertificateSigningRequestSpec)
		want   []string
	}{
		{"valid", func(*testing.T, *certificatesv1.CertificateSigningRequestSpec) {}, nil},
		{"not pem", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.Request = []byte("hello") }, []string{"FieldValueInvalid spec.request"}},
		{"wrong block", func(t *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.Request = miscCertificate(t) }, []string{"FieldValueInvalid spec.request"}},
		{"bad signature", func(t *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.Request = tampered(t) }, []string{"FieldValueInvalid spec.request"}},
		{"no signer", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.SignerName = "" }, []string{"FieldValueRequired spec.signerName"}},
		{"unqualified signer", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.SignerName = "signer" }, []string{"FieldValueInvalid spec.signerName"}},
		{"two slashes", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.SignerName = "example.com/a/b" }, []string{"FieldValueInvalid spec.signerName"}},
		{"legacy signer", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) {
			s.SignerName = "kubernetes.io/legacy-unknown"
		}, []string{"FieldValueInvalid spec.signerName"}},
		{"bad domain", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.SignerName = "Example_com/a" }, []string{"FieldValueInvalid spec.signerName"}},
		{"no usages", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.Usages = nil }, []string{"FieldValueRequired spec.usages"}},
		{"bad usage", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Usages = append(s.Usages, "flying", "client auth")
		},
			[]string{"FieldValueNotSupported spec.usages[2]", "FieldValueDuplicate spec.usages[3]"}},
		{"short expiration", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.ExpirationSeconds = i32(599) }, []string{"FieldValueInvalid spec.expirationSeconds"}},
		{"expiration", func(_ *testing.T, s *certificatesv1.CertificateSigningRequestSpec) { s.ExpirationSeconds = i32(600) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := miscCSR(t)
			tt.mutate(t, &csr.Spec)
			miscCheck(t, "Validate", miscValidate(CertificateSigningRequests, csr), tt.want...)
		})
	}
}

func TestCSRPrepareForCreate(t *testing.T) {
	csr := miscCSR(t)
	csr.Spec.Username, csr.Spec.Groups = "system:admin", []string{"system:masters"}
	csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}}
	u := &user.DefaultInfo{Name: "system:bootstrap:abcdef", UID: "u1", Groups: []string{"system:bootstrappers"}, Extra: map[string][]string{"k": {"v"}}}
	ctx := request.WithUser(context.Background(), u)
	newStrategy(CertificateSigningRequests, false).PrepareForCreate(ctx, csr)
	s := csr.Spec
	if s.Username != u.Name || s.UID != "u1" || !slices.Equal(s.Groups, u.Groups) || len(s.Extra) != 1 || s.Extra["k"][0] != "v" {
		t.Errorf("PrepareForCreate: spec user = %q %q %q %v, want the requesting user %+v", s.Username, s.UID, s.Groups, s.Extra, u)
	}
	if len(csr.Status.Conditions) != 0 {
		t.Errorf("PrepareForCreate: conditions = %v, want none", csr.Status.Conditions)
	}
}

func TestCSRUpdateKeepsSpec(t *testing.T) {
	old := miscCSR(t)
	csr := old.DeepCopy()
	csr.Labels = map[string]string{"a": "b"}
	miscCheck(t, "labels", miscValidateUpdate(CertificateSigningRequests, false, csr, old))
	csr.Spec.Username = "someone-else"
	miscCheck(t, "spec", miscValidateUpdate(CertificateSigningRequests, false, csr, old), "FieldValueForbidden spec")
}

func miscCond(t certificatesv1.RequestConditionType) certificatesv1.CertificateSigningRequestCondition {
	return certificatesv1.CertificateSigningRequestCondition{Type: t, Status: corev1.ConditionTrue}
}

func TestCSRApproval(t *testing.T) {
	ctx := context.Background()
	st := &csrApprovalStrategy{RESTUpdateStrategy: newStrategy(CertificateSigningRequests, false)}
	old := miscCSR(t)
	old.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: "Custom", Status: corev1.ConditionFalse}}

	// Everything but the conditions comes from the stored object.
	csr := old.DeepCopy()
	csr.Spec.Username = "mallory"
	csr.Spec.Usages = nil
	csr.Labels = map[string]string{"x": "y"}
	csr.Status.Certificate = miscCertificate(t)
	csr.Status.Conditions = append(csr.Status.Conditions, miscCond(certificatesv1.CertificateApproved))
	st.PrepareForUpdate(ctx, csr, old)
	if csr.Spec.Username != old.Spec.Username || len(csr.Spec.Usages) != 2 || csr.Labels != nil || csr.Status.Certificate != nil {
		t.Errorf("PrepareForUpdate kept client changes outside the conditions: %+v", csr)
	}
	if len(csr.Status.Conditions) != 2 || csr.Status.Conditions[1].LastUpdateTime.IsZero() || csr.Status.Conditions[1].LastTransitionTime.IsZero() {
		t.Errorf("PrepareForUpdate: conditions = %+v, want Approved with timestamps", csr.Status.Conditions)
	}
	miscCheck(t, "approve", st.ValidateUpdate(ctx, csr, old))

	approved := csr
	tests := []struct {
		name  string
		old   *certificatesv1.CertificateSigningRequest
		conds []certificatesv1.CertificateSigningRequestCondition
		want  []string
	}{
		{"approve and deny", old, []certificatesv1.CertificateSigningRequestCondition{miscCond(certificatesv1.CertificateApproved), miscCond(certificatesv1.CertificateDenied)},
			[]string{"FieldValueInvalid status.conditions"}},
		{"remove approved", approved, nil, []string{"FieldValueForbidden status.conditions"}},
		{"deny approved", approved, []certificatesv1.CertificateSigningRequestCondition{miscCond(certificatesv1.CertificateDenied)},
			[]string{"FieldValueForbidden status.conditions"}},
		{"duplicate", old, []certificatesv1.CertificateSigningRequestCondition{miscCond(certificatesv1.CertificateApproved), miscCond(certificatesv1.CertificateApproved)},
			[]string{"FieldValueDuplicate status.conditions[1].type"}},
		{"approved false", old, []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionFalse}},
			[]string{"FieldValueNotSupported status.conditions[0].status"}},
		{"no type", old, []certificatesv1.CertificateSigningRequestCondition{{Status: corev1.ConditionTrue}},
			[]string{"FieldValueRequired status.conditions[0].type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := tt.old.DeepCopy()
			csr.Status.Conditions = tt.conds
			st.PrepareForUpdate(ctx, csr, tt.old)
			miscCheck(t, "ValidateUpdate", st.ValidateUpdate(ctx, csr, tt.old), tt.want...)
		})
	}
}

func TestCSRStatusUpdate(t *testing.T) {
	ctx := context.Background()
	st := newStrategy(CertificateSigningRequests, true)
	pending := miscCSR(t)
	approved := pending.DeepCopy()
	approved.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{miscCond(certificatesv1.CertificateApproved)}
	cert := miscCertificate(t)
	issued := approved.DeepCopy()
	issued.Status.Certificate = cert

	tests := []struct {
		name   string
		old    *certificatesv1.CertificateSigningRequest
		mutate func(*certificatesv1.CertificateSigningRequest)
		want   []string
	}{
		{"issue", approved, func(c *certificatesv1.CertificateSigningRequest) { c.Status.Certificate = cert }, nil},
		{"issue pending", pending, func(c *certificatesv1.CertificateSigningRequest) { c.Status.Certificate = cert }, []string{"FieldValueForbidden status.certificate"}},
		{"issue garbage", approved, func(c *certificatesv1.CertificateSigningRequest) { c.Status.Certificate = []byte("x") }, []string{"FieldValueInvalid status.certificate"}},
		{"issue request", approved, func(c *certificatesv1.CertificateSigningRequest) { c.Status.Certificate = c.Spec.Request }, []string{"FieldValueInvalid status.certificate"}},
		{"replace certificate", issued, func(c *certificatesv1.CertificateSigningRequest) { c.Status.Certificate = miscCertificate(t) }, []string{"FieldValueForbidden status.certificate"}},
		{"fail", approved, func(c *certificatesv1.CertificateSigningRequest) {
			c.Status.Conditions = append(c.Status.Conditions, miscCond(certificatesv1.CertificateFailed))
		}, nil},
		{"approve through status", pending, func(c *certificatesv1.CertificateSigningRequest) {
			c.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{miscCond(certificatesv1.CertificateApproved)}
		}, []string{"FieldValueForbidden status.conditions"}},
		{"drop approval through status", approved, func(c *certificatesv1.CertificateSigningRequest) { c.Status.Conditions = nil },
			[]string{"FieldValueForbidden status.conditions"}},
		{"spec ignored", approved, func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Username = "x" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := tt.old.DeepCopy()
			tt.mutate(csr)
			st.PrepareForUpdate(ctx, csr, tt.old)
			miscCheck(t, "ValidateUpdate", st.ValidateUpdate(ctx, csr, tt.old), tt.want...)
			if csr.Spec.Username != tt.old.Spec.Username {
				t.Errorf("status update changed spec.username to %q", csr.Spec.Username)
			}
		})
	}
}

func TestCSRRow(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	cond := func(types ...certificatesv1.RequestConditionType) []certificatesv1.CertificateSigningRequestCondition {
		var out []certificatesv1.CertificateSigningRequestCondition
		for _, t := range types {
			out = append(out, miscCond(t))
		}
		return out
	}
	tests := []struct {
		name      string
		status    certificatesv1.CertificateSigningRequestStatus
		exp       *int32
		condition string
		duration  string
	}{
		{"pending", certificatesv1.CertificateSigningRequestStatus{}, nil, "Pending", "<none>"},
		{"approved", certificatesv1.CertificateSigningRequestStatus{Conditions: cond("Approved")}, i32(86400), "Approved", "24h"},
		{"issued", certificatesv1.CertificateSigningRequestStatus{Conditions: cond("Approved"), Certificate: []byte("c")}, i32(3600), "Approved,Issued", "60m"},
		{"failed", certificatesv1.CertificateSigningRequestStatus{Conditions: cond("Approved", "Failed")}, nil, "Approved,Failed", "<none>"},
		{"denied", certificatesv1.CertificateSigningRequestStatus{Conditions: cond("Denied")}, nil, "Denied", "<none>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := &certificatesv1.CertificateSigningRequest{
				ObjectMeta: metav1.ObjectMeta{Name: "c"},
				Spec:       certificatesv1.CertificateSigningRequestSpec{SignerName: "example.com/s", Username: "u", ExpirationSeconds: tt.exp},
				Status:     tt.status,
			}
			got := CertificateSigningRequests.Row(csr)
			want := []interface{}{"c", "<unknown>", "example.com/s", "u", tt.duration, tt.condition}
			if !slices.Equal(got, want) {
				t.Errorf("Row() = %q, want %q", got, want)
			}
		})
	}
}

func TestServiceAccountSecretNames(t *testing.T) {
	sa := &corev1.ServiceAccount{Secrets: []corev1.ObjectReference{{Name: "tok", Namespace: "other", Kind: "Secret", UID: "u"}}}
	ServiceAccounts.PrepareForCreate(context.Background(), sa)
	if want := (corev1.ObjectReference{Name: "tok"}); sa.Secrets[0] != want {
		t.Errorf("PrepareForCreate: secret reference = %+v, want %+v", sa.Secrets[0], want)
	}
}

func TestTableRows(t *testing.T) {
	tests := []struct {
		res  *Resource
		obj  runtime.Object
		want []interface{}
	}{
		{ConfigMaps, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Data: map[string]string{"a": ""}, BinaryData: map[string][]byte{"b": nil}},
			[]interface{}{"c", int64(2), "<unknown>"}},
		{Secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": nil, "tls.key": nil}},
			[]interface{}{"s", "kubernetes.io/tls", int64(2), "<unknown>"}},
		{ServiceAccounts, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
			[]interface{}{"default", int64(0), "<unknown>"}},
		{Leases, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: coordinationv1.LeaseSpec{HolderIdentity: func() *string { s := "n1"; return &s }()}},
			[]interface{}{"n1", "n1", "<unknown>"}},
		{Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns1"}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}},
			[]interface{}{"ns1", "Terminating", "<unknown>"}},
	}
	for _, tt := range tests {
		t.Run(tt.res.Resource, func(t *testing.T) {
			tbl, err := newTable(tt.res).ConvertToTable(context.Background(), tt.obj, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(tbl.Rows) != 1 || !slices.Equal(tbl.Rows[0].Cells, tt.want) {
				t.Errorf("ConvertToTable() rows = %v, want one row %q", tbl.Rows, tt.want)
			}
			if len(tbl.ColumnDefinitions) != len(tt.want) {
				t.Errorf("ConvertToTable() has %d columns for %d cells", len(tbl.ColumnDefinitions), len(tt.want))
			}
		})
	}
}

// TestCSRStorage checks the requester stamping and the approval
// subresource against etcd.
func TestCSRStorage(t *testing.T) {
	main, status, err := NewStore(CertificateSigningRequests, nsTestStorage(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(main.Destroy)
	approval := NewCSRApprovalStorage(main).(rest.Patcher)
	u := &user.DefaultInfo{Name: "system:node:n1", Groups: []string{"system:nodes"}}
	ctx := request.WithUser(request.WithNamespace(t.Context(), ""), u)

	in := miscCSR(t)
	in.ResourceVersion = ""
	in.Spec.Username = "admin"
	obj, err := main.Create(ctx, in, rest.ValidateAllObjectFunc, &metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	csr := obj.(*certificatesv1.CertificateSigningRequest)
	if csr.Spec.Username != u.Name || !slices.Equal(csr.Spec.Groups, u.Groups) {
		t.Errorf("created CSR requester = %q %q, want %q %q", csr.Spec.Username, csr.Spec.Groups, u.Name, u.Groups)
	}

	update := func(r rest.Updater, c *certificatesv1.CertificateSigningRequest) (*certificatesv1.CertificateSigningRequest, error) {
		obj, _, err := r.Update(ctx, c.Name, rest.DefaultUpdatedObjectInfo(c), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{})
		if err != nil {
			return nil, err
		}
		return obj.(*certificatesv1.CertificateSigningRequest), nil
	}

	// The approval subresource changes the conditions only.
	c := csr.DeepCopy()
	c.Spec.Username = "admin"
	c.Labels = map[string]string{"x": "y"}
	c.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "AutoApproved"}}
	got, err := update(approval, c)
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	if got.Spec.Username != u.Name || got.Labels != nil || csrConditionString(got) != "Approved" {
		t.Errorf("after approval: username %q, labels %v, condition %q; want the spec and metadata kept, Approved", got.Spec.Username, got.Labels, csrConditionString(got))
	}

	// Denying an approved request is refused.
	c = got.DeepCopy()
	c.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue}}
	if _, err := update(approval, c); !apierrors.IsInvalid(err) {
		t.Errorf("deny approved request: err = %v, want Invalid", err)
	}

	// The signer issues through status.
	c = got.DeepCopy()
	c.Status.Certificate = miscCertificate(t)
	got, err = update(status, c)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if csrConditionString(got) != "Approved,Issued" {
		t.Errorf("after issue: condition %q, want Approved,Issued", csrConditionString(got))
	}
}
