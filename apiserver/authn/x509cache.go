package authn

import (
	"crypto/sha256"
	"crypto/x509"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	x509request "k8s.io/apiserver/pkg/authentication/request/x509"
)

// x509CacheTTL bounds how long a verified chain is remembered. Revocation is
// not affected: the deny-list is checked on every request, outside the
// cache.
const x509CacheTTL = 5 * time.Minute

// cachedX509 remembers client certificate chains that verified, so a
// connection's requests do not each repeat the signature checks the TLS
// handshake and the first request already made (about a fifth of the CPU of
// a small GET). An entry is used only while the CA pool it was verified
// against is still the current one and the certificate has not expired.
type cachedX509 struct {
	verify x509request.VerifyOptionFunc
	inner  authenticator.Request
	cache  *cache.LRUExpireCache
	now    func() time.Time
}

type x509Entry struct {
	roots    *x509.CertPool
	notAfter time.Time
	resp     authenticator.Response
}

func newCachedX509(verify x509request.VerifyOptionFunc, inner authenticator.Request) *cachedX509 {
	return &cachedX509{verify: verify, inner: inner, cache: cache.NewLRUExpireCache(4096), now: time.Now}
}

// AuthenticateRequest implements authenticator.Request.
func (c *cachedX509) AuthenticateRequest(req *http.Request) (*authenticator.Response, bool, error) {
	if req.TLS == nil || len(req.TLS.PeerCertificates) == 0 {
		return nil, false, nil
	}
	opts, ok := c.verify()
	if !ok {
		return c.inner.AuthenticateRequest(req)
	}
	h := sha256.New()
	for _, cert := range req.TLS.PeerCertificates {
		h.Write(cert.Raw)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	now := c.now()
	if v, ok := c.cache.Get(key); ok {
		e := v.(*x509Entry)
		if e.roots == opts.Roots && now.Before(e.notAfter) {
			resp := e.resp
			return &resp, true, nil
		}
	}
	resp, ok, err := c.inner.AuthenticateRequest(req)
	if !ok || err != nil {
		return resp, ok, err
	}
	leaf := req.TLS.PeerCertificates[0]
	ttl := min(x509CacheTTL, leaf.NotAfter.Sub(now))
	if ttl > 0 {
		c.cache.Add(key, &x509Entry{roots: opts.Roots, notAfter: leaf.NotAfter, resp: *resp}, ttl)
	}
	return resp, ok, err
}
