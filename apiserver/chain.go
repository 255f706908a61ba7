package apiserver

import (
	"context"
	"net/http"

	"k8s.io/apiserver/pkg/endpoints/filters"
	"k8s.io/apiserver/pkg/endpoints/filters/impersonation"
	apirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericfeatures "k8s.io/apiserver/pkg/features"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
)

// handlerChain wraps the API handler in the filters every request passes,
// outermost last. It is upstream's default chain with three things left
// out, each of which cost CPU on every request and did nothing here:
//
//   - the timeout filter, which ran the rest of every short request on a
//     second goroutine (whose stack then grew through the whole chain) only
//     to answer 504 when the request's context expired. The context still
//     carries the deadline (WithRequestDeadline below), storage calls and
//     the mutating handlers end with it, and a request that outlives it
//     keeps its in-flight slot instead of releasing a slot still in use;
//   - OpenTelemetry tracing: tether configures no tracer, and the no-op
//     middleware still wrapped every request;
//   - the per-filter latency metrics.
//
// Nothing that authenticates, authorizes, audits or limits a request is
// left out, and the order of those is upstream's. The filters upstream adds
// only for settings tether never makes (priority and fairness, GOAWAY
// chance, retry-after and watch draining at shutdown) are not here either:
// setting one of those needs a filter added here too.
//
// One is added: long-running requests end when stopping does (the server
// shuts down). Upstream lets them run, and the HTTP server's shutdown then
// waits (up to a minute) for clients to close their watches and a node's
// tunnel.
//
// muxComplete is closed once every API group is installed; until then a
// request for an API path is answered 503 instead of a misleading 404.
func handlerChain(api http.Handler, c *genericapiserver.Config, muxComplete <-chan struct{}, stopping context.Context) http.Handler {
	h := filters.WithAuthorization(api, c.Authorization.Authorizer, c.Serializer)
	h = genericfilters.WithMaxInFlightLimit(h, c.MaxRequestsInFlight, c.MaxMutatingRequestsInFlight, c.LongRunningFunc)
	if c.FeatureGate.Enabled(genericfeatures.ConstrainedImpersonation) {
		h = impersonation.WithConstrainedImpersonation(h, c.Authorization.Authorizer, c.Serializer)
	} else {
		h = impersonation.WithImpersonation(h, c.Authorization.Authorizer, c.Serializer)
	}
	h = filters.WithAudit(h, c.AuditBackend, c.AuditPolicyRuleEvaluator, c.LongRunningFunc)
	unauthorized := filters.WithFailedAuthenticationAudit(filters.Unauthorized(c.Serializer), c.AuditBackend, c.AuditPolicyRuleEvaluator)
	h = filters.WithAuthentication(h, c.Authentication.Authenticator, unauthorized, c.Authentication.APIAudiences, c.Authentication.RequestHeaderConfig)
	h = genericfilters.WithCORS(h, c.CorsAllowedOriginList, nil, nil, nil, "true")
	h = filters.WithWarningRecorder(h)
	h = filters.WithRequestDeadline(h, c.AuditBackend, c.AuditPolicyRuleEvaluator, c.LongRunningFunc, c.Serializer, c.RequestTimeout)
	h = genericfilters.WithWaitGroup(h, c.LongRunningFunc, c.NonLongRunningRequestWaitGroup)
	h = withEndOnShutdown(h, c.LongRunningFunc, stopping)
	h = filters.WithCacheControl(h)
	h = genericfilters.WithHSTS(h, c.HSTSDirectives)
	h = genericfilters.WithHTTPLogging(h)
	h = filters.WithLatencyTrackers(h)
	h = filters.WithRequestInfo(h, c.RequestInfoResolver)
	h = filters.WithRequestReceivedTimestamp(h)
	h = filters.WithMuxAndDiscoveryComplete(h, muxComplete)
	h = genericfilters.WithPanicRecovery(h, c.RequestInfoResolver)
	return filters.WithAuditInit(h)
}

// withEndOnShutdown cancels the context of every long-running request when
// stopping ends.
func withEndOnShutdown(h http.Handler, longRunning apirequest.LongRunningRequestCheck, stopping context.Context) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri, ok := apirequest.RequestInfoFrom(r.Context())
		if !ok || !longRunning(r, ri) {
			h.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(stopping, cancel)
		defer stop()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
