package proxy

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// TestRulesSequence applies a sequence of cluster states to one fake table
// incrementally and checks the rules after each step. At every step the
// incremental result must equal a full rebuild from scratch.
func TestRulesSequence(t *testing.T) {
	const (
		vip  = "10.96.0.10"
		vip2 = "10.96.0.20"
		svcC = "svc-default/web/tcp/80"
		ep1  = "ep-default/web/tcp/80__10.244.0.2/8080"
		ep2  = "ep-default/web/tcp/80__10.244.1.2/8080"
	)
	web := makeService("default", "web", vip, 80)
	webNP := makeService("default", "web", vip, 80, nodePort(30080))
	api := makeService("default", "api", vip2, 443)
	bothReady := makeSlice("default", "web", "a", 8080, readyEP("10.244.0.2"), readyEP("10.244.1.2"))
	oneReady := makeSlice("default", "web", "a", 8080, readyEP("10.244.0.2"), notReadyEP("10.244.1.2"))

	steps := []struct {
		name     string
		services []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		check    func(t *testing.T, tb table)
	}{
		{
			name:     "ClusterIP with two endpoints",
			services: []*corev1.Service{web},
			slices:   []*discoveryv1.EndpointSlice{bothReady},
			check: func(t *testing.T, tb table) {
				if !tb.hasElement(mapServiceIPs, vip+" . tcp . 80 : goto "+svcC) {
					t.Errorf("service-ips = %v, want %s . tcp . 80 → %s", tb.elements[mapServiceIPs], vip, svcC)
				}
				wantSvc := []string{
					"ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
					"numgen random mod 2 vmap { 0 : goto " + ep1 + " , 1 : goto " + ep2 + " }",
				}
				if got := tb.chains[svcC]; !slices.Equal(got, wantSvc) {
					t.Errorf("chain %s = %q, want %q", svcC, got, wantSvc)
				}
				wantEP := []string{
					"ip saddr 10.244.0.2 jump mark-for-masquerade",
					"meta l4proto tcp dnat to 10.244.0.2:8080",
				}
				if got := tb.chains[ep1]; !slices.Equal(got, wantEP) {
					t.Errorf("chain %s = %q, want %q", ep1, got, wantEP)
				}
				if got, want := chainList(tb.dynamicChains()...), chainList(ep1, ep2, svcC); got != want {
					t.Errorf("per-service chains = %s, want %s", got, want)
				}
				if len(tb.elements[setNoEndpointServices]) != 0 {
					t.Errorf("no-endpoint-services = %v, want none", tb.elements[setNoEndpointServices])
				}
			},
		},
		{
			name:     "NodePort",
			services: []*corev1.Service{webNP},
			slices:   []*discoveryv1.EndpointSlice{bothReady},
			check: func(t *testing.T, tb table) {
				ext := "ext-default/web/tcp/80"
				if !tb.hasElement(mapServiceNodePorts, "tcp . 30080 : goto "+ext) {
					t.Errorf("service-nodeports = %v, want tcp . 30080 → %s", tb.elements[mapServiceNodePorts], ext)
				}
				want := []string{"jump mark-for-masquerade", "goto " + svcC}
				if got := tb.chains[ext]; !slices.Equal(got, want) {
					t.Errorf("chain %s = %q, want %q", ext, got, want)
				}
				if !tb.hasElement(mapServiceIPs, vip+" . tcp . 80 : goto "+svcC) {
					t.Errorf("service-ips = %v, want the ClusterIP still there", tb.elements[mapServiceIPs])
				}
			},
		},
		{
			name:     "a Service without endpoints is rejected",
			services: []*corev1.Service{webNP, api},
			slices:   []*discoveryv1.EndpointSlice{bothReady},
			check: func(t *testing.T, tb table) {
				if !tb.hasElement(setNoEndpointServices, vip2+" . tcp . 443") {
					t.Errorf("no-endpoint-services = %v, want %s . tcp . 443", tb.elements[setNoEndpointServices], vip2)
				}
				for _, e := range tb.elements[mapServiceIPs] {
					if strings.HasPrefix(e, vip2) {
						t.Errorf("service-ips has %q for a Service without endpoints", e)
					}
				}
				if _, ok := tb.chains["svc-default/api/tcp/443"]; ok {
					t.Errorf("a chain exists for a Service without endpoints")
				}
				rejects := strings.Join(tb.chains[chainFilterOutput], "\n")
				if !strings.Contains(rejects, "@"+setNoEndpointServices+" goto "+chainReject) {
					t.Errorf("filter-output = %q, want a reject of no-endpoint-services", rejects)
				}
			},
		},
		{
			name:     "an endpoint stops being ready",
			services: []*corev1.Service{webNP, api},
			slices:   []*discoveryv1.EndpointSlice{oneReady},
			check: func(t *testing.T, tb table) {
				want := []string{"ip saddr != 10.244.0.0/16 jump mark-for-masquerade", "goto " + ep1}
				if got := tb.chains[svcC]; !slices.Equal(got, want) {
					t.Errorf("chain %s = %q, want %q", svcC, got, want)
				}
				if _, ok := tb.chains[ep2]; ok {
					t.Errorf("chain %s of the unready endpoint still exists", ep2)
				}
			},
		},
		{
			name:     "no endpoint is ready: nodeport and ClusterIP rejected",
			services: []*corev1.Service{webNP, api},
			slices:   []*discoveryv1.EndpointSlice{makeSlice("default", "web", "a", 8080, notReadyEP("10.244.0.2"))},
			check: func(t *testing.T, tb table) {
				if !tb.hasElement(setNoEndpointServices, vip+" . tcp . 80") || !tb.hasElement(setNoEndpointNodePorts, "tcp . 30080") {
					t.Errorf("no-endpoint sets = %v / %v, want web's ClusterIP and NodePort", tb.elements[setNoEndpointServices], tb.elements[setNoEndpointNodePorts])
				}
				if c := tb.dynamicChains(); len(c) != 0 {
					t.Errorf("per-service chains = %v, want none", c)
				}
			},
		},
		{
			name:     "terminating but serving endpoints are used when none is ready",
			services: []*corev1.Service{web},
			slices: []*discoveryv1.EndpointSlice{makeSlice("default", "web", "a", 8080,
				ep{ip: "10.244.0.2", serving: true, terminating: true}, notReadyEP("10.244.1.2"))},
			check: func(t *testing.T, tb table) {
				if got, want := chainList(tb.dynamicChains()...), chainList(ep1, svcC); got != want {
					t.Errorf("per-service chains = %s, want %s", got, want)
				}
			},
		},
		{
			name:     "Service deleted: its rules are gone",
			services: []*corev1.Service{api},
			slices:   []*discoveryv1.EndpointSlice{bothReady},
			check: func(t *testing.T, tb table) {
				if c := tb.dynamicChains(); len(c) != 0 {
					t.Errorf("per-service chains = %v, want none", c)
				}
				for _, name := range []string{mapServiceIPs, mapServiceNodePorts, setNoEndpointNodePorts} {
					if len(tb.elements[name]) != 0 {
						t.Errorf("%s = %v, want empty", name, tb.elements[name])
					}
				}
				if got := tb.elements[setNoEndpointServices]; !slices.Equal(got, []string{vip2 + " . tcp . 443"}) {
					t.Errorf("no-endpoint-services = %v, want only api's", got)
				}
			},
		},
		{
			name:     "everything deleted",
			services: nil,
			check: func(t *testing.T, tb table) {
				for name, elems := range tb.elements {
					if name != setNodeIPs && len(elems) > 0 {
						t.Errorf("%s = %v, want empty", name, elems)
					}
				}
			},
		},
	}

	ctx := context.Background()
	incr := knftables.NewFake(knftables.IPv4Family, "tether")
	var prev *Ruleset
	for _, st := range steps {
		in := Input{
			ServiceCIDR:    mustCIDR(t, "10.96.0.0/12"),
			ClusterCIDR:    mustCIDR(t, "10.244.0.0/16"),
			NodeIPs:        []net.IP{net.ParseIP("192.0.2.10")},
			Services:       st.services,
			EndpointSlices: st.slices,
		}
		rs := BuildRules(in)
		tx := incr.NewTransaction()
		rs.Apply(tx, prev)
		if err := incr.Run(ctx, tx); err != nil {
			t.Fatalf("step %q: incremental Run: %v\ntransaction:\n%s", st.name, err, tx)
		}
		full := knftables.NewFake(knftables.IPv4Family, "tether")
		ftx := full.NewTransaction()
		rs.Apply(ftx, nil)
		if err := full.Run(ctx, ftx); err != nil {
			t.Fatalf("step %q: full Run: %v", st.name, err)
		}
		got, want := dumpTable(incr), dumpTable(full)
		if got.String() != want.String() {
			t.Fatalf("step %q: incremental table differs from a full rebuild\nincremental:\n%s\n\nfull:\n%s\n\ntransaction:\n%s", st.name, got, want, tx)
		}
		if prev != nil && strings.Contains(tx.String(), "delete table") {
			t.Errorf("step %q: an incremental sync rebuilt the table:\n%s", st.name, tx)
		}
		t.Run(st.name, func(t *testing.T) { st.check(t, got) })
		prev = rs
	}
}

func TestSkeleton(t *testing.T) {
	rs := BuildRules(Input{ServiceCIDR: mustCIDR(t, "10.96.0.0/12"), ClusterCIDR: mustCIDR(t, "10.244.0.0/16")})
	fake := knftables.NewFake(knftables.IPv4Family, "tether")
	tx := fake.NewTransaction()
	rs.Apply(tx, nil)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	tb := dumpTable(fake)
	for _, want := range []string{
		"add chain ip tether nat-output { type nat hook output priority -100 ; }",
		"add chain ip tether nat-prerouting { type nat hook prerouting priority -100 ; }",
		"add rule ip tether services ip daddr != 127.0.0.0/8 ip daddr != 10.96.0.0/12 fib daddr type local meta l4proto . th dport vmap @service-nodeports",
		"add rule ip tether filter-input ct state new ip daddr 10.96.0.0/12 goto reject-connection",
		"add rule ip tether reject-connection meta l4proto tcp reject with tcp reset",
		"add rule ip tether masquerading ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 ip daddr != @node-ips masquerade fully-random",
	} {
		if !slices.Contains(tb.lines, want) {
			t.Errorf("table lacks %q; it is:\n%s", want, tb)
		}
	}

	// Without a cluster CIDR every Service connection is masqueraded and
	// pod egress is left alone.
	rs = BuildRules(Input{Services: []*corev1.Service{makeService("default", "web", "10.96.0.10", 80)},
		EndpointSlices: []*discoveryv1.EndpointSlice{makeSlice("default", "web", "a", 8080, readyEP("10.244.0.2"))}})
	fake = knftables.NewFake(knftables.IPv4Family, "tether")
	tx = fake.NewTransaction()
	rs.Apply(tx, nil)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	tb = dumpTable(fake)
	if got := tb.chains["svc-default/web/tcp/80"]; len(got) == 0 || got[0] != "jump mark-for-masquerade" {
		t.Errorf("service chain = %q, want it to start with an unconditional masquerade mark", got)
	}
	if got := tb.chains[chainMasquerading]; len(got) != 1 {
		t.Errorf("masquerading = %q, want only the marked-packet rule", got)
	}
}

func TestSessionAffinity(t *testing.T) {
	svc := makeService("default", "web", "10.96.0.10", 80, clientIPAffinity(60))
	sl := makeSlice("default", "web", "a", 8080, readyEP("10.244.0.2"), readyEP("10.244.1.2"))
	rs := BuildRules(Input{Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{sl}})
	fake := knftables.NewFake(knftables.IPv4Family, "tether")
	tx := fake.NewTransaction()
	rs.Apply(tx, nil)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	tb := dumpTable(fake)
	set := "aff-default/web/tcp/80__10.244.0.2/8080"
	if !slices.Contains(tb.lines, "add set ip tether "+set+" { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }") {
		t.Errorf("no affinity set %s with a 60s timeout:\n%s", set, tb)
	}
	if got := tb.chains["svc-default/web/tcp/80"]; !slices.Contains(got, "ip saddr @"+set+" goto ep-default/web/tcp/80__10.244.0.2/8080") {
		t.Errorf("service chain = %q, want an affinity lookup before the random pick", got)
	}

	// Changing the timeout rebuilds; dropping affinity removes the sets.
	prev := rs
	svc.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = ptr[int32](30)
	rs = BuildRules(Input{Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{sl}})
	tx = fake.NewTransaction()
	rs.Apply(tx, prev)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	prev = rs
	svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	rs = BuildRules(Input{Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{sl}})
	tx = fake.NewTransaction()
	rs.Apply(tx, prev)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fake.Dump(), "aff-") {
		t.Errorf("affinity sets left after affinity was turned off:\n%s", fake.Dump())
	}
}

func TestEndpointsFor(t *testing.T) {
	sp := corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}
	tests := []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		want   []endpoint
	}{
		{"ready across slices, deduplicated", []*discoveryv1.EndpointSlice{
			makeSlice("d", "s", "a", 8080, readyEP("10.0.0.2"), readyEP("10.0.0.1")),
			makeSlice("d", "s", "b", 8080, readyEP("10.0.0.1")),
		}, []endpoint{{"10.0.0.1", 8080}, {"10.0.0.2", 8080}}},
		{"not ready skipped", []*discoveryv1.EndpointSlice{
			makeSlice("d", "s", "a", 8080, readyEP("10.0.0.2"), notReadyEP("10.0.0.1")),
		}, []endpoint{{"10.0.0.2", 8080}}},
		{"terminating ignored while some are ready", []*discoveryv1.EndpointSlice{
			makeSlice("d", "s", "a", 8080, readyEP("10.0.0.2"), ep{ip: "10.0.0.1", serving: true, terminating: true}),
		}, []endpoint{{"10.0.0.2", 8080}}},
		{"other port name ignored", func() []*discoveryv1.EndpointSlice {
			s := makeSlice("d", "s", "a", 8080, readyEP("10.0.0.2"))
			s.Ports[0].Name = ptr("metrics")
			return []*discoveryv1.EndpointSlice{s}
		}(), nil},
		{"nil conditions mean ready", func() []*discoveryv1.EndpointSlice {
			s := makeSlice("d", "s", "a", 8080, readyEP("10.0.0.2"))
			s.Endpoints[0].Conditions = discoveryv1.EndpointConditions{}
			return []*discoveryv1.EndpointSlice{s}
		}(), []endpoint{{"10.0.0.2", 8080}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := endpointsFor(sp, tt.slices); !slices.Equal(got, tt.want) {
				t.Errorf("endpointsFor() = %v, want %v", got, tt.want)
			}
		})
	}
}
