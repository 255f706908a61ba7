#!/usr/bin/env bash
# Installs what tether needs to build and test on Debian 12, as root.
# Idempotent: does nothing when everything is present.
set -euo pipefail

need=()
for cmd_pkg in git:git make:make gcc:gcc curl:curl ip:iproute2 runc:runc busybox:busybox-static nft:nftables iptables:iptables conntrack:conntrack; do
  cmd=${cmd_pkg%%:*} pkg=${cmd_pkg##*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# The pod network uses the CNI plugins from Debian (bridge, host-local, loopback).
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    echo "install-deps: Go is at /usr/local/go/bin; add it to PATH" >&2
  else
    echo "install-deps: Go 1.26 or newer is required (https://go.dev/doc/install)" >&2
  fi
  exit 1
fi
go mod download
