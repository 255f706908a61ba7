package proxy

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

// Builders for the API objects the tests feed the proxier.

type svcOpt func(*corev1.Service)

func makeService(ns, name, clusterIP string, port int32, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  clusterIP,
			ClusterIPs: []string{clusterIP},
			Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(8080),
			}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func nodePort(np int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = np
	}
}

func clientIPAffinity(seconds int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &seconds}}
	}
}

// ep is one endpoint of a test EndpointSlice.
type ep struct {
	ip                          string
	ready, serving, terminating bool
}

func readyEP(ip string) ep    { return ep{ip: ip, ready: true, serving: true} }
func notReadyEP(ip string) ep { return ep{ip: ip} }

func makeSlice(ns, svc, suffix string, port int32, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: svc + "-" + suffix,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(port)}},
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready), Serving: ptr(e.serving), Terminating: ptr(e.terminating)},
		})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func mustCIDR(t testing.TB, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// table is a parsed view of a knftables fake's dump, for assertions.
type table struct {
	chains   map[string][]string // chain → rules
	elements map[string][]string // set or map → "key" or "key : value"
	lines    []string            // the sorted dump
}

func dumpTable(fake *knftables.Fake) table {
	dump := fake.Dump()
	tb := table{chains: map[string][]string{}, elements: map[string][]string{}}
	for _, line := range strings.Split(strings.TrimSpace(dump), "\n") {
		if line == "" {
			continue
		}
		tb.lines = append(tb.lines, line)
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && f[0] == "add" && f[1] == "chain":
			if _, ok := tb.chains[f[4]]; !ok {
				tb.chains[f[4]] = nil
			}
		case len(f) >= 5 && f[0] == "add" && f[1] == "rule":
			tb.chains[f[4]] = append(tb.chains[f[4]], strings.Join(f[5:], " "))
		case len(f) >= 5 && f[0] == "add" && f[1] == "element":
			body := strings.Join(f[5:], " ")
			body = strings.TrimSuffix(strings.TrimPrefix(body, "{ "), " }")
			tb.elements[f[4]] = append(tb.elements[f[4]], body)
		}
	}
	slices.Sort(tb.lines)
	for k := range tb.elements {
		slices.Sort(tb.elements[k])
	}
	return tb
}

func (tb table) hasElement(container, elem string) bool {
	return slices.Contains(tb.elements[container], elem)
}

// dynamicChains lists the per-service chains.
func (tb table) dynamicChains() []string {
	var out []string
	for c := range tb.chains {
		if strings.HasPrefix(c, "svc-") || strings.HasPrefix(c, "ep-") || strings.HasPrefix(c, "ext-") {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

func (tb table) String() string { return strings.Join(tb.lines, "\n") }

func chainList(names ...string) string { return fmt.Sprint(names) }
