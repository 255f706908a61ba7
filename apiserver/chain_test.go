package apiserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	apirequest "k8s.io/apiserver/pkg/endpoints/request"
)

// Long-running requests (watches, tunnels, streams) end when the server
// starts to stop; the others keep their own context.
func TestEndOnShutdown(t *testing.T) {
	stopping, stop := context.WithCancel(context.Background())
	defer stop()
	ended := make(chan string, 2)
	h := withEndOnShutdown(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		ri, _ := apirequest.RequestInfoFrom(r.Context())
		select {
		case <-r.Context().Done():
			ended <- ri.Verb
		case <-time.After(2 * time.Second):
			ended <- ri.Verb + " kept running"
		}
	}), func(_ *http.Request, ri *apirequest.RequestInfo) bool { return ri.Verb == "watch" }, stopping)

	serve := func(verb string) {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/pods", nil)
		req = req.WithContext(apirequest.WithRequestInfo(req.Context(), &apirequest.RequestInfo{Verb: verb}))
		go h.ServeHTTP(httptest.NewRecorder(), req)
	}
	serve("watch")
	serve("get")
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	stop()
	if got := <-ended; got != "watch" || time.Since(start) > time.Second {
		t.Fatalf("first to end: %q after %s; want the watch, at once", got, time.Since(start))
	}
	if got := <-ended; got != "get kept running" {
		t.Errorf("the get request: %q, want it to keep running", got)
	}
}
