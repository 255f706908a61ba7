package integration

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"tether/test/framework"
)

// svcTest returns a ClusterIP Service named name selecting app=name.
func svcTest(name string, mutate ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

func svcNodePort(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }

// svcWantInvalid checks that err is a 422 whose message says want.
func svcWantInvalid(t *testing.T, what string, err error, want string) {
	t.Helper()
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want) {
		t.Errorf("%s = %v, want 422 saying %q", what, err, want)
	}
}

// TestServiceAllocation creates Services through the API and checks the
// cluster IPs and node ports they get, across a restart.
func TestServiceAllocation(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)
	client := fastClient(t, c)
	ctx := t.Context()
	_, svcRange, _ := net.ParseCIDR("10.96.0.0/12")
	ns := createNamespace(t, client, "svc-alloc")
	svcs := client.CoreV1().Services(ns)

	k, err := client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil || k.Spec.ClusterIP != "10.96.0.1" {
		t.Fatalf("Get(default/kubernetes) = clusterIP %v, %v; want 10.96.0.1", k.Spec.ClusterIP, err)
	}

	// Fifty at once: fifty distinct addresses of the range.
	ips := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			name := fmt.Sprintf("svc-%d", i)
			svc, err := svcs.Create(ctx, svcTest(name), metav1.CreateOptions{})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("Create(%s) = %v", name, err)
				return
			}
			ip := svc.Spec.ClusterIP
			if parsed := net.ParseIP(ip); parsed == nil || !svcRange.Contains(parsed) || ip == "10.96.0.1" {
				t.Errorf("Create(%s): clusterIP %q, want a free address of %s", name, ip, svcRange)
			}
			if prev, dup := ips[ip]; dup {
				t.Errorf("clusterIP %s given to %s and %s", ip, prev, name)
			}
			ips[ip] = name
		})
	}
	wg.Wait()
	if len(ips) != 50 {
		t.Fatalf("got %d distinct cluster IPs, want 50", len(ips))
	}

	t.Run("requested", func(t *testing.T) {
		svc, err := svcs.Create(ctx, svcTest("dns", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.10" }), metav1.CreateOptions{})
		if err != nil || svc.Spec.ClusterIP != "10.96.0.10" {
			t.Fatalf("Create(dns, 10.96.0.10) = %v, %v; want the requested address", svc.Spec.ClusterIP, err)
		}
		_, err = svcs.Create(ctx, svcTest("dns2", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.10" }), metav1.CreateOptions{})
		svcWantInvalid(t, "Create(dns2, 10.96.0.10)", err, `spec.clusterIPs: Invalid value: "10.96.0.10": provided IP is already allocated`)
		_, err = svcs.Create(ctx, svcTest("k", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.1" }), metav1.CreateOptions{})
		svcWantInvalid(t, "Create(k, 10.96.0.1)", err, "provided IP is already allocated")
		_, err = svcs.Create(ctx, svcTest("far", func(s *corev1.Service) { s.Spec.ClusterIP = "10.200.0.1" }), metav1.CreateOptions{})
		svcWantInvalid(t, "Create(far, 10.200.0.1)", err, "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12")
		_, err = svcs.Create(ctx, svcTest("dry", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.11" }), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Errorf("dry-run Create(10.96.0.11) = %v", err)
		}

		// Deleting gives the address back.
		if err := svcs.Delete(ctx, "dns", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if svc, err := svcs.Create(ctx, svcTest("dns2", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.10" }), metav1.CreateOptions{}); err != nil {
			t.Errorf("Create(dns2, 10.96.0.10) after deleting dns = %v", err)
		} else if svc.Spec.ClusterIP != "10.96.0.10" {
			t.Errorf("Create(dns2) clusterIP = %s, want 10.96.0.10", svc.Spec.ClusterIP)
		}
		// So did the dry run: nothing was taken.
		if _, err := svcs.Create(ctx, svcTest("dry", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.11" }), metav1.CreateOptions{}); err != nil {
			t.Errorf("Create(10.96.0.11) after a dry run = %v", err)
		}
	})

	t.Run("headless", func(t *testing.T) {
		svc, err := svcs.Create(ctx, svcTest("headless", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }), metav1.CreateOptions{})
		if err != nil || svc.Spec.ClusterIP != corev1.ClusterIPNone || len(svc.Spec.ClusterIPs) != 1 {
			t.Errorf("Create(headless) = %v, %v; want clusterIP None", svc.Spec.ClusterIPs, err)
		}
	})

	var nodePort int32
	t.Run("nodePort", func(t *testing.T) {
		svc, err := svcs.Create(ctx, svcTest("np", svcNodePort), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(np) = %v", err)
		}
		nodePort = svc.Spec.Ports[0].NodePort
		if nodePort < 30000 || nodePort > 32767 || svc.Spec.ClusterIP == "" {
			t.Errorf("Create(np): nodePort %d, clusterIP %q; want a port of 30000-32767 and an address", nodePort, svc.Spec.ClusterIP)
		}
		_, err = svcs.Create(ctx, svcTest("np2", svcNodePort, func(s *corev1.Service) { s.Spec.Ports[0].NodePort = nodePort }), metav1.CreateOptions{})
		svcWantInvalid(t, "Create(np2) with a taken node port", err, "provided port is already allocated")
		_, err = svcs.Create(ctx, svcTest("np3", svcNodePort, func(s *corev1.Service) { s.Spec.Ports[0].NodePort = 8080 }), metav1.CreateOptions{})
		svcWantInvalid(t, "Create(np3) with node port 8080", err, "provided port is not in the valid range. The range of valid ports is 30000-32767")

		req, err := svcs.Create(ctx, svcTest("np4", svcNodePort, func(s *corev1.Service) { s.Spec.Ports[0].NodePort = 30080 }), metav1.CreateOptions{})
		if err != nil || req.Spec.Ports[0].NodePort != 30080 {
			t.Fatalf("Create(np4, 30080) = %v; want the requested port", err)
		}
		// NodePort → ClusterIP gives the port back.
		req.Spec.Type, req.Spec.ExternalTrafficPolicy = corev1.ServiceTypeClusterIP, ""
		req.Spec.Ports[0].NodePort = 0
		if _, err := svcs.Update(ctx, req, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update(np4) to ClusterIP = %v", err)
		}
		if _, err := svcs.Create(ctx, svcTest("np5", svcNodePort, func(s *corev1.Service) { s.Spec.Ports[0].NodePort = 30080 }), metav1.CreateOptions{}); err != nil {
			t.Errorf("Create(np5, 30080) after np4 let go of it = %v", err)
		}
	})

	// After a restart, the allocations are still there.
	c.Stop(t)
	c2 := framework.StartCluster(t, framework.WithDataDir(c.DataDir))
	client = fastClient(t, c2)
	svcs = client.CoreV1().Services(ns)
	list, err := svcs.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, s := range list.Items {
		held[s.Spec.ClusterIP] = s.Name
	}
	k2, err := client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil || k2.Spec.ClusterIP != "10.96.0.1" || k2.UID != k.UID {
		t.Errorf("after restart: default/kubernetes = %v, %v; want the same Service with 10.96.0.1", k2, err)
	}
	for ip, name := range ips {
		if held[ip] != name {
			t.Errorf("after restart: %s holds %q, want %s", ip, held[ip], name)
		}
	}
	_, err = svcs.Create(ctx, svcTest("again", func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.10" }), metav1.CreateOptions{})
	svcWantInvalid(t, "after restart: Create(10.96.0.10)", err, "provided IP is already allocated")
	if nodePort != 0 {
		_, err = svcs.Create(ctx, svcTest("np-again", svcNodePort, func(s *corev1.Service) { s.Spec.Ports[0].NodePort = nodePort }), metav1.CreateOptions{})
		svcWantInvalid(t, "after restart: Create with a taken node port", err, "provided port is already allocated")
	}
	svcCreateMany(t, client, ns, "new", 30, held)
}

// svcCreateMany creates n Services and checks that none gets an address
// that held maps to another Service.
func svcCreateMany(t *testing.T, client kubernetes.Interface, ns, prefix string, n int, held map[string]string) {
	t.Helper()
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		svc, err := client.CoreV1().Services(ns).Create(t.Context(), svcTest(name), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(%s) = %v", name, err)
		}
		if prev, ok := held[svc.Spec.ClusterIP]; ok {
			t.Errorf("Create(%s) got %s, held by %s", name, svc.Spec.ClusterIP, prev)
		}
		held[svc.Spec.ClusterIP] = name
	}
}
