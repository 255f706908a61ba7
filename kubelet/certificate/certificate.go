// Package certificate keeps a node's two certificates current (paths P2
// and P6): the client certificate the agent presents to the API server
// (signer kubernetes.io/kube-apiserver-client-kubelet, user
// system:node:<name> in group system:nodes) and the serving certificate of
// the kubelet's HTTPS port (signer kubernetes.io/kubelet-serving, SANs = the
// Node's addresses).
//
// Both are client-go certificate managers (k8s.io/client-go/util/certificate)
// backed by a file store in the agent's pki directory. A manager requests a
// new certificate through the CSR API at a random point between 70 % and
// 90 % of the current one's lifetime, with a fresh key generated on this
// machine, authenticated by the current client certificate; the server's
// approver recognises such a request as a renewal by the same node. Transport
// makes HTTP clients switch to a rotated client certificate without failing
// a request.
package certificate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	clientcert "k8s.io/client-go/util/certificate"
	"k8s.io/klog/v2"
)

// File name prefixes of the two pairs in the pki directory. The store keeps
// every issued pair as <prefix>-<timestamp>.pem (certificate and key in one
// file, mode 0600) and points <prefix>-current.pem at the one in use, so a
// kubeconfig that names the current file always reads the rotated pair.
const (
	ClientPairPrefix  = "kubelet-client"
	ServingPairPrefix = "kubelet-server"
)

// The groups and user name prefix of node identities.
const (
	NodesGroup = "system:nodes"
	UserPrefix = "system:node:"
)

// ClientUsages are the key usages of a node client certificate request, as
// the server's approver expects them.
var ClientUsages = []certificatesv1.KeyUsage{
	certificatesv1.UsageDigitalSignature,
	certificatesv1.UsageKeyEncipherment,
	certificatesv1.UsageClientAuth,
}

// ServingUsages are the key usages of a kubelet serving certificate request.
var ServingUsages = []certificatesv1.KeyUsage{
	certificatesv1.UsageDigitalSignature,
	certificatesv1.UsageKeyEncipherment,
	certificatesv1.UsageServerAuth,
}

// CurrentPath is the path of the pair in use with prefix in dir.
func CurrentPath(dir, prefix string) string {
	return filepath.Join(dir, prefix+"-current.pem")
}

// NewStore returns the file store of the pair with prefix in dir, creating
// dir (mode 0700) if needed.
func NewStore(dir, prefix string, logger *slog.Logger) (clientcert.FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certificate: create %s: %w", dir, err)
	}
	s, err := clientcert.NewFileStoreWithLogger(klogger(logger).V(2), prefix, dir, dir, "", "")
	if err != nil {
		return nil, fmt.Errorf("certificate: open %s store in %s: %w", prefix, dir, err)
	}
	return s, nil
}

// ClientTemplate is the certificate request of node name's client
// certificate: CN system:node:<name>, O system:nodes, no SANs.
func ClientTemplate(name string) *x509.CertificateRequest {
	return &x509.CertificateRequest{Subject: pkix.Name{CommonName: UserPrefix + name, Organization: []string{NodesGroup}}}
}

// ServingTemplate is the certificate request of node name's serving
// certificate for the Node's addresses: an IP SAN for each InternalIP and
// ExternalIP, a DNS SAN for each Hostname, InternalDNS and ExternalDNS, in
// the order of addrs without duplicates. It is nil when addrs yields no SAN,
// so that no request is made before the Node lists its addresses.
func ServingTemplate(name string, addrs []corev1.NodeAddress) *x509.CertificateRequest {
	var (
		ips []net.IP
		dns []string
	)
	for _, a := range addrs {
		switch a.Type {
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			ip := net.ParseIP(a.Address)
			if ip == nil {
				continue
			}
			if ip4 := ip.To4(); ip4 != nil {
				ip = ip4
			}
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		case corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			if a.Address != "" && !slices.Contains(dns, a.Address) {
				dns = append(dns, a.Address)
			}
		}
	}
	if len(ips) == 0 && len(dns) == 0 {
		return nil
	}
	return &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: UserPrefix + name, Organization: []string{NodesGroup}},
		DNSNames:    dns,
		IPAddresses: ips,
	}
}

// Config configures a certificate manager.
type Config struct {
	// NodeName is the node's name. Required.
	NodeName string
	// Dir holds the certificate store. Required.
	Dir string
	// Client returns the clientset that creates and watches CSRs; it
	// authenticates as the node. Required.
	Client func() (kubernetes.Interface, error)
	// Logger receives the manager's messages. If nil, they are discarded.
	Logger *slog.Logger
}

func (c Config) check() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("certificate: empty node name"))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("certificate: empty directory"))
	}
	if c.Client == nil {
		errs = append(errs, errors.New("certificate: no client"))
	}
	return errors.Join(errs...)
}

// NewClientManager returns the manager of the node's client certificate,
// read from and stored in cfg.Dir with ClientPairPrefix. The store must
// already hold a pair (the one bootstrapping wrote): the manager only
// renews. Call Start to begin rotating and Stop (or end ctx) to stop.
func NewClientManager(ctx context.Context, cfg Config) (clientcert.Manager, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	store, err := NewStore(cfg.Dir, ClientPairPrefix, cfg.Logger)
	if err != nil {
		return nil, err
	}
	if _, err := store.Current(); err != nil {
		return nil, fmt.Errorf("certificate: no client certificate in %s: %w", cfg.Dir, err)
	}
	return newManager(ctx, cfg, store, clientcert.Config{
		Name:       "kubelet-client",
		Template:   ClientTemplate(cfg.NodeName),
		SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
		Usages:     ClientUsages,
	})
}

// NewServingManager returns the manager of the kubelet's serving
// certificate, stored in cfg.Dir with ServingPairPrefix. addresses returns
// the Node's current status.addresses; until it returns an address, no
// certificate is requested, and when the addresses gain one the certificate
// lacks, a new certificate is requested at once. A valid certificate from a
// previous run is used until then.
func NewServingManager(ctx context.Context, cfg Config, addresses func() []corev1.NodeAddress) (clientcert.Manager, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if addresses == nil {
		return nil, errors.New("certificate: no address source for the serving certificate")
	}
	store, err := NewStore(cfg.Dir, ServingPairPrefix, cfg.Logger)
	if err != nil {
		return nil, err
	}
	name := cfg.NodeName
	return newManager(ctx, cfg, store, clientcert.Config{
		Name:        "kubelet-serving",
		GetTemplate: func() *x509.CertificateRequest { return ServingTemplate(name, addresses()) },
		SignerName:  certificatesv1.KubeletServingSignerName,
		Usages:      ServingUsages,
	})
}

func newManager(ctx context.Context, cfg Config, store clientcert.Store, mc clientcert.Config) (clientcert.Manager, error) {
	client := cfg.Client
	mc.CertificateStore = store
	mc.ClientsetFn = func(*tls.Certificate) (kubernetes.Interface, error) { return client() }
	mctx := klog.NewContext(ctx, klogger(cfg.Logger).WithValues("node", cfg.NodeName))
	mc.Ctx = &mctx
	m, err := clientcert.NewManager(&mc)
	if err != nil {
		return nil, fmt.Errorf("certificate: %s manager: %w", mc.Name, err)
	}
	return m, nil
}

// klogger adapts logger to the logr interface client-go logs through.
func klogger(logger *slog.Logger) logr.Logger {
	if logger == nil {
		return logr.Discard()
	}
	return logr.FromSlogHandler(logger.With("component", "certificate").Handler())
}
