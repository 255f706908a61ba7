package bootstrap

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors; the typed errors below match them with errors.Is.
var (
	// ErrTokenInvalid: the cluster does not accept the bootstrap token
	// (unknown, expired, or a wrong secret).
	ErrTokenInvalid = errors.New("bootstrap: unknown or expired token")
	// ErrCAPinMismatch: the server's CA is not the one the join command
	// pinned.
	ErrCAPinMismatch = errors.New("bootstrap: the CA pin does not match")
	// ErrCertificateExpired: the node's stored client certificate expired
	// and no token was given to join again.
	ErrCertificateExpired = errors.New("bootstrap: the node's client certificate has expired")
)

// rejoinHint says how to get a fresh token and use it.
const rejoinHint = "run `tether token create` on the server and start the agent with the --token it prints"

// TokenError is returned when the cluster does not accept the bootstrap
// token. It matches ErrTokenInvalid.
type TokenError struct {
	// ID is the token's public ID (never the secret).
	ID string
	// Reason says how the token was found invalid.
	Reason string
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("bootstrap: token %s: %s; to join, %s", e.ID, e.Reason, rejoinHint)
}

// Is reports whether target is ErrTokenInvalid.
func (e *TokenError) Is(target error) bool { return target == ErrTokenInvalid }

// PinError is returned when no certificate of the CA bundle in cluster-info
// has a pin given with --ca-cert-hash. It matches ErrCAPinMismatch.
type PinError struct {
	// Server is the URL cluster-info came from.
	Server string
	// Got are the pins of the CA certificates the server published.
	Got []string
	// Want are the pins the node was given.
	Want []string
}

func (e *PinError) Error() string {
	server := e.Server
	if server == "" {
		server = "the server"
	}
	return fmt.Sprintf("bootstrap: the CA pin does not match: %s presents a CA with hash %s, but --ca-cert-hash is %s. "+
		"Either --server does not point at the cluster the join command was made for, or someone is impersonating it; "+
		"nothing was sent to the server. Check --server and copy the command `tether token create` printed again",
		server, strings.Join(e.Got, ", "), strings.Join(e.Want, ", "))
}

// Is reports whether target is ErrCAPinMismatch.
func (e *PinError) Is(target error) bool { return target == ErrCAPinMismatch }

// ExpiredError is returned when the node's stored client certificate has
// expired (the agent was down for longer than the certificate lived) and no
// token was given to join again. It matches ErrCertificateExpired.
type ExpiredError struct {
	Node     string
	NotAfter time.Time
	DataDir  string
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("bootstrap: the client certificate of node %s expired at %s while the agent was down, so the node cannot renew it any more. "+
		"To rejoin, %s: `tether agent --server <url> --token <new token> --ca-cert-hash <hash> --data-dir %s` (the expired credentials there are replaced)",
		e.Node, e.NotAfter.UTC().Format(time.RFC3339), rejoinHint, e.DataDir)
}

// Is reports whether target is ErrCertificateExpired.
func (e *ExpiredError) Is(target error) bool { return target == ErrCertificateExpired }
