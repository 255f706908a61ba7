// Package certrequest holds what the approver (tether/controllers/csrapproving)
// and the signer (tether/controllers/csrsigning) of CertificateSigningRequests
// both need: the identities of nodes, decoding spec.request, and recording an
// Event about a request.
package certrequest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Parse decodes a PEM CERTIFICATE REQUEST, the content of spec.request, and
// checks that it is signed by the key it carries.
func Parse(data []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("spec.request is not a PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("spec.request: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("spec.request: signature: %w", err)
	}
	return req, nil
}

// eventNamespace holds the Events about requests, which are cluster-scoped.
const eventNamespace = metav1.NamespaceDefault

// maxMessage is the longest Event message written; longer ones are cut.
const maxMessage = 1024

// Recorder records Events about requests, in the default namespace. Its
// zero value is not usable: Client and Logger are required.
type Recorder struct {
	// Client writes the Events.
	Client kubernetes.Interface
	// Component names the controller as the Events' source and reporting
	// controller.
	Component string
	// Logger receives the failures to write an Event.
	Logger *slog.Logger
}

// Event records an Event of type typ (Normal or Warning) about csr. A
// failure is logged, not returned: what the Event reports has happened
// anyway.
func (r Recorder) Event(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, typ, reason, message string) {
	now := metav1.Now()
	if len(message) > maxMessage {
		message = message[:maxMessage]
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", csr.Name, now.UnixNano()),
			Namespace: eventNamespace,
		},
		InvolvedObject: corev1.ObjectReference{
			Kind:            "CertificateSigningRequest",
			APIVersion:      certificatesv1.SchemeGroupVersion.String(),
			Name:            csr.Name,
			UID:             csr.UID,
			ResourceVersion: csr.ResourceVersion,
		},
		Reason:              reason,
		Message:             message,
		Type:                typ,
		Source:              corev1.EventSource{Component: r.Component},
		ReportingController: r.Component,
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
	}
	if _, err := r.Client.CoreV1().Events(eventNamespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		r.Logger.Error("record event", "name", csr.Name, "reason", reason, "err", err)
	}
}
