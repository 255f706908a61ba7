package endpointslice

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

func service(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"team": "a"}},
		Spec: corev1.ServiceSpec{
			Selector:  map[string]string{"app": "web"},
			ClusterIP: "10.96.0.10",
			Ports:     []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("web")}},
		},
	}
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

func pods(n int) []*corev1.Pod {
	var out []*corev1.Pod
	for i := range n {
		out = append(out, pod(fmt.Sprintf("p%d", i), fmt.Sprintf("10.244.%d.%d", i/200, i%200+1), true, 8080))
	}
	return out
}

func TestEndpointConditions(t *testing.T) {
	svc := service("web")
	dying := func(p *corev1.Pod) *corev1.Pod { p.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}; return p }
	for _, tc := range []struct {
		name                        string
		pod                         *corev1.Pod
		publish                     bool
		ready, serving, terminating bool
	}{
		{"ready", pod("a", "10.244.0.1", true, 80), false, true, true, false},
		{"not ready", pod("a", "10.244.0.1", false, 80), false, false, false, false},
		{"terminating, still serving", dying(pod("a", "10.244.0.1", true, 80)), false, false, true, true},
		{"terminating, publish not ready", dying(pod("a", "10.244.0.1", false, 80)), true, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := svc.DeepCopy()
			s.Spec.PublishNotReadyAddresses = tc.publish
			ep := endpointFor(s, tc.pod, "10.244.0.1")
			c := ep.Conditions
			if *c.Ready != tc.ready || *c.Serving != tc.serving || *c.Terminating != tc.terminating {
				t.Errorf("conditions = ready %v serving %v terminating %v, want %v %v %v",
					*c.Ready, *c.Serving, *c.Terminating, tc.ready, tc.serving, tc.terminating)
			}
		})
	}
}

// store applies a plan to slices the way the API server would, naming
// created slices, and returns the result.
func store(t *testing.T, existing []*discoveryv1.EndpointSlice, p plan) []*discoveryv1.EndpointSlice {
	t.Helper()
	out := map[string]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		out[s.Name] = s
	}
	for _, s := range p.updates {
		if out[s.Name] == nil {
			t.Fatalf("update of unknown slice %s", s.Name)
		}
		out[s.Name] = s
	}
	for _, s := range p.deletes {
		delete(out, s.Name)
	}
	for i, s := range p.creates {
		s = s.DeepCopy()
		s.Name = fmt.Sprintf("%s%d-%d", s.GenerateName, len(existing), i)
		out[s.Name] = s
	}
	var list []*discoveryv1.EndpointSlice
	for _, s := range out {
		list = append(list, s)
	}
	return list
}

func count(list []*discoveryv1.EndpointSlice) (endpoints int, sizes []int) {
	for _, s := range list {
		endpoints += len(s.Endpoints)
		sizes = append(sizes, len(s.Endpoints))
	}
	slices.Sort(sizes)
	return endpoints, sizes
}

func TestReconcile(t *testing.T) {
	svc := service("web")
	ps := pods(250)

	// From nothing: 100 + 100 + 50.
	p := reconcile(svc, Desired(svc, ps), nil, 100)
	if len(p.creates) != 3 || len(p.updates)+len(p.deletes) != 0 {
		t.Fatalf("first plan: %d creates, %d updates, %d deletes; want 3, 0, 0", len(p.creates), len(p.updates), len(p.deletes))
	}
	cur := store(t, nil, p)
	if n, sizes := count(cur); n != 250 || !slices.Equal(sizes, []int{50, 100, 100}) {
		t.Fatalf("slices hold %d endpoints in %v, want 250 in [50 100 100]", n, sizes)
	}
	s := cur[0]
	if s.Labels[discoveryv1.LabelServiceName] != "web" || s.Labels[discoveryv1.LabelManagedBy] != ManagedBy || s.Labels["team"] != "a" {
		t.Errorf("labels = %v", s.Labels)
	}
	if ref := metav1.GetControllerOf(s); ref == nil || ref.UID != svc.UID || ref.Kind != "Service" {
		t.Errorf("controller reference = %+v, want the Service", ref)
	}
	if s.AddressType != discoveryv1.AddressTypeIPv4 || len(s.Ports) != 1 || *s.Ports[0].Port != 8080 || *s.Ports[0].Name != "http" {
		t.Errorf("slice = %s %+v, want IPv4 with port http 8080", s.AddressType, s.Ports)
	}

	// Nothing changed: nothing to write.
	if p := reconcile(svc, Desired(svc, ps), cur, 100); len(p.creates)+len(p.updates)+len(p.deletes) != 0 {
		t.Errorf("steady plan: %d creates, %d updates, %d deletes; want none", len(p.creates), len(p.updates), len(p.deletes))
	}

	// One pod turns not ready: one slice is updated, in place.
	ps[7] = pod("p7", "10.244.0.8", false, 8080)
	p = reconcile(svc, Desired(svc, ps), cur, 100)
	if len(p.creates) != 0 || len(p.updates) != 1 || len(p.deletes) != 0 {
		t.Fatalf("readiness plan: %d creates, %d updates, %d deletes; want 0, 1, 0", len(p.creates), len(p.updates), len(p.deletes))
	}
	found := false
	for _, ep := range p.updates[0].Endpoints {
		if ep.TargetRef.Name == "p7" {
			found = true
			if *ep.Conditions.Ready {
				t.Errorf("p7 is still ready in the update")
			}
		}
	}
	if !found {
		t.Errorf("the updated slice does not hold p7")
	}
	cur = store(t, cur, p)

	// 60 pods go, 20 come: the new ones fill the room, no slice is created.
	ps = append(ps[60:], pods(270)[250:]...)
	p = reconcile(svc, Desired(svc, ps), cur, 100)
	if len(p.creates) != 0 {
		t.Errorf("%d slices created, want 0 (room is left in the others)", len(p.creates))
	}
	cur = store(t, cur, p)
	if n, _ := count(cur); n != 210 {
		t.Errorf("slices hold %d endpoints, want 210", n)
	}

	// No pod left: one empty placeholder.
	p = reconcile(svc, Desired(svc, nil), cur, 100)
	cur = store(t, cur, p)
	if len(cur) != 1 || len(cur[0].Endpoints) != 0 || len(cur[0].Ports) != 0 {
		t.Fatalf("without pods: %d slices, want one empty placeholder: %+v", len(cur), cur)
	}
	if p := reconcile(svc, Desired(svc, nil), cur, 100); len(p.creates)+len(p.updates)+len(p.deletes) != 0 {
		t.Errorf("steady placeholder plan: %d creates, %d updates, %d deletes; want none", len(p.creates), len(p.updates), len(p.deletes))
	}

	// The Service was recreated: slices of the old one go.
	again := svc.DeepCopy()
	again.UID = "uid-again"
	p = reconcile(again, Desired(again, ps[:1]), cur, 100)
	if len(p.deletes) != 1 || len(p.creates) != 1 {
		t.Errorf("recreated service plan: %d creates, %d deletes; want 1, 1", len(p.creates), len(p.deletes))
	}
}

func TestDesiredGroupsByResolvedPorts(t *testing.T) {
	svc := service("web")
	got := Desired(svc, []*corev1.Pod{pod("a", "10.244.0.1", true, 8080), pod("b", "10.244.0.2", true, 9090), pod("c", "10.244.0.3", true, 8080)})
	if len(got) != 2 {
		t.Fatalf("%d groups, want 2", len(got))
	}
	// Dual-stack: one address type per family; pods without an IPv6
	// address are not in the IPv6 slices.
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	v6 := pod("d", "10.244.0.4", true, 8080)
	v6.Status.PodIPs = append(v6.Status.PodIPs, corev1.PodIP{IP: "fd00::4"})
	got = Desired(svc, []*corev1.Pod{pod("a", "10.244.0.1", true, 8080), v6})
	var types []string
	for _, g := range got {
		types = append(types, fmt.Sprintf("%s:%d", g.addressType, len(g.endpoints)))
	}
	slices.Sort(types)
	if !slices.Equal(types, []string{"IPv4:2", "IPv6:1"}) {
		t.Errorf("groups = %v, want [IPv4:2 IPv6:1]", types)
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

// newClient returns a fake clientset that names slices created with
// generateName and sets generations as the API server does.
func newClient(objs ...runtime.Object) *fake.Clientset {
	client := fake.NewClientset(objs...)
	var n atomic.Int64
	client.PrependReactor("create", "endpointslices", func(a clienttesting.Action) (bool, runtime.Object, error) {
		s := a.(clienttesting.CreateAction).GetObject().(*discoveryv1.EndpointSlice)
		if s.Name == "" && s.GenerateName != "" {
			s.Name = fmt.Sprintf("%s%05d", s.GenerateName, n.Add(1))
		}
		s.Generation = 1
		return false, nil, nil
	})
	return client
}

func listSlices(t *testing.T, client *fake.Clientset) []discoveryv1.EndpointSlice {
	t.Helper()
	list, err := client.DiscoveryV1().EndpointSlices("ns").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list slices: %v", err)
	}
	return list.Items
}

func sliceWrites(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "endpointslices" && (a.GetVerb() == "create" || a.GetVerb() == "update" || a.GetVerb() == "delete") {
			n++
		}
	}
	return n
}

func TestController(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := pod("a", "10.244.0.1", true, 8080), pod("b", "10.244.0.2", true, 8080)
		// A slice someone else manages for the same Service stays alone.
		other := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-manual", Labels: map[string]string{discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "someone"}},
			AddressType: discoveryv1.AddressTypeIPv4,
		}
		client := newClient(service("web"), a, b, other)
		start(t, client)

		mine := func() []discoveryv1.EndpointSlice {
			return slices.DeleteFunc(listSlices(t, client), func(s discoveryv1.EndpointSlice) bool { return s.Name == "web-manual" })
		}
		got := mine()
		if len(got) != 1 || len(got[0].Endpoints) != 2 {
			t.Fatalf("slices = %+v, want one with both pods", got)
		}

		// Readiness flips: written once, in place.
		before := sliceWrites(client)
		b2 := b.DeepCopy()
		b2.ResourceVersion = "2"
		b2.Status.Conditions[0].Status = corev1.ConditionFalse
		if _, err := client.CoreV1().Pods("ns").UpdateStatus(t.Context(), b2, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := sliceWrites(client) - before; n != 1 {
			t.Errorf("%d slice writes after one readiness change, want 1", n)
		}
		got = mine()
		for _, ep := range got[0].Endpoints {
			if want := ep.TargetRef.Name == "a"; *ep.Conditions.Ready != want {
				t.Errorf("endpoint %s ready = %v, want %v", ep.TargetRef.Name, *ep.Conditions.Ready, want)
			}
		}

		// A slice deleted behind the controller's back comes back.
		if err := client.DiscoveryV1().EndpointSlices("ns").Delete(t.Context(), got[0].Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := mine(); len(got) != 1 || len(got[0].Endpoints) != 2 {
			t.Errorf("after deleting the slice: %+v, want it back", got)
		}

		// The Service goes: its slices go, the other writer's stays.
		if err := client.CoreV1().Services("ns").Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := listSlices(t, client); len(got) != 1 || got[0].Name != "web-manual" {
			t.Errorf("after deleting the service: slices %v, want only web-manual", got)
		}
	})
}

func TestControllerDeletesLeftovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		left := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "gone-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: "gone", discoveryv1.LabelManagedBy: ManagedBy}},
			AddressType: discoveryv1.AddressTypeIPv4,
		}
		client := newClient(left)
		start(t, client)
		if got := listSlices(t, client); len(got) != 0 {
			t.Errorf("slices = %v, want the left-over deleted", got)
		}
	})
}

func TestControllerBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Many pods at once, more than one slice's worth: however the
		// events interleave, no endpoint is written twice.
		var objs []runtime.Object
		objs = append(objs, service("web"))
		for _, p := range pods(150) {
			objs = append(objs, p)
		}
		client := newClient(objs...)
		start(t, client)
		for _, p := range pods(230)[150:] {
			if _, err := client.CoreV1().Pods("ns").Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		time.Sleep(time.Second) // let retries, if any, run
		synctest.Wait()
		seen := map[string]bool{}
		total := 0
		for _, s := range listSlices(t, client) {
			for _, ep := range s.Endpoints {
				if seen[ep.TargetRef.Name] {
					t.Errorf("pod %s in two slices", ep.TargetRef.Name)
				}
				seen[ep.TargetRef.Name] = true
				total++
			}
		}
		if total != 230 {
			t.Errorf("%d endpoints, want 230", total)
		}
	})
}
