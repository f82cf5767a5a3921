// Package console is an operator console for the exactly framework: web
// pages and a JSON API showing the consumers, the inbox, the outbox and
// the dead letters, and replaying or discarding dead letters with the
// guarantees of the `exactly` command.
//
// A [Console] is an http.Handler. Mount it in the application's own admin
// server, or run it stand-alone with `exactly console -listen
// 127.0.0.1:8080`. The pages are rendered on the server (html/template);
// their stylesheet and a small script (auto-refresh, "select all") are
// embedded: no CDN, no build step, and every page works without the
// script.
//
//	c, err := console.New(console.Config{DB: pool, Schema: "shop", Shards: 4,
//		Brokers: brokers, Username: "ops", Password: os.Getenv("CONSOLE_PASSWORD")})
//	if err != nil { ... }
//	mux.Handle("/", c) // or Config.Path "/exactly/" and mux.Handle("/exactly/", c)
//
// # Pages
//
//   - The overview: per consumer group, its state, members, and per
//     partition the committed offset, end offset and lag, read from Kafka;
//     the inbox's tokens per scope and the oldest; per outbox shard the
//     backlog, the oldest unpublished row, whether a relay holds it, and
//     keys blocked by a row Kafka rejected with the rows held back behind
//     them; unresolved dead letters by scope and reason. What needs a
//     person is listed on top, in red: a shard with rows and no relay, a
//     row older than Config.BacklogAgeAlert, blocked keys, a partition
//     whose committed offset has not moved for Config.StallAfter while it
//     has lag, a group with lag and no members, dead letters waiting.
//   - Dead letters of the consumers and of the outbox: filters (group,
//     topic, reason, time range, state), pages newest first by keyset (a
//     page deep in 100k rows costs what the first does), and a page per
//     dead letter with its error, key, headers and value shown as text,
//     pretty-printed JSON or a hex dump, cut at Config.MaxShownBytes.
//
// # Replay and discard
//
// A replay enqueues the dead letter's message into the outbox in the
// transaction that marks it replayed; a discard marks it discarded. The
// console shares this code with the `exactly` command: each dead letter in
// a transaction of its own, under the outbox table's replay lock (one
// replay at a time per table, across consoles and terminals), oldest first
// (per-key order), the key back in its shard (the console refuses a replay
// when Config.Shards is not the writers'). A second replay of the same dead
// letter, from anywhere, finds it resolved and enqueues nothing: replays
// are effectively once.
//
// Every action is confirmed on a page of its own that names what it
// selects: dead letters by id, or the unresolved ones a filter selects up
// to the newest when the page was shown (at most [MaxSelection]); dead
// letters written after it are not taken. The result page reports what was
// done. Config.ReadOnly hides every action and refuses it.
//
// # Security
//
//   - Authentication is required: HTTP basic authentication
//     (Config.Username, Config.Password), a bearer token (Config.Token), or
//     the application's own check (Config.Authenticate). New refuses a
//     Config with none.
//   - A POST must carry a CSRF token, an HMAC of a random cookie
//     (SameSite=Strict, HttpOnly) and of who signed in, which the
//     confirmation page's form holds; requests with the bearer token need
//     none. Cross-origin POSTs are refused (http.CrossOriginProtection).
//     The HMAC key is random per Console: after a restart, or behind a load
//     balancer that spreads one browser over several replicas, a form must
//     be loaded again (the refusal says so). With Config.Authenticate every
//     person signs the token as the same principal: the cookie alone tells
//     browsers apart.
//   - Everything shown is HTML-escaped by html/template: a key or header of
//     "<script>" shows as that text. Pages carry a Content-Security-Policy
//     that allows only the console's own script and stylesheet, and
//     refuse to be framed.
//   - No secret is shown: the console holds a pool, not a DSN, and never
//     shows its credentials or Kafka's.
//   - Each replay and discard is logged with who did it (Config.Logger).
//
// # JSON API
//
// The pages are built from the JSON served under Config.Path + "api/";
// bytes (keys, values, header values) are base64, as encoding/json writes
// []byte, and times RFC 3339:
//
//	GET  api/overview                          the overview
//	GET  api/dead-letters/{kind}?FILTERS       a page: {"dead_letters": [...], "next_before": ID}
//	GET  api/dead-letters/{kind}/{id}          one, with key, value and headers
//	POST api/dead-letters/{kind}/replay        id=1&id=2, or FILTERS with through=ID:
//	POST api/dead-letters/{kind}/discard       {"kind", "resolution", "selected", "done": [ids], "error", "more"}
//	GET  api/session                           {"csrf_token": "...", "read_only": false}
//
// {kind} is consumer or outbox. FILTERS are scope (consumer only), topic,
// reason, since and until (an RFC 3339 time or an age: 24h, 7d), state
// (unresolved, the default; resolved; all), before (ids below it: the
// next_before of the previous page) and limit (1 to 500). A POST with
// basic authentication carries the token of api/session in the
// X-CSRF-Token header, with the cookie that came with it; a POST with the
// bearer token needs neither.
package console
