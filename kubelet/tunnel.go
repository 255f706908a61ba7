package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"

	clientcert "k8s.io/client-go/util/certificate"

	"tether/tunnel"
)

// runTunnel keeps the node's tunnel to the API server open (path P10), so
// that the API server reaches this node's kubelet and pods through it
// even when it cannot connect to the node. The allow-list is the
// kubelet's own address and port and the addresses of the pods this node
// runs; nothing else on or around the node can be reached through it.
func (a *Agent) runTunnel(ctx context.Context, server string, roots *x509.CertPool, certs clientcert.Manager, kubeletAddr net.Addr) error {
	tcp, ok := kubeletAddr.(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("kubelet: tunnel: the kubelet listens on %s, not a TCP address", kubeletAddr)
	}
	kubelet := tcp.AddrPort()
	kubelet = netip.AddrPortFrom(kubelet.Addr().Unmap(), kubelet.Port())
	c, err := tunnel.NewClient(tunnel.ClientConfig{
		Server:  server,
		RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := certs.Current(); cert != nil {
				return cert, nil
			}
			return nil, errors.New("kubelet: no client certificate")
		},
		Allowed: func(addr netip.AddrPort) bool {
			return addr == kubelet || a.isPodIP(addr.Addr())
		},
		NodeName: a.cfg.NodeName,
		Logger:   a.log,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.cfg.Progress, "tunnel: keeping a tunnel open to %s for the API server's connections to this node\n", server)
	return c.Run(ctx)
}

// isPodIP reports whether ip is the address of a pod this node runs.
func (a *Agent) isPodIP(ip netip.Addr) bool {
	n := a.podNet.Load()
	if n == nil {
		return false
	}
	uids, err := n.Pods()
	if err != nil {
		return false
	}
	for _, uid := range uids {
		if pip, ok := n.PodIP(uid); ok {
			if a, ok := netip.AddrFromSlice(pip); ok && a.Unmap() == ip {
				return true
			}
		}
	}
	return false
}
