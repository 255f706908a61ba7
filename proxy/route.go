package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"
)

// RouteProtocol is the route protocol number (ip-route(8) "proto") that
// marks the service-range route the proxier owns; routes with any other
// protocol are never touched. (The kubelet's pod-network routes use 0x74.)
const RouteProtocol = 0x75

// ensureServiceRoute makes cidr a local route in the local table (see the
// package comment for why local) and removes any other route the proxier
// added earlier, e.g. for a service range since changed.
func ensureServiceRoute(ctx context.Context, cidr *net.IPNet) error {
	want := (&net.IPNet{IP: cidr.IP.Mask(cidr.Mask), Mask: cidr.Mask}).String()
	if _, err := runIP(ctx, "-4", "route", "replace", "local", want, "dev", "lo", "table", "local", "proto", strconv.Itoa(RouteProtocol)); err != nil {
		return err
	}
	routes, err := ownRoutes(ctx)
	if err != nil {
		return err
	}
	for _, dst := range routes {
		if dst != want {
			if _, err := runIP(ctx, "-4", "route", "del", "local", dst, "dev", "lo", "table", "local", "proto", strconv.Itoa(RouteProtocol)); err != nil {
				return err
			}
		}
	}
	return nil
}

// ownRoutes lists the destinations of the routes marked RouteProtocol in
// the local table, in CIDR form.
func ownRoutes(ctx context.Context) ([]string, error) {
	out, err := runIP(ctx, "-4", "-json", "route", "show", "table", "local", "proto", strconv.Itoa(RouteProtocol))
	if err != nil {
		return nil, err
	}
	var routes []struct {
		Dst string `json:"dst"`
	}
	if len(bytes.TrimSpace(out)) > 0 {
		if err := json.Unmarshal(out, &routes); err != nil {
			return nil, fmt.Errorf("proxy: parse `ip route show` output: %w", err)
		}
	}
	var dsts []string
	for _, r := range routes {
		dst := r.Dst
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		dsts = append(dsts, dst)
	}
	return dsts, nil
}

// Cleanup removes what a Proxier leaves behind: the nftables table
// tableName (DefaultTableName if empty) and the service-range route. It
// succeeds when neither exists. It is for `tether agent --cleanup`; do not
// call it while a Proxier runs on the same table.
func Cleanup(ctx context.Context, tableName string) error {
	if tableName == "" {
		tableName = DefaultTableName
	}
	nft, err := knftables.New(knftables.IPv4Family, tableName)
	if err != nil {
		return fmt.Errorf("proxy: cleanup: nftables: %w", err)
	}
	// Adding the table first makes the delete succeed when it is absent
	// (nft 1.0.6 has no "destroy").
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("proxy: cleanup: delete table ip %s: %w", tableName, err)
	}
	routes, err := ownRoutes(ctx)
	if err != nil {
		return fmt.Errorf("proxy: cleanup: %w", err)
	}
	for _, dst := range routes {
		if _, err := runIP(ctx, "-4", "route", "del", "local", dst, "dev", "lo", "table", "local", "proto", strconv.Itoa(RouteProtocol)); err != nil {
			return fmt.Errorf("proxy: cleanup: %w", err)
		}
	}
	return nil
}

func runIP(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("proxy: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
