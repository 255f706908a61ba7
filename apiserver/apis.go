package apiserver

import (
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"

	"tether/apiserver/kubeletclient"
	"tether/apiserver/registry"
	"tether/apiserver/scheme"
)

// apiGroups builds the storage of every served resource, grouped as the
// generic server installs them. The core group comes first.
// apiDeps are what some storages need beyond etcd: the authorizer for RBAC
// escalation checks and the access reviews, and the token authenticator.
type apiDeps struct {
	escalation *registry.RBACEscalation
	reviews    registry.ReviewConfig
	tokens     registry.TokenRequestConfig
	// services allocates Service cluster IPs and node ports; if nil,
	// Services keep what they are given.
	services *registry.ServiceAllocator
	// kubelet configures the client of pods/log, exec, attach and
	// portforward; its Nodes are set here, from the node storage.
	kubelet kubeletclient.Config
	// authorizer checks create on pods/exec, attach and portforward.
	authorizer authorizer.UnconditionalAuthorizer
}

// addKubeletPaths adds the subresources that reach kubelets and pods to
// the core storage: pods/log, exec, attach and portforward (path P5) and
// the proxies of nodes, pods and services (path P8).
func addKubeletPaths(core map[string]rest.Storage, endpointSlices rest.Storage, deps apiDeps) error {
	pods, ok := core["pods"].(*registry.REST)
	if !ok {
		return fmt.Errorf("apiserver: unexpected pod storage %T", core["pods"])
	}
	nodes, ok := core["nodes"].(*registry.REST)
	if !ok {
		return fmt.Errorf("apiserver: unexpected node storage %T", core["nodes"])
	}
	services, ok := core["services"].(rest.Getter)
	if !ok {
		return fmt.Errorf("apiserver: unexpected service storage %T", core["services"])
	}
	slices, ok := endpointSlices.(rest.Lister)
	if !ok {
		return fmt.Errorf("apiserver: unexpected EndpointSlice storage %T", endpointSlices)
	}
	kcfg := deps.kubelet
	kcfg.Nodes = kubeletclient.NodeGetterFunc(registry.NodeGetter(nodes))
	kubelets, err := kubeletclient.New(kcfg)
	if err != nil {
		return fmt.Errorf("apiserver: %w", err)
	}
	streams, err := registry.NewPodStreamStorage(registry.PodStreamConfig{Pods: pods, Kubelets: kubelets, Authorizer: deps.authorizer})
	if err != nil {
		return fmt.Errorf("apiserver: %w", err)
	}
	core["pods/log"], core["pods/exec"] = streams.Log, streams.Exec
	core["pods/attach"], core["pods/portforward"] = streams.Attach, streams.PortForward
	proxies, err := registry.NewProxyStorage(registry.ProxyConfig{
		Pods: pods, Nodes: nodes, Services: services, EndpointSlices: slices,
		Kubelets: kubelets,
		// https: targets are verified against the bundle pods trust
		// (kube-root-ca.crt): the server CA.
		TrustBundle: deps.kubelet.ServerCA,
		Tunnels:     deps.kubelet.Tunnels,
	})
	if err != nil {
		return fmt.Errorf("apiserver: %w", err)
	}
	core["nodes/proxy"], core["pods/proxy"], core["services/proxy"] = proxies.Nodes, proxies.Pods, proxies.Services
	return nil
}

func apiGroups(opts generic.RESTOptionsGetter, deps apiDeps) ([]*genericapiserver.APIGroupInfo, error) {
	core := map[string]rest.Storage{}
	add := func(m map[string]rest.Storage, res *registry.Resource) error {
		main, status, err := registry.NewStore(res, opts)
		if err != nil {
			return err
		}
		m[res.Resource] = main
		if status != nil {
			m[res.Resource+"/status"] = status
		}
		return nil
	}
	for _, res := range []*registry.Resource{
		registry.Pods, registry.Nodes, registry.Services, registry.Endpoints,
		registry.ConfigMaps, registry.Secrets, registry.ServiceAccounts, registry.Events,
	} {
		if err := add(core, res); err != nil {
			return nil, err
		}
	}
	// Services get their cluster IPs and node ports from the allocator.
	svc, err := deps.services.Storage(core["services"])
	if err != nil {
		return nil, err
	}
	core["services"] = svc
	ns, nsStatus, nsFinalize, err := registry.NewNamespaceStorage(opts)
	if err != nil {
		return nil, err
	}
	core["namespaces"], core["namespaces/status"], core["namespaces/finalize"] = ns, nsStatus, nsFinalize
	core["serviceaccounts/token"] = registry.NewTokenRequestStorage(deps.tokens)
	pods, ok := core["pods"].(*registry.REST)
	if !ok {
		return nil, fmt.Errorf("apiserver: unexpected pod storage %T", core["pods"])
	}
	core["pods/binding"], core["bindings"] = registry.NewBindingStorage(pods)

	coordination := map[string]rest.Storage{}
	if err := add(coordination, registry.Leases); err != nil {
		return nil, err
	}

	certificates := map[string]rest.Storage{}
	if err := add(certificates, registry.CertificateSigningRequests); err != nil {
		return nil, err
	}
	csr, ok := certificates["certificatesigningrequests"].(*registry.REST)
	if !ok {
		return nil, fmt.Errorf("apiserver: unexpected CSR storage %T", certificates["certificatesigningrequests"])
	}
	certificates["certificatesigningrequests/approval"] = registry.NewCSRApprovalStorage(csr)

	// events.k8s.io/v1 is a second view of the core events: the same etcd
	// keys, with that API's own validation.
	events := map[string]rest.Storage{}
	if err := add(events, registry.EventsV1); err != nil {
		return nil, err
	}

	discovery := map[string]rest.Storage{}
	if err := add(discovery, registry.EndpointSlices); err != nil {
		return nil, err
	}
	if err := addKubeletPaths(core, discovery["endpointslices"], deps); err != nil {
		return nil, err
	}

	rbac, err := registry.RBACStorage(opts, deps.escalation)
	if err != nil {
		return nil, err
	}
	authentication, authorization := registry.ReviewStorage(deps.reviews)

	return []*genericapiserver.APIGroupInfo{
		group(corev1.SchemeGroupVersion, core),
		group(coordinationv1.SchemeGroupVersion, coordination),
		group(certificatesv1.SchemeGroupVersion, certificates),
		group(eventsv1.SchemeGroupVersion, events),
		group(discoveryv1.SchemeGroupVersion, discovery),
		group(rbacv1.SchemeGroupVersion, rbac),
		group(authenticationv1.SchemeGroupVersion, authentication),
		group(authorizationv1.SchemeGroupVersion, authorization),
	}, nil
}

func group(gv schema.GroupVersion, storage map[string]rest.Storage) *genericapiserver.APIGroupInfo {
	info := genericapiserver.NewDefaultAPIGroupInfo(gv.Group, scheme.Scheme, scheme.ParameterCodec, scheme.Codecs)
	info.PrioritizedVersions = []schema.GroupVersion{gv}
	info.VersionedResourcesStorageMap[gv.Version] = storage
	return &info
}
