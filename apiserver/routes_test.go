package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	restful "github.com/emicklei/go-restful/v3"
)

// apiServices builds web services shaped like the generic server's: the
// discovery roots, a core and a named group version with collection,
// object, subresource, watch and proxy routes, consuming and producing the
// media types it does.
func apiServices() []*restful.WebService {
	media := []string{"application/json", "application/yaml", "application/vnd.kubernetes.protobuf"}
	patch := []string{"application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml", "application/apply-patch+cbor"}
	noop := func(*restful.Request, *restful.Response) {}
	group := func(root string, namespaced bool) *restful.WebService {
		ws := new(restful.WebService).Path(root).Consumes("*/*").Produces(media...)
		add := func(rb *restful.RouteBuilder, op string) { ws.Route(rb.To(noop).Operation(op)) }
		for _, res := range []string{"configmaps", "pods", "services"} {
			coll := res
			if namespaced {
				coll = "namespaces/{namespace}/" + res
			}
			add(ws.GET(coll).Produces(append(media, "application/json;stream=watch")...), "list "+res)
			add(ws.POST(coll).Produces(media...), "create "+res)
			add(ws.DELETE(coll).Produces(media...), "deletecollection "+res)
			add(ws.GET(coll+"/{name}").Produces(media...), "read "+res)
			add(ws.PUT(coll+"/{name}").Produces(media...), "replace "+res)
			add(ws.PATCH(coll+"/{name}").Consumes(patch...).Produces(media...), "patch "+res)
			add(ws.DELETE(coll+"/{name}").Produces(media...), "delete "+res)
			add(ws.GET(coll+"/{name}/status").Produces(media...), "read "+res+" status")
			add(ws.PUT(coll+"/{name}/status").Produces(media...), "replace "+res+" status")
			add(ws.GET("watch/"+coll).Produces(media...), "watch "+res)
			add(ws.GET("watch/"+coll+"/{name}").Produces(media...), "watch one "+res)
		}
		if namespaced {
			for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"} {
				add(ws.Method(m).Path("namespaces/{namespace}/pods/{name}/proxy").Consumes("*/*").Produces("*/*"), "proxy pod "+m)
				add(ws.Method(m).Path("namespaces/{namespace}/pods/{name}/proxy/{path:*}").Consumes("*/*").Produces("*/*"), "proxy pod path "+m)
			}
			add(ws.GET("namespaces/{namespace}/pods/{name}/exec").Consumes("*/*").Produces("*/*"), "exec get")
			add(ws.POST("namespaces/{namespace}/pods/{name}/exec").Consumes("*/*").Produces("*/*"), "exec post")
			add(ws.GET("namespaces").Produces(media...), "list namespaces")
			add(ws.GET("namespaces/{name}").Produces(media...), "read namespace")
			add(ws.PUT("namespaces/{name}/finalize").Produces(media...), "finalize namespace")
			add(ws.GET("nodes/{name}").Produces(media...), "read node")
			add(ws.GET("nodes/{name}/proxy/{path:*}").Consumes("*/*").Produces("*/*"), "proxy node")
		}
		return ws
	}
	discovery := func(root string) *restful.WebService {
		ws := new(restful.WebService).Path(root).Consumes("*/*").Produces(media...)
		ws.Route(ws.GET("/").To(noop).Operation("discover " + root))
		return ws
	}
	return []*restful.WebService{discovery("/api"), discovery("/apis"), group("/api/v1", true), group("/apis/apps/v1", true), group("/apis/rbac.authorization.k8s.io/v1", false), discovery("/apis/apps")}
}

type routed struct {
	ws    *restful.WebService
	route string
	code  int
}

func (r routed) String() string { return fmt.Sprintf("ws %p route %q code %d", r.ws, r.route, r.code) }

func selectWith(s restful.RouteSelector, services []*restful.WebService, req *http.Request) routed {
	ws, route, err := s.SelectRoute(services, req)
	r := routed{ws: ws}
	if route != nil {
		r.route = route.Method + " " + route.Path + " " + route.Operation
	}
	var se restful.ServiceError
	if errors.As(err, &se) {
		r.code = se.Code
	} else if err != nil {
		r.code = -1
	}
	return r
}

// TestRouteCacheMatchesCurlyRouter routes every combination of path,
// method, Content-Type and Accept through both selectors, twice (so the
// second answer comes from the cache), and wants the same web service,
// route and error every time.
func TestRouteCacheMatchesCurlyRouter(t *testing.T) {
	services := apiServices()
	paths := []string{
		"/", "/api", "/api/", "/apis", "/apis/apps", "/api/v1", "/api/v2/pods",
		"/api/v1/namespaces", "/api/v1/namespaces/", "/api/v1/namespaces/default", "/api/v1/namespaces/default/finalize",
		"/api/v1/namespaces/default/configmaps", "/api/v1/namespaces/default/configmaps/", "/api/v1/namespaces/default/configmaps/cm",
		"/api/v1/namespaces/default/configmaps/cm/status", "/api/v1/namespaces/default/configmaps/cm/other",
		"/api/v1/namespaces/default/configmaps/cm/status/extra", "/api/v1/namespaces//configmaps/cm",
		"/api/v1/watch/namespaces/default/configmaps", "/api/v1/watch/namespaces/default/configmaps/cm",
		"/api/v1/namespaces/default/pods/p/exec", "/api/v1/namespaces/default/pods/p/proxy",
		"/api/v1/namespaces/default/pods/p/proxy/", "/api/v1/namespaces/default/pods/p/proxy/a/b/c",
		"/api/v1/nodes/n1", "/api/v1/nodes/n1/proxy", "/api/v1/nodes/n1/proxy/metrics", "/api/v1/nodes/n1/proxy/stats/summary",
		"/apis/apps/v1/namespaces/default/pods/p", "/apis/apps/v1/namespaces/default/pods/p/status",
		"/apis/rbac.authorization.k8s.io/v1/configmaps/x", "/apis/rbac.authorization.k8s.io/v1/namespaces/x/configmaps",
		"/apis/unknown/v1/things", "/version", "/api/v1//", "//api/v1/nodes/n1",
	}
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"}
	ctypes := []string{"", "application/json", "application/vnd.kubernetes.protobuf", "application/merge-patch+json", "application/apply-patch+yaml", "text/plain"}
	accepts := []string{"", "*/*", "application/json", "application/vnd.kubernetes.protobuf, */*",
		"application/json;as=Table;v=v1;g=meta.k8s.io,application/json", "text/html", "application/json;stream=watch"}

	cache := newRouteCache()
	var curly restful.CurlyRouter
	compared, cached := 0, 0
	for round := range 2 {
		for _, p := range paths {
			for _, m := range methods {
				for _, ct := range ctypes {
					for _, acc := range accepts {
						req := httptest.NewRequest(m, "https://h"+p, nil)
						req.URL.Path = p
						if ct != "" {
							req.Header.Set("Content-Type", ct)
						}
						if acc != "" {
							req.Header.Set("Accept", acc)
						}
						want := selectWith(curly, services, req)
						got := selectWith(cache, services, req)
						if got != want {
							t.Fatalf("round %d: %s %s (Content-Type %q, Accept %q): routeCache chose %v, CurlyRouter %v", round, m, p, ct, acc, got, want)
						}
						compared++
						if round == 1 && want.code == 0 {
							// Every request CurlyRouter routes is
							// answered from the cache the second time.
							idx, service, key, matched := cache.lookup(services, req, nil)
							if service < 0 || idx.chosen[key] == nil || !slices.Equal(idx.chosen[key].matched, matched) {
								t.Fatalf("%s %s (Content-Type %q, Accept %q): routed by CurlyRouter again, not from the cache", m, p, ct, acc)
							}
							cached++
						}
					}
				}
			}
		}
	}
	// Spot checks that the services route as the generic server's do, so
	// that the comparison above is between real choices.
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/api/v1/namespaces/default/configmaps/cm", "GET /api/v1/namespaces/{namespace}/configmaps/{name} read configmaps"},
		{"PATCH", "/api/v1/namespaces/default/configmaps/cm", "PATCH /api/v1/namespaces/{namespace}/configmaps/{name} patch configmaps"},
		{"GET", "/api/v1/namespaces/default", "GET /api/v1/namespaces/{name} read namespace"},
		{"POST", "/api/v1/namespaces/default/pods/p/proxy/a/b/c", "POST /api/v1/namespaces/{namespace}/pods/{name}/proxy/{path:*} proxy pod path POST"},
		{"GET", "/api/v1/nodes/n1/proxy/stats/summary", "GET /api/v1/nodes/{name}/proxy/{path:*} proxy node"},
		{"GET", "/apis", "GET /apis/ discover /apis"},
	} {
		req := httptest.NewRequest(c.method, "https://h"+c.path, nil)
		req.Header.Set("Content-Type", "application/merge-patch+json")
		if got := selectWith(cache, services, req); got.route != c.want {
			t.Errorf("%s %s: %v, want route %q", c.method, c.path, got, c.want)
		}
	}
	idx := cache.index.Load()
	if idx == nil || len(idx.chosen) == 0 {
		t.Fatal("routeCache remembered no choice; every request went to CurlyRouter")
	}
	t.Logf("%d requests compared; %d routed requests in the second round, %d combinations remembered", compared, cached, len(idx.chosen))
}

// TestRouteCacheNewServices checks that a changed set of web services
// (another group installed) is indexed again rather than routed with the
// old choices.
func TestRouteCacheNewServices(t *testing.T) {
	services := apiServices()
	cache := newRouteCache()
	req := httptest.NewRequest("GET", "https://h/apis/batch/v1/namespaces/d/configmaps/x", nil)
	if got := selectWith(cache, services, req); got.code != http.StatusNotFound {
		t.Fatalf("before the group exists: %v, want 404", got)
	}
	noop := func(*restful.Request, *restful.Response) {}
	batch := new(restful.WebService).Path("/apis/batch/v1").Consumes("*/*").Produces("application/json")
	batch.Route(batch.GET("namespaces/{namespace}/configmaps/{name}").To(noop).Operation("read batch"))
	services = append(services, batch)
	got := selectWith(cache, services, req)
	if got.ws != batch || got.route != "GET /apis/batch/v1/namespaces/{namespace}/configmaps/{name} read batch" {
		t.Fatalf("after the group is added: %v, want the batch route", got)
	}
	if again := selectWith(cache, services, req); again != got {
		t.Fatalf("second request: %v, want %v", again, got)
	}
}

// TestRouteCacheLeavesExpressions checks that a web service with a route it
// does not model is routed by CurlyRouter alone.
func TestRouteCacheLeavesExpressions(t *testing.T) {
	noop := func(*restful.Request, *restful.Response) {}
	ws := new(restful.WebService).Path("/x").Consumes("*/*").Produces("application/json")
	ws.Route(ws.GET("items/{id:[0-9]+}").To(noop).Operation("by number"))
	ws.Route(ws.GET("items/{name}").To(noop).Operation("by name"))
	services := []*restful.WebService{ws}
	cache := newRouteCache()
	var curly restful.CurlyRouter
	for _, p := range []string{"/x/items/42", "/x/items/abc", "/x/items/42", "/x/items/abc"} {
		req := httptest.NewRequest("GET", "https://h"+p, nil)
		if got, want := selectWith(cache, services, req), selectWith(curly, services, req); got != want {
			t.Fatalf("%s: %v, want %v", p, got, want)
		}
	}
	if idx := cache.index.Load(); idx == nil || idx.modelled[0] || len(idx.chosen) != 0 {
		t.Fatal("a web service with a regular expression was routed from the cache")
	}
}
