package network

import (
	"encoding/json"
	"net"
)

// conflist returns the CNI network configuration list: the bridge plugin
// (which creates the bridge, gives it the gateway address and plugs a veth
// into it) with host-local IPAM over the pod CIDR, then loopback (which
// brings up the pod's lo).
func conflist(bridge string, podNet *net.IPNet, gateway net.IP, mtu int, ipamDir string) ([]byte, error) {
	defaultDst := "0.0.0.0/0"
	if podNet.IP.To4() == nil {
		defaultDst = "::/0"
	}
	type route struct {
		Dst string `json:"dst"`
		GW  string `json:"gw,omitempty"`
	}
	type rangeEntry struct {
		Subnet  string `json:"subnet"`
		Gateway string `json:"gateway"`
	}
	type ipam struct {
		Type    string         `json:"type"`
		Ranges  [][]rangeEntry `json:"ranges"`
		Routes  []route        `json:"routes"`
		DataDir string         `json:"dataDir"`
	}
	type plugin struct {
		Type        string `json:"type"`
		Bridge      string `json:"bridge,omitempty"`
		IsGateway   bool   `json:"isGateway,omitempty"`
		IPMasq      *bool  `json:"ipMasq,omitempty"`
		HairpinMode bool   `json:"hairpinMode,omitempty"`
		MTU         int    `json:"mtu,omitempty"`
		IPAM        *ipam  `json:"ipam,omitempty"`
	}
	no := false
	list := struct {
		CNIVersion string   `json:"cniVersion"`
		Name       string   `json:"name"`
		Plugins    []plugin `json:"plugins"`
	}{
		CNIVersion: cniVersion,
		Name:       networkName,
		Plugins: []plugin{
			{
				Type:        "bridge",
				Bridge:      bridge,
				IsGateway:   true,
				IPMasq:      &no,
				HairpinMode: true,
				MTU:         mtu,
				IPAM: &ipam{
					Type:    "host-local",
					Ranges:  [][]rangeEntry{{{Subnet: podNet.String(), Gateway: gateway.String()}}},
					Routes:  []route{{Dst: defaultDst, GW: gateway.String()}},
					DataDir: ipamDir,
				},
			},
			{Type: "loopback"},
		},
	}
	return json.Marshal(list)
}
