package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/exactlyhq/exactly/console"
)

// serveConsole serves the operator console (package console, what `exactly
// console` serves) on addr while the demo runs, so that a newcomer can
// watch the consumer groups, the outbox's shards and any dead letter live,
// kills included. It returns the console's address and a func that stops
// it.
//
// The console requires authentication. The demo runs on one machine, so it
// listens on a loopback address only and admits requests addressed to a
// loopback name, as `exactly console` does without credentials: a web page
// cannot reach it by pointing a name of its own at 127.0.0.1. An
// application serving the console beyond its machine sets
// console.Config.Username and Password, Token, or Authenticate.
func (d *demo) serveConsole(addr string) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("console: %w", err)
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		ln.Close()
		return "", nil, fmt.Errorf("console: -console %s is not a loopback address; the demo's console has no password", addr)
	}
	c, err := console.New(console.Config{
		DB:              d.pool,
		Schema:          d.cfg.Schema,
		Shards:          d.cfg.Outbox().Shards, // the writers' shards: replays go through the outbox
		Brokers:         d.cfg.Brokers,
		Transport:       d.cfg.Transport(),
		Groups:          []string{d.cfg.PaymentsGroup(), d.cfg.ShippingGroup()},
		RefreshInterval: 2 * time.Second,
		StallAfter:      20 * time.Second, // kills stall a partition for the 6s session timeout
		Authenticate:    loopbackHost,
	})
	if err != nil {
		ln.Close()
		return "", nil, err
	}
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("demo: console:", err)
		}
	}
	return "http://" + ln.Addr().String() + "/", stop, nil
}

// loopbackHost admits a request addressed to a loopback name or address.
func loopbackHost(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
