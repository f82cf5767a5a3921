package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/exactlyhq/exactly/console"
)

// The console's credentials come from the environment only: a flag would
// show in process listings.
const (
	envConsoleUser     = "EXACTLY_CONSOLE_USER"
	envConsolePassword = "EXACTLY_CONSOLE_PASSWORD"
	envConsoleToken    = "EXACTLY_CONSOLE_TOKEN"
)

func consoleCmd(fs *flag.FlagSet) handler {
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve the console on")
	path := fs.String("path", console.PathDefault, "path the console is served under, for a reverse proxy (\"/exactly/\")")
	readOnly := fs.Bool("read-only", false, "hide and refuse replay and discard")
	brokers := fs.String("brokers", "", "Kafka brokers, comma-separated, to show consumer groups and lag (default $KAFKA_BROKERS)")
	var groups stringList
	fs.Var(&groups, "group", "consumer group to show (repeatable; default: every inbox scope that is a group)")
	sec := addKafkaSecurity(fs)
	return func(ctx context.Context, e *env, _ *flag.FlagSet) error {
		transport, err := sec.transport()
		if err != nil {
			return usageError{err.Error()}
		}
		cfg := console.Config{Schema: e.schema, InboxTable: e.inboxTable, DeadLetterTable: e.deadLetters, OutboxTable: e.outboxTable,
			Shards: e.shards, Groups: groups, Transport: transport, ReadOnly: *readOnly, Path: *path,
			Username: os.Getenv(envConsoleUser), Password: os.Getenv(envConsolePassword), Token: os.Getenv(envConsoleToken),
			Logger: slog.New(slog.NewTextHandler(e.stdout, nil))}
		if addrs := cmp.Or(*brokers, os.Getenv("KAFKA_BROKERS")); addrs != "" {
			cfg.Brokers = strings.Split(addrs, ",")
		}
		if (cfg.Username == "") != (cfg.Password == "") {
			return usageError{fmt.Sprintf("set both $%s and $%s, or neither", envConsoleUser, envConsolePassword)}
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("-listen %s: %w", *listen, err)
		}
		defer ln.Close()
		authenticated := cfg.Username != "" || cfg.Token != ""
		if !authenticated {
			// Without credentials only this machine may connect, and only
			// by a loopback name: a web page cannot reach the console by
			// pointing a name of its own at 127.0.0.1 (DNS rebinding).
			if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
				return usageError{fmt.Sprintf("-listen %s is not a loopback address: set $%s and $%s (basic authentication) or $%s (bearer token) to serve the console beyond this machine",
					*listen, envConsoleUser, envConsolePassword, envConsoleToken)}
			}
			cfg.Authenticate = loopbackHost
		}
		if err := e.connect(ctx); err != nil {
			return err
		}
		defer e.close()
		if err := e.require(ctx, e.inboxTable, e.deadLetters, e.outboxTable, e.outboxTable+"_dead_letters"); err != nil {
			return err
		}
		cfg.DB = e.pool
		c, err := console.New(cfg)
		if err != nil {
			return usageError{err.Error()}
		}
		how := "no authentication: loopback only"
		switch {
		case cfg.Username != "" && cfg.Token != "":
			how = "basic authentication as $" + envConsoleUser + ", or the bearer token"
		case cfg.Username != "":
			how = "basic authentication as $" + envConsoleUser
		case cfg.Token != "":
			how = "the bearer token of $" + envConsoleToken
		}
		mode := ""
		if cfg.ReadOnly {
			mode = ", read-only"
		}
		fmt.Fprintf(e.stdout, "exactly console: http://%s%s (schema %s%s; %s)\n", ln.Addr(), *path, e.schema, mode, how)
		srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = srv.Shutdown(sctx)
		if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
			err = cmp.Or(err, serr)
		}
		return err
	}
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
