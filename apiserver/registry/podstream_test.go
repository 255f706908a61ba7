package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/utils/ptr"

	"tether/apiserver/scheme"
)

func TestPodStreamQueryConversions(t *testing.T) {
	if err := registerPodStreamConversions(); err != nil {
		t.Fatal(err)
	}
	since := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	for _, tc := range []struct {
		name  string
		query string
		into  runtime.Object
		want  runtime.Object
	}{
		{"log", "container=c&follow=true&previous=1&sinceTime=2026-01-02T03:04:05Z&timestamps=false&tailLines=10&limitBytes=5&stream=Stdout",
			&corev1.PodLogOptions{}, &corev1.PodLogOptions{Container: "c", Follow: true, Previous: true, SinceTime: &since,
				TailLines: ptr.To[int64](10), LimitBytes: ptr.To[int64](5), Stream: ptr.To("Stdout")}},
		{"log since seconds", "sinceSeconds=30", &corev1.PodLogOptions{}, &corev1.PodLogOptions{SinceSeconds: ptr.To[int64](30)}},
		{"exec", "command=sh&command=-c&command=echo+hi&container=c&stdin=true&stdout=true&stderr=false&tty=0",
			&corev1.PodExecOptions{}, &corev1.PodExecOptions{Command: []string{"sh", "-c", "echo hi"}, Container: "c", Stdin: true, Stdout: true}},
		{"attach", "container=c&stdout=true&tty=true", &corev1.PodAttachOptions{}, &corev1.PodAttachOptions{Container: "c", Stdout: true, TTY: true}},
		{"port-forward", "ports=80&ports=8080", &corev1.PodPortForwardOptions{}, &corev1.PodPortForwardOptions{Ports: []int32{80, 8080}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if err := scheme.ParameterCodec.DecodeParameters(q, corev1.SchemeGroupVersion, tc.into); err != nil {
				t.Fatalf("DecodeParameters(%q): %v", tc.query, err)
			}
			if !equality.Semantic.DeepEqual(tc.want, tc.into) {
				t.Errorf("DecodeParameters(%q) = %+v, want %+v", tc.query, tc.into, tc.want)
			}
		})
	}
	for _, bad := range []struct {
		query string
		into  runtime.Object
	}{
		{"tailLines=ten", &corev1.PodLogOptions{}},
		{"sinceTime=yesterday", &corev1.PodLogOptions{}},
		{"ports=http", &corev1.PodPortForwardOptions{}},
	} {
		q, _ := url.ParseQuery(bad.query)
		if err := scheme.ParameterCodec.DecodeParameters(q, corev1.SchemeGroupVersion, bad.into); err == nil {
			t.Errorf("DecodeParameters(%q) succeeded, want an error", bad.query)
		}
	}
}

func TestPodLogValidate(t *testing.T) {
	now := metav1.Now()
	for _, tc := range []struct {
		name string
		opts corev1.PodLogOptions
		want string // a substring of the errors, "" for valid
	}{
		{"empty", corev1.PodLogOptions{}, ""},
		{"all set", corev1.PodLogOptions{TailLines: ptr.To[int64](0), LimitBytes: ptr.To[int64](1), SinceSeconds: ptr.To[int64](1), Stream: ptr.To("All")}, ""},
		{"negative tail", corev1.PodLogOptions{TailLines: ptr.To[int64](-1)}, "tailLines"},
		{"zero limit", corev1.PodLogOptions{LimitBytes: ptr.To[int64](0)}, "limitBytes"},
		{"zero since", corev1.PodLogOptions{SinceSeconds: ptr.To[int64](0)}, "sinceSeconds"},
		{"both since", corev1.PodLogOptions{SinceSeconds: ptr.To[int64](5), SinceTime: &now}, "at most one of"},
		{"bad stream", corev1.PodLogOptions{Stream: ptr.To("Both")}, "stream"},
		{"stream and tail", corev1.PodLogOptions{Stream: ptr.To("Stderr"), TailLines: ptr.To[int64](3)}, "mutually exclusive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := podLogValidate(&tc.opts)
			if tc.want == "" && len(errs) > 0 || tc.want != "" && !strings.Contains(errs.ToAggregate().Error(), tc.want) {
				t.Errorf("podLogValidate(%+v) = %v, want %q", tc.opts, errs, tc.want)
			}
		})
	}
}

func TestPodStreamKubeletQueries(t *testing.T) {
	since := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	got := podLogQuery(&corev1.PodLogOptions{Container: "c", Follow: true, SinceTime: &since, TailLines: ptr.To[int64](0), InsecureSkipTLSVerifyBackend: true})
	if want := "follow=true&sinceTime=2026-01-02T03%3A04%3A05Z&tailLines=0"; got.Encode() != want {
		t.Errorf("podLogQuery = %q, want %q", got.Encode(), want)
	}
	if got := podLogQuery(&corev1.PodLogOptions{}); len(got) != 0 {
		t.Errorf("podLogQuery(no options) = %q, want nothing forwarded", got.Encode())
	}
	got = kubeletStreamQuery(true, true, false, true, []string{"sh", "-c", "x"})
	if want := "command=sh&command=-c&command=x&input=1&output=1&tty=1"; got.Encode() != want {
		t.Errorf("kubeletStreamQuery = %q, want %q", got.Encode(), want)
	}
}

func TestPodContainer(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.PodSpec{
		InitContainers:      []corev1.Container{{Name: "init"}},
		Containers:          []corev1.Container{{Name: "a"}, {Name: "b"}},
		EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug"}}},
	}}
	single := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "one"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "only"}}}}
	for _, tc := range []struct {
		pod       *corev1.Pod
		name      string
		want, err string
	}{
		{single, "", "only", ""},
		{pod, "b", "b", ""},
		{pod, "init", "init", ""},
		{pod, "debug", "debug", ""},
		{pod, "", "", "a container name must be specified for pod web, choose one of: [init a b debug]"},
		{pod, "c", "", "container c is not valid for pod web"},
	} {
		got, err := podContainer(tc.pod, tc.name)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && (!apierrors.IsBadRequest(err) || err.Error() != tc.err) {
			t.Errorf("podContainer(%s, %q) = %q, %v; want %q, %q", tc.pod.Name, tc.name, got, err, tc.want, tc.err)
		}
	}
}

func TestKubeletAnswerError(t *testing.T) {
	answer := func(code int, contentType, body string) *http.Response {
		return &http.Response{StatusCode: code, Status: http.StatusText(code), Header: http.Header{"Content-Type": {contentType}}, Body: io.NopCloser(strings.NewReader(body))}
	}
	for _, tc := range []struct {
		resp   *http.Response
		code   int32
		reason metav1.StatusReason
		msg    string
	}{
		{answer(404, "text/plain", "container c is not running\n"), 404, metav1.StatusReasonNotFound, "container c is not running"},
		{answer(400, "text/plain", "bad"), 400, metav1.StatusReasonBadRequest, "bad"},
		{answer(500, "application/json", `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"runtime failed","reason":"InternalError","code":500}`), 500, metav1.StatusReasonInternalError, "runtime failed"},
		{answer(403, "text/plain", "Forbidden (user=x, verb=get, resource=nodes, subresource(s)=[proxy])"), 403, metav1.StatusReasonForbidden, "Forbidden (user=x"},
		{answer(302, "text/plain", ""), 502, "BadGateway", "redirect"},
		{answer(418, "text/plain", ""), 418, metav1.StatusReasonUnknown, "the kubelet of node n1 answered"},
	} {
		err := kubeletAnswerError("n1", tc.resp)
		var st apierrors.APIStatus
		if !errors.As(err, &st) || st.Status().Code != tc.code || st.Status().Reason != tc.reason || !strings.Contains(st.Status().Message, tc.msg) {
			t.Errorf("kubeletAnswerError(%d) = %#v, want %d %s %q", tc.resp.StatusCode, err, tc.code, tc.reason, tc.msg)
		}
	}
}

// denyAll is an authorizer that allows nothing and records what it was
// asked.
type denyAll struct{ asked []authorizer.Attributes }

func (d *denyAll) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	d.asked = append(d.asked, a)
	return authorizer.DecisionNoOpinion, "", nil
}

// noKubelets fails the test if a kubelet is looked up.
type noKubelets struct{ t *testing.T }

func (k noKubelets) Location(context.Context, string) (*url.URL, http.RoundTripper, error) {
	k.t.Errorf("a kubelet was located for a forbidden request")
	return nil, nil, errors.New("no")
}

func (k noKubelets) StatusError(_ string, _ *url.URL, err error) error { return err }

func TestPodConnectRequiresCreate(t *testing.T) {
	authz := &denyAll{}
	s, err := NewPodStreamStorage(PodStreamConfig{Pods: &REST{}, Kubelets: noKubelets{t}, Authorizer: authz})
	if err != nil {
		t.Fatal(err)
	}
	ctx := request.WithNamespace(request.WithUser(t.Context(), &user.DefaultInfo{Name: "viewer"}), "ns1")
	for _, tc := range []struct {
		sub  string
		st   any
		opts runtime.Object
	}{
		{"exec", s.Exec, &corev1.PodExecOptions{Command: []string{"true"}, Stdout: true}},
		{"attach", s.Attach, &corev1.PodAttachOptions{Stdout: true}},
		{"portforward", s.PortForward, &corev1.PodPortForwardOptions{}},
	} {
		_, err := tc.st.(*podConnectREST).Connect(ctx, "web", tc.opts, nil)
		want := `pods "web" is forbidden: User "viewer" cannot create resource "pods/` + tc.sub + `" in API group "" in the namespace "ns1"`
		if !apierrors.IsForbidden(err) || err.Error() != want {
			t.Errorf("Connect(pods/%s) without create = %v, want 403 %q", tc.sub, err, want)
		}
		a := authz.asked[len(authz.asked)-1]
		if a.GetVerb() != "create" || a.GetResource() != "pods" || a.GetSubresource() != tc.sub || a.GetName() != "web" || a.GetNamespace() != "ns1" {
			t.Errorf("authorizer asked %+v, want create pods/%s web in ns1", a, tc.sub)
		}
	}
}
