package podenv

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func svc(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: ip, Ports: ports},
	}
}

func TestServiceEnv(t *testing.T) {
	kube := svc("default", "kubernetes", "10.96.0.1", corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP})
	kubeVars := []string{
		"KUBERNETES_SERVICE_HOST=10.96.0.1",
		"KUBERNETES_SERVICE_PORT=443",
		"KUBERNETES_SERVICE_PORT_HTTPS=443",
		"KUBERNETES_PORT=tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO=tcp",
		"KUBERNETES_PORT_443_TCP_PORT=443",
		"KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
	}
	dns := svc("kube-system", "kube-dns", "10.96.0.10", corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	web := svc("app", "my-web", "10.96.3.4",
		corev1.ServicePort{Port: 80},
		corev1.ServicePort{Name: "metrics-port", Port: 9090, Protocol: corev1.ProtocolTCP},
	)
	webVars := []string{
		"MY_WEB_SERVICE_HOST=10.96.3.4",
		"MY_WEB_SERVICE_PORT=80",
		"MY_WEB_SERVICE_PORT_METRICS_PORT=9090",
		"MY_WEB_PORT=tcp://10.96.3.4:80",
		"MY_WEB_PORT_80_TCP=tcp://10.96.3.4:80",
		"MY_WEB_PORT_80_TCP_PROTO=tcp",
		"MY_WEB_PORT_80_TCP_PORT=80",
		"MY_WEB_PORT_80_TCP_ADDR=10.96.3.4",
		"MY_WEB_PORT_9090_TCP=tcp://10.96.3.4:9090",
		"MY_WEB_PORT_9090_TCP_PROTO=tcp",
		"MY_WEB_PORT_9090_TCP_PORT=9090",
		"MY_WEB_PORT_9090_TCP_ADDR=10.96.3.4",
	}
	headless := svc("app", "headless", corev1.ClusterIPNone, corev1.ServicePort{Port: 80})
	external := svc("app", "ext", "", corev1.ServicePort{Port: 80})
	dnsApp := svc("app", "dns6", "fd00::a", corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	dns6Vars := []string{
		"DNS6_SERVICE_HOST=fd00::a",
		"DNS6_SERVICE_PORT=53",
		"DNS6_SERVICE_PORT_DNS=53",
		"DNS6_PORT=udp://[fd00::a]:53",
		"DNS6_PORT_53_UDP=udp://[fd00::a]:53",
		"DNS6_PORT_53_UDP_PROTO=udp",
		"DNS6_PORT_53_UDP_PORT=53",
		"DNS6_PORT_53_UDP_ADDR=fd00::a",
	}
	ownKube := svc("app", "kubernetes", "10.96.9.9", corev1.ServicePort{Port: 8080})
	otherDefault := svc("default", "other", "10.96.0.5", corev1.ServicePort{Port: 1})

	tests := []struct {
		name     string
		ns       string
		links    *bool
		services []*corev1.Service
		want     []string
	}{
		{"no services", "app", nil, nil, []string{}},
		{"master service only across namespaces", "app", nil, []*corev1.Service{kube, dns, otherDefault}, kubeVars},
		{"links disabled keeps master service", "app", ptr(false), []*corev1.Service{kube, web, dnsApp}, kubeVars},
		{"own namespace, sorted, ipv6, skips headless and external", "app", ptr(true),
			[]*corev1.Service{web, headless, kube, external, dnsApp},
			slices.Concat(dns6Vars, kubeVars, webVars)},
		{"own kubernetes service wins", "app", nil, []*corev1.Service{ownKube, kube}, []string{
			"KUBERNETES_SERVICE_HOST=10.96.9.9",
			"KUBERNETES_SERVICE_PORT=8080",
			"KUBERNETES_PORT=tcp://10.96.9.9:8080",
			"KUBERNETES_PORT_8080_TCP=tcp://10.96.9.9:8080",
			"KUBERNETES_PORT_8080_TCP_PROTO=tcp",
			"KUBERNETES_PORT_8080_TCP_PORT=8080",
			"KUBERNETES_PORT_8080_TCP_ADDR=10.96.9.9",
		}},
		{"own kubernetes service wins in either order", "app", nil, []*corev1.Service{kube, ownKube}, []string{
			"KUBERNETES_SERVICE_HOST=10.96.9.9",
			"KUBERNETES_SERVICE_PORT=8080",
			"KUBERNETES_PORT=tcp://10.96.9.9:8080",
			"KUBERNETES_PORT_8080_TCP=tcp://10.96.9.9:8080",
			"KUBERNETES_PORT_8080_TCP_PROTO=tcp",
			"KUBERNETES_PORT_8080_TCP_PORT=8080",
			"KUBERNETES_PORT_8080_TCP_ADDR=10.96.9.9",
		}},
		{"default namespace pod sees its services", "default", nil, []*corev1.Service{otherDefault, kube}, slices.Concat(kubeVars, []string{
			"OTHER_SERVICE_HOST=10.96.0.5",
			"OTHER_SERVICE_PORT=1",
			"OTHER_PORT=tcp://10.96.0.5:1",
			"OTHER_PORT_1_TCP=tcp://10.96.0.5:1",
			"OTHER_PORT_1_TCP_PROTO=tcp",
			"OTHER_PORT_1_TCP_PORT=1",
			"OTHER_PORT_1_TCP_ADDR=10.96.0.5",
		})},
		{"default namespace pod with links disabled", "default", ptr(false), []*corev1.Service{otherDefault, kube}, kubeVars},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: tt.ns, Name: "p"}}
			pod.Spec.EnableServiceLinks = tt.links
			got := ServiceEnv(pod, tt.services)
			if !slices.Equal(got, tt.want) {
				t.Errorf("ServiceEnv() =\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}
