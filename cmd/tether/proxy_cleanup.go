package main

import (
	"context"

	"tether/proxy"
)

// proxyCleanup removes the service proxy's nftables table and its
// service-range route, for `tether agent --cleanup`.
func proxyCleanup(ctx context.Context, table string) error {
	return proxy.Cleanup(ctx, table)
}
