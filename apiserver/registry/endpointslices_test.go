package registry

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func sliceTestSlice() *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abcde", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.1.5"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To("node-1"),
			Hostname:   ptr.To("web-0"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-0"},
		}, {
			Addresses: []string{"10.244.2.7"},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}, {Name: ptr.To("metrics"), Port: ptr.To[int32](9090)}},
	}
	sliceDefault(s)
	return s
}

func TestSliceDefault(t *testing.T) {
	s := &discoveryv1.EndpointSlice{Ports: []discoveryv1.EndpointPort{{Port: ptr.To[int32](80)}}}
	sliceDefault(s)
	p := s.Ports[0]
	if p.Name == nil || *p.Name != "" {
		t.Errorf("port name = %v, want \"\"", p.Name)
	}
	if p.Protocol == nil || *p.Protocol != corev1.ProtocolTCP {
		t.Errorf("port protocol = %v, want TCP", p.Protocol)
	}
}

func TestSliceValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*discoveryv1.EndpointSlice)
		want   []string
	}{
		{"valid", func(*discoveryv1.EndpointSlice) {}, nil},
		{"no endpoints, no ports", func(s *discoveryv1.EndpointSlice) { s.Endpoints, s.Ports = nil, nil }, nil},
		{"missing address type", func(s *discoveryv1.EndpointSlice) { s.AddressType = "" }, []string{"addressType"}},
		{"unknown address type", func(s *discoveryv1.EndpointSlice) { s.AddressType = "IP" }, []string{"addressType"}},
		{"IPv6 slice", func(s *discoveryv1.EndpointSlice) {
			s.AddressType = discoveryv1.AddressTypeIPv6
			s.Endpoints[0].Addresses = []string{"fd00::5"}
			s.Endpoints[1].Addresses = []string{"2001:db8::7"}
		}, nil},
		{"IPv6 address in IPv4 slice", func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[1].Addresses = []string{"fd00::7"}
		}, []string{"endpoints[1].addresses[0]"}},
		{"bad IP", func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[0].Addresses = []string{"10.244.1"}
		}, []string{"endpoints[0].addresses[0]"}},
		{"loopback", func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[0].Addresses = []string{"127.0.0.1"}
		}, []string{"endpoints[0].addresses[0]"}},
		{"link-local", func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[0].Addresses = []string{"169.254.169.254"}
		}, []string{"endpoints[0].addresses[0]"}},
		{"FQDN", func(s *discoveryv1.EndpointSlice) {
			s.AddressType = discoveryv1.AddressTypeFQDN
			s.Endpoints[0].Addresses = []string{"db.example.com"}
			s.Endpoints[1].Addresses = []string{"not a name"}
		}, []string{"endpoints[1].addresses[0]"}},
		{"no addresses", func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Addresses = nil }, []string{"endpoints[0].addresses"}},
		{"too many addresses", func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[0].Addresses = nil
			for i := range 101 {
				s.Endpoints[0].Addresses = append(s.Endpoints[0].Addresses, fmt.Sprintf("10.1.%d.%d", i/250, i%250+1))
			}
		}, []string{"endpoints[0].addresses"}},
		{"too many endpoints", func(s *discoveryv1.EndpointSlice) {
			s.Endpoints = nil
			for i := range 1001 {
				s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)}})
			}
		}, []string{"endpoints"}},
		{"bad node name", func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].NodeName = ptr.To("Node 1") }, []string{"endpoints[0].nodeName"}},
		{"bad hostname", func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Hostname = ptr.To("web.0") }, []string{"endpoints[0].hostname"}},
		{"duplicate zone hint", func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "a"}, {Name: "a"}}}
		}, []string{"endpoints[0].hints.forZones[1].name"}},
		{"too many ports", func(s *discoveryv1.EndpointSlice) {
			s.Ports = nil
			for i := range 101 {
				s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(fmt.Sprintf("p%d", i)), Port: ptr.To(int32(1000 + i))})
			}
			sliceDefault(s)
		}, []string{"ports"}},
		{"duplicate port name", func(s *discoveryv1.EndpointSlice) { s.Ports[1].Name = ptr.To("http") }, []string{"ports[1].name"}},
		{"bad port name", func(s *discoveryv1.EndpointSlice) { s.Ports[1].Name = ptr.To("Metrics_Port") }, []string{"ports[1].name"}},
		{"port out of range", func(s *discoveryv1.EndpointSlice) { s.Ports[0].Port = ptr.To[int32](70000) }, []string{"ports[0].port"}},
		{"port without number", func(s *discoveryv1.EndpointSlice) { s.Ports[0].Port = nil }, nil},
		{"unknown protocol", func(s *discoveryv1.EndpointSlice) {
			s.Ports[0].Protocol = ptr.To(corev1.Protocol("QUIC"))
		}, []string{"ports[0].protocol"}},
		{"bad appProtocol", func(s *discoveryv1.EndpointSlice) { s.Ports[0].AppProtocol = ptr.To("a b") }, []string{"ports[0].appProtocol"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := sliceTestSlice()
			tc.mutate(s)
			coreTestCheck(t, sliceValidate(t.Context(), s), tc.want...)
		})
	}
}

func TestSliceValidateUpdate(t *testing.T) {
	old := sliceTestSlice()
	s := old.DeepCopy()
	s.AddressType = discoveryv1.AddressTypeFQDN
	s.Endpoints = nil
	coreTestCheck(t, sliceValidateUpdate(t.Context(), s, old), "addressType")

	// An address stored before strict IP parsing stays acceptable.
	old = sliceTestSlice()
	old.Endpoints[0].Addresses = []string{"010.244.001.005"}
	s = old.DeepCopy()
	s.Ports[0].Port = ptr.To[int32](8081)
	coreTestCheck(t, sliceValidateUpdate(t.Context(), s, old))
	coreTestCheck(t, sliceValidate(t.Context(), s), "endpoints[0].addresses[0]")
}

func TestSliceGeneration(t *testing.T) {
	s := sliceTestSlice()
	slicePrepareForCreate(t.Context(), s)
	if s.Generation != 1 {
		t.Fatalf("generation after create = %d, want 1", s.Generation)
	}
	same := s.DeepCopy()
	same.Labels = map[string]string{"a": "b"}
	slicePrepareForUpdate(t.Context(), same, s)
	if same.Generation != 1 {
		t.Errorf("generation after a metadata change = %d, want 1", same.Generation)
	}
	changed := s.DeepCopy()
	changed.Endpoints[1].Conditions.Ready = ptr.To(false)
	slicePrepareForUpdate(t.Context(), changed, s)
	if changed.Generation != 2 {
		t.Errorf("generation after an endpoint change = %d, want 2", changed.Generation)
	}
}

func TestSliceRow(t *testing.T) {
	ips := func(n int) []discoveryv1.Endpoint {
		var out []discoveryv1.Endpoint
		for i := range n {
			out = append(out, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)}})
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		ports     []discoveryv1.EndpointPort
		endpoints []discoveryv1.Endpoint
		wantPorts string
		wantEPs   string
	}{
		{"empty", nil, nil, "<unset>", "<unset>"},
		{"two", []discoveryv1.EndpointPort{{Port: ptr.To[int32](80)}, {Name: ptr.To("dns")}}, ips(2), "80,dns", "10.0.0.1,10.0.0.2"},
		{"every port", []discoveryv1.EndpointPort{{Name: ptr.To("")}}, ips(3), "*", "10.0.0.1,10.0.0.2,10.0.0.3"},
		{"more", []discoveryv1.EndpointPort{{Port: ptr.To[int32](1)}, {Port: ptr.To[int32](2)}, {Port: ptr.To[int32](3)}, {Port: ptr.To[int32](4)}}, ips(5),
			"1,2,3 + 1 more...", "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-x"}, AddressType: discoveryv1.AddressTypeIPv4, Ports: tc.ports, Endpoints: tc.endpoints}
			row := sliceRow(s)
			if len(row) != len(sliceColumns) {
				t.Fatalf("row has %d cells, want %d", len(row), len(sliceColumns))
			}
			if row[0] != "web-x" || row[1] != "IPv4" || row[2] != tc.wantPorts || row[3] != tc.wantEPs {
				t.Errorf("row = %q, want [web-x IPv4 %q %q …]", row, tc.wantPorts, tc.wantEPs)
			}
		})
	}
}
