package outbox_test

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/metrictest"
	"github.com/exactlyhq/exactly/outbox"
)

// TestRelayMetrics: published rows are counted, and the table view reports
// the backlog and shard owners.
func TestRelayMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	mp := metrictest.NewProvider()
	cfg := b.relay
	cfg.MeterProvider = mp
	var msgs []outbox.Message
	for range 20 {
		msgs = append(msgs, outbox.Message{Topic: b.topic, Value: []byte("m")})
	}
	enqueue(t, b, msgs...)
	startRelay(t, b.pool, cfg)
	kafkatest.ReadAll(t, b.topic, 1, 20, 30*time.Second)
	waitEmpty(t, b)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := collect(t, mp)
		if got[outbox.MetricPublished] == 20 && got[outbox.MetricShardOwned] == int64(b.ob.Config().Shards) && got[outbox.MetricBacklog] == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics %v: want 20 published, every shard owned, no backlog", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collect sums every integer counter and gauge point by metric name.
func collect(t *testing.T, mp *metrictest.Provider) map[string]int64 {
	t.Helper()
	points, err := mp.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, p := range points {
		if !p.IsFloat && (p.Kind == metrictest.Sum || p.Kind == metrictest.Gauge) {
			out[p.Name] += p.Int
		}
	}
	return out
}

// TestRowsOutsideShards: rows that writers with 8 shards put in shards 4..7
// are published by no relay with 4 shards. The relay says so at start-up,
// exports their count, reports their shards' backlog and that no relay owns
// them (so the backlog, age and unowned-shard alerts see them), and Shards
// lists their shards as outside; once a relay with 8 shards publishes them
// the count falls to 0.
func TestRowsOutsideShards(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	wideCfg := b.ob.Config()
	wideCfg.Shards = 8
	wide, err := outbox.New(wideCfg)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []outbox.Message
	var inside int
	for i := 0; len(msgs) < 4; i++ {
		key := []byte(strconv.Itoa(i))
		if wideCfg.ShardOf(key, "") < 4 {
			if inside > 0 {
				continue
			}
			inside++
		}
		msgs = append(msgs, outbox.Message{Topic: b.topic, Key: key, Value: []byte("m")})
	}
	if _, err := wide.Enqueue(ctx, b.pool, msgs...); err != nil {
		t.Fatal(err)
	}
	st, err := outbox.Shards(ctx, b.pool, b.ob.Config())
	if err != nil {
		t.Fatal(err)
	}
	var outside, listed int64
	for i, s := range st {
		if i < 4 && (s.Shard != i || s.Outside) || i >= 4 && (s.Shard < 4 || !s.Outside || s.Backlog == 0) {
			t.Errorf("shard %d: %+v", i, s)
		}
		if s.Outside {
			outside += s.Backlog
		}
		listed += s.Backlog
	}
	if outside != 3 || listed != 4 {
		t.Fatalf("Shards %+v: %d rows in shards outside 0..3, %d in all; want 3 and 4", st, outside, listed)
	}

	var logs syncBuffer
	mp := metrictest.NewProvider()
	cfg := b.relay
	cfg.MeterProvider = mp
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	startRelay(t, b.pool, cfg)
	kafkatest.ReadAll(t, b.topic, 1, 1, 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := collect(t, mp)
		logged := strings.Contains(logs.String(), "level=ERROR msg=\"outbox rows in shards this relay does not publish") && strings.Contains(logs.String(), "rows=3")
		owned, backlog := shardPoints(t, mp, outbox.MetricShardOwned), shardPoints(t, mp, outbox.MetricBacklog)
		// Shards 4..7 that hold rows are reported too: their backlog, and
		// that no relay owns them.
		var strayBacklog int64
		strayOwned := 0
		for shard, n := range backlog {
			if shard >= 4 {
				strayBacklog += n
				if o, ok := owned[shard]; ok && o == 0 {
					strayOwned++
				}
			}
		}
		if logged && got[outbox.MetricRowsOutsideShards] == 3 && got[outbox.MetricBacklog] == 3 && strayBacklog == 3 &&
			got[outbox.MetricShardOwned] == 4 && strayOwned == len(owned)-4 && strayOwned > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics %v, backlog by shard %v, owned by shard %v, logs:\n%s\nwant 3 rows outside shards, a backlog of 3 in shards 4..7 that no relay owns, shards 0..3 owned, and an error logged",
				got, backlog, owned, logs.String())
		}
	}

	wideRelay := b.relay
	wideRelay.Outbox = wideCfg
	startRelay(t, b.pool, wideRelay)
	kafkatest.ReadAll(t, b.topic, 1, 4, 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := collect(t, mp)
		if _, reported := got[outbox.MetricRowsOutsideShards]; reported && got[outbox.MetricRowsOutsideShards] == 0 && got[outbox.MetricBacklog] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics %v after a relay with 8 shards ran: want 0 rows outside shards, no backlog", got)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shardPoints returns the integer gauge's values by shard.
func shardPoints(t *testing.T, mp *metrictest.Provider, name string) map[int]int64 {
	t.Helper()
	points, err := mp.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range points {
		if p.Kind == metrictest.Gauge && !p.IsFloat && p.Name == name {
			v, _ := p.Attrs.Value("shard")
			out[int(v.AsInt64())] = p.Int
		}
	}
	return out
}
