package revocation

import (
	"context"
	"errors"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// ErrRevoked is the cause (context.Cause) of the context of a request cut
// off by CancelOnRevoke.
var ErrRevoked = errors.New("revocation: client certificate revoked during the request")

// CancelOnRevoke returns h wrapped so that a request made with a client
// certificate that is revoked while it runs ends at once: its context is
// cancelled with cause ErrRevoked as soon as the list's informer sees the
// serial, and once h has returned the response is aborted
// (http.ErrAbortHandler), so that the client sees a broken stream rather
// than a complete answer; over HTTP/1.1 that also closes the connection.
// This ends the open watches and long requests of a revoked node, which
// WrapX509 alone would let run until they end by themselves.
//
// A request whose certificate is already revoked when it starts is passed
// to h untouched: the authenticator refuses it with 401, and the client
// must see that 401. Requests without a TLS client certificate pass
// through too. The certificate is the TLS peer's leaf, verified or not: an
// unverified certificate never authenticates anybody, so cutting its
// requests short harms nobody.
//
// CancelOnRevoke belongs outside the whole handler chain (around
// genericapiserver.DefaultBuildHandlerChain), so that the timeout filter and
// every other filter see the cancellation through their parent context. It
// may be called before or after the informer factory of the list starts.
func (l *List) CancelOnRevoke(h http.Handler) http.Handler {
	c := &canceller{list: l, next: h, revoked: map[string]struct{}{}, active: map[string]map[*request]struct{}{}}
	l.onChange(c.update)
	return c
}

// canceller tracks the running requests by certificate serial.
type canceller struct {
	list *List
	next http.Handler

	mu sync.Mutex
	// revoked is the last set of serials the informer handed to update.
	revoked map[string]struct{}
	// active holds the cancel function of every running request, by the
	// serial (lower-case hex) of its client certificate.
	active map[string]map[*request]struct{}
}

// request is one running request.
type request struct{ cancel context.CancelCauseFunc }

func (c *canceller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].SerialNumber == nil {
		c.next.ServeHTTP(w, r)
		return
	}
	serial := r.TLS.PeerCertificates[0].SerialNumber
	if c.list.Revoked(serial) {
		c.next.ServeHTTP(w, r) // the authenticator answers 401
		return
	}
	key := serial.Text(16)
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	c.mu.Lock()
	if _, ok := c.revoked[key]; ok {
		// The informer has seen the revocation, the list's own snapshot
		// not yet: the request is cut off before it starts.
		cancel(ErrRevoked)
	}
	req := &request{cancel: cancel}
	running := c.active[key]
	if running == nil {
		running = map[*request]struct{}{}
		c.active[key] = running
	}
	running[req] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(running, req)
		if len(running) == 0 {
			delete(c.active, key)
		}
		c.mu.Unlock()
	}()

	c.next.ServeHTTP(w, r.WithContext(ctx))
	if errors.Is(context.Cause(ctx), ErrRevoked) {
		panic(http.ErrAbortHandler)
	}
}

// update takes the serials now on the list and cancels the running
// requests made with any of them.
func (c *canceller) update(serials map[string]struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.revoked = serials
	for key, running := range c.active {
		if _, ok := serials[key]; !ok {
			continue
		}
		for req := range running {
			req.cancel(ErrRevoked)
		}
	}
}

// onChange calls fn with the serial numbers on the list (lower-case hex,
// as big.Int.Text(16) writes them) every time the list's ConfigMap is
// created, changed or deleted, one call at a time, in order. It registers
// its own handler with the list's informer, so fn does not depend on when
// the list's own snapshot is updated. Registration fails only on a stopped
// informer, whose list no longer changes.
func (l *List) onChange(fn func(serials map[string]struct{})) {
	handle := func(obj any, deleted bool) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok || cm.Namespace != Namespace || cm.Name != Name {
			return
		}
		serials := map[string]struct{}{}
		if !deleted {
			for k := range cm.Data {
				if s, ok := parseSerial(k); ok {
					serials[s.Text(16)] = struct{}{}
				}
			}
		}
		fn(serials)
	}
	_, _ = l.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { handle(obj, false) },
		UpdateFunc: func(_, obj any) { handle(obj, false) },
		DeleteFunc: func(obj any) { handle(obj, true) },
	})
}
