package kafkaprobe

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReachableSilentBroker: a peer that accepts the connection and never
// answers fails the probe when ctx ends, not never.
func TestReachableSilentBroker(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		for _, c := range conns {
			_ = c.Close()
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- Reachable(ctx, nil, []string{ln.Addr().String()}) }()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), ln.Addr().String()) {
			t.Fatalf("Reachable: %v, want an error naming the address and the deadline", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Reachable returned after %v, want about 300ms", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Reachable still waiting for a silent broker 10s after its context ended")
	}
}

// TestReachableRefused: a closed port fails the probe with an error naming
// it.
func TestReachableRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Reachable(ctx, nil, []string{addr}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Reachable(closed port): %v, want an error naming %s", err, addr)
	}
}
