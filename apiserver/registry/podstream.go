package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

// Kubelets finds the kubelet of a node and explains failures to reach it
// (path P5). *kubeletclient.Client implements it.
type Kubelets interface {
	// Location returns the kubelet's base URL (scheme and host) and the
	// transport to reach it with; errors are API errors.
	Location(ctx context.Context, nodeName string) (*url.URL, http.RoundTripper, error)
	// StatusError turns an error met while talking to the kubelet at
	// location into the API error the client sees.
	StatusError(nodeName string, location *url.URL, err error) error
}

// PodStreamConfig is what the pod subresources that reach a kubelet need.
type PodStreamConfig struct {
	// Pods is the pod storage. Required.
	Pods *REST
	// Kubelets locates and connects to kubelets. Required.
	Kubelets Kubelets
	// Authorizer is asked for create on pods/exec, pods/attach and
	// pods/portforward, whatever the request's method. Required.
	Authorizer authorizer.UnconditionalAuthorizer
}

// PodStreamStorage holds the storage of pods/log, pods/exec, pods/attach
// and pods/portforward.
type PodStreamStorage struct {
	Log, Exec, Attach, PortForward rest.Storage
}

// NewPodStreamStorage returns the storage of the pod subresources that
// reach the pod's kubelet.
//
// pods/log (GET) streams /containerLogs from the kubelet as text/plain. A
// pod that has no node yet has an empty log (200).
//
// pods/exec, pods/attach and pods/portforward (GET and POST) proxy an
// upgraded connection to the kubelet's /exec, /attach and /portForward:
// SPDY is passed through; kubectl's WebSocket (v5.channel.k8s.io) is
// translated to SPDY for exec and attach; port-forward's WebSocket tunnel
// (SPDY/3.1+portforward.k8s.io) is unwrapped. Besides the authorization of
// the request itself (a WebSocket upgrade is a GET, so RBAC sees "get"),
// each needs "create" on the subresource, as upstream does with
// AuthorizePodWebsocketUpgradeCreatePermission. A pod with no node is a
// 400.
func NewPodStreamStorage(cfg PodStreamConfig) (PodStreamStorage, error) {
	var errs []error
	if cfg.Pods == nil {
		errs = append(errs, errors.New("registry: pod streams need the pod storage"))
	}
	if cfg.Kubelets == nil {
		errs = append(errs, errors.New("registry: pod streams need a kubelet client"))
	}
	if cfg.Authorizer == nil {
		errs = append(errs, errors.New("registry: pod streams need an authorizer"))
	}
	if err := errors.Join(errs...); err != nil {
		return PodStreamStorage{}, err
	}
	if err := registerPodStreamConversions(); err != nil {
		return PodStreamStorage{}, err
	}
	connect := func(sub string) *podConnectREST {
		return &podConnectREST{pods: cfg.Pods, kubelets: cfg.Kubelets, authz: cfg.Authorizer, subresource: sub}
	}
	return PodStreamStorage{
		Log:         &podLogREST{pods: cfg.Pods, kubelets: cfg.Kubelets},
		Exec:        connect("exec"),
		Attach:      connect("attach"),
		PortForward: connect("portforward"),
	}, nil
}

// NodeGetter reads Nodes from the node storage, for the kubelet client.
func NodeGetter(nodes *REST) func(ctx context.Context, name string) (*corev1.Node, error) {
	return func(ctx context.Context, name string) (*corev1.Node, error) {
		ctx = genericapirequest.WithNamespace(ctx, metav1.NamespaceNone)
		obj, err := nodes.Get(ctx, name, &metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		node, ok := obj.(*corev1.Node)
		if !ok {
			return nil, fmt.Errorf("registry: node storage returned %T", obj)
		}
		return node, nil
	}
}

// podStreamPod reads the pod a subresource request is about.
func podStreamPod(ctx context.Context, pods *REST, name string) (*corev1.Pod, error) {
	obj, err := pods.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, apierrors.NewInternalError(fmt.Errorf("pod storage returned %T", obj))
	}
	return pod, nil
}

// podContainer resolves the container a request names: an omitted name is
// the pod's only container; otherwise the name must be one of the pod's
// init, regular or ephemeral containers.
func podContainer(pod *corev1.Pod, name string) (string, error) {
	var names []string
	for _, c := range pod.Spec.InitContainers {
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		names = append(names, c.Name)
	}
	if name != "" {
		if !slices.Contains(names, name) {
			return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", name, pod.Name))
		}
		return name, nil
	}
	switch len(pod.Spec.Containers) {
	case 1:
		return pod.Spec.Containers[0].Name, nil
	case 0:
		return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s", pod.Name))
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s, choose one of: %s", pod.Name, names))
}

// kubeletPath is a kubelet API path: /<verb>/<namespace>/<pod>[/<container>].
func kubeletPath(verb string, pod *corev1.Pod, container string) string {
	p := "/" + verb + "/" + url.PathEscape(pod.Namespace) + "/" + url.PathEscape(pod.Name)
	if container != "" {
		p += "/" + url.PathEscape(container)
	}
	return p
}

// podLogREST serves GET pods/log.
type podLogREST struct {
	pods     *REST
	kubelets Kubelets
}

var (
	_ rest.GetterWithOptions = (*podLogREST)(nil)
	_ rest.StorageMetadata   = (*podLogREST)(nil)
)

// New implements rest.Storage; the log has no object kind of its own.
func (r *podLogREST) New() runtime.Object { return &corev1.Pod{} }

// Destroy implements rest.Storage; the pod storage owns the store.
func (r *podLogREST) Destroy() {}

// ProducesMIMETypes implements rest.StorageMetadata: logs are plain text.
func (r *podLogREST) ProducesMIMETypes(string) []string { return []string{"text/plain"} }

// ProducesObject implements rest.StorageMetadata: the response is a string.
func (r *podLogREST) ProducesObject(string) any { return "" }

// NewGetOptions implements rest.GetterWithOptions.
func (r *podLogREST) NewGetOptions() (runtime.Object, bool, string) {
	return &corev1.PodLogOptions{}, false, ""
}

// Get implements rest.GetterWithOptions: it validates the options,
// resolves the container and returns a stream of the kubelet's log.
func (r *podLogREST) Get(ctx context.Context, name string, opts runtime.Object) (runtime.Object, error) {
	o, ok := opts.(*corev1.PodLogOptions)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected PodLogOptions, got %T", opts))
	}
	if errs := podLogValidate(o); len(errs) > 0 {
		return nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("PodLogOptions").GroupKind(), name, errs)
	}
	if o.InsecureSkipTLSVerifyBackend {
		return nil, apierrors.NewBadRequest("insecureSkipTLSVerifyBackend is not supported: the API server always verifies kubelet certificates as it is configured to")
	}
	pod, err := podStreamPod(ctx, r.pods, name)
	if err != nil {
		return nil, err
	}
	container, err := podContainer(pod, o.Container)
	if err != nil {
		return nil, err
	}
	if pod.Spec.NodeName == "" {
		// Nothing has run yet, so there is nothing to show.
		return &logStream{}, nil
	}
	loc, transport, err := r.kubelets.Location(ctx, pod.Spec.NodeName)
	if err != nil {
		return nil, err
	}
	loc.Path = kubeletPath("containerLogs", pod, container)
	loc.RawQuery = podLogQuery(o).Encode()
	return &logStream{location: loc, transport: transport, follow: o.Follow, node: pod.Spec.NodeName, kubelets: r.kubelets}, nil
}

// logStream is the body of a pods/log response: the kubelet's answer,
// or nothing when location is nil.
type logStream struct {
	location  *url.URL
	transport http.RoundTripper
	follow    bool
	node      string
	kubelets  Kubelets
}

var _ rest.ResourceStreamer = (*logStream)(nil)

// GetObjectKind implements runtime.Object.
func (s *logStream) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (s *logStream) DeepCopyObject() runtime.Object {
	c := *s
	return &c
}

// maxKubeletErrorBody is how much of a kubelet's error answer is read.
const maxKubeletErrorBody = 50 << 10

// InputStream implements rest.ResourceStreamer. The kubelet's answer is
// streamed as text/plain, flushed after every write when following. A
// kubelet error becomes an API error with the kubelet's code and text;
// redirects are not followed.
func (s *logStream) InputStream(ctx context.Context, _, _ string) (io.ReadCloser, bool, string, error) {
	if s.location == nil {
		return io.NopCloser(strings.NewReader("")), false, "text/plain", nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.location.String(), nil)
	if err != nil {
		return nil, false, "", apierrors.NewInternalError(err)
	}
	client := &http.Client{
		Transport:     s.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, false, "", s.kubelets.StatusError(s.node, s.location, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, false, "", kubeletAnswerError(s.node, resp)
	}
	return resp.Body, s.follow, "text/plain", nil
}

// kubeletAnswerError turns a kubelet's non-2xx answer into an API error
// with the same code and the kubelet's message.
func kubeletAnswerError(node string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxKubeletErrorBody))
	msg := strings.TrimSpace(string(body))
	reason := metav1.StatusReasonUnknown
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" && st.Message != "" {
		msg, reason = st.Message, st.Reason
	}
	code := resp.StatusCode
	if code >= 300 && code < 400 {
		return &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusBadGateway, Reason: "BadGateway",
			Message: fmt.Sprintf("the kubelet of node %s answered with a redirect (%s), which is not followed", node, resp.Status),
		}}
	}
	if msg == "" {
		msg = fmt.Sprintf("the kubelet of node %s answered %s", node, resp.Status)
	}
	if reason == metav1.StatusReasonUnknown {
		reason = reasonForCode(code)
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg}}
}

func reasonForCode(code int) metav1.StatusReason {
	switch code {
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	case http.StatusUnauthorized:
		return metav1.StatusReasonUnauthorized
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	case http.StatusNotFound:
		return metav1.StatusReasonNotFound
	case http.StatusMethodNotAllowed:
		return metav1.StatusReasonMethodNotAllowed
	case http.StatusConflict:
		return metav1.StatusReasonConflict
	case http.StatusGone:
		return metav1.StatusReasonGone
	case http.StatusUnprocessableEntity:
		return metav1.StatusReasonInvalid
	case http.StatusTooManyRequests:
		return metav1.StatusReasonTooManyRequests
	case http.StatusInternalServerError:
		return metav1.StatusReasonInternalError
	case http.StatusServiceUnavailable:
		return metav1.StatusReasonServiceUnavailable
	case http.StatusGatewayTimeout:
		return metav1.StatusReasonTimeout
	}
	return metav1.StatusReasonUnknown
}
