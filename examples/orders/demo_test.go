package orders_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exactlyhq/exactly/internal/pgtest"
)

// TestDemo builds every program of the example and runs the demo for 15s on
// its own schema, topics and API port: orders flow while workers and the
// relay are SIGKILLed, and verify must find no duplicate and no lost order.
//
// It does not call t.Parallel: it starts and kills processes and loads the
// machine.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline for about 40s")
	}
	bin := t.TempDir()
	build := []string{"build", "-o", bin + string(os.PathSeparator)}
	if raceEnabled {
		build = append(build, "-race")
	}
	out, err := exec.Command("go", append(build, "./cmd/...")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	suffix := pgtest.RandomSuffix()
	env := append(os.Environ(), "SHOP_SCHEMA=demo_test_"+suffix, "SHOP_TOPIC_PREFIX=demo-test-"+suffix+".")
	t.Cleanup(func() {
		cmd := exec.Command(filepath.Join(bin, "reset"))
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("reset: %v\n%s", err, out)
		}
	})

	logs := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "demo"),
		"-duration", "15s", "-bin", bin, "-addr", freeAddr(t), "-console", freeAddr(t), "-logs", logs, "-rate", "50",
		"-kill-min", "2s", "-kill-max", "3s", "-drain-timeout", "60s")
	cmd.Env = env
	// On timeout, interrupt the demo so that it stops its children; if the
	// test binary dies, the demo dies with it (and its children with it).
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if testing.Verbose() {
		cmd.Stdout = io.MultiWriter(&output, os.Stdout)
		cmd.Stderr = cmd.Stdout
	}
	start := time.Now()
	err = cmd.Run()
	t.Logf("demo ran %s", time.Since(start).Round(time.Second))
	text := output.String()
	if err != nil {
		t.Errorf("demo: %v", err)
	}
	for _, re := range []string{
		`(?m)^demo: console on http://127\.0\.0\.1:\d+/`,
		`(?m)^\s*duplicates applied\s+0\s`,
		`(?m)^\s*lost\s+0\s`,
		`(?m)^RESULT: OK`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("demo output does not match %s", re)
		}
	}
	// Kills come every 2-3s, each kind in turn, a second apart from the
	// restart: within 15s each kind dies at least once.
	if m := regexp.MustCompile(`(?m)^\s*kills\s+\d+\s+SIGKILL: (.*)$`).FindStringSubmatch(text); m == nil {
		t.Errorf("demo output reports no kills")
	} else {
		for _, kind := range []string{"payments-worker", "shipping-worker", "relay"} {
			if !regexp.MustCompile(`\b` + kind + ` ×[1-9]`).MatchString(m[1]) {
				t.Errorf("demo did not kill the %s in 15s (kills: %s)", kind, m[1])
			}
		}
	}
	if m := regexp.MustCompile(`(?m)^\s*orders\s+(\d+)`).FindStringSubmatch(text); m == nil {
		t.Errorf("demo output reports no order count")
	} else if n, _ := strconv.Atoi(m[1]); n < 100 {
		t.Errorf("only %d orders in 15s", n)
	}
	// A program that died by itself, failed to stop cleanly or raced is a
	// bug even when the numbers add up.
	for _, bad := range []string{"exited by itself", "stopped with", "did not stop within", "WARNING: DATA RACE"} {
		if strings.Contains(text, bad) {
			t.Errorf("demo output reports %q", bad)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(logs, "*.log")); len(files) == 0 {
		t.Errorf("no logs in %s", logs)
	} else {
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
				t.Errorf("%s reports a data race", filepath.Base(f))
			}
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", text)
		dumpLogs(t, logs)
	}
	// The demo must leave no program behind.
	if left := running(bin); len(left) > 0 {
		t.Errorf("programs still running after the demo: %v", left)
	}
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// running lists processes whose executable is in dir.
func running(dir string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if exe, err := os.Readlink(p); err == nil && filepath.Dir(exe) == dir {
			out = append(out, filepath.Base(exe)+" (pid "+strings.Split(p, "/")[2]+")")
		}
	}
	return out
}

func dumpLogs(t *testing.T, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("--- last lines of %s:\n%s", filepath.Base(f), strings.Join(lines, "\n"))
	}
}
