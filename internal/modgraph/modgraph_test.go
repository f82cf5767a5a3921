package modgraph_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactlyhq/exactly/internal/services"
)

const module = "github.com/exactlyhq/exactly"

// libraryPackages are the packages a program imports to use the library.
var libraryPackages = []string{"consumer", "outbox", "idempotency", "inbox", "migrate", "console"}

// heavyModules must not be in the module graph of a program that imports
// the library: the application's choice of metrics and tracing backend,
// and test-only tools.
var heavyModules = []string{
	"github.com/prometheus/client_golang",
	"go.opentelemetry.io/otel/sdk", // and sdk/metric, sdk/trace
	"go.opentelemetry.io/otel/exporters/prometheus",
	"go.opentelemetry.io/otel/exporters/otlp", // otlptrace/otlptracehttp and the others
	// The console's browser test drives Chromium with chromedp: it lives
	// in the examples module, and so does chromedp.
	"github.com/chromedp/chromedp",
	"github.com/chromedp/cdproto",
}

// goCmd runs the go command in dir, without the network: everything it
// needs is in the module cache once the library builds.
func goCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return string(out)
}

// TestTransportFreeInbox: inbox and idempotency know tokens, not Kafka. The
// Kafka token sources live in consumer.
func TestTransportFreeInbox(t *testing.T) {
	t.Parallel()
	root := services.RepoRoot(t)
	deps := goCmd(t, root, "list", "-deps", "./idempotency", "./inbox")
	for _, p := range strings.Fields(deps) {
		if p == "github.com/segmentio/kafka-go" || strings.HasPrefix(p, "github.com/segmentio/kafka-go/") {
			t.Errorf("inbox or idempotency depends on %s", p)
		}
	}
}

// TestLeanModuleGraph builds the module graph of a program that imports
// every library package, as a user's go.mod would see it, and fails if a
// metrics or tracing backend is in it. Go prunes module graphs to what the
// library's go.mod requires, tests included: a library test that used the
// SDK would put it in every user's graph, which is why the library's own
// metric tests use internal/metrictest.
func TestLeanModuleGraph(t *testing.T) {
	t.Parallel()
	root := services.RepoRoot(t)
	dir := t.TempDir()
	gomod := "module example.com/program\n\ngo 1.26.0\n\nrequire " + module + " v0.0.0-00010101000000-000000000000\n\nreplace " + module + " => " + root + "\n"
	var main strings.Builder
	main.WriteString("package main\n\nimport (\n")
	for _, p := range libraryPackages {
		main.WriteString("\t_ \"" + module + "/" + p + "\"\n")
	}
	main.WriteString(")\n\nfunc main() {}\n")
	// The library's go.sum holds every checksum the program needs, so no
	// checksum database is asked.
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"go.mod": gomod, "main.go": main.String(), "go.sum": string(sum)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mods := strings.Split(strings.TrimSpace(goCmd(t, dir, "list", "-m", "-f", "{{.Path}}", "all")), "\n")
	if len(mods) < 3 {
		t.Fatalf("module graph %q: too small to be the program's", mods)
	}
	for _, m := range mods {
		for _, heavy := range heavyModules {
			if m == heavy || strings.HasPrefix(m, heavy+"/") {
				t.Errorf("the module graph of a program importing %v has %s (go mod why -m %s in the library tells who needs it)", libraryPackages, m, m)
			}
		}
	}
	t.Logf("%d modules in the program's graph", len(mods))
}
