package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// value reads one setting's text into its typed field. Set checks
// everything the setting alone can check and says what it wants.
type value interface {
	Set(s string) error
	String() string
}

// typed is a value of type T read by parse and printed by show.
type typed[T any] struct {
	p     *T
	parse func(string) (T, error)
	show  func(T) string
}

func (v typed[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.p = x
	return nil
}

func (v typed[T]) String() string { return v.show(*v.p) }

// boolValue is a flag without an argument (--reuseport), or =true/false.
type boolValue struct{ p *bool }

func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	*v.p = b
	return nil
}

func (v boolValue) String() string { return strconv.FormatBool(*v.p) }

// listValue is a repeatable setting; its variable holds space-separated
// values.
type listValue struct {
	p     *[]string
	check func(string) error
}

func (v listValue) Set(s string) error {
	if v.check != nil {
		if err := v.check(s); err != nil {
			return err
		}
	}
	*v.p = append(*v.p, s)
	return nil
}

func (v listValue) String() string { return strings.Join(*v.p, " ") }

func intIn(lo, hi int64, what string) func(string) (int64, error) {
	return func(s string) (int64, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("want %s", what)
		}
		return n, nil
	}
}

func showInt(n int64) string { return strconv.FormatInt(n, 10) }

// duration reads a Go duration (500ms, 30s, 2m) of at least min.
func duration(min time.Duration) func(string) (time.Duration, error) {
	return func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			return 0, fmt.Errorf("want a duration like 500ms, 30s or 2m")
		case d < min && min > 0:
			return 0, fmt.Errorf("must be positive")
		case d < min:
			return 0, fmt.Errorf("must not be negative")
		}
		return d, nil
	}
}

func showDuration(d time.Duration) string { return d.String() }

func oneOf(values ...string) func(string) (string, error) {
	return func(s string) (string, error) {
		for _, v := range values {
			if s == v {
				return s, nil
			}
		}
		return "", fmt.Errorf("want %s", orList(values))
	}
}

func orList(values []string) string {
	if len(values) == 1 {
		return values[0]
	}
	return strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
}

func showString(s string) string { return s }

// ParseSize reads a size in bytes: "1048576", "512K", "512M", "2G" (also
// KiB, MiB, GiB; powers of 1024).
func ParseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want bytes, or a number with K, M, G or T (powers of 1024), like 512M", s)
	}
	return n * mult, nil
}

// positiveSize is ParseSize, more than 0.
func positiveSize(s string) (int64, error) {
	n, err := ParseSize(s)
	if err == nil && n == 0 {
		err = fmt.Errorf("want more than 0, a size like 512M")
	}
	return n, err
}

func showSize(n int64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}
