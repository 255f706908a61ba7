package registry

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingResponder records the errors a checkedTranslator reports.
type countingResponder struct{ errs atomic.Int32 }

func (r *countingResponder) Error(_ http.ResponseWriter, _ *http.Request, _ error) { r.errs.Add(1) }

func TestCheckedTranslatorChecksAKubeletOncePerWindow(t *testing.T) {
	var conns atomic.Int32
	kubelet := httptest.NewUnstartedServer(http.NotFoundHandler())
	kubelet.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	kubelet.StartTLS()
	defer kubelet.Close()
	loc, _ := url.Parse(kubelet.URL + "/exec/ns/pod/c")

	var reached sync.Map
	var translated atomic.Int32
	errs := &countingResponder{}
	h := &checkedTranslator{
		translator: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { translated.Add(1) }),
		location:   loc, transport: kubelet.Client().Transport, errs: errs, reached: &reached,
	}
	serve := func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	}
	waitConns := func(want int32) {
		t.Helper()
		for end := time.Now().Add(2 * time.Second); conns.Load() != want && time.Now().Before(end); {
			time.Sleep(5 * time.Millisecond)
		}
		if got := conns.Load(); got != want {
			t.Fatalf("the kubelet saw %d connections, want %d", got, want)
		}
	}

	serve()
	waitConns(1) // checked before the first translation
	serve()
	serve()
	time.Sleep(50 * time.Millisecond)
	waitConns(1) // verified within the window: not checked again
	if translated.Load() != 3 || errs.errs.Load() != 0 {
		t.Fatalf("translated %d, errors %d; want 3 and 0", translated.Load(), errs.errs.Load())
	}

	// Once the window has passed the kubelet is checked again.
	reached.Store(loc.Host, time.Now().Add(-reachedFor-time.Second))
	serve()
	waitConns(2)

	// A kubelet that cannot be reached is reported, not translated to,
	// and is checked again on the next request.
	kubelet.Close()
	reached.Store(loc.Host, time.Now().Add(-reachedFor-time.Second))
	serve()
	serve()
	if translated.Load() != 4 || errs.errs.Load() != 2 {
		t.Errorf("after the kubelet went away: translated %d, errors %d; want 4 and 2", translated.Load(), errs.errs.Load())
	}
	if _, ok := reached.Load(loc.Host); ok {
		t.Error("an unreachable kubelet is still remembered as reached")
	}
}
