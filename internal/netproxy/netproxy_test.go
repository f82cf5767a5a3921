package netproxy_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exactlyhq/exactly/internal/netproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a line echo server that remembers the lines it received.
type echo struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	lines []string
	conns map[net.Conn]bool
}

func startEcho(t *testing.T) *echo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{ln: ln, conns: map[net.Conn]bool{}}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns[c] = true
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					e.mu.Lock()
					e.lines = append(e.lines, line)
					e.mu.Unlock()
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		e.mu.Lock()
		for c := range e.conns {
			_ = c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

func (e *echo) received(line string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.lines {
		if l == line {
			return true
		}
	}
	return false
}

func newProxy(t *testing.T, target string) *netproxy.Proxy {
	t.Helper()
	p, err := netproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes line and reads it back within timeout.
func roundTrip(c net.Conn, line string, timeout time.Duration) (string, error) {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte(line)); err != nil {
		return "", err
	}
	got := make([]byte, len(line))
	_, err := io.ReadFull(c, got)
	return string(got), err
}

func mustEcho(t *testing.T, c net.Conn, line string) {
	t.Helper()
	got, err := roundTrip(c, line, 5*time.Second)
	if err != nil || got != line {
		t.Fatalf("echo of %q: %q, %v", line, got, err)
	}
}

// readErr reads from c until an error within 5s and returns it.
func readErr(c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		return io.EOF
	}
	return err
}

func TestNetProxy(t *testing.T) {
	e := startEcho(t)

	t.Run("forward", func(t *testing.T) {
		p := newProxy(t, e.ln.Addr().String())
		c := dial(t, p.Addr())
		mustEcho(t, c, "hello\n")
		if p.Conns() != 1 || p.Accepted() != 1 {
			t.Fatalf("%d open, %d accepted; want 1, 1", p.Conns(), p.Accepted())
		}
	})

	t.Run("latency", func(t *testing.T) {
		p := newProxy(t, e.ln.Addr().String())
		c := dial(t, p.Addr())
		p.SetLatency(150*time.Millisecond, 100*time.Millisecond)
		start := time.Now()
		mustEcho(t, c, "slow\n")
		if rtt := time.Since(start); rtt < 250*time.Millisecond {
			t.Fatalf("round trip %v with 150ms+100ms of latency", rtt)
		}
		p.SetLatency(0, 0)
		start = time.Now()
		mustEcho(t, c, "fast\n")
		if rtt := time.Since(start); rtt > 200*time.Millisecond {
			t.Fatalf("round trip %v after the latency was removed", rtt)
		}
	})

	t.Run("cut", func(t *testing.T) {
		p := newProxy(t, e.ln.Addr().String())
		c := dial(t, p.Addr())
		mustEcho(t, c, "before\n")
		if n := p.Cut(); n != 1 {
			t.Fatalf("Cut closed %d connections, want 1", n)
		}
		if err := readErr(c); !errors.Is(err, io.EOF) {
			t.Fatalf("read after Cut: %v, want EOF", err)
		}
		if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial while cut: %v, want connection refused", err)
		}
		if err := p.Restore(); err != nil {
			t.Fatal(err)
		}
		mustEcho(t, dial(t, p.Addr()), "after\n")
	})

	t.Run("reset", func(t *testing.T) {
		p := newProxy(t, e.ln.Addr().String())
		c := dial(t, p.Addr())
		mustEcho(t, c, "before\n")
		if n := p.Reset(); n != 1 {
			t.Fatalf("Reset closed %d connections, want 1", n)
		}
		if err := readErr(c); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after Reset: %v, want connection reset", err)
		}
		mustEcho(t, dial(t, p.Addr()), "after\n")
	})

	t.Run("blackhole", func(t *testing.T) {
		p := newProxy(t, e.ln.Addr().String())
		c := dial(t, p.Addr())
		mustEcho(t, c, "before\n")
		p.Blackhole()
		if _, err := roundTrip(c, "held\n", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round trip in a black hole: %v, want a timeout", err)
		}
		if e.received("held\n") {
			t.Fatal("the server got bytes sent into the black hole")
		}
		fresh := dial(t, p.Addr()) // accepted, held
		if _, err := roundTrip(fresh, "new\n", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round trip of a new connection in a black hole: %v, want a timeout", err)
		}
		if err := p.Restore(); err != nil {
			t.Fatal(err)
		}
		// What was held flows on.
		for _, tc := range []struct {
			c    net.Conn
			line string
		}{{c, "held\n"}, {fresh, "new\n"}} {
			_ = tc.c.SetDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(tc.line))
			if _, err := io.ReadFull(tc.c, got); err != nil || string(got) != tc.line {
				t.Fatalf("after Restore: %q, %v; want %q", got, err, tc.line)
			}
		}
	})

	t.Run("blackhole-closeall", func(t *testing.T) {
		p := newProxy(t, e.ln.Addr().String())
		c := dial(t, p.Addr())
		mustEcho(t, c, "before\n")
		p.Blackhole()
		p.CloseAll()
		if err := readErr(c); !errors.Is(err, io.EOF) {
			t.Fatalf("read after CloseAll: %v, want EOF", err)
		}
		fresh := dial(t, p.Addr())
		if _, err := roundTrip(fresh, "new\n", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("new connection: %v, want a timeout", err)
		}
		if err := p.Restore(); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4)
		_ = fresh.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(fresh, got); err != nil || string(got) != "new\n" {
			t.Fatalf("held bytes after Restore: %q, %v", got, err)
		}
		mustEcho(t, fresh, "more\n")
	})

	t.Run("close", func(t *testing.T) {
		p, err := netproxy.New(e.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, p.Addr())
		mustEcho(t, c, "x\n")
		p.Blackhole()
		_ = dial(t, p.Addr()) // a held connection
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := readErr(c); !errors.Is(err, io.EOF) {
			t.Fatalf("read after Close: %v, want EOF", err)
		}
		if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
			t.Fatal("dial after Close succeeded")
		}
		// goleak (TestMain) checks that Close ended every goroutine.
	})
}

// lines frames newline-terminated messages and acts on the ones in act.
type lines struct {
	act   map[string]netproxy.Action
	mu    *sync.Mutex
	reply *[]byte
}

func (l lines) Split(data []byte) int { return bytes.IndexByte(data, '\n') + 1 }

func (l lines) Inspect(msg []byte) netproxy.Action { return l.act[string(msg)] }

func (l lines) DroppedReply(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.reply = append(*l.reply, b...)
}

func TestNetProxyInspect(t *testing.T) {
	e := startEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	var mu sync.Mutex
	var reply []byte
	p.Inspect(func(netproxy.ConnInfo) netproxy.Inspector {
		return lines{act: map[string]netproxy.Action{"drop\n": netproxy.Drop, "reply\n": netproxy.DropReply, "stall\n": netproxy.Stall}, mu: &mu, reply: &reply}
	})

	c := dial(t, p.Addr())
	mustEcho(t, c, "a\n")
	// Split across writes: the inspector sees whole messages.
	if _, err := c.Write([]byte("dr")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Write([]byte("op\n")); err != nil {
		t.Fatal(err)
	}
	if err := readErr(c); !errors.Is(err, io.EOF) {
		t.Fatalf("read after a dropped message: %v, want EOF", err)
	}
	if e.received("drop\n") {
		t.Fatal("the dropped message reached the server")
	}

	c = dial(t, p.Addr())
	mustEcho(t, c, "b\n")
	if _, err := c.Write([]byte("reply\n")); err != nil {
		t.Fatal(err)
	}
	if err := readErr(c); !errors.Is(err, io.EOF) {
		t.Fatalf("read after a dropped reply: %v, want EOF", err)
	}
	if !e.received("reply\n") {
		t.Fatal("the message whose reply was dropped did not reach the server")
	}

	c = dial(t, p.Addr())
	mustEcho(t, c, "c\n")
	if _, err := roundTrip(c, "stall\n", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("round trip of a stalling message: %v, want a timeout", err)
	}
	if _, err := roundTrip(c, "after\n", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("round trip on a stalled connection: %v, want a timeout", err)
	}
	if e.received("stall\n") || e.received("after\n") {
		t.Fatal("a stalled connection forwarded bytes")
	}
	_ = c.Close() // the FIN is lost too: the proxy keeps the connection
	time.Sleep(50 * time.Millisecond)
	if open := p.Conns(); open != 1 {
		t.Fatalf("%d connections open after the client closed a stalled one, want it kept", open)
	}
	mustEcho(t, dial(t, p.Addr()), "d\n") // new connections are served
	if n := p.CloseAll(); n != 2 {
		t.Fatalf("CloseAll closed %d connections, want 2", n)
	}

	mu.Lock()
	defer mu.Unlock()
	if string(reply) != "reply\n" {
		t.Fatalf("dropped reply %q, want the server's echo", reply)
	}
}

func TestNetProxyPGWire(t *testing.T) {
	msg := func(typ byte, body string) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
		return append(b, body...)
	}
	startup := []byte{0, 0, 0, 9, 0, 3, 0, 0, 0}
	stream := append(append(append([]byte{}, startup...), msg('Q', "commit\x00")...),
		append(msg('P', "s1\x00DELETE FROM t\x00\x00\x00"), append(msg('B', "\x00s1\x00rest"), msg('S', "")...)...)...)
	var s netproxy.PGSplitter
	var got [][]byte
	for len(stream) > 0 {
		if s.Split(stream[:4]) != 0 {
			t.Fatal("split a partial message")
		}
		n := s.Split(stream)
		if n == 0 {
			t.Fatalf("no message in %q", stream)
		}
		got = append(got, stream[:n])
		stream = stream[n:]
	}
	if len(got) != 5 || !bytes.Equal(got[0], startup) {
		t.Fatalf("messages %q", got)
	}
	if q, ok := netproxy.PGQuery(got[1]); !ok || q != "commit" {
		t.Fatalf("PGQuery: %q %v", q, ok)
	}
	if name, q, ok := netproxy.PGParse(got[2]); !ok || name != "s1" || q != "DELETE FROM t" {
		t.Fatalf("PGParse: %q %q %v", name, q, ok)
	}
	if portal, stmt, ok := netproxy.PGBind(got[3]); !ok || portal != "" || stmt != "s1" {
		t.Fatalf("PGBind: %q %q %v", portal, stmt, ok)
	}
	if !netproxy.PGSync(got[4]) {
		t.Fatal("PGSync: false")
	}
	if tags := netproxy.PGCommandTags(append(msg('C', "COMMIT\x00"), msg('Z', "I")...)); len(tags) != 1 || tags[0] != "COMMIT" {
		t.Fatalf("PGCommandTags: %q", tags)
	}
}
