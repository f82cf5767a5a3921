// Package proctest runs a test binary again as a child process, so crash
// tests can SIGKILL real processes at chosen moments.
//
// A test package's TestMain calls Main first: in a child it runs the
// registered role and exits; in the parent it returns false and the tests
// run. Children report progress by printing lines, which the parent awaits.
package proctest

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

const roleEnv = "EXACTLY_PROCTEST_ROLE"

// Main runs the role named by the environment, if any, and exits with its
// status. It returns false in the parent process.
func Main(roles map[string]func() int) bool {
	name := os.Getenv(roleEnv)
	if name == "" {
		return false
	}
	fn, ok := roles[name]
	if !ok {
		os.Stderr.WriteString("proctest: unknown role " + name + "\n")
		os.Exit(2)
	}
	os.Exit(fn())
	return true
}

// Child is a running child process.
type Child struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

// Start runs this test binary as role with env ("K=V") added. The child is
// killed when the test ends. Its stderr goes to the test's stderr under -v.
func Start(t testing.TB, role string, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Child{cmd: cmd, lines: make(chan string, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			select {
			case c.lines <- s.Text():
			default: // nobody waits for lines this old
			}
		}
	}()
	t.Cleanup(c.Kill)
	return c
}

// WaitLine waits for the child to print line.
func (c *Child) WaitLine(t testing.TB, line string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-c.lines:
			if l == line {
				return
			}
		case <-c.done:
			t.Fatalf("child exited before printing %q", line)
		case <-deadline:
			t.Fatalf("child did not print %q within %v", line, timeout)
		}
	}
}

// Saw waits up to timeout for the child to print line and reports whether
// it did. Unlike WaitLine it does not fail the test: random-kill tests use
// it to kill a child mid-work when there is work, and anyway when not.
func (c *Child) Saw(line string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case l := <-c.lines:
			if l == line {
				return true
			}
		case <-c.done:
			return false
		case <-deadline:
			return false
		}
	}
}

// Exited waits up to timeout for the child to exit by itself and reports
// whether it did.
func (c *Child) Exited(timeout time.Duration) bool {
	select {
	case <-c.done:
		c.Kill() // reaps it
		return true
	case <-time.After(timeout):
		return false
	}
}

// Kill SIGKILLs the child and reaps it. It is safe to call twice.
func (c *Child) Kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
	<-c.done
}

// Stop sends SIGTERM and waits up to timeout for a clean exit, then kills.
// It reports whether the child exited with status 0.
func (c *Child) Stop(timeout time.Duration) bool {
	if c.cmd.ProcessState != nil {
		return c.cmd.ProcessState.Success()
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(timeout):
	}
	c.Kill()
	return c.cmd.ProcessState.Success()
}

// WaitAny waits until one of children prints line and returns its index.
func WaitAny(t testing.TB, children []*Child, line string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for i, c := range children {
		drain:
			for {
				select {
				case l := <-c.lines:
					if l == line {
						return i
					}
				default:
					break drain
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no child printed %q within %v", line, timeout)
	return -1
}
