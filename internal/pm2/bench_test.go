package pm2

import (
	"context"
	"testing"
)

// BenchmarkLoad: what reading an ecosystem file costs at start and on
// every reload. The .js file is dominated by starting node.
//
//	go test -run XXX -bench Load -benchtime 20x ./internal/pm2/
func BenchmarkLoadJS(b *testing.B)   { benchLoad(b, "apps/docs.config.js") }
func BenchmarkLoadJSON(b *testing.B) { benchLoad(b, "apps/docs.json") }

func benchLoad(b *testing.B, file string) {
	env, _ := testEnv(b)
	o := Options{Path: testdata(b, file), Environ: env, EnvName: "production"}
	for b.Loop() {
		f, err := Load(context.Background(), o)
		if err != nil {
			b.Fatal(err)
		}
		a, err := f.App("api")
		if err != nil {
			b.Fatal(err)
		}
		_ = a.Settings()
	}
}
