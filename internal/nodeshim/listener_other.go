//go:build !linux

package nodeshim

import "errors"

// ErrNotSupported: the preload's contract needs Linux's socket options.
var ErrNotSupported = errors.New("nodeshim: not supported on this platform")

// Describe is Linux only.
func Describe(fd int) (Listener, error) { return Listener{}, ErrNotSupported }
