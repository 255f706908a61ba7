package registry

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/endpoints/request"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// csrMaxSignerName bounds signerName: a DNS subdomain, "/", and a path
// long enough for "<namespace>.<name>".
const csrMaxSignerName = 571

// csrLegacySigner stood for "any signer" in certificates.k8s.io/v1beta1;
// v1 requests must name their signer.
const csrLegacySigner = "kubernetes.io/legacy-unknown"

// csrMinExpirationSeconds is the shortest certificate lifetime a request
// may ask for: ten minutes.
const csrMinExpirationSeconds = 600

var csrUsages = []certificatesv1.KeyUsage{
	certificatesv1.UsageSigning, certificatesv1.UsageDigitalSignature, certificatesv1.UsageContentCommitment,
	certificatesv1.UsageKeyEncipherment, certificatesv1.UsageKeyAgreement, certificatesv1.UsageDataEncipherment,
	certificatesv1.UsageCertSign, certificatesv1.UsageCRLSign, certificatesv1.UsageEncipherOnly,
	certificatesv1.UsageDecipherOnly, certificatesv1.UsageAny, certificatesv1.UsageServerAuth,
	certificatesv1.UsageClientAuth, certificatesv1.UsageCodeSigning, certificatesv1.UsageEmailProtection,
	certificatesv1.UsageSMIME, certificatesv1.UsageIPsecEndSystem, certificatesv1.UsageIPsecTunnel,
	certificatesv1.UsageIPsecUser, certificatesv1.UsageTimestamping, certificatesv1.UsageOCSPSigning,
	certificatesv1.UsageMicrosoftSGC, certificatesv1.UsageNetscapeSGC,
}

// CertificateSigningRequests is certificates.k8s.io/v1
// CertificateSigningRequest.
//
// The requester is recorded by the server: on create, spec.username, uid,
// groups and extra are taken from the authenticated user, whatever the client
// sent. The spec never changes afterwards. Approval and denial go through
// the approval subresource (NewCSRApprovalStorage); the signer writes the
// certificate, and Failed conditions, through status.
var CertificateSigningRequests = &Resource{
	GVK:        certificatesv1.SchemeGroupVersion.WithKind("CertificateSigningRequest"),
	Resource:   "certificatesigningrequests",
	ShortNames: []string{"csr"},
	HasStatus:  true,
	New:        func() runtime.Object { return &certificatesv1.CertificateSigningRequest{} },
	NewList:    func() runtime.Object { return &certificatesv1.CertificateSigningRequestList{} },
	// Any name that fits in a URL path segment will do, as upstream.
	NameValidation: func(string, bool) []string { return nil },

	Default: func(obj runtime.Object) {
		csr := obj.(*certificatesv1.CertificateSigningRequest)
		for i := range csr.Status.Conditions {
			if csr.Status.Conditions[i].Status == "" {
				csr.Status.Conditions[i].Status = corev1.ConditionTrue
			}
		}
	},
	PrepareForCreate: func(ctx context.Context, obj runtime.Object) {
		spec := &obj.(*certificatesv1.CertificateSigningRequest).Spec
		spec.Username, spec.UID, spec.Groups, spec.Extra = "", "", nil, nil
		u, ok := request.UserFrom(ctx)
		if !ok {
			return
		}
		spec.Username, spec.UID = u.GetName(), u.GetUID()
		spec.Groups = slices.Clone(u.GetGroups())
		if extra := u.GetExtra(); len(extra) > 0 {
			spec.Extra = make(map[string]certificatesv1.ExtraValue, len(extra))
			for k, v := range extra {
				spec.Extra[k] = slices.Clone(v)
			}
		}
	},
	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		return csrValidateSpec(&obj.(*certificatesv1.CertificateSigningRequest).Spec, field.NewPath("spec"))
	},
	ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
		csr, oldCSR := obj.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
		if !equality.Semantic.DeepEqual(csr.Spec, oldCSR.Spec) {
			return field.ErrorList{field.Forbidden(field.NewPath("spec"), "field is immutable")}
		}
		return nil
	},
	PrepareForStatusUpdate: func(_ context.Context, obj, old runtime.Object) {
		csr, oldCSR := obj.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
		// Approved and Denied are the approver's: keep their stored form.
		for _, t := range []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved, certificatesv1.CertificateDenied} {
			i, j := csrCondition(csr, t), csrCondition(oldCSR, t)
			if i >= 0 && j >= 0 {
				csr.Status.Conditions[i] = oldCSR.Status.Conditions[j]
			}
		}
		csrStampConditions(csr, oldCSR, time.Now())
	},
	ValidateStatusUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
		csr, oldCSR := obj.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
		conds := field.NewPath("status", "conditions")
		errs := csrValidateConditions(csr.Status.Conditions, conds)
		errs = append(errs, csrKeepConditions(csr, oldCSR, conds)...)
		for _, t := range []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved, certificatesv1.CertificateDenied} {
			if csrCondition(csr, t) >= 0 && csrCondition(oldCSR, t) < 0 {
				errs = append(errs, field.Forbidden(conds, fmt.Sprintf("a condition of type %q may only be added through the approval subresource", t)))
			}
		}
		return append(errs, csrValidateCertificate(csr, oldCSR)...)
	},

	Fields: func(obj runtime.Object) fields.Set {
		return fields.Set{"spec.signerName": obj.(*certificatesv1.CertificateSigningRequest).Spec.SignerName}
	},
	Columns: []metav1.TableColumnDefinition{
		NameColumn,
		AgeColumn,
		{Name: "SignerName", Type: "string", Description: "The signer asked to issue the certificate."},
		{Name: "Requestor", Type: "string", Description: "The user who created the request."},
		{Name: "RequestedDuration", Type: "string", Description: "The certificate lifetime asked for."},
		{Name: "Condition", Type: "string", Description: "Approved or Denied or Pending, then Failed and Issued if so."},
	},
	Row: func(obj runtime.Object) []interface{} {
		csr := obj.(*certificatesv1.CertificateSigningRequest)
		signer := csr.Spec.SignerName
		if signer == "" {
			signer = "<none>"
		}
		requested := "<none>"
		if s := csr.Spec.ExpirationSeconds; s != nil {
			requested = duration.HumanDuration(time.Duration(*s) * time.Second)
		}
		return []interface{}{csr.Name, Age(csr.CreationTimestamp), signer, csr.Spec.Username, requested, csrConditionString(csr)}
	},
}

// csrConditionString summarizes a request for tables: "Denied", "Approved"
// or "Pending", followed by ",Failed" and ",Issued" where they apply.
func csrConditionString(csr *certificatesv1.CertificateSigningRequest) string {
	has := func(t certificatesv1.RequestConditionType) bool {
		i := csrCondition(csr, t)
		return i >= 0 && csr.Status.Conditions[i].Status != corev1.ConditionFalse
	}
	s := "Pending"
	switch {
	case has(certificatesv1.CertificateDenied):
		s = "Denied"
	case has(certificatesv1.CertificateApproved):
		s = "Approved"
	}
	if has(certificatesv1.CertificateFailed) {
		s += ",Failed"
	}
	if len(csr.Status.Certificate) > 0 {
		s += ",Issued"
	}
	return s
}

// csrCondition returns the index of the first condition of type t, or -1.
func csrCondition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) int {
	return slices.IndexFunc(csr.Status.Conditions, func(c certificatesv1.CertificateSigningRequestCondition) bool {
		return c.Type == t
	})
}

func csrValidateSpec(spec *certificatesv1.CertificateSigningRequestSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if err := csrCheckRequest(spec.Request); err != nil {
		errs = append(errs, field.Invalid(p.Child("request"), "<request data>", err.Error()))
	}
	errs = append(errs, csrValidateSignerName(spec.SignerName, p.Child("signerName"))...)
	if s := spec.ExpirationSeconds; s != nil && *s < csrMinExpirationSeconds {
		errs = append(errs, field.Invalid(p.Child("expirationSeconds"), *s, "may not specify a duration less than 600 seconds (10 minutes)"))
	}
	usages := p.Child("usages")
	if len(spec.Usages) == 0 {
		errs = append(errs, field.Required(usages, "usages must be provided"))
	}
	for i, u := range spec.Usages {
		if !slices.Contains(csrUsages, u) {
			errs = append(errs, field.NotSupported(usages.Index(i), u, csrUsages))
		} else if slices.Contains(spec.Usages[:i], u) {
			errs = append(errs, field.Duplicate(usages.Index(i), u))
		}
	}
	return errs
}

// csrCheckRequest checks that b holds a PEM "CERTIFICATE REQUEST" whose
// signature is made by the key it carries.
func csrCheckRequest(b []byte) error {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return errors.New("PEM block type must be CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return err
	}
	return req.CheckSignature()
}

// csrValidateSignerName checks that a signer name is a DNS subdomain, a
// slash, and a path without further slashes, such as "example.com/signer".
func csrValidateSignerName(name string, p *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	if name == csrLegacySigner {
		return field.ErrorList{field.Invalid(p, name, "the legacy signerName is not allowed via this API version")}
	}
	if strings.Count(name, "/") != 1 {
		return field.ErrorList{field.Invalid(p, name, "must be a fully qualified domain and path of the form 'example.com/signer-name'")}
	}
	errs := validation.IsDomainPrefixedPath(p, name)
	if len(name) > csrMaxSignerName {
		errs = append(errs, field.TooLong(p, "", csrMaxSignerName))
	}
	return errs
}

// csrValidateConditions checks the condition list on its own: one condition
// per type; Approved, Denied and Failed only True; Approved and Denied not
// together.
func csrValidateConditions(conds []certificatesv1.CertificateSigningRequestCondition, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := map[certificatesv1.RequestConditionType]bool{}
	for i, c := range conds {
		ip := p.Index(i)
		if c.Type == "" {
			errs = append(errs, field.Required(ip.Child("type"), ""))
		} else if seen[c.Type] {
			errs = append(errs, field.Duplicate(ip.Child("type"), c.Type))
		}
		seen[c.Type] = true
		switch c.Type {
		case certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			if c.Status != corev1.ConditionTrue {
				errs = append(errs, field.NotSupported(ip.Child("status"), c.Status, []corev1.ConditionStatus{corev1.ConditionTrue}))
			}
		default:
			if c.Status != corev1.ConditionTrue && c.Status != corev1.ConditionFalse && c.Status != corev1.ConditionUnknown {
				errs = append(errs, field.NotSupported(ip.Child("status"), c.Status, []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown}))
			}
		}
	}
	if seen[certificatesv1.CertificateApproved] && seen[certificatesv1.CertificateDenied] {
		errs = append(errs, field.Invalid(p, "<conditions>", "Approved and Denied conditions are mutually exclusive"))
	}
	return errs
}

// csrKeepConditions refuses the removal of an Approved, Denied or Failed
// condition: each is final once added.
func csrKeepConditions(csr, old *certificatesv1.CertificateSigningRequest, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, t := range []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed} {
		if csrCondition(old, t) >= 0 && csrCondition(csr, t) < 0 {
			errs = append(errs, field.Forbidden(p, fmt.Sprintf("updates may not remove a condition of type %q", t)))
		}
	}
	return errs
}

// csrValidateCertificate checks status.certificate: PEM CERTIFICATE blocks
// only, set only once the request is approved, and never changed once set.
func csrValidateCertificate(csr, old *certificatesv1.CertificateSigningRequest) field.ErrorList {
	p := field.NewPath("status", "certificate")
	cert := csr.Status.Certificate
	if len(old.Status.Certificate) > 0 && !bytes.Equal(cert, old.Status.Certificate) {
		return field.ErrorList{field.Forbidden(p, "updates may not modify existing certificate content")}
	}
	if len(cert) == 0 {
		return nil
	}
	var errs field.ErrorList
	if err := csrCheckCertificates(cert); err != nil {
		errs = append(errs, field.Invalid(p, "<certificate data>", err.Error()))
	}
	if csrCondition(csr, certificatesv1.CertificateApproved) < 0 || csrCondition(csr, certificatesv1.CertificateDenied) >= 0 {
		errs = append(errs, field.Forbidden(p, "may only be set once the request is approved"))
	}
	return errs
}

// csrCheckCertificates checks that b is one or more PEM CERTIFICATE blocks,
// each an X.509 certificate, with nothing else but white space.
func csrCheckCertificates(b []byte) error {
	n := 0
	for rest := b; len(bytes.TrimSpace(rest)) > 0; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return errors.New("must contain only PEM-encoded CERTIFICATE blocks")
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) > 0 {
			return fmt.Errorf("block %d: must be a CERTIFICATE block without headers, not %q", n, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("block %d: %w", n, err)
		}
	}
	if n == 0 {
		return errors.New("must contain at least one CERTIFICATE block")
	}
	return nil
}

// csrStampConditions fills the condition timestamps a client left empty:
// lastUpdateTime is now; lastTransitionTime is kept from the stored condition
// of the same type and status, else now.
func csrStampConditions(csr, old *certificatesv1.CertificateSigningRequest, now time.Time) {
	t := metav1.NewTime(now)
	for i := range csr.Status.Conditions {
		c := &csr.Status.Conditions[i]
		if c.LastUpdateTime.IsZero() {
			c.LastUpdateTime = t
		}
		if !c.LastTransitionTime.IsZero() {
			continue
		}
		c.LastTransitionTime = t
		if j := csrCondition(old, c.Type); j >= 0 && old.Status.Conditions[j].Status == c.Status && !old.Status.Conditions[j].LastTransitionTime.IsZero() {
			c.LastTransitionTime = old.Status.Conditions[j].LastTransitionTime
		}
	}
}

// NewCSRApprovalStorage builds the storage of
// certificatesigningrequests/approval on the main CSR storage. A write
// changes status.conditions and nothing else: the rest is taken from the
// stored object. Approved and Denied exclude each other, and an Approved,
// Denied or Failed condition cannot be removed.
func NewCSRApprovalStorage(main *REST) rest.Storage {
	s := *main.Store
	st := &csrApprovalStrategy{RESTUpdateStrategy: main.Store.UpdateStrategy}
	s.UpdateStrategy = st
	s.ResetFieldsStrategy = st
	return &csrApprovalREST{store: &s}
}

// csrApprovalREST serves the approval subresource: Get and Update, and so
// Patch.
type csrApprovalREST struct {
	store *genericregistry.Store
}

var (
	_ rest.Patcher             = (*csrApprovalREST)(nil)
	_ rest.ResetFieldsStrategy = (*csrApprovalREST)(nil)
)

func (r *csrApprovalREST) New() runtime.Object { return r.store.New() }
func (r *csrApprovalREST) Destroy()            {}

// Get returns the request, so that patches can be computed.
func (r *csrApprovalREST) Get(ctx context.Context, name string, opts *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, opts)
}

// Update writes the conditions of a request; it never creates one.
func (r *csrApprovalREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, cv rest.ValidateObjectFunc, uv rest.ValidateObjectUpdateFunc, _ bool, opts *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.store.Update(ctx, name, objInfo, cv, uv, false, opts)
}

// GetResetFields implements rest.ResetFieldsStrategy.
func (r *csrApprovalREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

// csrApprovalStrategy wraps the main update strategy of CSRs for the
// approval subresource.
type csrApprovalStrategy struct {
	rest.RESTUpdateStrategy
}

var _ rest.ResetFieldsStrategy = (*csrApprovalStrategy)(nil)

func (s *csrApprovalStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	csr, oldCSR := obj.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
	conds, managed := csr.Status.Conditions, csr.ManagedFields
	*csr = *oldCSR.DeepCopy()
	csr.Status.Conditions = conds
	csr.ManagedFields = managed
	csrStampConditions(csr, oldCSR, time.Now())
}

func (s *csrApprovalStrategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	csr, oldCSR := obj.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
	conds := field.NewPath("status", "conditions")
	// rest.BeforeUpdate has checked the metadata, all of which is stored.
	errs := csrValidateConditions(csr.Status.Conditions, conds)
	return append(errs, csrKeepConditions(csr, oldCSR, conds)...)
}

func (s *csrApprovalStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(certificatesv1.SchemeGroupVersion.String()): fieldpath.NewSet(
			fieldpath.MakePathOrDie("spec"),
			fieldpath.MakePathOrDie("status", "certificate"),
		),
	}
}
