package registry

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func endpointsTestEndpoints() *corev1.Endpoints {
	node := "node-1"
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Subsets: []corev1.EndpointSubset{{
			Addresses:         []corev1.EndpointAddress{{IP: "10.244.1.5", NodeName: &node}, {IP: "10.244.1.6", Hostname: "web-1"}},
			NotReadyAddresses: []corev1.EndpointAddress{{IP: "fd00::7"}},
			Ports:             []corev1.EndpointPort{{Name: "http", Port: 8080}, {Name: "https", Port: 8443}},
		}},
	}
	endpointsDefault(ep)
	return ep
}

func TestEndpointsDefault(t *testing.T) {
	ep := endpointsTestEndpoints()
	for _, p := range ep.Subsets[0].Ports {
		if p.Protocol != corev1.ProtocolTCP {
			t.Errorf("port %s protocol = %q, want TCP", p.Name, p.Protocol)
		}
	}
}

func TestEndpointsValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*corev1.Endpoints)
		want   []string
	}{
		{"valid", func(*corev1.Endpoints) {}, nil},
		{"no subsets", func(e *corev1.Endpoints) { e.Subsets = nil }, nil},
		{"subset without addresses", func(e *corev1.Endpoints) {
			e.Subsets[0].Addresses, e.Subsets[0].NotReadyAddresses = nil, nil
		}, []string{"subsets[0]"}},
		{"bad IP", func(e *corev1.Endpoints) {
			e.Subsets[0].Addresses[0].IP = "10.244.1"
		}, []string{"subsets[0].addresses[0].ip"}},
		{"loopback IP", func(e *corev1.Endpoints) {
			e.Subsets[0].NotReadyAddresses[0].IP = "::1"
		}, []string{"subsets[0].notReadyAddresses[0].ip"}},
		{"link-local IP", func(e *corev1.Endpoints) {
			e.Subsets[0].Addresses[1].IP = "169.254.169.254"
		}, []string{"subsets[0].addresses[1].ip"}},
		{"bad hostname", func(e *corev1.Endpoints) {
			e.Subsets[0].Addresses[1].Hostname = "web.1"
		}, []string{"subsets[0].addresses[1].hostname"}},
		{"bad node name", func(e *corev1.Endpoints) {
			bad := "Node 1"
			e.Subsets[0].Addresses[0].NodeName = &bad
		}, []string{"subsets[0].addresses[0].nodeName"}},
		{"port out of range", func(e *corev1.Endpoints) {
			e.Subsets[0].Ports[0].Port = 0
		}, []string{"subsets[0].ports[0].port"}},
		{"unnamed port among two", func(e *corev1.Endpoints) {
			e.Subsets[0].Ports[1].Name = ""
		}, []string{"subsets[0].ports[1].name"}},
		{"unknown protocol", func(e *corev1.Endpoints) {
			e.Subsets[0].Ports[1].Protocol = "QUIC"
		}, []string{"subsets[0].ports[1].protocol"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := endpointsTestEndpoints()
			tc.mutate(ep)
			endpointsDefault(ep)
			coreTestCheck(t, endpointsValidate(t.Context(), ep), tc.want...)
		})
	}
}

func TestEndpointsUpdateKeepsLegacyIPs(t *testing.T) {
	// An address stored before strict IP parsing stays acceptable.
	old := endpointsTestEndpoints()
	old.Subsets[0].Addresses[0].IP = "010.244.001.005"
	ep := old.DeepCopy()
	ep.Subsets[0].Ports[0].Port = 8081
	coreTestCheck(t, endpointsValidateUpdate(t.Context(), ep, old))
	coreTestCheck(t, endpointsValidate(t.Context(), ep), "subsets[0].addresses[0].ip")
}

func TestEndpointsString(t *testing.T) {
	addrs := func(ips ...string) []corev1.EndpointAddress {
		var out []corev1.EndpointAddress
		for _, ip := range ips {
			out = append(out, corev1.EndpointAddress{IP: ip})
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		subsets []corev1.EndpointSubset
		want    string
	}{
		{"none", nil, "<none>"},
		{"only not ready", []corev1.EndpointSubset{{NotReadyAddresses: addrs("10.0.0.1"), Ports: []corev1.EndpointPort{{Port: 80}}}}, "<none>"},
		{"two", []corev1.EndpointSubset{{Addresses: addrs("10.0.0.1", "10.0.0.2"), Ports: []corev1.EndpointPort{{Port: 80}}}}, "10.0.0.1:80,10.0.0.2:80"},
		{"no ports", []corev1.EndpointSubset{{Addresses: addrs("10.0.0.1")}}, "10.0.0.1"},
		{"IPv6", []corev1.EndpointSubset{{Addresses: addrs("fd00::1"), Ports: []corev1.EndpointPort{{Port: 80}}}}, "[fd00::1]:80"},
		{"exactly three", []corev1.EndpointSubset{{Addresses: addrs("10.0.0.1", "10.0.0.2", "10.0.0.3"), Ports: []corev1.EndpointPort{{Port: 80}}}}, "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80"},
		{"more than three", []corev1.EndpointSubset{
			{Addresses: addrs("10.0.0.1", "10.0.0.2"), Ports: []corev1.EndpointPort{{Port: 80}, {Port: 443}}},
			{Addresses: addrs("10.0.1.1")},
		}, "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more..."},
	} {
		if got := endpointsString(tc.subsets); got != tc.want {
			t.Errorf("endpointsString(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestEndpointsRow(t *testing.T) {
	row := endpointsRow(endpointsTestEndpoints())
	if len(row) != len(endpointsColumns) {
		t.Fatalf("endpointsRow() has %d cells, want %d", len(row), len(endpointsColumns))
	}
	if want := "10.244.1.5:8080,10.244.1.6:8080,10.244.1.5:8443 + 1 more..."; row[1] != want {
		t.Errorf("ENDPOINTS = %q, want %q", row[1], want)
	}
}

func TestEndpointsResource(t *testing.T) {
	if Endpoints.singular() != "endpoints" || Endpoints.Fields != nil || Endpoints.HasStatus {
		t.Errorf("Endpoints: singular %q, fields %v, status %v; want endpoints, none, none",
			Endpoints.singular(), Endpoints.Fields != nil, Endpoints.HasStatus)
	}
}
