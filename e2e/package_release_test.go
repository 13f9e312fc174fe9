package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
)

// debFiles are the files of the .deb, every one of them.
var debFiles = []string{
	"/etc/sockd/example.env",
	"/usr/bin/sockd",
	"/usr/lib/systemd/system/sockd.service",
	"/usr/lib/systemd/system/sockd.socket",
	"/usr/lib/systemd/system/sockd@.service",
	"/usr/lib/systemd/system/sockd@.socket",
	"/usr/share/bash-completion/completions/sockd",
	"/usr/share/doc/sockd/README.md.gz",
	"/usr/share/doc/sockd/changelog.Debian.gz",
	"/usr/share/doc/sockd/copyright",
	"/usr/share/doc/sockd/reference.md.gz",
	"/usr/share/doc/sockd/systemd.md.gz",
	"/usr/share/lintian/overrides/sockd",
	"/usr/share/man/man8/sockd.8.gz",
	"/usr/share/zsh/vendor-completions/_sockd",
}

// TestReleaseArtifacts runs scripts/package as a release would (both
// architectures, every format, lintian on: it fails the build on any
// error, warning or info tag not overridden) and checks what it made: the
// packages' fields, files, conffile and units; that every copy of sockd
// (.deb, tarball, OCI image) is the same static binary for its
// architecture, built with the flags the release wants; that the tarball
// installs with its scripts/install; the images' configuration.
func TestReleaseArtifacts(t *testing.T) {
	needTools(t, "lintian", "podman", "dpkg-deb")
	if os.Geteuid() != 0 {
		t.Skip("package test: SKIPPING: podman builds the images as root here; run as root")
	}
	out := t.TempDir()
	log := buildPackages(t, out, []string{"--version", "0.1.0"})
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			deb := filepath.Join(out, debName("0.1.0", arch))
			if !strings.Contains(log, "lintian: "+deb+" is clean") {
				t.Errorf("scripts/package did not report lintian clean for %s", deb)
			}
			bin := checkDeb(t, deb, arch)
			checkBinary(t, bin, arch)
			sum := sha256.Sum256(bin)
			if tb := checkTarball(t, filepath.Join(out, "sockd-0.1.0-linux-"+arch+".tar.gz"), arch); sha256.Sum256(tb) != sum {
				t.Errorf("the tarball's sockd differs from the .deb's")
			}
			if img := checkImage(t, filepath.Join(out, "sockd-0.1.0-linux-"+arch+".oci.tar"), arch); sha256.Sum256(img) != sum {
				t.Errorf("the image's /sockd differs from the .deb's")
			}
		})
	}
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %q: %v", name, args, err)
	}
	return string(out)
}

// checkDeb checks one .deb and returns its /usr/bin/sockd.
func checkDeb(t *testing.T, deb, arch string) []byte {
	t.Helper()
	fields := output(t, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Section", "Priority")
	if want := fmt.Sprintf("Package: sockd\nVersion: 0.1.0-1\nArchitecture: %s\nSection: admin\nPriority: optional\n", arch); fields != want {
		t.Errorf("%s: control fields\n%s\nwant\n%s", deb, fields, want)
	}
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(output(t, "dpkg-deb", "-c", deb)), "\n") {
		f := strings.Fields(line)
		if strings.HasPrefix(f[0], "-") {
			files = append(files, strings.TrimPrefix(f[len(f)-1], "."))
		}
	}
	sort.Strings(files)
	if !slices.Equal(files, debFiles) {
		t.Errorf("%s holds\n%q\nwant\n%q", deb, files, debFiles)
	}
	dir := t.TempDir()
	output(t, "dpkg-deb", "-R", deb, dir) // the files and DEBIAN/ (control, conffiles, scripts)
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if c := read("DEBIAN/conffiles"); c != "/etc/sockd/example.env\n" {
		t.Errorf("conffiles: %q", c)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if fi, err := os.Stat(filepath.Join(dir, "DEBIAN", s)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("maintainer script %s: %v", s, err)
		}
	}
	for _, u := range []string{"sockd.service", "sockd@.service"} {
		unit := read("usr/lib/systemd/system/" + u)
		for _, want := range []string{"\nExecStart=/usr/bin/sockd run\n", "\nExecReload=/usr/bin/sockd reload --wait --update-env\n", "\nDocumentation=man:sockd(8)\n"} {
			if !strings.Contains(unit, want) {
				t.Errorf("%s lacks %q", u, strings.TrimSpace(want))
			}
		}
		if strings.Contains(unit, "/usr/local/bin/sockd") {
			t.Errorf("%s still names /usr/local/bin/sockd", u)
		}
	}
	if cl := gunzip(t, filepath.Join(dir, "usr/share/doc/sockd/changelog.Debian.gz")); !strings.HasPrefix(cl, "sockd (0.1.0-1) ") {
		t.Errorf("changelog.Debian starts %q", strings.SplitN(cl, "\n", 2)[0])
	}
	bin, err := os.ReadFile(filepath.Join(dir, "usr/bin/sockd"))
	if err != nil {
		t.Fatal(err)
	}
	// copyright: the machine-readable format, a paragraph for every module
	// linked into the binary.
	cr := read("usr/share/doc/sockd/copyright")
	if !strings.HasPrefix(cr, "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n") {
		t.Errorf("copyright is not in the machine-readable format: %q", strings.SplitN(cr, "\n", 2)[0])
	}
	if bi, err := buildinfo.Read(bytes.NewReader(bin)); err == nil {
		for _, d := range bi.Deps {
			if !strings.Contains(cr, "\nFiles: vendor/"+d.Path+"/*\n") {
				t.Errorf("copyright has no paragraph for %s, linked into sockd", d.Path)
			}
		}
	}
	// The man page renders without a groff warning.
	man := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", filepath.Join(dir, "usr/share/man/man8/sockd.8.gz"))
	var stderr bytes.Buffer
	man.Stdout, man.Stderr = io.Discard, &stderr
	if err := man.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("man --warnings sockd.8: %v %s", err, stderr.String())
	}
	return bin
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkBinary: a static ELF for arch, built as scripts/package promises.
func checkBinary(t *testing.T, bin []byte, arch string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("sockd is not ELF: %v", err)
	}
	if want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]; f.Machine != want {
		t.Errorf("sockd for %s is built for %v", arch, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("sockd for %s is not static: it has a %v program header", arch, p.Type)
		}
	}
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("sockd's build information: %v", err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["GOARCH"] != arch || settings["-trimpath"] != "true" {
		t.Errorf("sockd for %s was built with %v, want CGO_ENABLED=0, -trimpath", arch, settings)
	}
	// -ldflags "-s -w -X main.version=0.1.0" (-trimpath keeps -ldflags out
	// of the build information): no symbol table, no DWARF, the version.
	for _, s := range f.Sections {
		if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			t.Errorf("sockd for %s has a %s section (not built with -s -w)", arch, s.Name)
		}
	}
	if arch == runtime.GOARCH {
		p := filepath.Join(t.TempDir(), "sockd")
		if err := os.WriteFile(p, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if v := output(t, p, "version"); v != "sockd 0.1.0\n" {
			t.Errorf("sockd version says %q, want sockd 0.1.0", v)
		}
	} else if !bytes.Contains(bin, []byte("0.1.0")) {
		t.Errorf("sockd for %s does not contain its version 0.1.0", arch)
	}
}

// untar reads a tar stream's regular files (name → content, mode).
func untar(t *testing.T, r io.Reader) (map[string][]byte, map[string]os.FileMode) {
	t.Helper()
	files, modes := map[string][]byte{}, map[string]os.FileMode{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, modes
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name], modes[h.Name] = b, os.FileMode(h.Mode).Perm()
		}
	}
}

// checkTarball checks the tarball's files and, for this machine's
// architecture, installs from it; it returns its sockd.
func checkTarball(t *testing.T, path, arch string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	files, modes := untar(t, z)
	top := "sockd-0.1.0-linux-" + arch + "/"
	var names []string
	for n := range files {
		names = append(names, strings.TrimPrefix(n, top))
	}
	sort.Strings(names)
	want := []string{"INSTALL", "README.md", "completions/_sockd", "completions/sockd.bash", "docs/reference.md", "docs/systemd.md", "man/sockd.8",
		"scripts/install", "scripts/uninstall", "sockd", "units/example.env", "units/sockd.service", "units/sockd.socket",
		"units/sockd@.service", "units/sockd@.socket"}
	if _, err := os.Stat(filepath.Join(RepoRoot(t), "LICENSE")); err == nil {
		want = append(want, "LICENSE")
		sort.Strings(want)
	}
	if !slices.Equal(names, want) {
		t.Errorf("%s holds %q, want %q", path, names, want)
	}
	if modes[top+"sockd"] != 0o755 || modes[top+"scripts/install"] != 0o755 {
		t.Errorf("%s: sockd %v, scripts/install %v, want both executable", path, modes[top+"sockd"], modes[top+"scripts/install"])
	}
	if arch == runtime.GOARCH { // INSTALL's way, into a staging root
		dir := t.TempDir()
		for n, b := range files {
			p := filepath.Join(dir, n)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, b, modes[n]); err != nil {
				t.Fatal(err)
			}
		}
		root := filepath.Join(dir, "root")
		cmd := exec.Command(filepath.Join(dir, top, "scripts/install"), "--root", root, "--binary", filepath.Join(dir, top, "sockd"), "--no-enable")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "done: sockd 0.1.0") {
			t.Errorf("scripts/install from the tarball: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(filepath.Join(root, "usr/local/bin/sockd")); err != nil || !bytes.Equal(b, files[top+"sockd"]) {
			t.Errorf("scripts/install from the tarball did not install its sockd: %v", err)
		}
	}
	return files[top+"sockd"]
}

// checkImage checks an OCI archive (podman save --format oci-archive): one
// image for arch whose one layer holds /sockd alone, run as the entrypoint.
// It returns that /sockd.
func checkImage(t *testing.T, path, arch string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, _ := untar(t, f)
	blob := func(digest string) []byte {
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
		if !ok {
			t.Fatalf("%s: no blob %s", path, digest)
		}
		return b
	}
	type desc struct{ MediaType, Digest string }
	var index struct{ Manifests []desc }
	var manifest struct {
		Config desc
		Layers []desc
	}
	var config struct {
		Architecture, OS string
		Config           struct {
			Entrypoint []string
			Labels     map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("%s: index.json: %v %s", path, err, files["index.json"])
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("%s: manifest: %v, %d layers, want 1", path, err, len(manifest.Layers))
	}
	if err := json.Unmarshal(blob(manifest.Config.Digest), &config); err != nil {
		t.Fatal(err)
	}
	if config.Architecture != arch || config.OS != "linux" || len(config.Config.Entrypoint) < 2 ||
		config.Config.Entrypoint[0] != "/sockd" || config.Config.Entrypoint[1] != "run" ||
		config.Config.Labels["org.opencontainers.image.version"] != "0.1.0" {
		t.Errorf("%s: image configuration %+v", path, config)
	}
	var layer io.Reader = bytes.NewReader(blob(manifest.Layers[0].Digest))
	if strings.HasSuffix(manifest.Layers[0].MediaType, "+gzip") {
		if layer, err = gzip.NewReader(layer); err != nil {
			t.Fatal(err)
		}
	}
	lf, modes := untar(t, layer)
	if len(lf) != 1 || modes["sockd"] != 0o755 {
		t.Errorf("%s: the layer holds %d files (modes %v), want sockd alone, mode 0755", path, len(lf), modes)
	}
	return lf["sockd"]
}

// TestManPageFlags: `sockd man` and its completions are generated from the
// flag definitions --help prints, and the README's reference lists the
// same flags: every set the same, every flag's argument the same.
func TestManPageFlags(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux")
	}
	sockd := filepath.Join(t.TempDir(), "sockd")
	build := exec.Command("go", "build", "-o", sockd, "./cmd/sockd")
	build.Dir, build.Env = RepoRoot(t), append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	man := output(t, sockd, "man")
	bash := output(t, sockd, "man", "bash")
	// The commands sockd help lists, every one with flags.
	var commands []string
	for _, line := range strings.Split(output(t, sockd, "help"), "\n") {
		// "  sockd COMMAND …": the usage lines, not the prose above them.
		if f := strings.Fields(line); strings.HasPrefix(line, "  sockd ") && len(f) > 1 && !slices.Contains(commands, f[1]) {
			commands = append(commands, f[1])
		}
	}
	for _, cmd := range commands {
		if cmd == "version" || cmd == "help" || cmd == "man" {
			continue
		}
		help := helpFlags(output(t, sockd, cmd, "--help"))
		if got := manFlags(t, man, cmd); !mapsEqual(got, help) {
			t.Errorf("sockd %s: the man page has the flags %v, --help %v", cmd, got, help)
		}
		var want []string
		for _, f := range sortedKeys(help) {
			want = append(want, "--"+f)
		}
		if got := bashComplete(t, bash, "sockd", cmd, "--"); !slices.Equal(got, want) {
			t.Errorf("bash completes sockd %s -- to %q, want %q", cmd, got, want)
		}
	}
	slices.Sort(commands)
	if got, want := bashComplete(t, bash, "sockd", ""), commands; !slices.Equal(got, want) {
		t.Errorf("bash completes sockd's commands to %q, want %q", got, want)
	}
	// The README's reference (or docs/) lists exactly the flags of sockd run.
	documented := map[string]bool{}
	docs, _ := filepath.Glob(filepath.Join(RepoRoot(t), "docs", "*.md"))
	for _, f := range append(docs, filepath.Join(RepoRoot(t), "README.md")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)").FindAllStringSubmatch(string(b), -1) {
			documented[m[1]] = true
		}
	}
	if want := sortedKeys(helpFlags(output(t, sockd, "run", "--help"))); !slices.Equal(sortedKeys(documented), want) {
		t.Errorf("the flag tables of README.md and docs/ list %q, sockd run --help %q", sortedKeys(documented), want)
	}
	if _, err := exec.LookPath("zsh"); err == nil {
		zsh := exec.Command("zsh", "-n")
		zsh.Stdin = strings.NewReader(output(t, sockd, "man", "zsh"))
		if out, err := zsh.CombinedOutput(); err != nil {
			t.Errorf("zsh -n of the zsh completion: %v\n%s", err, out)
		}
	} else if os.Getenv(RequireEnv) == "1" {
		t.Error("zsh is not installed (scripts/setup installs it)")
	}
}

// helpFlags reads flag.PrintDefaults output: flag name → argument name.
func helpFlags(help string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(help, "\n") {
		if strings.HasPrefix(line, "  -") {
			name, arg, _ := strings.Cut(strings.SplitN(strings.TrimLeft(line, " -"), "\t", 2)[0], " ")
			m[name] = arg
		}
	}
	return m
}

// manFlags reads the man page's flags of cmd (OPTIONS for run, the
// command's subsection for the others): name → argument.
func manFlags(t *testing.T, man, cmd string) map[string]string {
	t.Helper()
	unescape := strings.NewReplacer(`\-`, "-", `\[u00B1]`, "±", `\(dq`, `"`)
	var section string
	if cmd == "run" {
		_, section, _ = strings.Cut(man, "\n.SH OPTIONS\n")
	} else {
		_, section, _ = strings.Cut(man, "\n.SS sockd "+cmd+" ")
		_, section, _ = strings.Cut(section, "\n")
	}
	section, _, _ = strings.Cut(section, "\n.S")
	m := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if rest, ok := strings.CutPrefix(line, `.B \-\-`); ok {
			m[unescape.Replace(rest)] = ""
		} else if rest, ok := strings.CutPrefix(line, `.BI \-\-`); ok {
			name, arg, _ := strings.Cut(rest, ` " `)
			m[unescape.Replace(name)] = unescape.Replace(strings.TrimSuffix(arg, `"`))
		}
	}
	if len(m) == 0 {
		t.Errorf("the man page has no flags of sockd %s", cmd)
	}
	return m
}

// bashComplete sources the completion and completes the last of words.
func bashComplete(t *testing.T, script string, words ...string) []string {
	t.Helper()
	cmd := exec.Command("bash", "-c", `source /dev/stdin; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _sockd; printf '%s\n' "${COMPREPLY[@]}"`, "bash")
	cmd.Args = append(cmd.Args, words...)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash completion of %q: %v", words, err)
	}
	got := strings.Fields(string(out))
	sort.Strings(got)
	return got
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
