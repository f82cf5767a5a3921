// Package kafkagroup reads what Kafka knows of consumer groups: their
// members and, per partition, the committed offset, the end offset and the
// lag. `exactly status` and the console show it.
package kafkagroup

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/segmentio/kafka-go"
)

// Group is a consumer group that exists in Kafka.
type Group struct {
	ID string `json:"group"`
	// State is the group's state as Kafka reports it (Stable,
	// PreparingRebalance, CompletingRebalance, Empty, Dead).
	State      string      `json:"state"`
	Members    []Member    `json:"members"`
	Partitions []Partition `json:"partitions"`
}

// Member is a member of a group.
type Member struct {
	ID       string `json:"id"`
	ClientID string `json:"client_id"`
	Host     string `json:"host"`
	// Assigned are the partitions assigned to it, by topic.
	Assigned map[string][]int `json:"assigned,omitempty"`
}

// Partition is the progress of a group in one partition.
type Partition struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Committed int64  `json:"committed"` // -1: nothing committed
	End       int64  `json:"end"`
	Lag       int64  `json:"lag"`
}

// Lag reports, for each of groups that exists in Kafka, the lag of every
// partition of the topics it has committed offsets for, by group, topic and
// partition. What it read before an error is returned with the error.
func Lag(ctx context.Context, client *kafka.Client, groups []string) ([]Partition, error) {
	existing, err := exist(ctx, client, groups)
	if err != nil {
		return nil, err
	}
	// Asked even without groups: it fails when the broker refuses the
	// client (a wrong password), which ListGroups may not.
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, err
	}
	partitions := map[string][]int{}
	for _, t := range meta.Topics {
		if t.Internal {
			continue
		}
		for _, p := range t.Partitions {
			partitions[t.Name] = append(partitions[t.Name], p.ID)
		}
	}
	var out []Partition
	for _, g := range existing {
		ps, err := lag(ctx, client, g, partitions)
		out = append(out, ps...)
		if err != nil {
			return out, err
		}
	}
	slices.SortFunc(out, func(a, b Partition) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return out, nil
}

// exist returns those of groups that exist in Kafka, once each, in order.
func exist(ctx context.Context, client *kafka.Client, groups []string) ([]string, error) {
	listed, err := client.ListGroups(ctx, &kafka.ListGroupsRequest{})
	if err == nil {
		err = listed.Error
	}
	if err != nil {
		return nil, err
	}
	exists := map[string]bool{}
	for _, g := range listed.Groups {
		exists[g.GroupID] = true
	}
	var out []string
	for _, g := range groups {
		if exists[g] && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out, nil
}

// Describe reports, for each of groups that exists in Kafka, in the order
// asked, its state, its members and the lag of its partitions ([Lag]).
// What it read before an error is returned with the error.
func Describe(ctx context.Context, client *kafka.Client, groups []string) ([]Group, error) {
	existing, err := exist(ctx, client, groups)
	if err != nil {
		return nil, err
	}
	if len(existing) == 0 {
		_, err := Lag(ctx, client, nil) // for its errors
		return nil, err
	}
	out := make([]Group, len(existing))
	for i, g := range existing {
		out[i].ID = g
	}
	desc, err := client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: existing})
	if err != nil {
		return out, err
	}
	for _, d := range desc.Groups {
		i := slices.Index(existing, d.GroupID)
		if i < 0 || d.Error != nil {
			continue
		}
		out[i].State = d.GroupState
		for _, m := range d.Members {
			// Kafka reports the host as Java prints an InetAddress: "/127.0.0.1".
			mem := Member{ID: m.MemberID, ClientID: m.ClientID, Host: strings.TrimPrefix(m.ClientHost, "/")}
			for _, t := range m.MemberAssignments.Topics {
				if mem.Assigned == nil {
					mem.Assigned = map[string][]int{}
				}
				mem.Assigned[t.Topic] = append(mem.Assigned[t.Topic], t.Partitions...)
			}
			out[i].Members = append(out[i].Members, mem)
		}
		slices.SortFunc(out[i].Members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	}
	ps, err := Lag(ctx, client, existing)
	for _, p := range ps {
		i := slices.Index(existing, p.Group)
		out[i].Partitions = append(out[i].Partitions, p)
	}
	return out, err
}

// lag reads the lag of group in every partition of the topics it has
// committed offsets for.
func lag(ctx context.Context, client *kafka.Client, group string, partitions map[string][]int) ([]Partition, error) {
	offs, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: partitions})
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", group, err)
	}
	var out []Partition
	for topic, ps := range offs.Topics {
		committed := map[int]int64{}
		for _, p := range ps {
			if p.Error == nil && p.CommittedOffset >= 0 {
				committed[p.Partition] = p.CommittedOffset
			}
		}
		if len(committed) == 0 {
			continue // the group never consumed this topic
		}
		req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
		for _, p := range partitions[topic] {
			req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
		}
		ends, err := client.ListOffsets(ctx, req)
		if err != nil {
			return out, fmt.Errorf("topic %s: %w", topic, err)
		}
		for _, po := range ends.Topics[topic] {
			c, ok := committed[po.Partition]
			if !ok {
				c = -1
			}
			out = append(out, Partition{Group: group, Topic: topic, Partition: po.Partition, Committed: c, End: po.LastOffset, Lag: po.LastOffset - max(c, 0)})
		}
	}
	return out, nil
}
