// Package revocation keeps the deny-list of client certificates the API
// server no longer accepts before they expire (a node removed with
// "tether node revoke", a leaked admin certificate). The list is the
// ConfigMap kube-system/tether-revoked-certificates, so it lives in etcd
// with everything else and reaches every API server through an informer:
// each data key is a certificate serial number in lower-case hex and its
// value says why and when it was revoked.
//
// Serial numbers are unique only per issuing CA; tether's CAs draw 128-bit
// random serials, so one list serves all of them.
package revocation

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// The ConfigMap that holds the list.
const (
	Namespace = metav1.NamespaceSystem
	Name      = "tether-revoked-certificates"
)

// List is the set of revoked serial numbers, rebuilt from the ConfigMap on
// every change. It is safe for concurrent use.
type List struct {
	serials  atomic.Pointer[map[string]struct{}]
	informer cache.SharedIndexInformer
	handler  cache.ResourceEventHandlerRegistration
}

// configMapKey is the type under which List registers its informer with a
// SharedInformerFactory. The factory keeps one informer per type; using
// corev1.ConfigMap would hand this filtered informer to every other user of
// the factory's ConfigMap informer (or hand List an unfiltered one).
type configMapKey struct{ corev1.ConfigMap }

// New registers with f an informer that watches only the list's ConfigMap
// and returns the List it keeps up to date; the caller starts f. Until the
// informer has synced (HasSynced), no serial is revoked.
func New(f informers.SharedInformerFactory) *List {
	l := &List{}
	empty := map[string]struct{}{}
	l.serials.Store(&empty)
	l.informer = f.InformerFor(&configMapKey{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewFilteredConfigMapInformer(c, Namespace, resync, cache.Indexers{}, func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", Name).String()
		})
	})
	// Each handler sees events one at a time, in order; the last one wins.
	// AddEventHandler fails only on a stopped informer, and a new one is not.
	l.handler, _ = l.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { l.observe(obj, false) },
		UpdateFunc: func(_, obj any) { l.observe(obj, false) },
		DeleteFunc: func(obj any) { l.observe(obj, true) },
	})
	return l
}

// observe rebuilds the snapshot from an informer event.
func (l *List) observe(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok || cm.Namespace != Namespace || cm.Name != Name {
		return
	}
	if deleted {
		cm = nil
	}
	l.update(cm)
}

// HasSynced reports whether the list reflects the ConfigMap as it was when
// the informer started.
func (l *List) HasSynced() bool { return l.handler != nil && l.handler.HasSynced() }

// Revoked reports whether serial is on the list.
func (l *List) Revoked(serial *big.Int) bool {
	if serial == nil {
		return false
	}
	_, ok := (*l.serials.Load())[serial.Text(16)]
	return ok
}

// update replaces the snapshot with the serials of cm (nil: none).
func (l *List) update(cm *corev1.ConfigMap) {
	serials := map[string]struct{}{}
	if cm != nil {
		for k := range cm.Data {
			if s, ok := parseSerial(k); ok {
				serials[s.Text(16)] = struct{}{}
			}
		}
	}
	l.serials.Store(&serials)
}

// parseSerial reads a data key: hex, in either case, with or without
// leading zeros.
func parseSerial(key string) (*big.Int, bool) {
	return new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(key), "0x"), 16)
}

// WrapX509 returns auth (the client-certificate authenticator) with one more
// check: a request whose verified client certificate is on l is refused
// with an error, so it gets 401. Requests auth does not authenticate pass
// through unchanged.
func WrapX509(auth authenticator.Request, l *List) authenticator.Request {
	return authenticator.RequestFunc(func(req *http.Request) (*authenticator.Response, bool, error) {
		resp, ok, err := auth.AuthenticateRequest(req)
		if !ok || err != nil {
			return resp, ok, err
		}
		// The x509 authenticator verified PeerCertificates[0] (the leaf)
		// before it said ok.
		if req.TLS != nil && len(req.TLS.PeerCertificates) > 0 {
			if leaf := req.TLS.PeerCertificates[0]; l.Revoked(leaf.SerialNumber) {
				return nil, false, fmt.Errorf("revocation: client certificate %q (serial %s) has been revoked", leaf.Subject.CommonName, leaf.SerialNumber.Text(16))
			}
		}
		return resp, ok, err
	})
}

// Add puts serials on the list with reason (for example "node node-1
// revoked 2026-11-03T10:00:00Z"), creating the ConfigMap if it is missing
// and retrying on conflicts. Serials already on the list keep their first
// reason.
func Add(ctx context.Context, client kubernetes.Interface, reason string, serials ...*big.Int) error {
	if len(serials) == 0 {
		return errors.New("revocation: add: no serial numbers")
	}
	keys := make([]string, 0, len(serials))
	for _, s := range serials {
		if s == nil {
			return errors.New("revocation: add: nil serial number")
		}
		keys = append(keys, s.Text(16))
	}
	if reason == "" {
		reason = "revoked"
	}
	cms := client.CoreV1().ConfigMaps(Namespace)
	retriable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err := retry.OnError(retry.DefaultRetry, retriable, func() error {
		cm, err := cms.Get(ctx, Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: Name}, Data: map[string]string{}}
			for _, k := range keys {
				cm.Data[k] = reason
			}
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		present := map[string]bool{}
		for k := range cm.Data {
			if s, ok := parseSerial(k); ok {
				present[s.Text(16)] = true
			}
		}
		changed := false
		for _, k := range keys {
			if !present[k] {
				if cm.Data == nil {
					cm.Data = map[string]string{}
				}
				cm.Data[k] = reason
				present[k] = true
				changed = true
			}
		}
		if !changed {
			return nil
		}
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("revocation: add %d serial numbers: %w", len(keys), err)
	}
	return nil
}
