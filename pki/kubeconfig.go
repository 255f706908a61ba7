package pki

import (
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeconfigName is the cluster and context name in kubeconfig files.
const kubeconfigName = "tether"

// WriteKubeconfig writes a kubeconfig file to path (mode 0600, atomically)
// with one cluster and one context, both named "tether", the context
// current. The CA certificate, client certificate and client key are
// embedded as data; user names the credentials entry.
func WriteKubeconfig(path, serverURL string, caPEM, certPEM, keyPEM []byte, user string) error {
	var errs []error
	if serverURL == "" {
		errs = append(errs, errors.New("empty server URL"))
	}
	if user == "" {
		errs = append(errs, errors.New("empty user name"))
	}
	if len(caPEM) == 0 {
		errs = append(errs, errors.New("empty CA certificate"))
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		errs = append(errs, errors.New("empty client certificate or key"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pki: write kubeconfig %s: %w", path, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[kubeconfigName] = &clientcmdapi.Cluster{
		Server:                   serverURL,
		CertificateAuthorityData: caPEM,
	}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{
		ClientCertificateData: certPEM,
		ClientKeyData:         keyPEM,
	}
	cfg.Contexts[kubeconfigName] = &clientcmdapi.Context{
		Cluster:  kubeconfigName,
		AuthInfo: user,
	}
	cfg.CurrentContext = kubeconfigName
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("pki: write kubeconfig %s: %w", path, err)
	}
	return WriteFile(path, data)
}

// ClientConfig returns a client-go configuration for serverURL that trusts
// caPEM and authenticates with the client certificate certPEM and key
// keyPEM. The slices are used, not copied.
func ClientConfig(serverURL string, caPEM, certPEM, keyPEM []byte) *rest.Config {
	return &rest.Config{
		Host: serverURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   caPEM,
			CertData: certPEM,
			KeyData:  keyPEM,
		},
	}
}
