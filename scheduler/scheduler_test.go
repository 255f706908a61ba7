package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// newFakeClient returns a fake clientset whose pods/binding behaves like
// the API server's: it sets spec.nodeName of a pod that has none.
func newFakeClient(objs ...runtime.Object) *fake.Clientset {
	client := fake.NewClientset(objs...)
	podsGVR := corev1.SchemeGroupVersion.WithResource("pods")
	client.PrependReactor("create", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "binding" {
			return false, nil, nil
		}
		b := action.(k8stesting.CreateAction).GetObject().(*corev1.Binding)
		obj, err := client.Tracker().Get(podsGVR, b.Namespace, b.Name)
		if err != nil {
			return true, nil, err
		}
		pod := obj.(*corev1.Pod).DeepCopy()
		if pod.Spec.NodeName != "" {
			return true, nil, apierrors.NewConflict(corev1.Resource("pods/binding"), b.Name,
				fmt.Errorf("pod %s is already assigned to node %q", b.Name, pod.Spec.NodeName))
		}
		pod.Spec.NodeName = b.Target.Name
		return true, nil, client.Tracker().Update(podsGVR, pod, b.Namespace)
	})
	return client
}

// startScheduler runs a scheduler on client until the test ends.
func startScheduler(t *testing.T, client *fake.Clientset) {
	t.Helper()
	s, err := New(Config{Client: client})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("scheduler not ready after 10s")
	}
}

// eventually polls cond every 20ms for up to 10s.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func eventFor(client *fake.Clientset, pod, reason string) (string, error) {
	list, err := client.EventsV1().Events("ns").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	for _, e := range list.Items {
		if e.Regarding.Name == pod && e.Reason == reason {
			if e.ReportingController != DefaultSchedulerName {
				return "", fmt.Errorf("event %s reported by %q, want %q", reason, e.ReportingController, DefaultSchedulerName)
			}
			return e.Note, nil
		}
	}
	return "", fmt.Errorf("no %s event for pod %s among %d events", reason, pod, len(list.Items))
}

func TestSchedulerBinds(t *testing.T) {
	client := newFakeClient(
		testNode("n1", func(n *corev1.Node) { n.Labels["disk"] = "ssd" }),
		testNode("n2"),
		testPod("web", res("500m", "1Gi"), func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"disk": "ssd"} }),
		testPod("other", nil, func(p *corev1.Pod) { p.Spec.SchedulerName = "my-scheduler" }),
	)
	startScheduler(t, client)
	ctx := t.Context()

	eventually(t, "pod web bound to n1", func() error {
		p, err := client.CoreV1().Pods("ns").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.NodeName != "n1" {
			return fmt.Errorf("nodeName = %q", p.Spec.NodeName)
		}
		return nil
	})
	eventually(t, "Scheduled event", func() error {
		note, err := eventFor(client, "web", ReasonScheduled)
		if err == nil && note != "Successfully assigned ns/web to n1" {
			return fmt.Errorf("note = %q", note)
		}
		return err
	})

	// A pod for another scheduler is left alone.
	p, err := client.CoreV1().Pods("ns").Get(ctx, "other", metav1.GetOptions{})
	if err != nil || p.Spec.NodeName != "" {
		t.Errorf("pod of another scheduler: nodeName %q, err %v; want it unbound", p.Spec.NodeName, err)
	}
}

func TestSchedulerUnschedulableThenRetried(t *testing.T) {
	client := newFakeClient(
		testNode("n1"),
		testNode("n2", withCondition(corev1.NodeReady, corev1.ConditionUnknown)),
		testPod("big", res("", "100Gi")),
	)
	startScheduler(t, client)
	ctx := t.Context()

	want := "0/2 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }. preemption: not eligible"
	eventually(t, "FailedScheduling event", func() error {
		note, err := eventFor(client, "big", ReasonFailedScheduling)
		if err == nil && note != want {
			return fmt.Errorf("note = %q, want %q", note, want)
		}
		return err
	})
	eventually(t, "PodScheduled=False condition", func() error {
		p, err := client.CoreV1().Pods("ns").Get(ctx, "big", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled {
				if c.Status != corev1.ConditionFalse || c.Reason != corev1.PodReasonUnschedulable || c.Message != want {
					return fmt.Errorf("condition = %+v", c)
				}
				if p.Spec.NodeName != "" {
					return fmt.Errorf("pod bound to %q", p.Spec.NodeName)
				}
				return nil
			}
		}
		return errors.New("no PodScheduled condition")
	})

	// A node big enough appears: the pod goes there without waiting for
	// its back-off.
	large := testNode("large", func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceMemory] = resource.MustParse("128Gi") })
	if _, err := client.CoreV1().Nodes().Create(ctx, large, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod big bound to large", func() error {
		p, err := client.CoreV1().Pods("ns").Get(ctx, "big", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.NodeName != "large" {
			return fmt.Errorf("nodeName = %q", p.Spec.NodeName)
		}
		return nil
	})
	eventually(t, "Scheduled event for big", func() error {
		note, err := eventFor(client, "big", ReasonScheduled)
		if err == nil && note != "Successfully assigned ns/big to large" {
			return fmt.Errorf("note = %q", note)
		}
		return err
	})
}

func TestSchedulerBackToBack(t *testing.T) {
	// Five pods of 800m on two nodes of 2 cpu: two fit on each node, the
	// fifth fits nowhere, however fast the binds come.
	objs := []runtime.Object{testNode("n1"), testNode("n2")}
	for i := range 5 {
		objs = append(objs, testPod(fmt.Sprintf("p%d", i), res("800m", "")))
	}
	client := newFakeClient(objs...)
	startScheduler(t, client)
	ctx := t.Context()

	eventually(t, "four pods bound, two per node, one pending", func() error {
		list, err := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		perNode := map[string]int{}
		for _, p := range list.Items {
			perNode[p.Spec.NodeName]++
		}
		if perNode["n1"] != 2 || perNode["n2"] != 2 || perNode[""] != 1 {
			return fmt.Errorf("pods per node = %v", perNode)
		}
		return nil
	})
	eventually(t, "FailedScheduling for the fifth pod", func() error {
		list, err := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, p := range list.Items {
			if p.Spec.NodeName == "" {
				note, err := eventFor(client, p.Name, ReasonFailedScheduling)
				if err == nil && !strings.Contains(note, "2 Insufficient cpu") {
					return fmt.Errorf("note = %q", note)
				}
				return err
			}
		}
		return errors.New("no pending pod")
	})
	// Deleting a bound pod makes room for the pending one.
	list, err := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pending string
	for _, p := range list.Items {
		if p.Spec.NodeName == "" {
			pending = p.Name
		}
	}
	for _, p := range list.Items {
		if p.Spec.NodeName == "n1" {
			if err := client.CoreV1().Pods("ns").Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	eventually(t, "pending pod bound to n1 after a deletion", func() error {
		p, err := client.CoreV1().Pods("ns").Get(ctx, pending, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.NodeName != "n1" {
			return fmt.Errorf("nodeName = %q", p.Spec.NodeName)
		}
		return nil
	})
}

func TestNew(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New(Config{}) = nil error, want one for the missing client")
	}
	s, err := New(Config{Client: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	if s.name != DefaultSchedulerName {
		t.Errorf("scheduler name = %q, want %q", s.name, DefaultSchedulerName)
	}
}
