package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// spawner starts every child from one OS thread that never exits. Children
// get Pdeathsig SIGKILL, which Linux sends when the thread that forked them
// ends: pinning that thread for the life of the demo makes "the demo died"
// the only trigger, so no child outlives a demo that was itself SIGKILLed.
type spawner struct{ reqs chan func() }

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan func())}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the process
		for f := range s.reqs {
			f()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	s.reqs <- func() { done <- cmd.Start() }
	return <-done
}

// proc is one child program, restartable.
type proc struct {
	name    string
	path    string
	args    []string
	env     []string
	logPath string
	stdout  io.Writer // besides the log file, for verify; nil otherwise
	oneShot bool      // loadgen, verify: exiting is their job

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	expected bool // the demo caused (or awaits) the exit
}

var errClosing = errors.New("demo is shutting down")

// start runs the program, appending its output to its log file. onExit is
// called after an exit the demo did not cause.
func (p *proc) start(sp *spawner, onExit func(*proc, error)) error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "===== demo: %s start %s %s =====\n", time.Now().Format(time.RFC3339Nano), p.path, strings.Join(p.args, " "))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if p.stdout != nil {
		cmd.Stdout = io.MultiWriter(f, p.stdout)
	}
	// Own process group: a Ctrl-C in the terminal reaches only the demo,
	// which then stops its children in order. Pdeathsig: see spawner.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := sp.start(cmd); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited, p.expected = cmd, exited, false
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "===== demo: %s %s exited: %v =====\n", time.Now().Format(time.RFC3339Nano), p.name, cmd.ProcessState)
		f.Close()
		p.mu.Lock()
		expected := p.expected || p.oneShot
		p.mu.Unlock()
		close(exited)
		if !expected && onExit != nil {
			onExit(p, err)
		}
	}()
	return nil
}

func (p *proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expected = true
	return p.cmd, p.exited
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// kill SIGKILLs the program and reaps it.
func (p *proc) kill() {
	cmd, exited := p.current()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop sends SIGTERM, waits up to timeout, then SIGKILLs. It returns the
// exit state (nil if the program was not running), and whether it had to be
// killed.
func (p *proc) stop(timeout time.Duration) (*os.ProcessState, bool) {
	cmd, exited := p.current()
	if cmd == nil {
		return nil, false
	}
	select {
	case <-exited: // exited before: nothing to stop
		return nil, false
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return cmd.ProcessState, false
	case <-time.After(timeout):
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	return cmd.ProcessState, true
}

// wait waits for the program to exit and returns its state.
func (p *proc) wait() *os.ProcessState {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	<-exited
	return cmd.ProcessState
}

// prefixWriter writes each line to w with a prefix.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (pw *prefixWriter) Write(b []byte) (int, error) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pw.buf = append(pw.buf, b...)
	for {
		i := strings.IndexByte(string(pw.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		if _, err := fmt.Fprintf(pw.w, "%s%s\n", pw.prefix, pw.buf[:i]); err != nil {
			return len(b), err
		}
		pw.buf = pw.buf[i+1:]
	}
}
