// Package apiserver is tether's Kubernetes API server: HTTPS only, backed by
// etcd, serving the core Kubernetes resources to kubectl and client-go.
//
// It is assembled from k8s.io/apiserver's generic server: the handler chain
// (authentication → audit → impersonation → authorization → admission), the
// REST endpoints (get, list, watch, create, update, patch, apply, delete,
// content negotiation, Tables, Status errors), discovery and OpenAPI. What
// tether adds is the resources (package registry), the storage wiring
// (package storage), who may do what (packages authn and authz) and the
// bootstrap objects every cluster has.
package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	tokencache "k8s.io/apiserver/pkg/authentication/token/cache"
	tokenunion "k8s.io/apiserver/pkg/authentication/token/union"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	apirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/features"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"tether/apiserver/admission/noderestriction"
	saadmission "tether/apiserver/admission/serviceaccount"
	"tether/apiserver/authn"
	"tether/apiserver/authn/bootstrap"
	"tether/apiserver/authn/revocation"
	"tether/apiserver/authn/serviceaccount"
	"tether/apiserver/authz"
	"tether/apiserver/authz/node"
	"tether/apiserver/authz/rbac"
	"tether/apiserver/kubeletclient"
	"tether/apiserver/openapi"
	"tether/apiserver/registry"
	"tether/apiserver/scheme"
	"tether/apiserver/storage"
	"tether/internal/informer"
	"tether/pki"
	"tether/tunnel"
)

// Config configures the API server. A Config is not changed after New.
type Config struct {
	// BindAddress is the address to listen on. If nil, all addresses.
	BindAddress net.IP
	// SecurePort is the HTTPS port. If 0, 6443. Serve ignores it.
	SecurePort int
	// AdvertiseAddress is the address clients and nodes reach the server
	// at. If nil, the bind address, or 127.0.0.1 when that is unspecified.
	AdvertiseAddress net.IP
	// ServiceIP is the cluster IP of the kubernetes Service in default,
	// the first address of the service range. If nil, the server does not
	// create that Service.
	ServiceIP net.IP
	// ServiceClusterIPRange is the range Service cluster IPs are allocated
	// from (--service-cluster-ip-range). If nil, nothing is allocated:
	// Services keep the cluster IPs and node ports they are given.
	ServiceClusterIPRange *net.IPNet
	// ServiceNodePortRange is the range node ports are allocated from
	// (--service-node-port-range). If zero, 30000-32767.
	ServiceNodePortRange utilnet.PortRange

	// ServingCertFile and ServingKeyFile hold the serving certificate; they
	// are re-read when they change. Required.
	ServingCertFile, ServingKeyFile string
	// ClientCAFile verifies client certificates. Required.
	ClientCAFile string
	// ServerCAFile is the CA of the serving certificate; in-process clients
	// verify the server with it. Required.
	ServerCAFile string
	// ServiceAccountKeyFile is the ECDSA P-256 key that signs and verifies
	// service-account tokens. Required.
	ServiceAccountKeyFile string
	// ServiceAccountIssuer is the iss of the tokens this server issues. If
	// empty, https://kubernetes.default.svc.cluster.local.
	ServiceAccountIssuer string
	// APIAudiences are the audiences a token must name to be accepted here.
	// If empty, the issuer.
	APIAudiences []string

	// Storage says where etcd is. Required.
	Storage storage.Backend
	// DisableWatchCache serves every read from etcd.
	DisableWatchCache bool

	// Audit configures the audit log. If Audit.Path is empty, requests are
	// not audited.
	Audit AuditConfig

	// KubeletClientCertificate returns the client certificate the server
	// presents to kubelets for logs, exec, attach and port-forward (path
	// P5); kubelets know the server by its CN, kubeletclient.User.
	// Required.
	KubeletClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// KubeletPreferredAddressTypes orders the node address types used to
	// reach a kubelet. If empty, InternalIP, then Hostname.
	KubeletPreferredAddressTypes []corev1.NodeAddressType
	// KubeletInsecureSkipTLSVerify accepts any kubelet serving
	// certificate instead of verifying it against the server CA. Every
	// use logs a warning.
	KubeletInsecureSkipTLSVerify bool
	// Profiling serves /debug/pprof (authenticated and authorized like
	// any non-resource path).
	Profiling bool

	// Version is tether's own version; /version reports
	// v1.37.2+tether.<Version>. If empty, "dev".
	Version string
	// Logger receives the server's own messages. If nil, they are discarded.
	Logger *slog.Logger
}

// DefaultServiceAccountIssuer is the issuer of service-account tokens
// unless --service-account-issuer says otherwise.
const DefaultServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// Server is the API server. Create it with New, then call Run or Serve once.
type Server struct {
	cfg   Config
	ready chan struct{}
	// stopping ends when Serve's context does: the long-running requests
	// (watches, tunnels, streams) end with it, so that shutting down does
	// not wait for clients to close them.
	stopping context.Context
	stop     context.CancelFunc
	loopback *rest.Config
}

// New validates cfg and reads nothing from the network.
func New(cfg Config) (*Server, error) {
	// The scheme is process-global and read without locks once a server
	// runs: everything is registered now, before any store exists.
	if err := registry.PrepareScheme(); err != nil {
		return nil, fmt.Errorf("apiserver: %w", err)
	}
	var errs []error
	for name, v := range map[string]string{
		"serving certificate file": cfg.ServingCertFile, "serving key file": cfg.ServingKeyFile,
		"client CA file": cfg.ClientCAFile, "server CA file": cfg.ServerCAFile,
		"service account key file": cfg.ServiceAccountKeyFile,
	} {
		if v == "" {
			errs = append(errs, fmt.Errorf("apiserver: %s is required", name))
		}
	}
	if cfg.KubeletClientCertificate == nil {
		errs = append(errs, errors.New("apiserver: a kubelet client certificate source is required"))
	}
	if len(cfg.KubeletPreferredAddressTypes) > 0 {
		if err := kubeletclient.ValidateAddressTypes(cfg.KubeletPreferredAddressTypes); err != nil {
			errs = append(errs, err)
		}
	}
	if len(cfg.Storage.Servers) == 0 {
		errs = append(errs, errors.New("apiserver: no etcd servers configured"))
	}
	if cfg.ServiceNodePortRange.Size == 0 {
		cfg.ServiceNodePortRange = registry.DefaultServiceNodePortRange
	}
	if cfg.ServiceClusterIPRange != nil {
		if err := registry.ValidateServiceRanges(cfg.ServiceClusterIPRange, cfg.ServiceNodePortRange); err != nil {
			errs = append(errs, fmt.Errorf("apiserver: %w", err))
		}
	}
	if cfg.SecurePort < 0 || cfg.SecurePort > 65535 {
		errs = append(errs, fmt.Errorf("apiserver: secure port %d is out of range", cfg.SecurePort))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.SecurePort == 0 {
		cfg.SecurePort = 6443
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.ServiceAccountIssuer == "" {
		cfg.ServiceAccountIssuer = DefaultServiceAccountIssuer
	}
	if len(cfg.APIAudiences) == 0 {
		cfg.APIAudiences = []string{cfg.ServiceAccountIssuer}
	}
	stopping, stop := context.WithCancel(context.Background())
	return &Server{cfg: cfg, ready: make(chan struct{}), stopping: stopping, stop: stop}, nil
}

// Ready is closed once the server serves requests and the bootstrap
// objects exist.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// LoopbackConfig returns a privileged client configuration for in-process
// clients. It is valid once Ready is closed.
func (s *Server) LoopbackConfig() *rest.Config { return rest.CopyConfig(s.loopback) }

// Run listens on the configured address and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	bind := "0.0.0.0"
	if s.cfg.BindAddress != nil {
		bind = s.cfg.BindAddress.String()
	}
	addr := net.JoinHostPort(bind, strconv.Itoa(s.cfg.SecurePort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("apiserver: listen on %s (--bind-address, --secure-port): %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves HTTPS on ln until ctx ends. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	gs, err := s.build(ln)
	if err != nil {
		ln.Close()
		return err
	}
	s.cfg.Logger.Info("serving", "component", "apiserver", "address", ln.Addr().String())
	stopWatching := context.AfterFunc(ctx, s.stop)
	defer stopWatching()
	return gs.PrepareRun().RunWithContext(ctx)
}

func (s *Server) build(ln net.Listener) (*genericapiserver.GenericAPIServer, error) {
	// The watch cache keeps no per-revision snapshots (upstream's
	// ListFromCacheSnapshot): at a thousand nodes they hold about 15 MiB,
	// and the LISTs only they serve from the cache (an exact older
	// resourceVersion, a continue token) are read from etcd instead.
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(map[string]bool{string(features.ListFromCacheSnapshot): false}); err != nil {
		return nil, fmt.Errorf("apiserver: feature gates: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	serverCA, err := os.ReadFile(s.cfg.ServerCAFile)
	if err != nil {
		return nil, fmt.Errorf("apiserver: read server CA: %w", err)
	}
	serving, err := dynamiccertificates.NewDynamicServingContentFromFiles("serving-cert", s.cfg.ServingCertFile, s.cfg.ServingKeyFile)
	if err != nil {
		return nil, fmt.Errorf("apiserver: serving certificate: %w", err)
	}
	clientCA, err := dynamiccertificates.NewDynamicCAContentFromFile("client-ca", s.cfg.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("apiserver: client CA: %w", err)
	}

	gc := genericapiserver.NewConfig(scheme.Codecs)
	gc.EffectiveVersion = newEffectiveVersion(s.cfg.Version)
	advertise := s.advertiseAddress()
	gc.PublicAddress = advertise
	gc.ExternalAddress = net.JoinHostPort(advertise.String(), strconv.Itoa(port))
	gc.EnableProfiling = s.cfg.Profiling
	// Watches and the streams to kubelets and pods (logs -f, exec,
	// attach, port-forward, proxy) may stay open and quiet for as long as
	// their clients want: no request timeout applies to them.
	// So are the nodes' tunnels (path P10), open as long as the node runs.
	longRunning := genericfilters.BasicLongRunningRequestCheck(
		sets.NewString("watch", "proxy"),
		sets.NewString("attach", "exec", "proxy", "log", "portforward"))
	gc.LongRunningFunc = func(r *http.Request, ri *apirequest.RequestInfo) bool {
		return r.URL.Path == tunnel.Path || longRunning(r, ri)
	}
	gc.SecureServing = &genericapiserver.SecureServingInfo{
		Listener:      ln,
		Cert:          serving,
		ClientCA:      clientCA,
		MinTLSVersion: tls.VersionTLS12,
		CipherSuites:  secureCipherSuites(),
	}

	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	host := "127.0.0.1"
	if b := s.cfg.BindAddress; b != nil && !b.IsUnspecified() {
		host = b.String()
	}
	s.loopback = &rest.Config{
		Host:        "https://" + net.JoinHostPort(host, strconv.Itoa(port)),
		BearerToken: token,
		// The serving certificate always names localhost; the loopback
		// connection verifies it like any other client.
		TLSClientConfig: rest.TLSClientConfig{CAData: serverCA, ServerName: "localhost"},
		QPS:             200,
		Burst:           400,
		UserAgent:       "tether-apiserver-loopback",
		// The server's own clients (the kubernetes Service's Endpoints,
		// written every 10 s) would log the deprecation warnings the
		// server sends to users.
		WarningHandler: rest.NoWarnings{},
	}
	gc.LoopbackClientConfig = s.loopback

	gc.AuditBackend, gc.AuditPolicyRuleEvaluator, err = newAudit(s.cfg.Audit)
	if err != nil {
		return nil, err
	}

	namer := openapinamer.NewDefinitionNamer(scheme.Scheme)
	gc.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(openapi.GetOpenAPIDefinitions, namer)
	gc.OpenAPIConfig.Info.Title = "Kubernetes"
	gc.OpenAPIConfig.Info.Version = gitVersion(s.cfg.Version)
	gc.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(openapi.GetOpenAPIDefinitions, namer)
	gc.OpenAPIV3Config.Info.Title = "Kubernetes"
	gc.OpenAPIV3Config.Info.Version = gitVersion(s.cfg.Version)

	// In-process clients and the informers that admission needs.
	client, err := kubernetes.NewForConfig(s.loopback)
	if err != nil {
		return nil, fmt.Errorf("apiserver: loopback client: %w", err)
	}
	sharedInformers := informer.NewFactory(client, 10*time.Minute)

	// Authorization: system:masters, the public paths, then the Node
	// authorizer (authoritative for nodes), then RBAC.
	rbacAuthz := rbac.New(sharedInformers)
	nodeAuthz := node.New(sharedInformers)
	fullAuthz, err := authz.New(authz.Config{PublicPaths: authn.PublicPaths, Extra: []authorizer.Authorizer{nodeAuthz, rbacAuthz}})
	if err != nil {
		return nil, err
	}
	gc.Authorization.Authorizer = fullAuthz
	gc.RuleResolver = rbacAuthz

	// Authentication: client certificates unless revoked, then bootstrap
	// and service-account tokens (verified tokens cached for at most 10 s).
	saKeyPEM, err := os.ReadFile(s.cfg.ServiceAccountKeyFile)
	if err != nil {
		return nil, fmt.Errorf("apiserver: service account key: %w", err)
	}
	saSigner, err := pki.ParseKeyPEM(saKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("apiserver: service account key %s: %w", s.cfg.ServiceAccountKeyFile, err)
	}
	saKey, ok := saSigner.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("apiserver: service account key %s is not an ECDSA key", s.cfg.ServiceAccountKeyFile)
	}
	issuer, err := serviceaccount.NewIssuer(saKey, s.cfg.ServiceAccountIssuer)
	if err != nil {
		return nil, fmt.Errorf("apiserver: --service-account-issuer: %w", err)
	}
	getter := bootstrap.NewGetter(sharedInformers, client)
	revoked := revocation.New(sharedInformers)
	// A revoked certificate's open requests (watches above all) end at once.
	muxComplete := make(chan struct{})
	gc.BuildHandlerChainFunc = func(h http.Handler, c *genericapiserver.Config) http.Handler {
		return revoked.CancelOnRevoke(handlerChain(h, c, muxComplete, s.stopping))
	}
	tokens := tokencache.New(tokenunion.New(
		authenticator.WrapAudienceAgnosticToken(s.cfg.APIAudiences, bootstrap.New(getter)),
		serviceaccount.NewAuthenticator(serviceaccount.AuthenticatorConfig{
			Keys: []*ecdsa.PublicKey{&saKey.PublicKey}, Issuer: s.cfg.ServiceAccountIssuer,
			Audiences: s.cfg.APIAudiences, Getter: getter,
		}),
	), false, 10*time.Second, time.Second)
	gc.Authentication.APIAudiences = s.cfg.APIAudiences
	gc.Authentication.Authenticator, err = authn.New(authn.Config{ClientCA: clientCA, Revoked: revoked, Token: tokens})
	if err != nil {
		return nil, err
	}
	nsLifecycle, err := lifecycle.NewLifecycle(sets.New("default", "kube-system", "kube-public"))
	if err != nil {
		return nil, fmt.Errorf("apiserver: namespace lifecycle admission: %w", err)
	}
	nsLifecycle.SetExternalKubeClientSet(client)
	nsLifecycle.SetExternalKubeInformerFactory(sharedInformers)
	if err := nsLifecycle.ValidateInitialization(); err != nil {
		return nil, fmt.Errorf("apiserver: namespace lifecycle admission: %w", err)
	}
	pods := sharedInformers.Core().V1().Pods()
	nodeRestriction := noderestriction.New(pods.Lister(), pods.Informer().HasSynced)
	if err := nodeRestriction.ValidateInitialization(); err != nil {
		return nil, fmt.Errorf("apiserver: node restriction admission: %w", err)
	}
	// Pods get their service account and its credentials (path P3). The
	// account is read from the cache, or live when the cache lacks it.
	accounts := sharedInformers.Core().V1().ServiceAccounts()
	saAdmission := saadmission.New(saadmission.Config{
		ServiceAccounts: accounts.Lister(), Synced: accounts.Informer().HasSynced, Client: client,
	})
	if err := saAdmission.ValidateInitialization(); err != nil {
		return nil, fmt.Errorf("apiserver: service account admission: %w", err)
	}
	gc.AdmissionControl = admission.NewChainHandler(nsLifecycle, saAdmission, nodeRestriction)

	backend := s.cfg.Storage.Config()
	stopReadyCheck := make(chan struct{})
	etcdReady, err := factory.CreateReadyCheck(backend, stopReadyCheck)
	if err != nil {
		return nil, fmt.Errorf("apiserver: etcd ready check: %w", err)
	}
	etcdCheck := healthz.NamedCheck("etcd", func(_ *http.Request) error { return etcdReady() })
	gc.ReadyzChecks = append(gc.ReadyzChecks, etcdCheck)
	gc.HealthzChecks = append(gc.HealthzChecks, etcdCheck)

	gs, err := gc.Complete(sharedInformers).New("tether-apiserver", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("apiserver: %w", err)
	}
	gs.Handler.GoRestfulContainer.Router(newRouteCache())
	var services *registry.ServiceAllocator
	if s.cfg.ServiceClusterIPRange != nil {
		services, err = registry.NewServiceAllocator(registry.ServiceAllocatorConfig{
			Storage: s.cfg.Storage, ClusterIPRange: s.cfg.ServiceClusterIPRange,
			NodePortRange: s.cfg.ServiceNodePortRange, Logger: s.cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("apiserver: %w", err)
		}
	}
	// Nodes that cannot be connected to keep a tunnel open instead.
	tunnels := tunnel.NewServer(scheme.Codecs, s.cfg.Logger)
	groups, err := apiGroups(storage.RESTOptions{Backend: s.cfg.Storage, DisableWatchCache: s.cfg.DisableWatchCache}, apiDeps{
		escalation: &registry.RBACEscalation{Rules: rbacAuthz, Authorizer: fullAuthz},
		reviews:    registry.ReviewConfig{Tokens: tokens, APIAudiences: s.cfg.APIAudiences, Authorizer: fullAuthz, Rules: rbacAuthz},
		tokens:     registry.TokenRequestConfig{Issuer: issuer, Getter: getter, APIAudiences: s.cfg.APIAudiences},
		kubelet: kubeletclient.Config{
			ServerCA:              serverCA,
			ClientCertificate:     s.cfg.KubeletClientCertificate,
			PreferredAddressTypes: s.cfg.KubeletPreferredAddressTypes,
			InsecureSkipTLSVerify: s.cfg.KubeletInsecureSkipTLSVerify,
			Logger:                s.cfg.Logger,
			Tunnels:               tunnels,
		},
		authorizer: fullAuthz,
		services:   services,
	})
	if err != nil {
		return nil, err
	}
	openID, jwks, err := serviceaccount.DiscoveryHandlers(s.cfg.ServiceAccountIssuer, "https://"+gc.ExternalAddress, []*ecdsa.PublicKey{&saKey.PublicKey})
	if err != nil {
		return nil, fmt.Errorf("apiserver: OIDC discovery: %w", err)
	}
	gs.Handler.NonGoRestfulMux.Handle(tunnel.Path, tunnels)
	gs.Handler.NonGoRestfulMux.Handle(serviceaccount.OpenIDConfigPath, openID)
	gs.Handler.NonGoRestfulMux.Handle(serviceaccount.JWKSPath, jwks)
	if err := gs.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, groups[0]); err != nil {
		return nil, fmt.Errorf("apiserver: install core API: %w", err)
	}
	if err := gs.InstallAPIGroups(groups[1:]...); err != nil {
		return nil, fmt.Errorf("apiserver: install API groups: %w", err)
	}
	close(muxComplete)

	gs.AddPostStartHookOrDie("tether-informers", func(hc genericapiserver.PostStartHookContext) error {
		sharedInformers.Start(hc.Done())
		go func() { <-hc.Done(); close(stopReadyCheck) }()
		return nil
	})
	if services != nil {
		// Reconcile allocations with Services before the server is
		// ready, then every few minutes.
		gs.AddPostStartHookOrDie("tether-service-allocation-repair", func(hc genericapiserver.PostStartHookContext) error {
			if err := services.Repair(hc); err != nil {
				s.cfg.Logger.Warn("repairing service allocations", "component", "apiserver", "err", err)
			}
			go services.Run(hc)
			return nil
		})
	}
	gs.AddPostStartHookOrDie("tether-bootstrap", func(hc genericapiserver.PostStartHookContext) error {
		if err := createSystemNamespaces(hc, client, s.cfg.Logger); err != nil {
			return err
		}
		if s.cfg.ServiceIP != nil {
			if err := ensureKubernetesService(hc, client, s.cfg.ServiceIP, s.advertiseAddress(), port, s.cfg.Logger); err != nil {
				return err
			}
		}
		if err := rbac.Reconcile(hc, client, s.cfg.Logger); err != nil {
			return fmt.Errorf("apiserver: default RBAC policy: %w", err)
		}
		// Until the authorizers have synced, every non-master would be
		// refused; the server is not ready before that.
		err := wait.PollUntilContextTimeout(hc, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			return rbacAuthz.HasSynced() && nodeAuthz.HasSynced() && pods.Informer().HasSynced() && accounts.Informer().HasSynced() && revoked.HasSynced(), nil
		})
		if err != nil {
			return fmt.Errorf("apiserver: authorizer caches did not sync: %w", err)
		}
		close(s.ready)
		return nil
	})
	return gs, nil
}

func (s *Server) advertiseAddress() net.IP {
	switch {
	case s.cfg.AdvertiseAddress != nil:
		return s.cfg.AdvertiseAddress
	case s.cfg.BindAddress != nil && !s.cfg.BindAddress.IsUnspecified():
		return s.cfg.BindAddress
	}
	return net.IPv4(127, 0, 0, 1)
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("apiserver: loopback token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// secureCipherSuites are the TLS 1.2 suites with forward secrecy and AEAD;
// TLS 1.3 suites are not configurable and all good.
func secureCipherSuites() []uint16 {
	var ids []uint16
	for _, cs := range tls.CipherSuites() {
		if strings.Contains(cs.Name, "_CBC_") {
			continue
		}
		ids = append(ids, cs.ID)
	}
	return ids
}
