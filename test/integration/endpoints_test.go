package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"tether/apiserver/peers"
	"tether/controllers/endpointslice"
	"tether/test/framework"
)

// Paths P3 and the service proxy: Services find their pods through
// Endpoints and EndpointSlices, and pods find the API server through the
// kubernetes Service's.

const (
	// readinessLatency is how soon a pod's readiness change must show in
	// its Service's Endpoints and EndpointSlices; readinessHardLimit is
	// what the test fails at, leaving slack for a loaded machine.
	readinessLatency   = time.Second
	readinessHardLimit = 2 * time.Second
	// endpointsSettle bounds how long the controllers take otherwise.
	endpointsSettle = 5 * time.Second
)

func TestEndpoints(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)
	// core/v1 Endpoints are deprecated upstream: every read would log a
	// warning.
	cfg := rest.CopyConfig(c.Admin)
	cfg.QPS, cfg.WarningHandler = -1, rest.NoWarnings{}
	client := kubernetes.NewForConfigOrDie(cfg)

	t.Run("service over pods", func(t *testing.T) { testServiceEndpoints(t, client) })
	t.Run("kubernetes service", func(t *testing.T) { testKubernetesEndpoints(t, client) })
	t.Run("slice API", func(t *testing.T) { testSliceAPI(t, c, client) })
}

// endpointsPod is a pod of app=web on a node that does not exist, whose
// container calls port webPort "web".
func endpointsPod(ns, name string, webPort int32) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName: "node-x", // no scheduler, no kubelet: the test plays the kubelet
			Containers: []corev1.Container{{Name: "web", Image: "busybox",
				Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: webPort}}}},
		},
	}
}

// setPodStatus does what a kubelet would: gives the pod an IP and sets its
// Ready condition.
func setPodStatus(t *testing.T, client kubernetes.Interface, ns, name, ip string, ready bool) {
	t.Helper()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := client.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.PodIP, pod.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		now := metav1.Now()
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: now}}
		_, err = client.CoreV1().Pods(ns).UpdateStatus(t.Context(), pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("set status of pod %s/%s: %v", ns, name, err)
	}
}

// endpointsState is what the Endpoints and the slices of a Service say:
// "ip:port" for each ready and not-ready address.
type endpointsState struct {
	epReady, epNotReady, sliceReady, sliceNotReady []string
	slices                                         int
}

func (s endpointsState) String() string {
	return fmt.Sprintf("endpoints ready %v not ready %v; %d slices: ready %v not ready %v",
		s.epReady, s.epNotReady, s.slices, s.sliceReady, s.sliceNotReady)
}

func readEndpoints(ctx context.Context, client kubernetes.Interface, ns, name string) (endpointsState, error) {
	var s endpointsState
	ep, err := client.CoreV1().Endpoints(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return s, err
	}
	for _, ss := range ep.Subsets {
		for _, p := range ss.Ports {
			for _, a := range ss.Addresses {
				s.epReady = append(s.epReady, net.JoinHostPort(a.IP, strconv.Itoa(int(p.Port))))
			}
			for _, a := range ss.NotReadyAddresses {
				s.epNotReady = append(s.epNotReady, net.JoinHostPort(a.IP, strconv.Itoa(int(p.Port))))
			}
		}
	}
	list, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + name + "," + discoveryv1.LabelManagedBy + "=" + endpointslice.ManagedBy,
	})
	if err != nil {
		return s, err
	}
	s.slices = len(list.Items)
	for _, sl := range list.Items {
		for _, p := range sl.Ports {
			for _, e := range sl.Endpoints {
				a := net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(*p.Port)))
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					s.sliceReady = append(s.sliceReady, a)
				} else {
					s.sliceNotReady = append(s.sliceNotReady, a)
				}
			}
		}
	}
	for _, l := range []*[]string{&s.epReady, &s.epNotReady, &s.sliceReady, &s.sliceNotReady} {
		slices.Sort(*l)
	}
	return s, nil
}

// waitEndpoints polls every 10ms until the Service's endpoints are as
// wanted, and returns how long that took; it fails the test after limit.
func waitEndpoints(t *testing.T, client kubernetes.Interface, ns, name string, limit time.Duration, ready, notReady []string) time.Duration {
	t.Helper()
	start := time.Now()
	var last endpointsState
	var lastErr error
	for {
		last, lastErr = readEndpoints(t.Context(), client, ns, name)
		if lastErr == nil && slices.Equal(last.epReady, ready) && slices.Equal(last.epNotReady, notReady) &&
			slices.Equal(last.sliceReady, ready) && slices.Equal(last.sliceNotReady, notReady) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("after %v: %v (err %v); want ready %v, not ready %v in both", limit, last, lastErr, ready, notReady)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testServiceEndpoints(t *testing.T, client kubernetes.Interface) {
	ns := createNamespace(t, client, "endpoints")
	ctx := t.Context()
	for _, p := range []*corev1.Pod{endpointsPod(ns, "a", 8080), endpointsPod(ns, "b", 8081)} {
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", p.Name, err)
		}
	}
	setPodStatus(t, client, ns, "a", "10.244.7.1", true)
	setPodStatus(t, client, ns, "b", "10.244.7.2", true)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("web")}}},
	}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service: %v", err)
	}

	// The named targetPort resolves per pod.
	both := []string{"10.244.7.1:8080", "10.244.7.2:8081"}
	waitEndpoints(t, client, ns, "web", endpointsSettle, both, nil)
	list, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, sl := range list.Items {
		if !strings.HasPrefix(sl.Name, "web-") || sl.Labels[discoveryv1.LabelManagedBy] != endpointslice.ManagedBy {
			t.Errorf("slice %s labels %v, want web-* managed by %s", sl.Name, sl.Labels, endpointslice.ManagedBy)
		}
		if ref := metav1.GetControllerOf(&sl); ref == nil || ref.Kind != "Service" || ref.Name != "web" {
			t.Errorf("slice %s controller = %+v, want Service web", sl.Name, ref)
		}
		for _, e := range sl.Endpoints {
			if e.NodeName == nil || *e.NodeName != "node-x" || e.TargetRef == nil || e.TargetRef.Kind != "Pod" {
				t.Errorf("slice %s endpoint %v: node %v, targetRef %+v", sl.Name, e.Addresses, e.NodeName, e.TargetRef)
			}
		}
	}

	// Readiness flips: b moves to not ready within a second.
	setPodStatus(t, client, ns, "b", "10.244.7.2", false)
	took := waitEndpoints(t, client, ns, "web", readinessHardLimit, []string{"10.244.7.1:8080"}, []string{"10.244.7.2:8081"})
	t.Logf("readiness change reached Endpoints and EndpointSlices in %v", took)
	if took > readinessLatency {
		t.Logf("WARNING: %v is over the %v target (under the %v hard limit)", took, readinessLatency, readinessHardLimit)
	}
	setPodStatus(t, client, ns, "b", "10.244.7.2", true)
	took = waitEndpoints(t, client, ns, "web", readinessHardLimit, both, nil)
	t.Logf("readiness back in %v", took)

	// A deleted pod leaves.
	if err := client.CoreV1().Pods(ns).Delete(ctx, "a", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatalf("delete pod a: %v", err)
	}
	waitEndpoints(t, client, ns, "web", endpointsSettle, []string{"10.244.7.2:8081"}, nil)

	// The Service goes, and its Endpoints and slices with it.
	if err := client.CoreV1().Services(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete service: %v", err)
	}
	framework.Eventually(t, endpointsSettle, func() (bool, error) {
		_, err := client.CoreV1().Endpoints(ns).Get(ctx, "web", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("endpoints still there (err %v)", err)
		}
		list, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) > 0 {
			return false, fmt.Errorf("%d slices left (err %v)", len(list.Items), err)
		}
		return true, nil
	})
}

// testKubernetesEndpoints checks the kubernetes Service's Endpoints and
// slice. The in-process server advertises 127.0.0.1, which validation keeps
// out of endpoints, so it holds a lease but is not listed; a second
// "server" at a documentation address joins and leaves.
func testKubernetesEndpoints(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	leases, err := client.CoordinationV1().Leases(peers.LeaseNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: peers.IdentityLabel + "=" + peers.IdentityValue})
	if err != nil || len(leases.Items) != 1 {
		t.Fatalf("API server leases: %d (err %v), want 1", len(leases.Items), err)
	}
	own := leases.Items[0].Annotations[peers.EndpointAnnotation]
	host, portStr, err := net.SplitHostPort(own)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		t.Fatalf("the server's lease names %q, want a loopback address:port", own)
	}
	port, _ := strconv.Atoi(portStr)
	kubernetesAddresses := func() ([]string, []string, error) {
		ep, err := client.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			return nil, nil, err
		}
		sl, err := client.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			return nil, nil, err
		}
		epIPs, sliceIPs := []string{}, []string{}
		for _, ss := range ep.Subsets {
			for _, a := range ss.Addresses {
				epIPs = append(epIPs, a.IP)
			}
		}
		for _, e := range sl.Endpoints {
			sliceIPs = append(sliceIPs, e.Addresses...)
		}
		return epIPs, sliceIPs, nil
	}
	if ep, sl, err := kubernetesAddresses(); err != nil || len(ep) != 0 || len(sl) != 0 {
		t.Fatalf("kubernetes endpoints %v, slice %v (err %v); want both present and empty (loopback server)", ep, sl, err)
	}
	sl, err := client.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sl.Labels[discoveryv1.LabelServiceName] != "kubernetes" || sl.Labels[discoveryv1.LabelManagedBy] != "" {
		t.Errorf("kubernetes slice labels = %v, want only the service name, as upstream", sl.Labels)
	}

	// A peer joins at a publishable address on the same port.
	peer, err := peers.New(peers.Config{Client: client, Address: net.ParseIP("192.0.2.50"), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	peerCtx, stopPeer := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- peer.Run(peerCtx) }()
	defer func() { stopPeer(); <-done }()
	framework.Eventually(t, endpointsSettle, func() (bool, error) {
		ep, sl, err := kubernetesAddresses()
		if err != nil || !slices.Equal(ep, []string{"192.0.2.50"}) || !slices.Equal(sl, []string{"192.0.2.50"}) {
			return false, fmt.Errorf("endpoints %v, slice %v (err %v)", ep, sl, err)
		}
		return true, nil
	})
	// It stays: the in-process server's own syncs keep fresh peers.
	time.Sleep(200 * time.Millisecond)
	if ep, _, _ := kubernetesAddresses(); !slices.Equal(ep, []string{"192.0.2.50"}) {
		t.Errorf("peer dropped: endpoints %v", ep)
	}

	// It stops and drops out.
	stopPeer()
	if err := <-done; err != nil {
		t.Errorf("peer Run() = %v", err)
	}
	done <- nil // for the deferred receive
	framework.Eventually(t, endpointsSettle, func() (bool, error) {
		ep, sl, err := kubernetesAddresses()
		if err != nil || len(ep) != 0 || len(sl) != 0 {
			return false, fmt.Errorf("endpoints %v, slice %v (err %v)", ep, sl, err)
		}
		return true, nil
	})
}

func testSliceAPI(t *testing.T, c *framework.Cluster, client kubernetes.Interface) {
	ctx := t.Context()
	ns := createNamespace(t, client, "slices")

	// Discovery lists the resource, as kubectl needs.
	res, err := client.Discovery().ServerResourcesForGroupVersion("discovery.k8s.io/v1")
	if err != nil {
		t.Fatalf("discovery of discovery.k8s.io/v1: %v", err)
	}
	found := false
	for _, r := range res.APIResources {
		if r.Name == "endpointslices" {
			found = r.Namespaced && r.Kind == "EndpointSlice" && len(r.ShortNames) == 0
		}
	}
	if !found {
		t.Errorf("discovery.k8s.io/v1 resources %+v lack a namespaced endpointslices without short names", res.APIResources)
	}
	if _, err := client.Discovery().RESTClient().Get().AbsPath("/openapi/v3/apis/discovery.k8s.io/v1").DoRaw(ctx); err != nil {
		t.Errorf("OpenAPI v3 of discovery.k8s.io/v1: %v", err)
	}

	port, portName, tcp := int32(80), "http", corev1.ProtocolTCP
	ready := true
	mk := func(name string, addrs ...string) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "ext"}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &tcp}}}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		}
		return s
	}
	sliceClient := client.DiscoveryV1().EndpointSlices(ns)
	if _, err := sliceClient.Create(ctx, mk("ext-1", "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create slice: %v", err)
	}
	if _, err := sliceClient.Create(ctx, mk("ext-2", "192.0.2.9"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create slice: %v", err)
	}
	// Loopback addresses are refused.
	_, err = sliceClient.Create(ctx, mk("bad", "127.0.0.1"), metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "endpoints[0].addresses[0]") {
		t.Errorf("create slice with a loopback address: err = %v, want 422 at endpoints[0].addresses[0]", err)
	}

	// Field selectors on the metadata work.
	list, err := sliceClient.List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=ext-2"})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != "ext-2" {
		t.Errorf("list with metadata.name=ext-2: %d items (err %v), want ext-2", len(list.Items), err)
	}

	// The Table kubectl asks for.
	raw, err := client.DiscoveryV1().RESTClient().Get().Namespace(ns).Resource("endpointslices").
		SetHeader("Accept", "application/json;as=Table;g=meta.k8s.io;v=v1").DoRaw(ctx)
	if err != nil {
		t.Fatalf("get Table: %v", err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatalf("decode Table: %v", err)
	}
	var cols []string
	for _, col := range table.ColumnDefinitions {
		cols = append(cols, col.Name)
	}
	if want := []string{"Name", "AddressType", "Ports", "Endpoints", "Age"}; !slices.Equal(cols, want) {
		t.Errorf("columns = %v, want %v", cols, want)
	}
	if len(table.Rows) != 2 {
		t.Fatalf("%d rows, want 2", len(table.Rows))
	}
	row := table.Rows[0].Cells
	if row[0] != "ext-1" || row[1] != "IPv4" || row[2] != "80" || row[3] != "192.0.2.1,192.0.2.2,192.0.2.3 + 1 more..." {
		t.Errorf("row = %v", row)
	}

	// The real kubectl, when the machine has one.
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", c.Kubeconfig, "get", "endpointslices", "-n", ns).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ADDRESSTYPE") || !strings.Contains(string(out), "ext-2") {
			t.Errorf("kubectl get endpointslices: %v\n%s", err, out)
		}
	} else {
		t.Log("kubectl not found; skipped the kubectl check")
	}
}
