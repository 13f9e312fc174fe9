# Shared by scripts/setup, scripts/test, scripts/demo: find a Go toolchain
# new enough for go.mod. Sourced, not run.

GO_MIN_MINOR=24
# The toolchain fetched from the Go module proxy when the machine has none
# new enough (the same module GOTOOLCHAIN=auto would fetch).
GO_TOOLCHAIN_VERSION=go1.26.8

go_ok() { # go_ok PATH: true if PATH is a go binary >= 1.$GO_MIN_MINOR
  local v
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go1.}; v=${v%%.*}; v=${v%%[!0-9]*}
  [ -n "$v" ] && [ "$v" -ge "$GO_MIN_MINOR" ]
}

find_go() { # prints the path of a usable go, or nothing
  local c modcache
  for c in "$(command -v go 2>/dev/null)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
    [ -n "$c" ] && [ -x "$c" ] && go_ok "$c" && { echo "$c"; return; }
  done
  for modcache in "${GOMODCACHE:-}" "${GOPATH:-$HOME/go}/pkg/mod"; do
    c="$modcache/golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN_VERSION.linux-$(dpkg --print-architecture 2>/dev/null || echo amd64)/bin/go"
    [ -x "$c" ] && go_ok "$c" && { echo "$c"; return; }
  done
}

use_go() { # puts a usable go first on PATH or fails
  local g
  g=$(find_go)
  if [ -z "$g" ]; then
    echo "$(basename "$0"): no Go >= 1.$GO_MIN_MINOR found; run scripts/setup first" >&2
    exit 1
  fi
  PATH="$(dirname "$g"):$PATH"
  export PATH
}
