// Package authz decides whether an authenticated request may proceed. The
// authorizer is a union: the first that allows wins, and a request that
// nothing allows is refused with 403 by the handler chain.
//
// Today members of system:masters may do everything and anyone may read the
// public health and version paths; RBAC and the Node authorizer join the
// union later.
package authz

import (
	"fmt"

	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/authorization/path"
	"k8s.io/apiserver/pkg/authorization/union"
)

// MastersGroup may do everything.
const MastersGroup = "system:masters"

// Config lists the authorizers beyond the built-in ones.
type Config struct {
	// PublicPaths may be read by anyone, including anonymous users.
	PublicPaths []string
	// Extra authorizers are consulted after the built-in ones, in order.
	Extra []authorizer.Authorizer
}

// New returns the authorizer for cfg.
func New(cfg Config) (authorizer.Authorizer, error) {
	pub, err := path.NewAuthorizer(cfg.PublicPaths)
	if err != nil {
		return nil, fmt.Errorf("authz: public paths: %w", err)
	}
	chain := []union.NamedAuthorizer{
		{AuthorizerName: "privileged", Authorizer: authorizerfactory.NewPrivilegedGroups(MastersGroup)},
		{AuthorizerName: "public-paths", Authorizer: pub},
	}
	for i, a := range cfg.Extra {
		chain = append(chain, union.NamedAuthorizer{AuthorizerName: fmt.Sprintf("extra-%d", i), Authorizer: a})
	}
	return union.New(chain...)
}
