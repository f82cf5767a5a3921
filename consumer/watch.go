package consumer

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// watchPartitions ends the generation when one of the group's topics has
// more partitions than the group assigned, so that the group rebalances
// and every partition is consumed: partitions added to a topic, and a topic
// created after the group joined.
//
// kafka-go's own watcher (ConsumerGroupConfig.WatchPartitionChanges) was
// tried first and dropped: it takes its baseline from its own first read,
// after the assignment, so a topic that appeared in between was never
// noticed, and it ends the generation at once when a topic does not exist,
// which makes a group with a missing topic rejoin in a loop. This watcher
// compares with what the group assigned (DescribeGroups), and counts a
// missing topic as no partitions, without creating it.
//
// Every member watches; the leader's rejoin is what makes the coordinator
// rebalance (a follower's rejoin gets the same assignment back).
func (c *Consumer) watchPartitions(genCtx context.Context, client *kafka.Client, log *slog.Logger) {
	t := time.NewTicker(c.cfg.PartitionWatchInterval)
	defer t.Stop()
	var assigned map[string]int // partitions per topic the group assigned; nil until read
	for {
		select {
		case <-genCtx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(genCtx, c.cfg.PartitionWatchInterval+10*time.Second)
		if assigned == nil {
			assigned = c.groupAssignment(ctx, client, log)
		}
		grown := ""
		if assigned != nil {
			counts, err := c.partitionCounts(ctx, client)
			if err != nil {
				log.Debug("reading the topics' partitions failed", "err", err)
			}
			var missing []string
			for _, topic := range c.cfg.Topics {
				if n, ok := counts[topic]; err == nil && (!ok || n == 0) {
					missing = append(missing, topic)
				}
			}
			if len(missing) > 0 {
				// kafka-go's leader assigns nothing while one of the
				// topics is missing: rebalancing would only loop.
				log.Error("topics do not exist; the group is assigned no partition of any topic until they do", "missing", missing)
				cancel()
				continue
			}
			for topic, n := range counts {
				if n > assigned[topic] {
					grown = topic
					log.Info("a topic has partitions the group did not assign; rebalancing", "topic", topic, "partitions", n, "assigned", assigned[topic])
					break
				}
			}
		}
		cancel()
		if grown != "" {
			return
		}
	}
}

// groupAssignment returns how many partitions of each topic the group's
// members were assigned, or nil if the group is not stable or cannot be
// described now.
func (c *Consumer) groupAssignment(ctx context.Context, client *kafka.Client, log *slog.Logger) map[string]int {
	res, err := client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{c.cfg.GroupID}})
	if err != nil || len(res.Groups) != 1 {
		log.Debug("describing the group failed", "err", err)
		return nil
	}
	g := res.Groups[0]
	if g.Error != nil || g.GroupState != "Stable" {
		return nil
	}
	assigned := map[string]int{}
	for _, m := range g.Members {
		for _, t := range m.MemberAssignments.Topics {
			assigned[t.Topic] += len(t.Partitions)
		}
	}
	return assigned
}

// partitionCounts returns the number of partitions of each of the group's
// topics; a topic that does not exist has none. The metadata request does
// not create topics.
func (c *Consumer) partitionCounts(ctx context.Context, client *kafka.Client) (map[string]int, error) {
	res, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: c.cfg.Topics})
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, t := range res.Topics {
		switch {
		case t.Error == nil:
			counts[t.Name] = len(t.Partitions)
		case errors.Is(t.Error, kafka.UnknownTopicOrPartition):
			counts[t.Name] = 0
		}
	}
	return counts, nil
}
