// Package version holds tether's own version, set at link time by the
// Makefile (-ldflags "-X tether/internal/version.Version=…").
package version

// Version is tether's release; "dev" in builds without a release.
var Version = "dev"
