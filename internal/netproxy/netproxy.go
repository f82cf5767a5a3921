// Package netproxy is a TCP proxy for tests that put network faults between
// a client and a server on loopback: added latency, connections cut or
// reset, a black hole, and a lost reply to one chosen client message.
//
// A test points its client at Proxy.Addr instead of the server and flips the
// faults at any moment:
//
//   - SetLatency delays every chunk forwarded, per direction.
//   - Cut closes every connection and refuses new ones until Restore (the
//     listener is closed, so a dial fails with "connection refused").
//   - CloseAll closes every connection (FIN) now; Reset closes every
//     connection with a TCP reset (RST) now. New connections are served.
//   - Blackhole forwards nothing in either direction, keeping the sockets
//     open; new connections are accepted and held. Restore lets everything
//     flow again, bytes sent meanwhile included, as when a partition heals
//     before TCP gives up. Blackhole then CloseAll is a cut whose new
//     connections hang instead of being refused.
//   - Inspect frames what clients send into messages and can drop one (the
//     connection is closed without forwarding it), forward it and drop the
//     server's reply (the connection is closed once the server answered),
//     so that the client cannot know the outcome, or stall the connection
//     there for good (a half-open connection).
//
// Close stops every goroutine the proxy started.
package netproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Action is what the proxy does with a message a client sent.
type Action int

const (
	// Forward sends the message on.
	Forward Action = iota
	// Drop closes the connection without sending the message on: the
	// server never sees it.
	Drop
	// DropReply sends the message on, then discards what the server sends
	// back and closes the connection once the server answered: the server
	// acted on the message, the client never learns how.
	DropReply
	// Stall forwards neither the message nor anything after it, in either
	// direction, and keeps the connection open: a half-open connection, as
	// when the peer vanished without a FIN or a RST (a failover, an expired
	// NAT or firewall entry) and TCP has not noticed yet. Only Close,
	// CloseAll and Reset end it; new connections are served.
	Stall
)

// ConnInfo describes a client connection.
type ConnInfo struct {
	// ID numbers connections from 1 in the order they were accepted.
	ID int64
	// Client is the client's address: its local address, as the client
	// sees it.
	Client net.Addr
}

// An Inspector frames the bytes one client connection sends into messages
// and decides what happens to each. Its methods are called from one
// goroutine per connection, in stream order.
type Inspector interface {
	// Split returns the length of the first whole message at the start of
	// data, or 0 when data does not hold a whole message yet. It is called
	// again with the rest once that message is consumed.
	Split(data []byte) int
	// Inspect decides what to do with msg, a whole message.
	Inspect(msg []byte) Action
}

// A ReplyWatcher is an Inspector told what the server answered to a message
// whose reply it dropped (DropReply): the first bytes the server sent.
type ReplyWatcher interface {
	DroppedReply(reply []byte)
}

// dropReplyTimeout bounds how long a connection whose reply is dropped
// waits for the server's answer before it is closed anyway.
const dropReplyTimeout = 10 * time.Second

// Proxy forwards TCP connections from a loopback address to a target.
type Proxy struct {
	target string
	addr   string // the listening address, kept across Cut and Restore

	mu       sync.Mutex
	ln       net.Listener  // nil while cut (refusing)
	flowing  chan struct{} // closed while data flows; open during a black hole
	links    map[*link]struct{}
	latency  [2]time.Duration // by direction: up (client to server), down
	inspect  func(ConnInfo) Inspector
	closed   bool
	accepted int64

	wg sync.WaitGroup
}

// New starts a proxy listening on 127.0.0.1 (a free port) that forwards to
// target (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netproxy: listen: %w", err)
	}
	flowing := make(chan struct{})
	close(flowing)
	p := &Proxy{target: target, addr: ln.Addr().String(), ln: ln, flowing: flowing, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.serve(ln)
	return p, nil
}

// Addr returns the address clients dial, host:port. It does not change
// across Cut and Restore.
func (p *Proxy) Addr() string { return p.addr }

// MustRestore is Restore for a test: it fails the test on an error.
func (p *Proxy) MustRestore(tb testing.TB) {
	tb.Helper()
	if err := p.Restore(); err != nil {
		tb.Fatal(err)
	}
}

// Start returns a proxy to target for a test, closed when the test ends
// (after what the test registers later, such as a pool or a consumer using
// it, is closed).
func Start(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := New(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// SetLatency delays each chunk of bytes forwarded from client to server by
// up, and from server to client by down, from the moment the proxy read it.
// Zero removes the delay. It applies to chunks read from now on.
func (p *Proxy) SetLatency(up, down time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = [2]time.Duration{up, down}
}

// Inspect sets the function that gives each new connection its Inspector
// (nil: none). Connections accepted before the call are not inspected: set
// it before the clients connect, since an inspector must see a connection's
// stream from its first byte. f may return nil for a connection.
func (p *Proxy) Inspect(f func(ConnInfo) Inspector) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inspect = f
}

// Conns returns the number of open client connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Accepted returns the number of client connections accepted so far.
func (p *Proxy) Accepted() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Cut closes every connection and refuses new ones (the listener is closed)
// until Restore. It returns the number of connections it closed.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	return p.closeAll(false)
}

// CloseAll closes every open connection now, with a FIN, and returns how
// many it closed. New connections are served as before.
func (p *Proxy) CloseAll() int { return p.closeAll(false) }

// Reset closes every open connection now with a TCP reset (SO_LINGER 0), on
// the client's side and the server's, and returns how many it closed. New
// connections are served as before.
func (p *Proxy) Reset() int { return p.closeAll(true) }

func (p *Proxy) closeAll(rst bool) int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close(rst)
	}
	return len(links)
}

// Blackhole stops forwarding in both directions without closing anything:
// bytes wait in the proxy and in the sockets' buffers, and new connections
// are accepted but not connected to the target, until Restore.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
		p.flowing = make(chan struct{})
	default: // already a black hole
	}
}

// Restore ends a Cut (listening again on the same address) and a Blackhole
// (everything held flows on). It does not remove latency or an inspector.
func (p *Proxy) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("netproxy: closed")
	}
	select {
	case <-p.flowing:
	default:
		close(p.flowing)
	}
	if p.ln != nil {
		return nil
	}
	// The port was ours a moment ago; a connection of someone else may
	// hold it briefly as its local port.
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.ln = ln
			p.wg.Add(1)
			go p.serve(ln)
			return nil
		}
	}
	return fmt.Errorf("netproxy: listen again on %s: %w", p.addr, err)
}

// Close stops the proxy: it closes the listener and every connection, and
// waits for all its goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.closeAll(false)
	p.wg.Wait()
	return nil
}

// flow returns a channel that is closed while data may flow.
func (p *Proxy) flow() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flowing
}

func (p *Proxy) delay(up bool) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if up {
		return p.latency[0]
	}
	return p.latency[1]
}

func (p *Proxy) serve(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed by Cut or Close
		}
		p.mu.Lock()
		if p.closed || p.ln != ln {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.accepted++
		l := &link{p: p, client: c, info: ConnInfo{ID: p.accepted, Client: c.RemoteAddr()}, done: make(chan struct{})}
		if p.inspect != nil {
			l.insp = p.inspect(l.info)
		}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go l.run()
	}
}

// link is one client connection and its connection to the target.
type link struct {
	p      *Proxy
	client net.Conn
	info   ConnInfo
	insp   Inspector // nil: bytes pass as read

	mu        sync.Mutex
	server    net.Conn // nil until dialed
	closed    bool
	dropTimer *time.Timer

	dropReply atomic.Bool // discard the server's bytes and close at the first
	stalled   atomic.Bool // forward nothing more, ever
	sawReset  atomic.Bool // a side reset the connection: reset the other
	done      chan struct{}
}

// chunk is bytes read from one side, due on the other at due.
type chunk struct {
	data []byte
	due  time.Time
	act  Action
}

func (l *link) close(rst bool) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	if l.dropTimer != nil {
		l.dropTimer.Stop()
	}
	conns := []net.Conn{l.client, l.server}
	l.mu.Unlock()
	for _, c := range conns {
		if c == nil {
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok && rst {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	close(l.done)
}

func (l *link) run() {
	defer l.p.wg.Done()
	defer func() {
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
	}()
	// A new connection in a black hole waits to be connected.
	select {
	case <-l.p.flow():
	case <-l.done:
		return
	}
	s, err := net.DialTimeout("tcp", l.p.target, 10*time.Second)
	if err != nil {
		l.close(true) // the target refused: so does the proxy
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = s.Close()
		return
	}
	l.server = s
	l.mu.Unlock()

	up, down := make(chan chunk, 16), make(chan chunk, 16)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); l.read(l.client, up, true) }()
	go func() { defer wg.Done(); l.read(s, down, false) }()
	go func() { defer wg.Done(); l.write(l.client, down) }()
	l.write(s, up)
	wg.Wait()
}

// read reads src into out until src fails or the link closes.
func (l *link) read(src net.Conn, out chan<- chunk, up bool) {
	defer close(out)
	send := func(c chunk) bool {
		select {
		case out <- c:
			return true
		case <-l.done:
			return false
		}
	}
	buf := make([]byte, 32<<10)
	var pending []byte // bytes of a message the inspector has not framed yet
	for {
		n, err := src.Read(buf)
		if n > 0 {
			data := append([]byte(nil), buf[:n]...)
			if !up && l.dropReply.Load() {
				if w, ok := l.insp.(ReplyWatcher); ok {
					w.DroppedReply(data)
				}
				l.close(false)
				return
			}
			due := time.Now().Add(l.p.delay(up))
			if !up || l.insp == nil {
				if !send(chunk{data: data, due: due}) {
					return
				}
			} else {
				pending = append(pending, data...)
				for {
					m := l.insp.Split(pending)
					if m <= 0 || m > len(pending) {
						break
					}
					msg := pending[:m:m]
					pending = pending[m:]
					if !send(chunk{data: msg, due: due, act: l.insp.Inspect(msg)}) {
						return
					}
				}
				if len(pending) == 0 {
					pending = nil
				}
			}
		}
		if err != nil {
			if errors.Is(err, syscall.ECONNRESET) {
				l.sawReset.Store(true)
			}
			return
		}
	}
}

// write writes the chunks of in to dst, each when it is due and data flows,
// and closes the link when in ends.
func (l *link) write(dst net.Conn, in <-chan chunk) {
	for {
		var c chunk
		var ok bool
		select {
		case c, ok = <-in:
		case <-l.done:
			return
		}
		if !ok {
			if l.stalled.Load() { // a FIN of a stalled connection is lost too
				<-l.done
				return
			}
			l.close(l.sawReset.Load())
			return
		}
		if c.act == Stall {
			l.stalled.Store(true)
		}
		for {
			if l.stalled.Load() {
				<-l.done
				return
			}
			select {
			case <-l.p.flow():
			case <-l.done:
				return
			}
			wait := time.Until(c.due)
			if wait <= 0 {
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return
			}
		}
		switch c.act {
		case Drop:
			l.close(false)
			return
		case DropReply:
			l.dropReply.Store(true)
			l.mu.Lock()
			if !l.closed {
				l.dropTimer = time.AfterFunc(dropReplyTimeout, func() { l.close(false) })
			}
			l.mu.Unlock()
		}
		if _, err := dst.Write(c.data); err != nil {
			l.close(errors.Is(err, syscall.ECONNRESET))
			return
		}
	}
}
