// Package account looks up who the workers run as (sockd run --user):
// names or numbers from the user and group databases (getpwnam(3),
// getgrnam(3)), and checks what that user may reach before anything is
// forked as it.
package account

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// User is who the workers run as (--user): sockd keeps its own
// privileges to bind, reload and upgrade, the workers get these.
type User struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
	Name     string   // for USER and LOGNAME
	Home     string   // for HOME
}

// Lookup reads "USER[:GROUP]" (names or numbers) from the user and
// group databases. GROUP defaults to the user's primary group; the
// supplementary groups are the user's.
//
// Numbers need no database: "65534:65534" works in an image with no
// /etc/passwd (FROM scratch), with HOME=/ and no supplementary groups.
func Lookup(spec string) (*User, error) {
	name, group, _ := strings.Cut(spec, ":")
	out, err := lookupName(name)
	if err != nil {
		return nil, err
	}
	if group != "" {
		gid, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		out.GID = gid
	}
	return out, nil
}

func lookupName(name string) (*User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		u, err = user.LookupId(name)
	}
	if err != nil {
		if uid, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
			return &User{UID: uint32(uid), GID: uint32(uid), Name: name, Home: "/"}, nil
		}
		return nil, fmt.Errorf("user %q: no such user", name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %q: uid %q, gid %q are not numbers", name, u.Uid, u.Gid)
	}
	out := &User{UID: uint32(uid), GID: uint32(gid), Name: u.Username, Home: u.HomeDir}
	ids, _ := u.GroupIds()
	for _, id := range ids {
		if n, err := strconv.ParseUint(id, 10, 32); err == nil && uint32(n) != out.GID {
			out.Groups = append(out.Groups, uint32(n))
		}
	}
	return out, nil
}

func lookupGroup(group string) (uint32, error) {
	g, err := user.LookupGroup(group)
	if err != nil {
		g, err = user.LookupGroupId(group)
	}
	if err != nil {
		if gid, nerr := strconv.ParseUint(group, 10, 32); nerr == nil {
			return uint32(gid), nil
		}
		return 0, fmt.Errorf("group %q: no such group", group)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q: gid %q is not a number", group, g.Gid)
	}
	return uint32(gid), nil
}

// Credential is what a fork changes to.
func (u *User) Credential() *syscall.Credential {
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: append([]uint32{}, u.Groups...)}
}

// Env is USER, LOGNAME and HOME for u.
func (u *User) Env() []string {
	return []string{"USER=" + u.Name, "LOGNAME=" + u.Name, "HOME=" + u.Home}
}

// CanExecute checks that u may run the program at path: search permission
// on every directory on the way, and execute permission on the file, by
// the mode bits that apply to u (owner, group, other), before anything is
// forked as u.
func (u *User) CanExecute(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		if err := u.may(dir, 1); err != nil {
			return fmt.Errorf("worker command %s: user %s cannot reach it: %w", path, u.Name, err)
		}
		if dir == "/" {
			break
		}
	}
	if err := u.may(abs, 1); err != nil {
		return fmt.Errorf("worker command %s: user %s cannot execute it: %w", path, u.Name, err)
	}
	return nil
}

// CanReach checks that u may search every directory of dir's path, and
// dir itself.
func (u *User) CanReach(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		if err := u.may(d, 1); err != nil {
			return fmt.Errorf("user %s cannot reach %s: %w", u.Name, dir, err)
		}
		if d == "/" {
			return nil
		}
	}
}

// may checks one permission bit (1: execute/search) on path for u.
func (u *User) may(path string, bit os.FileMode) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	mode := fi.Mode().Perm()
	switch {
	case u.UID == 0:
		if mode&0o111 != 0 || fi.IsDir() {
			return nil
		}
	case st.Uid == u.UID:
		if mode&(bit<<6) != 0 {
			return nil
		}
	case st.Gid == u.GID || containsGID(u.Groups, st.Gid):
		if mode&(bit<<3) != 0 {
			return nil
		}
	default:
		if mode&bit != 0 {
			return nil
		}
	}
	return fmt.Errorf("%s is %s, owner %d, group %d", path, mode, st.Uid, st.Gid)
}

func containsGID(gs []uint32, g uint32) bool {
	for _, x := range gs {
		if x == g {
			return true
		}
	}
	return false
}
