//go:build unix

package proctest

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// Freeze stops the child with SIGSTOP, as a paused VM or a process stuck in
// a long GC pause is stopped: it runs no code and sends no heartbeats, yet
// its sockets (its Kafka and Postgres connections, its open transactions)
// stay open. Freeze returns once the kernel reports the child stopped (on
// systems without /proc, once the signal is sent).
func (c *Child) Freeze(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("proctest: SIGSTOP: %v", err)
	}
	c.waitStopped(t, true)
}

// Thaw resumes a frozen child with SIGCONT.
func (c *Child) Thaw(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("proctest: SIGCONT: %v", err)
	}
	c.waitStopped(t, false)
}

// waitStopped waits until /proc says whether the child is stopped.
func (c *Child) waitStopped(t testing.TB, stopped bool) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile(path)
		if err != nil {
			return // no /proc, or the child is gone
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
			state := stat[i+2]
			if (state == 'T' || state == 't') == stopped {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proctest: child %d not %s after 10s: %s", c.cmd.Process.Pid, map[bool]string{true: "stopped", false: "running"}[stopped], stat)
		}
		time.Sleep(time.Millisecond)
	}
}
