//go:build !linux

package images

import (
	"errors"
	"io"
	"log/slog"
)

var errNotLinux = errors.New("images: unpacking layers for overlayfs needs Linux")

func unpack(string, io.Reader, *slog.Logger) error { return errNotLinux }

func syncFS(string) error { return errNotLinux }
