//go:build !linux

package volume

import (
	"errors"
	"testing"
)

type statfs struct{ size int64 }

func statFS(path string, out *statfs) error { return errors.ErrUnsupported }

func makeSocket(t *testing.T, path string) error { return errors.ErrUnsupported }

func tmpfsAvailable(t *testing.T) error { return errors.New("tmpfs needs Linux") }
