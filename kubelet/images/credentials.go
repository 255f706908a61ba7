package images

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Credential is a login for the registries that Registry matches, as found
// in an image pull secret.
type Credential struct {
	// Registry is the key of the docker config entry: a host[:port],
	// optionally with a scheme ("https://"), a path prefix of the
	// repositories it applies to and "*" wildcards in host labels
	// ("*.example.com"), as Kubernetes accepts them.
	Registry string
	Username string
	Password string
	// Auth is base64("username:password"); used when Username and
	// Password are empty.
	Auth string
	// IdentityToken is an OAuth2 refresh token exchanged for an access
	// token at the registry's token server.
	IdentityToken string
}

// dockerConfigEntry is one registry in a docker config file.
type dockerConfigEntry struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	Auth          string `json:"auth"`
	IdentityToken string `json:"identitytoken"`
}

// CredentialsFromDockerConfigJSON parses the data of an image pull secret:
// a kubernetes.io/dockerconfigjson secret's .dockerconfigjson
// ({"auths": {registry: entry}}) or a legacy kubernetes.io/dockercfg
// secret's .dockercfg ({registry: entry}). The credentials are sorted by
// registry.
func CredentialsFromDockerConfigJSON(data []byte) ([]Credential, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("images: parse docker config: %w", err)
	}
	entries := map[string]dockerConfigEntry{}
	if raw, ok := top["auths"]; ok {
		if err := json.Unmarshal(raw, &entries); err != nil {
			return nil, fmt.Errorf("images: parse docker config: auths: %w", err)
		}
	} else if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("images: parse docker config: %w", err)
	}
	var creds []Credential
	var errs []error
	for reg, e := range entries {
		c := Credential{Registry: reg, Username: e.Username, Password: e.Password, Auth: e.Auth, IdentityToken: e.IdentityToken}
		if _, _, err := c.userPass(); err != nil {
			errs = append(errs, err)
			continue
		}
		creds = append(creds, c)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(creds, func(a, b Credential) int { return strings.Compare(a.Registry, b.Registry) })
	return creds, nil
}

// userPass returns the credential's user name and password, decoding Auth
// when they are not set.
func (c Credential) userPass() (user, pass string, err error) {
	if c.Username != "" || c.Password != "" || c.Auth == "" {
		return c.Username, c.Password, nil
	}
	raw, err := base64.StdEncoding.DecodeString(c.Auth)
	if err != nil {
		return "", "", fmt.Errorf("images: credential for %s: auth is not base64: %w", c.Registry, err)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", fmt.Errorf("images: credential for %s: auth is not base64(user:password)", c.Registry)
	}
	return user, pass, nil
}

func (c Credential) authenticator() (authn.Authenticator, error) {
	user, pass, err := c.userPass()
	if err != nil {
		return nil, err
	}
	return authn.FromConfig(authn.AuthConfig{Username: user, Password: pass, IdentityToken: c.IdentityToken}), nil
}

// matchCredentials returns the credentials whose Registry applies to
// repository repo (without registry) on registry reg, most specific first.
func matchCredentials(creds []Credential, reg, repo string) []Credential {
	type match struct {
		c     Credential
		score int
	}
	var ms []match
	for _, c := range creds {
		if score, ok := credentialMatches(c.Registry, reg, repo); ok {
			ms = append(ms, match{c, score})
		}
	}
	slices.SortStableFunc(ms, func(a, b match) int { return cmp.Compare(b.score, a.score) })
	out := make([]Credential, len(ms))
	for i, m := range ms {
		out[i] = m.c
	}
	return out
}

// credentialMatches reports whether a docker config key applies to
// repo on reg, and how specific the match is.
func credentialMatches(key, reg, repo string) (score int, ok bool) {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	host, prefix, _ := strings.Cut(key, "/")
	prefix = strings.Trim(prefix, "/")
	if prefix == "v1" || prefix == "v2" { // "https://index.docker.io/v1/"
		prefix = ""
	}
	host, reg = canonicalRegistry(strings.ToLower(host)), canonicalRegistry(strings.ToLower(reg))
	keyHost, keyPort, _ := strings.Cut(host, ":")
	regHost, regPort, _ := strings.Cut(reg, ":")
	if keyPort != regPort {
		return 0, false
	}
	kl, rl := strings.Split(keyHost, "."), strings.Split(regHost, ".")
	if len(kl) != len(rl) {
		return 0, false
	}
	exact := true
	for i := range kl {
		if ok, err := path.Match(kl[i], rl[i]); err != nil || !ok {
			return 0, false
		}
		exact = exact && kl[i] == rl[i]
	}
	if prefix != "" && repo != prefix && !strings.HasPrefix(repo, prefix+"/") {
		return 0, false
	}
	score = 2 * len(prefix)
	if exact {
		score++
	}
	return score, true
}

func canonicalRegistry(r string) string {
	switch r {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return dockerHub
	}
	return r
}
