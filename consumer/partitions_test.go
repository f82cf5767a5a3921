package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
)

// TestPartitionsAdded: partitions added to a topic while the group runs are
// consumed without any other rebalance.
func TestPartitionsAdded(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.cfg.PartitionWatchInterval = 200 * time.Millisecond
	c, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	all := msgs("np", 90, 9)
	kafkatest.Produce(t, b.writer, all[:30]...)
	start(t, c)
	waitCommitted(t, b, 30)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(kafkatest.Brokers()...), Transport: transport}
	res, err := client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: b.topic, Count: 3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Errors[b.topic]; err != nil {
		t.Fatal(err)
	}
	for p := 1; p <= 2; p++ { // straight to the new partitions, once they have a leader
		part := all[30*p : 30*(p+1)]
		for {
			err := writePartition(ctx, b.topic, p, part)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("write to partition %d: %v", p, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitCommitted(t, b, 90)
	checkEffectsPerPartition(t, b, map[int]int{0: 30, 1: 30, 2: 30})
}

func writePartition(ctx context.Context, topic string, partition int, msgs []kafka.Message) error {
	conn, err := kafka.DialLeader(ctx, "tcp", kafkatest.Brokers()[0], topic, partition)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.WriteMessages(msgs...)
	return err
}

func checkEffectsPerPartition(t *testing.T, b bundle, want map[int]int) {
	t.Helper()
	var total int
	checkEffectsOnce(t, b, &total)
	for p, n := range want {
		var got int
		if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects+" WHERE kafka_partition = $1", p).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != n {
			t.Errorf("partition %d: %d effects, want %d", p, got, n)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}
