package registry

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// svcTestService returns a valid, defaulted ClusterIP service.
func svcTestService() *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector:  map[string]string{"app": "web"},
			ClusterIP: "10.96.0.10",
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "https", Port: 443},
			},
		},
	}
	svcDefault(svc)
	return svc
}

func TestServiceDefault(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.0.10",
		Ports:     []corev1.ServicePort{{Port: 80}},
	}}
	svcDefault(svc)
	spec := &svc.Spec
	for _, check := range []struct {
		what      string
		got, want interface{}
	}{
		{"type", spec.Type, corev1.ServiceTypeClusterIP},
		{"sessionAffinity", spec.SessionAffinity, corev1.ServiceAffinityNone},
		{"protocol", spec.Ports[0].Protocol, corev1.ProtocolTCP},
		{"targetPort", spec.Ports[0].TargetPort, intstr.FromInt32(80)},
		{"internalTrafficPolicy", *spec.InternalTrafficPolicy, corev1.ServiceInternalTrafficPolicyCluster},
		{"externalTrafficPolicy", spec.ExternalTrafficPolicy, corev1.ServiceExternalTrafficPolicy("")},
		{"clusterIPs", slices.Clone(spec.ClusterIPs), []string{"10.96.0.10"}},
		{"ipFamilyPolicy", *spec.IPFamilyPolicy, corev1.IPFamilyPolicySingleStack},
		{"ipFamilies", slices.Clone(spec.IPFamilies), []corev1.IPFamily{corev1.IPv4Protocol}},
		{"allocateLoadBalancerNodePorts", spec.AllocateLoadBalancerNodePorts == nil, true},
	} {
		if !equalValues(check.got, check.want) {
			t.Errorf("%s = %v, want %v", check.what, check.got, check.want)
		}
	}

	lb := &corev1.Service{Spec: corev1.ServiceSpec{
		Type:            corev1.ServiceTypeLoadBalancer,
		SessionAffinity: corev1.ServiceAffinityClientIP,
		ClusterIPs:      []string{"fd00::10"},
		Ports:           []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromString("https")}},
	}}
	svcDefault(lb)
	spec = &lb.Spec
	for _, check := range []struct {
		what      string
		got, want interface{}
	}{
		{"externalTrafficPolicy", spec.ExternalTrafficPolicy, corev1.ServiceExternalTrafficPolicyCluster},
		{"allocateLoadBalancerNodePorts", *spec.AllocateLoadBalancerNodePorts, true},
		{"clientIP timeout", *spec.SessionAffinityConfig.ClientIP.TimeoutSeconds, int32(10800)},
		{"targetPort kept", spec.Ports[0].TargetPort, intstr.FromString("https")},
		{"clusterIP from clusterIPs", spec.ClusterIP, "fd00::10"},
		{"ipFamilies from clusterIPs", slices.Clone(spec.IPFamilies), []corev1.IPFamily{corev1.IPv6Protocol}},
	} {
		if !equalValues(check.got, check.want) {
			t.Errorf("LoadBalancer %s = %v, want %v", check.what, check.got, check.want)
		}
	}

	ext := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}}
	svcDefault(ext)
	if ext.Spec.IPFamilyPolicy != nil || ext.Spec.IPFamilies != nil || ext.Spec.InternalTrafficPolicy != nil {
		t.Errorf("ExternalName service got IP fields: %+v", ext.Spec)
	}

	headless := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}
	svcDefault(headless)
	if p := *headless.Spec.IPFamilyPolicy; p != corev1.IPFamilyPolicyRequireDualStack {
		t.Errorf("headless service without selector: ipFamilyPolicy = %v, want RequireDualStack", p)
	}
}

func equalValues(a, b interface{}) bool {
	switch a := a.(type) {
	case []string:
		return slices.Equal(a, b.([]string))
	case []corev1.IPFamily:
		return slices.Equal(a, b.([]corev1.IPFamily))
	}
	return a == b
}

func TestServiceValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*corev1.Service)
		want   []string
	}{
		{"valid", func(*corev1.Service) {}, nil},
		{"no ports", func(s *corev1.Service) {
			s.Spec.Ports = nil
		}, []string{"spec.ports"}},
		{"headless without ports", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.Ports = corev1.ClusterIPNone, nil, nil
		}, nil},
		{"port zero", func(s *corev1.Service) {
			s.Spec.Ports[0].Port = 0
		}, []string{"spec.ports[0].port"}},
		{"port too large", func(s *corev1.Service) {
			s.Spec.Ports[0].Port = 65536
		}, []string{"spec.ports[0].port"}},
		{"unnamed port among two", func(s *corev1.Service) {
			s.Spec.Ports[1].Name = ""
		}, []string{"spec.ports[1].name"}},
		{"one unnamed port", func(s *corev1.Service) {
			s.Spec.Ports = s.Spec.Ports[:1]
			s.Spec.Ports[0].Name = ""
		}, nil},
		{"duplicate port name", func(s *corev1.Service) {
			s.Spec.Ports[1].Name = "http"
		}, []string{"spec.ports[1].name"}},
		{"port name not a DNS label", func(s *corev1.Service) {
			s.Spec.Ports[0].Name = "HTTP"
		}, []string{"spec.ports[0].name"}},
		{"duplicate port and protocol", func(s *corev1.Service) {
			s.Spec.Ports[1].Port = 80
		}, []string{"spec.ports[1]"}},
		{"same port over UDP", func(s *corev1.Service) {
			s.Spec.Ports[1].Port, s.Spec.Ports[1].Protocol = 80, corev1.ProtocolUDP
		}, nil},
		{"unknown protocol", func(s *corev1.Service) {
			s.Spec.Ports[0].Protocol = "HTTP"
		}, []string{"spec.ports[0].protocol"}},
		{"bad target port name", func(s *corev1.Service) {
			s.Spec.Ports[0].TargetPort = intstr.FromString("web_http")
		}, []string{"spec.ports[0].targetPort"}},
		{"target port out of range", func(s *corev1.Service) {
			s.Spec.Ports[0].TargetPort = intstr.FromInt32(70000)
		}, []string{"spec.ports[0].targetPort"}},
		{"unknown type", func(s *corev1.Service) {
			s.Spec.Type = "Ingress"
		}, []string{"spec.type"}},
		{"nodePort on ClusterIP", func(s *corev1.Service) {
			s.Spec.Ports[0].NodePort = 30080
		}, []string{"spec.ports[0].nodePort"}},
		{"nodePort on NodePort", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 30080
		}, nil},
		{"nodePort not a port", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 70000
		}, []string{"spec.ports[0].nodePort"}},
		{"nodePort twice", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30080
			s.Spec.Ports[1].NodePort = 30080
		}, []string{"spec.ports[1].nodePort"}},
		{"headless NodePort", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, nil
		}, []string{"spec.clusterIP"}},
		{"bad clusterIP", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.0.300", nil
		}, []string{"spec.clusterIPs[0]"}},
		{"clusterIPs disagree", func(s *corev1.Service) {
			s.Spec.ClusterIPs = []string{"10.96.0.11"}
		}, []string{"spec.clusterIPs"}},
		{"ExternalName", func(s *corev1.Service) {
			*s = corev1.Service{ObjectMeta: s.ObjectMeta, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com."}}
		}, nil},
		{"ExternalName without name", func(s *corev1.Service) {
			*s = corev1.Service{ObjectMeta: s.ObjectMeta, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName}}
		}, []string{"spec.externalName"}},
		{"ExternalName with clusterIP", func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "db.example.com"
			s.Spec.IPFamilies, s.Spec.IPFamilyPolicy = nil, nil
		}, []string{"spec.clusterIP", "spec.clusterIPs"}},
		{"bad selector", func(s *corev1.Service) {
			s.Spec.Selector = map[string]string{"app": "not a value"}
		}, []string{"spec.selector"}},
		{"unknown session affinity", func(s *corev1.Service) {
			s.Spec.SessionAffinity = "Cookie"
		}, []string{"spec.sessionAffinity"}},
		{"external IP loopback", func(s *corev1.Service) {
			s.Spec.ExternalIPs = []string{"127.0.0.1"}
		}, []string{"spec.externalIPs[0]"}},
		{"source ranges on ClusterIP", func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
		}, []string{"spec.loadBalancerSourceRanges"}},
		{"externalTrafficPolicy on ClusterIP", func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}, []string{"spec.externalTrafficPolicy"}},
		{"two families for SingleStack", func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		}, []string{"spec.ipFamilies"}},
		{"clusterIP of the wrong family", func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}, []string{"spec.clusterIPs[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := svcTestService()
			tc.mutate(svc)
			svcDefault(svc)
			coreTestCheck(t, svcValidate(t.Context(), svc), tc.want...)
		})
	}
}

func TestServiceStrategyName(t *testing.T) {
	st := newStrategy(Services, false)
	svc := svcTestService()
	coreTestCheck(t, st.Validate(t.Context(), svc))
	svc.Name = "1web" // a DNS-1123 label, but not a DNS-1035 one
	coreTestCheck(t, st.Validate(t.Context(), svc), "metadata.name")
}

func TestServiceUpdate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		old    func(*corev1.Service)
		mutate func(*corev1.Service)
		want   []string
		check  func(*testing.T, *corev1.Service)
	}{
		{"selector changed", nil, func(s *corev1.Service) {
			s.Spec.Selector = map[string]string{"app": "web2"}
		}, nil, nil},
		{"clusterIP changed", nil, func(s *corev1.Service) {
			s.Spec.ClusterIP = "10.96.0.11"
		}, []string{"spec.clusterIPs[0]"}, nil},
		{"clusterIP set", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
		}, func(s *corev1.Service) {
			s.Spec.ClusterIP = "10.96.0.11"
		}, nil, nil},
		{"replaced without clusterIP or nodePorts", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 30080
			svcDefault(s)
		}, func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
			s.Spec.Ports[0].NodePort = 0
		}, nil, func(t *testing.T, s *corev1.Service) {
			if s.Spec.ClusterIP != "10.96.0.10" || s.Spec.Ports[0].NodePort != 30080 {
				t.Errorf("clusterIP, nodePort = %q, %d; want the stored 10.96.0.10, 30080", s.Spec.ClusterIP, s.Spec.Ports[0].NodePort)
			}
		}},
		{"NodePort to ClusterIP", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 30080
			svcDefault(s)
		}, func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeClusterIP
		}, nil, func(t *testing.T, s *corev1.Service) {
			if s.Spec.Ports[0].NodePort != 0 || s.Spec.ExternalTrafficPolicy != "" {
				t.Errorf("nodePort, externalTrafficPolicy = %d, %q; want them dropped", s.Spec.Ports[0].NodePort, s.Spec.ExternalTrafficPolicy)
			}
		}},
		{"ClusterIP to ExternalName", nil, func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "db.example.com"
		}, nil, func(t *testing.T, s *corev1.Service) {
			if s.Spec.ClusterIP != "" || s.Spec.IPFamilyPolicy != nil {
				t.Errorf("clusterIP, ipFamilyPolicy = %q, %v; want them dropped", s.Spec.ClusterIP, s.Spec.IPFamilyPolicy)
			}
		}},
		{"LoadBalancer to ClusterIP", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			svcDefault(s)
		}, func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeClusterIP
		}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := svcTestService()
			if tc.old != nil {
				tc.old(old)
			}
			svc := old.DeepCopy()
			tc.mutate(svc)
			svcDefault(svc)
			svcPrepareForUpdate(t.Context(), svc, old)
			coreTestCheck(t, svcValidateUpdate(t.Context(), svc, old), tc.want...)
			if tc.check != nil {
				tc.check(t, svc)
			}
		})
	}
}

func TestServiceValidateStatusUpdate(t *testing.T) {
	vip := corev1.LoadBalancerIPModeVIP
	old := svcTestService()
	svc := old.DeepCopy()
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
		{IP: "203.0.113.10", IPMode: &vip},
		{Hostname: "lb.example.com"},
		{IP: "203.0.113.300"},
		{Hostname: "203.0.113.11"},
		{Hostname: "lb2.example.com", IPMode: &vip},
	}
	coreTestCheck(t, svcValidateStatusUpdate(t.Context(), svc, old),
		"status.loadBalancer.ingress[2].ip", "status.loadBalancer.ingress[3].hostname", "status.loadBalancer.ingress[4].ipMode")
}

func TestServicePorts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ports []corev1.ServicePort
		want  string
	}{
		{"none", nil, "<none>"},
		{"one", []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}, "80/TCP"},
		{"node ports", []corev1.ServicePort{
			{Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP},
			{Port: 53, NodePort: 30053, Protocol: corev1.ProtocolUDP},
		}, "80:30080/TCP,53:30053/UDP"},
	} {
		if got := svcPorts(tc.ports); got != tc.want {
			t.Errorf("svcPorts(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestServiceRow(t *testing.T) {
	for _, tc := range []struct {
		name                            string
		mutate                          func(*corev1.Service)
		typ, clusterIP, externalIP, sel string
	}{
		{"ClusterIP", func(*corev1.Service) {}, "ClusterIP", "10.96.0.10", "<none>", "app=web"},
		{"external IPs", func(s *corev1.Service) {
			s.Spec.ExternalIPs = []string{"203.0.113.1", "203.0.113.2"}
		}, "ClusterIP", "10.96.0.10", "203.0.113.1,203.0.113.2", "app=web"},
		{"pending load balancer", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
		}, "LoadBalancer", "10.96.0.10", "<pending>", "app=web"},
		{"load balancer", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}, {Hostname: "lb.example.com"}}
		}, "LoadBalancer", "10.96.0.10", "203.0.113.10,lb.example.com", "app=web"},
		{"ExternalName", func(s *corev1.Service) {
			s.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com"}
		}, "ExternalName", "<none>", "db.example.com", "<none>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := svcTestService()
			tc.mutate(svc)
			row := svcRow(svc)
			if len(row) != len(svcColumns) {
				t.Fatalf("svcRow() has %d cells, want %d", len(row), len(svcColumns))
			}
			got := []interface{}{row[1], row[2], row[3], row[6]}
			want := []interface{}{tc.typ, tc.clusterIP, tc.externalIP, tc.sel}
			if !slices.Equal(got, want) {
				t.Errorf("TYPE, CLUSTER-IP, EXTERNAL-IP, SELECTOR = %q, want %q", got, want)
			}
		})
	}
}

func TestServiceFields(t *testing.T) {
	got := svcFields(svcTestService())
	if got["spec.clusterIP"] != "10.96.0.10" || got["spec.type"] != "ClusterIP" {
		t.Errorf("svcFields() = %v, want spec.clusterIP=10.96.0.10 and spec.type=ClusterIP", got)
	}
}
