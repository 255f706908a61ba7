package apiserver

import (
	"hash/maphash"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	restful "github.com/emicklei/go-restful/v3"
)

// routeCache picks the go-restful route for a request, as the generic
// server's CurlyRouter does, without its cost on every request. CurlyRouter
// copies every route whose path matches (a Route is several hundred bytes;
// a GET of one object matches its GET, PUT, PATCH and DELETE routes) and
// sorts the copies, then filters them by method, Content-Type and Accept:
// about 4 KiB of garbage and 7 % of the CPU of a GET.
//
// The choice depends only on the web service the path falls in, which of
// its routes the path matches, the method and those two headers. routeCache
// works out the first two itself, without allocating, and remembers what
// CurlyRouter chose for each combination; a combination it has not seen, an
// error (404, 405, 406, 415) and any web service with routes it does not
// model (regular expressions, custom verbs, conditions) go to CurlyRouter
// every time. Routing runs after authentication and authorization, and the
// memory is bounded (maxRoutes).
type routeCache struct {
	curly restful.CurlyRouter
	index atomic.Pointer[routeIndex]
	seed  maphash.Seed
}

// maxRoutes bounds the remembered combinations; past it, new ones are
// routed by CurlyRouter each time.
const maxRoutes = 4096

func newRouteCache() *routeCache {
	return &routeCache{seed: maphash.MakeSeed()}
}

// routeIndex is the path structure of one set of web services.
type routeIndex struct {
	services []*restful.WebService
	roots    [][]string
	routes   [][]indexedRoute
	// modelled is false for a web service routeCache leaves to CurlyRouter.
	modelled []bool

	// chosen holds CurlyRouter's choices for this set of web services.
	mu     sync.RWMutex
	chosen map[routeKey]*routeChoice
}

type indexedRoute struct {
	parts []string
	// wildcard is the index of a trailing {name:*} part, or -1.
	wildcard int
}

type routeKey struct {
	service               int
	matched               uint64
	method, ctype, accept string
}

type routeChoice struct {
	matched []candidate
	route   *restful.Route
}

// candidate is a route whose path matches, with the counts CurlyRouter
// ranks it by.
type candidate struct {
	route, params, statics int
}

// SelectRoute implements restful.RouteSelector.
func (c *routeCache) SelectRoute(services []*restful.WebService, req *http.Request) (*restful.WebService, *restful.Route, error) {
	var buf [16]candidate
	idx, service, key, matched := c.lookup(services, req, buf[:0])
	if service < 0 {
		return c.curly.SelectRoute(services, req)
	}
	idx.mu.RLock()
	choice := idx.chosen[key]
	idx.mu.RUnlock()
	if choice != nil && slices.Equal(choice.matched, matched) {
		return services[service], choice.route, nil
	}
	ws, route, err := c.curly.SelectRoute(services, req)
	if err != nil || ws != services[service] || route == nil || len(matched) == 0 {
		return ws, route, err
	}
	idx.mu.Lock()
	if len(idx.chosen) < maxRoutes {
		idx.chosen[key] = &routeChoice{matched: append([]candidate(nil), matched...), route: route}
	}
	idx.mu.Unlock()
	return ws, route, err
}

// lookup returns the index for services, and for req the web service
// (-1 if CurlyRouter must decide), the key of its choice and the matching
// routes (appended to buf).
func (c *routeCache) lookup(services []*restful.WebService, req *http.Request, buf []candidate) (*routeIndex, int, routeKey, []candidate) {
	idx := c.index.Load()
	if idx == nil || !slices.Equal(idx.services, services) {
		idx = buildRouteIndex(services)
		c.index.Store(idx)
	}
	var tbuf [16]string
	tokens := splitPath(req.URL.Path, tbuf[:0])
	service := idx.service(tokens)
	if service < 0 || !idx.modelled[service] {
		return idx, -1, routeKey{}, nil
	}
	matched := idx.match(service, tokens, buf)
	key := routeKey{
		service: service, matched: c.hash(matched), method: req.Method,
		ctype: req.Header.Get("Content-Type"), accept: req.Header.Get("Accept"),
	}
	return idx, service, key, matched
}

func (c *routeCache) hash(matched []candidate) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	for _, m := range matched {
		maphash.WriteComparable(&h, m)
	}
	return h.Sum64()
}

func buildRouteIndex(services []*restful.WebService) *routeIndex {
	idx := &routeIndex{
		services: append([]*restful.WebService(nil), services...),
		roots:    make([][]string, len(services)),
		routes:   make([][]indexedRoute, len(services)),
		modelled: make([]bool, len(services)),
		chosen:   map[routeKey]*routeChoice{},
	}
	plainRoots := true
	for i, ws := range services {
		idx.roots[i] = splitPath(ws.RootPath(), nil)
		plainRoots = plainRoots && !hasExpression(idx.roots[i], false)
		ok := true
		for _, r := range ws.Routes() {
			parts := splitPath(r.Path, nil)
			ir := indexedRoute{parts: parts, wildcard: -1}
			if n := len(parts); n > 0 && strings.HasSuffix(parts[n-1], "*}") {
				// Only {name:*} is modelled as "the rest of the path".
				ok = ok && isParam(parts[n-1]) && strings.HasSuffix(parts[n-1], ":*}")
				ir.wildcard = n - 1
			}
			if len(r.If) > 0 || hasExpression(parts, ir.wildcard >= 0) {
				ok = false
			}
			idx.routes[i] = append(idx.routes[i], ir)
		}
		idx.modelled[i] = ok
	}
	if !plainRoots {
		// Scores of roots with expressions are not modelled, so no web
		// service can be picked here.
		clear(idx.modelled)
	}
	return idx
}

// hasExpression reports whether parts hold anything but plain words and
// {name} parameters (a trailing {name:*} is allowed if wildcard is set).
func hasExpression(parts []string, wildcard bool) bool {
	for i, p := range parts {
		if wildcard && i == len(parts)-1 {
			continue
		}
		if strings.Contains(p, ":") {
			return true
		}
	}
	return false
}

func isParam(part string) bool { return strings.HasPrefix(part, "{") }

// service returns the index of the web service CurlyRouter would pick for
// tokens, or -1: the highest score, the first on a tie.
func (idx *routeIndex) service(tokens []string) int {
	best, bestScore := -1, -1
	for i, root := range idx.roots {
		if ok, score := rootScore(tokens, root); ok && score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// rootScore scores a web service's root path against the request path the
// way CurlyRouter does: each parameter 1, each equal word more the earlier
// it comes.
func rootScore(tokens, root []string) (bool, int) {
	if len(root) > len(tokens) {
		return false, 0
	}
	score := 0
	for i, r := range root {
		t := tokens[i]
		switch {
		case t == "" && r == "":
			score++
		case isParam(r):
			if t == "" {
				return false, score
			}
			score++
		default:
			if t != r {
				return false, score
			}
			score += (len(root) - i) * 10
		}
	}
	return true, score
}

// match appends the routes of service whose path matches tokens.
func (idx *routeIndex) match(service int, tokens []string, out []candidate) []candidate {
	for i, r := range idx.routes[service] {
		if len(r.parts) < len(tokens) && r.wildcard < 0 {
			continue
		}
		params, statics, ok := 0, 0, true
		for j, p := range r.parts {
			if j == len(tokens) {
				ok = false
				break
			}
			if isParam(p) {
				params++
				if j == r.wildcard {
					break
				}
				continue
			}
			if tokens[j] != p {
				ok = false
				break
			}
			statics++
		}
		if ok {
			out = append(out, candidate{route: i, params: params, statics: statics})
		}
	}
	return out
}

// splitPath splits a URL path into its segments as go-restful does.
func splitPath(path string, out []string) []string {
	if path == "/" {
		return out
	}
	if restful.TrimRightSlashEnabled {
		path = strings.Trim(path, "/")
	} else {
		path = strings.TrimLeft(path, "/")
	}
	for {
		i := strings.IndexByte(path, '/')
		if i < 0 {
			return append(out, path)
		}
		out = append(out, path[:i])
		path = path[i+1:]
	}
}
