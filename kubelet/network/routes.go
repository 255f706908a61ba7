package network

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// RouteProtocol is the route protocol number (see ip-route(8) "proto")
// that marks the routes SyncRoutes owns. Routes with any other protocol are
// never changed.
const RouteProtocol = 0x74

// Route sends traffic for Dst (another node's pod CIDR) via the node
// address Via.
type Route struct {
	Dst *net.IPNet
	Via net.IP
}

// installedRoute is a route as `ip -json route show` reports it.
type installedRoute struct {
	Dst      string `json:"dst"`
	Gateway  string `json:"gateway"`
	Dev      string `json:"dev"`
	Protocol string `json:"protocol"`
	Metric   *int   `json:"metric"`
}

// SyncRoutes makes the routes this package owns in the main routing table
// exactly routes: it adds missing ones, replaces those whose gateway
// changed and deletes ones it added earlier that are no longer wanted. It
// never touches a route it did not add; a wanted destination already routed
// by someone else, or one overlapping the node's own pod CIDR, is reported
// as an error and skipped while the rest are still applied. It also turns
// on IP forwarding.
func (n *Network) SyncRoutes(routes []Route) error {
	var errs []error
	want := make(map[string]Route)
	families := map[int]bool{familyOf(n.podNet.IP): true}
	for _, r := range routes {
		if r.Dst == nil || r.Via == nil {
			errs = append(errs, fmt.Errorf("network: route %v via %v: destination and gateway are required", r.Dst, r.Via))
			continue
		}
		dst := &net.IPNet{IP: r.Dst.IP.Mask(r.Dst.Mask), Mask: r.Dst.Mask}
		if familyOf(dst.IP) != familyOf(r.Via) {
			errs = append(errs, fmt.Errorf("network: route %s via %s: mixed address families", dst, r.Via))
			continue
		}
		if overlaps(dst, n.podNet) {
			errs = append(errs, fmt.Errorf("network: route %s via %s overlaps this node's pod CIDR %s", dst, r.Via, n.podNet))
			continue
		}
		if prev, ok := want[dst.String()]; ok && !prev.Via.Equal(r.Via) {
			errs = append(errs, fmt.Errorf("network: route %s is given twice (via %s and via %s)", dst, prev.Via, r.Via))
			continue
		}
		want[dst.String()] = Route{Dst: dst, Via: r.Via}
		families[familyOf(dst.IP)] = true
	}

	for fam := range families {
		if err := enableForwarding(fam); err != nil {
			errs = append(errs, err)
		}
	}

	for _, fam := range []int{4, 6} {
		all, err := listRoutes(fam, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ours, err := listRoutes(fam, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		oursByDst := make(map[string]installedRoute)
		for _, r := range ours {
			oursByDst[normalizeDst(r.Dst, fam)] = r
		}
		foreign := make(map[string]bool)
		for _, r := range all {
			d := normalizeDst(r.Dst, fam)
			if _, ok := oursByDst[d]; !ok {
				foreign[d] = true
			}
		}

		for dst, r := range oursByDst {
			if _, ok := want[dst]; ok {
				continue
			}
			if err := ipRoute(fam, "del", dst, "proto", strconv.Itoa(RouteProtocol)); err != nil {
				errs = append(errs, err)
				continue
			}
			n.log.Info("removed route", "dst", dst, "via", r.Gateway)
		}
		for dst, r := range want {
			if familyOf(r.Dst.IP) != fam {
				continue
			}
			cur, mine := oursByDst[dst]
			switch {
			case mine && net.ParseIP(cur.Gateway).Equal(r.Via):
				continue
			case !mine && foreign[dst]:
				errs = append(errs, fmt.Errorf("network: route %s via %s: a route to %s not managed by tether exists; leaving it alone", dst, r.Via, dst))
				continue
			}
			verb := "add"
			if mine {
				verb = "replace"
			}
			if err := ipRoute(fam, verb, dst, "via", r.Via.String(), "proto", strconv.Itoa(RouteProtocol)); err != nil {
				errs = append(errs, err)
				continue
			}
			n.log.Info("route "+verb, "dst", dst, "via", r.Via)
		}
	}
	return errors.Join(errs...)
}

// listRoutes lists the main table's routes of one family, only those with
// RouteProtocol if ours is set.
func listRoutes(family int, ours bool) ([]installedRoute, error) {
	args := []string{"-json", "-" + strconv.Itoa(family), "route", "show", "table", "main"}
	if ours {
		args = append(args, "proto", strconv.Itoa(RouteProtocol))
	}
	out, err := runIP(args...)
	if err != nil {
		return nil, err
	}
	var routes []installedRoute
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return nil, fmt.Errorf("network: parse `ip route show` output: %w", err)
	}
	return routes, nil
}

func ipRoute(family int, verb, dst string, args ...string) error {
	full := append([]string{"-" + strconv.Itoa(family), "route", verb, dst}, args...)
	_, err := runIP(full...)
	return err
}

func runIP(args ...string) ([]byte, error) {
	cmd := exec.Command("ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("network: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// normalizeDst turns iproute2's dst ("default", "10.0.0.1", "10.0.0.0/24")
// into CIDR form.
func normalizeDst(dst string, family int) string {
	if dst == "default" {
		if family == 4 {
			return "0.0.0.0/0"
		}
		return "::/0"
	}
	if !strings.Contains(dst, "/") {
		if family == 4 {
			return dst + "/32"
		}
		return dst + "/128"
	}
	if _, n, err := net.ParseCIDR(dst); err == nil {
		return n.String()
	}
	return dst
}

func familyOf(ip net.IP) int {
	if ip.To4() != nil {
		return 4
	}
	return 6
}

// enableForwarding turns on IP forwarding in this network namespace.
func enableForwarding(family int) error {
	p := "/proc/sys/net/ipv4/ip_forward"
	if family == 6 {
		p = "/proc/sys/net/ipv6/conf/all/forwarding"
	}
	cur, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("network: enable forwarding: %w", err)
	}
	return nil
}
