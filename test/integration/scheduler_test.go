package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"tether/test/framework"
)

// schedulerTimeout bounds every wait for the scheduler. It stays well
// under the node lifecycle controller's 40 s grace period, after which the
// fake nodes (which renew no lease) would be marked unreachable.
const schedulerTimeout = 20 * time.Second

// TestScheduler drives the in-process scheduler with fake nodes: there is
// no kubelet, so pods are bound and stay Pending.
func TestScheduler(t *testing.T) {
	c := framework.StartCluster(t)
	client := fastClient(t, c)
	ctx := t.Context()
	ns := createNamespace(t, client, "sched")
	pods := client.CoreV1().Pods(ns)

	createReadyNode(t, client, "node-a", map[string]string{"disk": "ssd"}, "4Gi")
	createReadyNode(t, client, "node-b", nil, "4Gi")

	t.Run("binds a pod", func(t *testing.T) {
		if _, err := pods.Create(ctx, schedPod("plain", "", nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		node := waitBound(t, client, ns, "plain")
		if node != "node-a" && node != "node-b" {
			t.Fatalf("pod plain bound to %q, want node-a or node-b", node)
		}
		waitEvent(t, client, ns, "plain", "Scheduled", "Successfully assigned "+ns+"/plain to "+node)
		p, err := pods.Get(ctx, "plain", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cond := podScheduled(p); cond == nil || cond.Status != corev1.ConditionTrue {
			t.Errorf("PodScheduled condition of a bound pod = %+v, want True", cond)
		}
	})

	t.Run("nodeSelector", func(t *testing.T) {
		if _, err := pods.Create(ctx, schedPod("ssd", "", map[string]string{"disk": "ssd"}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if node := waitBound(t, client, ns, "ssd"); node != "node-a" {
			t.Errorf("pod with nodeSelector disk=ssd bound to %q, want node-a", node)
		}
	})

	t.Run("unschedulable until a node fits", func(t *testing.T) {
		if _, err := pods.Create(ctx, schedPod("huge", "100Gi", nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		want := "0/2 nodes are available: 2 Insufficient memory. preemption: not eligible"
		waitEvent(t, client, ns, "huge", "FailedScheduling", want)
		framework.Eventually(t, schedulerTimeout, func() (bool, error) {
			p, err := pods.Get(ctx, "huge", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			cond := podScheduled(p)
			if cond == nil || cond.Status != corev1.ConditionFalse || cond.Reason != corev1.PodReasonUnschedulable || cond.Message != want {
				return false, fmt.Errorf("PodScheduled condition = %+v", cond)
			}
			if p.Spec.NodeName != "" || p.Status.Phase != corev1.PodPending {
				return false, fmt.Errorf("pod on %q in phase %s, want unbound and Pending", p.Spec.NodeName, p.Status.Phase)
			}
			return true, nil
		})

		createReadyNode(t, client, "node-big", nil, "128Gi")
		if node := waitBound(t, client, ns, "huge"); node != "node-big" {
			t.Errorf("pod huge bound to %q, want node-big", node)
		}
		waitEvent(t, client, ns, "huge", "Scheduled", "Successfully assigned "+ns+"/huge to node-big")
	})

	t.Run("binding a bound pod conflicts", func(t *testing.T) {
		waitBound(t, client, ns, "plain")
		err := pods.Bind(ctx, binding("plain", "node-b"), metav1.CreateOptions{})
		if statusCode(err) != http.StatusConflict || !strings.Contains(err.Error(), "already assigned to node") {
			t.Errorf("Bind(bound pod) = %v, want 409 already assigned", err)
		}
	})

	// Pods for another scheduler stay unbound; the tests below bind them
	// by hand.
	for _, name := range []string{"manual", "legacy", "by-update"} {
		if _, err := pods.Create(ctx, newPod(name, "busybox:1.36"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("nodes may not bind", func(t *testing.T) {
		cfg, _ := clientCert(t, c, c.ControlPlane.PKI().ClientCA, "system:node:node-a", "system:nodes")
		node := kubernetes.NewForConfigOrDie(cfg)
		err := node.CoreV1().Pods(ns).Bind(ctx, binding("manual", "node-a"), metav1.CreateOptions{})
		if statusCode(err) != http.StatusForbidden {
			t.Errorf("Bind as system:node:node-a = %v, want 403", err)
		}
	})

	t.Run("admin binds", func(t *testing.T) {
		if err := pods.Bind(ctx, binding("manual", "node-b"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatalf("dry-run Bind = %v", err)
		}
		if p, err := pods.Get(ctx, "manual", metav1.GetOptions{}); err != nil || p.Spec.NodeName != "" {
			t.Fatalf("after dry-run Bind: nodeName %q, err %v; want unbound", p.Spec.NodeName, err)
		}
		if err := pods.Bind(ctx, binding("manual", "node-b"), metav1.CreateOptions{}); err != nil {
			t.Fatalf("Bind = %v", err)
		}
		if p, err := pods.Get(ctx, "manual", metav1.GetOptions{}); err != nil || p.Spec.NodeName != "node-b" {
			t.Errorf("after Bind: nodeName %q, err %v; want node-b", p.Spec.NodeName, err)
		}
		err := pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "missing"}, Target: corev1.ObjectReference{Kind: "Node", Name: "node-b"}}, metav1.CreateOptions{})
		if statusCode(err) != http.StatusNotFound {
			t.Errorf("Bind(missing pod) = %v, want 404", err)
		}
		err = pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}, Target: corev1.ObjectReference{Kind: "Service", Name: "x"}}, metav1.CreateOptions{})
		if statusCode(err) != http.StatusUnprocessableEntity {
			t.Errorf("Bind(target kind Service) = %v, want 422", err)
		}
	})

	t.Run("legacy bindings collection", func(t *testing.T) {
		err := client.CoreV1().RESTClient().Post().Namespace(ns).Resource("bindings").
			Body(binding("legacy", "node-a")).Do(ctx).Error()
		if err != nil {
			t.Fatalf("POST bindings = %v", err)
		}
		if p, err := pods.Get(ctx, "legacy", metav1.GetOptions{}); err != nil || p.Spec.NodeName != "node-a" {
			t.Errorf("after POST bindings: nodeName %q, err %v; want node-a", p.Spec.NodeName, err)
		}
	})

	t.Run("nodeName cannot be set by update", func(t *testing.T) {
		p, err := pods.Get(ctx, "by-update", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Spec.NodeName = "node-a"
		if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); statusCode(err) != http.StatusUnprocessableEntity {
			t.Errorf("Update(spec.nodeName) = %v, want 422", err)
		}
	})
}

// createReadyNode registers a node and reports it Ready with cpu 2, the
// given memory and 110 pods, as a kubelet would (the status goes through
// the status subresource).
func createReadyNode(t *testing.T, client kubernetes.Interface, name string, labels map[string]string, memory string) {
	t.Helper()
	ctx := t.Context()
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	alloc := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse(memory),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	// The node IPAM controller writes the new Node too (its pod CIDR).
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		node.Status = corev1.NodeStatus{
			Capacity:    alloc,
			Allocatable: alloc,
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				LastHeartbeatTime: now, LastTransitionTime: now,
			}},
		}
		_, err = client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("update status of node %s: %v", name, err)
	}
}

// schedPod returns a pod for the default scheduler, requesting memory if
// it is not empty.
func schedPod(name, memory string, nodeSelector map[string]string) *corev1.Pod {
	p := newPod(name, "busybox:1.36")
	p.Spec.SchedulerName = corev1.DefaultSchedulerName
	p.Spec.NodeSelector = nodeSelector
	if memory != "" {
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memory)}
	}
	return p
}

func binding(pod, node string) *corev1.Binding {
	return &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
}

func podScheduled(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodScheduled {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// waitBound waits until the pod has a node and returns the node's name.
func waitBound(t *testing.T, client kubernetes.Interface, ns, name string) string {
	t.Helper()
	var node string
	framework.Eventually(t, schedulerTimeout, func() (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		node = p.Spec.NodeName
		if node == "" {
			return false, fmt.Errorf("pod %s not bound; conditions %+v", name, p.Status.Conditions)
		}
		return true, nil
	})
	return node
}

// waitEvent waits for an event about the pod with the reason and note,
// reported by the default scheduler. It reads events.k8s.io/v1, which the
// scheduler writes, and then the core/v1 view that kubectl describe reads,
// selected by field as kubectl selects them.
func waitEvent(t *testing.T, client kubernetes.Interface, ns, pod, reason, note string) {
	t.Helper()
	framework.Eventually(t, schedulerTimeout, func() (bool, error) {
		list, err := client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Name != pod || e.Reason != reason {
				continue
			}
			if e.Note == note && e.ReportingController == corev1.DefaultSchedulerName {
				return true, nil
			}
			seen = append(seen, fmt.Sprintf("%q by %q", e.Note, e.ReportingController))
		}
		return false, fmt.Errorf("no %s event for %s with note %q; seen %v", reason, pod, note, seen)
	})
	core, err := client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Pod,involvedObject.name=" + pod + ",involvedObject.namespace=" + ns,
	})
	if err != nil {
		t.Fatalf("list core events of pod %s: %v", pod, err)
	}
	for _, e := range core.Items {
		if e.Reason == reason && e.Message == note {
			return
		}
	}
	t.Errorf("core/v1 events of pod %s: no %s event with message %q among %d", pod, reason, note, len(core.Items))
}
