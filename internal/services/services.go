// Package services restarts the local Postgres and Kafka for tests that prove
// recovery from outages.
//
// The commands default to the deploy/local scripts and can be replaced with
// EXACTLY_PG_RESTART and EXACTLY_KAFKA_RESTART (for example with `docker
// compose restart kafka`). Tests that use them must not run in parallel with
// anything else: `make test` runs packages one at a time (-p 1), and these
// tests do not call t.Parallel, so Go runs them before the parallel tests of
// their package resume.
package services

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RestartPostgres restarts the Postgres server and waits until it is back.
func RestartPostgres(tb testing.TB) {
	run(tb, "EXACTLY_PG_RESTART", "deploy/local/postgres.sh restart")
}

// RestartKafka restarts the Kafka broker (keeping its data) and waits until
// it answers again.
func RestartKafka(tb testing.TB) { run(tb, "EXACTLY_KAFKA_RESTART", "deploy/local/kafka.sh restart") }

// StopKafka stops the broker; StartKafka starts it and waits until ready.
func StopKafka(tb testing.TB)  { run(tb, "EXACTLY_KAFKA_STOP", "deploy/local/kafka.sh stop") }
func StartKafka(tb testing.TB) { run(tb, "EXACTLY_KAFKA_START", "deploy/local/kafka.sh start") }

func run(tb testing.TB, env, def string) {
	tb.Helper()
	command := os.Getenv(env)
	dir := ""
	if command == "" {
		command = def
		dir = RepoRoot(tb)
	}
	start := time.Now()
	cmd := exec.Command("bash", "-c", command)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("services: %s: %v\n%s", command, err, out)
	}
	tb.Logf("services: %s took %v", command, time.Since(start).Round(time.Millisecond))
}

// RepoRoot returns the root of this repository, found above the working
// directory.
func RepoRoot(tb testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/exactlyhq/exactly\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("services: repository root not found above the working directory")
		}
		dir = parent
	}
}
