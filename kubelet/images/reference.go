package images

import (
	"fmt"
	"net"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// dockerHub is how references name Docker Hub; go-containerregistry calls
// it index.docker.io.
const dockerHub = "docker.io"

// Normalize returns ref in the form Kubernetes shows it: with the
// registry, "library/" for Docker Hub's official images and ":latest" if
// neither tag nor digest is given ("busybox" is
// "docker.io/library/busybox:latest"). A reference with both a tag and a
// digest keeps only the digest ("repo@sha256:…"), which is what is pulled.
func Normalize(ref string) (string, error) {
	r, err := parse(ref)
	if err != nil {
		return "", err
	}
	return normalized(r), nil
}

func parse(ref string, opts ...name.Option) (name.Reference, error) {
	if ref == "" {
		return nil, fmt.Errorf("images: empty image reference")
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("images: invalid image reference %q: %w", ref, err)
	}
	return r, nil
}

func normalized(r name.Reference) string {
	repo := repoName(r.Context())
	switch r := r.(type) {
	case name.Digest:
		return repo + "@" + r.DigestStr()
	case name.Tag:
		return repo + ":" + r.TagStr()
	}
	return r.Name()
}

// repoName is the repository with the registry as Kubernetes writes it.
func repoName(repo name.Repository) string {
	return registryName(repo.RegistryStr()) + "/" + repo.RepositoryStr()
}

func registryName(reg string) string {
	if reg == name.DefaultRegistry {
		return dockerHub
	}
	return reg
}

// allowHTTP reports whether the registry at host (host[:port]) may be
// reached over plain HTTP: loopback registries always, others only when
// listed in Config.InsecureRegistries.
func (s *Store) allowHTTP(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	if ip != nil && ip.IsLoopback() {
		return true
	}
	for _, r := range s.insecure {
		switch {
		case r == hostport || r == host:
			return true
		case isCIDR(r) && ip != nil:
			_, n, _ := net.ParseCIDR(r)
			if n.Contains(ip) {
				return true
			}
		}
	}
	return false
}

func isCIDR(s string) bool {
	_, _, err := net.ParseCIDR(s)
	return err == nil
}
