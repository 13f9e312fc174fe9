package pm2

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/sockd/sockd/internal/reaper"
)

// helperEnv makes the test binary, re-executed, a helper: a process that
// is a child subreaper with sockd's reaper running, as sockd is.
const helperEnv = "PM2_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "reaper" {
		os.Exit(reaperHelper())
	}
	os.Exit(m.Run())
}

// reaperHelper loads the files named in its arguments with a running
// reaper and prints each outcome on a line.
func reaperHelper() int {
	r, err := reaper.New()
	if err != nil {
		fmt.Println("reaper:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	for _, path := range os.Args[1:] {
		f, err := Load(ctx, Options{Path: path, Reaper: r})
		if err == nil {
			_, err = f.App("")
		}
		fmt.Println(path, err)
	}
	return 0
}
