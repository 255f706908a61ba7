package endpoints

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

func service(name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": name}},
		Spec:       corev1.ServiceSpec{Selector: selector, ClusterIP: "10.96.0.10", Ports: ports},
	}
}

func httpPort() corev1.ServicePort {
	return corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("web")}
}

// pod returns a pod labelled app=web whose container names port "web".
func pod(name, ip string, ready bool, webPort int32) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{
			Name: "c", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: webPort, Protocol: corev1.ProtocolTCP}},
		}}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      ip,
			PodIPs:     []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		},
	}
}

func addr(p *corev1.Pod) corev1.EndpointAddress {
	node := p.Spec.NodeName
	return corev1.EndpointAddress{IP: p.Status.PodIP, NodeName: &node,
		TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}}
}

func TestSubsets(t *testing.T) {
	web := map[string]string{"app": "web"}
	a := pod("a", "10.244.0.5", true, 8080)
	b := pod("b", "10.244.0.6", false, 8080)
	c := pod("c", "10.244.0.7", true, 9090) // resolves "web" differently
	noIP := pod("no-ip", "", true, 8080)
	noIP.Status.PodIPs = nil
	done := pod("done", "10.244.0.8", false, 8080)
	done.Status.Phase = corev1.PodSucceeded
	dying := pod("dying", "10.244.0.9", true, 8080)
	dying.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	noPort := pod("no-port", "10.244.0.10", true, 8080)
	noPort.Spec.Containers[0].Ports = nil
	ports := func(n int32) []corev1.EndpointPort {
		return []corev1.EndpointPort{{Name: "http", Port: n, Protocol: corev1.ProtocolTCP}}
	}

	for _, tc := range []struct {
		name string
		svc  *corev1.Service
		pods []*corev1.Pod
		want []corev1.EndpointSubset
	}{
		{"ready and not ready", service("web", web, httpPort()), []*corev1.Pod{b, a, noIP, done, dying, noPort},
			[]corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{addr(a)}, NotReadyAddresses: []corev1.EndpointAddress{addr(b)}, Ports: ports(8080)}}},
		{"named port resolved per pod", service("web", web, httpPort()), []*corev1.Pod{a, c},
			[]corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr(a)}, Ports: ports(8080)},
				{Addresses: []corev1.EndpointAddress{addr(c)}, Ports: ports(9090)},
			}},
		{"numeric target port", service("web", web, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8443)}), []*corev1.Pod{a, noPort},
			// Addresses sort as strings, like upstream's.
			[]corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{addr(noPort), addr(a)}, Ports: ports(8443)}}},
		{"publish not ready", func() *corev1.Service {
			s := service("web", web, httpPort())
			s.Spec.PublishNotReadyAddresses = true
			return s
		}(), []*corev1.Pod{a, b, dying},
			[]corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{addr(a), addr(b), addr(dying)}, Ports: ports(8080)}}},
		{"headless without ports", func() *corev1.Service {
			s := service("web", web)
			s.Spec.ClusterIP = corev1.ClusterIPNone
			return s
		}(), []*corev1.Pod{a},
			[]corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{addr(a)}}}},
		{"no pods", service("web", web, httpPort()), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, truncated := Subsets(tc.svc, tc.pods)
			if truncated {
				t.Errorf("truncated = true, want false")
			}
			if !equality.Semantic.DeepEqual(got, tc.want) {
				t.Errorf("Subsets() =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestSubsetsHostname(t *testing.T) {
	svc := service("web", map[string]string{"app": "web"}, httpPort())
	p := pod("a", "10.244.0.5", true, 8080)
	p.Spec.Hostname, p.Spec.Subdomain = "a-host", "web"
	got, _ := Subsets(svc, []*corev1.Pod{p})
	if h := got[0].Addresses[0].Hostname; h != "a-host" {
		t.Errorf("hostname = %q, want a-host", h)
	}
	p.Spec.Subdomain = "other"
	got, _ = Subsets(svc, []*corev1.Pod{p})
	if h := got[0].Addresses[0].Hostname; h != "" {
		t.Errorf("hostname with another subdomain = %q, want none", h)
	}
}

func TestSubsetsTruncated(t *testing.T) {
	svc := service("web", map[string]string{"app": "web"}, httpPort())
	var pods []*corev1.Pod
	for i := range MaxAddresses + 5 {
		pods = append(pods, pod(fmt.Sprintf("p%d", i), fmt.Sprintf("10.244.%d.%d", i/200, i%200+1), i%2 == 0, 8080))
	}
	got, truncated := Subsets(svc, pods)
	if !truncated {
		t.Fatalf("truncated = false, want true")
	}
	n := 0
	for _, ss := range got {
		n += len(ss.Addresses) + len(ss.NotReadyAddresses)
	}
	if n != MaxAddresses {
		t.Errorf("kept %d addresses, want %d", n, MaxAddresses)
	}
}

// start runs a controller on client until the test ends and waits until it
// has nothing left to do. It must be called inside a synctest bubble.
func start(t *testing.T, client *fake.Clientset) {
	t.Helper()
	c, err := New(Config{Client: client, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run() returned %v before Ready", err)
	}
	synctest.Wait()
}

func getEndpoints(t *testing.T, client *fake.Clientset, name string) *corev1.Endpoints {
	t.Helper()
	ep, err := client.CoreV1().Endpoints("ns").Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get endpoints %s: %v", name, err)
	}
	return ep
}

// writes counts the create, update and delete actions on endpoints.
func writes(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "endpoints" && (a.GetVerb() == "create" || a.GetVerb() == "update" || a.GetVerb() == "delete") {
			n++
		}
	}
	return n
}

func TestController(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := pod("a", "10.244.0.5", true, 8080), pod("b", "10.244.0.6", true, 8081)
		manual := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "manual"},
			Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "192.0.2.1"}}}}}
		client := fake.NewClientset(service("web", map[string]string{"app": "web"}, httpPort()),
			service("manual", nil, httpPort()), manual, a, b)
		start(t, client)

		ep := getEndpoints(t, client, "web")
		if n := len(ep.Subsets); n != 2 {
			t.Fatalf("web has %d subsets, want 2 (one per resolved port): %+v", n, ep.Subsets)
		}
		if ep.Labels[discoveryv1.LabelSkipMirror] != "true" || ep.Labels["app"] != "web" {
			t.Errorf("labels = %v, want the service's plus %s=true", ep.Labels, discoveryv1.LabelSkipMirror)
		}
		if got := getEndpoints(t, client, "manual"); !equality.Semantic.DeepEqual(got.Subsets, manual.Subsets) {
			t.Errorf("endpoints of a service without selector changed to %+v", got.Subsets)
		}

		// Nothing changed: a status update that does not matter writes nothing.
		before := writes(client)
		a2 := a.DeepCopy()
		a2.ResourceVersion = "2"
		a2.Status.Message = "still fine"
		if _, err := client.CoreV1().Pods("ns").UpdateStatus(t.Context(), a2, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := writes(client) - before; n != 0 {
			t.Errorf("%d writes after an irrelevant pod change, want 0", n)
		}

		// Readiness flips: b moves to notReadyAddresses.
		b2 := b.DeepCopy()
		b2.ResourceVersion = "2"
		b2.Status.Conditions[0].Status = corev1.ConditionFalse
		if _, err := client.CoreV1().Pods("ns").UpdateStatus(t.Context(), b2, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		ep = getEndpoints(t, client, "web")
		var notReady []string
		for _, ss := range ep.Subsets {
			for _, ad := range ss.NotReadyAddresses {
				notReady = append(notReady, ad.IP)
			}
		}
		if len(notReady) != 1 || notReady[0] != "10.244.0.6" {
			t.Errorf("not ready addresses = %v, want [10.244.0.6]", notReady)
		}

		// A pod goes away.
		if err := client.CoreV1().Pods("ns").Delete(t.Context(), "a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if ep := getEndpoints(t, client, "web"); len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != 0 {
			t.Errorf("after deleting pod a: subsets = %+v, want b alone, not ready", ep.Subsets)
		}

		// The Service goes, and its Endpoints with it; the manual ones stay.
		if err := client.CoreV1().Services("ns").Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if _, err := client.CoreV1().Endpoints("ns").Get(t.Context(), "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("endpoints of a deleted service: err = %v, want NotFound", err)
		}
		getEndpoints(t, client, "manual")
	})
}

func TestControllerDeletesLeftovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Endpoints the controller wrote for a Service deleted while it
		// was down, and user-written ones without a Service.
		left := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "gone",
			Labels: map[string]string{discoveryv1.LabelSkipMirror: "true"}}}
		user := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "user"}}
		client := fake.NewClientset(left, user)
		start(t, client)
		if _, err := client.CoreV1().Endpoints("ns").Get(t.Context(), "gone", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("left-over endpoints: err = %v, want NotFound", err)
		}
		getEndpoints(t, client, "user")
	})
}

func TestControllerRepairsEdits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(service("web", map[string]string{"app": "web"}, httpPort()), pod("a", "10.244.0.5", true, 8080))
		start(t, client)
		ep := getEndpoints(t, client, "web")
		want := ep.Subsets
		ep.Subsets = nil
		if _, err := client.CoreV1().Endpoints("ns").Update(t.Context(), ep, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := getEndpoints(t, client, "web").Subsets; !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("after an edit: subsets = %+v, want %+v", got, want)
		}
	})
}
