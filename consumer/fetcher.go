package consumer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchAPI "github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/exactlyhq/exactly/internal/testhook"
)

// fetcher reads one partition with Kafka's fetch API, record batch by record
// batch, which kafka-go's Reader does not let us see:
//
//   - Control records (the commit and abort markers a transactional producer
//     leaves in the log) are skipped in either isolation level; the Reader
//     hands them on as messages without headers.
//   - With read committed, records of aborted transactions are dropped, using
//     the aborted-transaction list of each fetch response as Kafka's own
//     consumer does. The Reader asks for read committed, which only stops it
//     at the last stable offset, and then returns aborted records anyway.
//   - An offset that retention deleted is reported with the range skipped,
//     where the Reader only writes a debug line.
//
// Offsets still move past everything skipped, so the committed offset
// passes markers and aborted records and the lag reaches zero.
type fetcher struct {
	transport *kafka.Transport
	addr      net.Addr
	topic     string
	partition int
	isolation kafka.IsolationLevel
	maxBytes  int
	maxWait   time.Duration

	// startOffset is Config.StartOffset, where reading resumes when the
	// offset is past the end of the log.
	startOffset int64

	next int64 // the offset of the next record to return
	// onReset is told when reading moves from an offset the log does not
	// hold to to: forward when retention deleted [from, to) unread.
	onReset func(from, to int64)
}

// fetchTimeoutMargin is how long past its maxWait a fetch may take before
// it is abandoned and tried again.
const fetchTimeoutMargin = 15 * time.Second

// fetched is one fetch response's messages, and where the partition ends.
type fetched struct {
	msgs []kafka.Message
	// next is the offset after everything the response held, skipped
	// records included.
	next int64
	// batches is how many record batches the response held, whole.
	batches int
	// end is the offset a consumer that has read everything would be at:
	// the last stable offset with read committed, else the high watermark.
	end int64
}

// fetch returns the next records of the partition, waiting up to maxWait
// for some. It may return no messages (nothing new, or only markers and
// aborted records).
func (f *fetcher) fetch(ctx context.Context) (fetched, error) {
	// The broker answers within maxWait. A connection whose peer vanished
	// without closing it (a failover, a NAT entry gone) would otherwise hold
	// the partition forever: the group's heartbeats, on another connection,
	// keep it assigned here.
	ctx, cancel := context.WithTimeout(ctx, f.maxWait+fetchTimeoutMargin)
	defer cancel()
	m, err := f.transport.RoundTrip(ctx, f.addr, &fetchAPI.Request{
		ReplicaID:      -1,
		MaxWaitTime:    int32(f.maxWait / time.Millisecond),
		MinBytes:       1,
		MaxBytes:       int32(f.maxBytes),
		IsolationLevel: int8(f.isolation),
		SessionID:      -1,
		SessionEpoch:   -1,
		Topics: []fetchAPI.RequestTopic{{
			Topic: f.topic,
			Partitions: []fetchAPI.RequestPartition{{
				Partition:          int32(f.partition),
				CurrentLeaderEpoch: -1,
				FetchOffset:        f.next,
				LogStartOffset:     -1,
				PartitionMaxBytes:  int32(f.maxBytes),
			}},
		}},
	})
	if err != nil {
		return fetched{}, err
	}
	res := m.(*fetchAPI.Response)
	if res.ErrorCode != 0 {
		return fetched{}, kafka.Error(res.ErrorCode)
	}
	if len(res.Topics) != 1 || len(res.Topics[0].Partitions) != 1 {
		return fetched{}, fmt.Errorf("fetch response for %d topics, want one partition of %s", len(res.Topics), f.topic)
	}
	p := &res.Topics[0].Partitions[0]
	switch code := kafka.Error(p.ErrorCode); {
	case code == kafka.OffsetOutOfRange:
		if err := f.outOfRange(ctx); err != nil {
			return fetched{}, err
		}
		return fetched{next: f.next, end: -1}, nil
	case p.ErrorCode != 0:
		return fetched{}, code
	}
	end := p.HighWatermark
	if f.isolation == kafka.ReadCommitted && p.LastStableOffset >= 0 {
		end = p.LastStableOffset
	}
	msgs, err := f.records(p)
	if err != nil {
		return fetched{}, err
	}
	batches := 0
	switch rs := p.RecordSet.Records.(type) {
	case nil:
	case *protocol.RecordStream:
		batches = len(rs.Records)
	default:
		batches = 1
	}
	return fetched{msgs: msgs, next: f.next, end: end, batches: batches}, nil
}

// records decodes a partition's record batches, skipping control batches
// and aborted transactions, and moves f.next past all of them. On an error
// it returns nothing and leaves f.next where it was: the next fetch reads the
// response's records again.
func (f *fetcher) records(p *fetchAPI.ResponsePartition) (msgs []kafka.Message, err error) {
	start := f.next
	defer func() {
		if err != nil {
			msgs, f.next = nil, start
		}
	}()
	var batches []protocol.RecordReader
	switch rs := p.RecordSet.Records.(type) {
	case nil:
		return nil, nil
	case *protocol.RecordStream:
		batches = rs.Records
	default:
		batches = []protocol.RecordReader{rs}
	}
	aborted := slices.SortedFunc(slices.Values(p.AbortedTransactions), func(a, b fetchAPI.ResponseTransaction) int {
		return cmp.Compare(a.FirstOffset, b.FirstOffset)
	})
	abortedProducers := map[int64]bool{}
	// consumeAborted marks the producers of the aborted transactions that
	// began at or before offset, as Kafka's Java consumer does before it
	// looks at any batch that carries a producer id, control batches
	// included: an abort marker met before the producer's next batch must
	// end its aborted transaction, not leave it to swallow the next one.
	consumeAborted := func(offset int64) {
		for len(aborted) > 0 && aborted[0].FirstOffset <= offset {
			abortedProducers[aborted[0].ProducerID] = true
			aborted = aborted[1:]
		}
	}
	for _, batch := range batches {
		// A batch compaction emptied still starts where it starts.
		if b, ok := batch.(interface{ Offset() int64 }); ok {
			f.next = max(f.next, b.Offset())
		}
		switch b := batch.(type) {
		case *protocol.ControlBatch:
			consumeAborted(b.BaseOffset)
			for {
				r, err := b.ReadRecord()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						return msgs, fmt.Errorf("read control record: %w", err)
					}
					break
				}
				c, err := protocol.ReadControlRecord(r)
				if err != nil {
					return msgs, fmt.Errorf("read control record at offset %d: %w", r.Offset, err)
				}
				if c.Type == 0 { // an abort marker ends the producer's aborted transaction
					delete(abortedProducers, b.ProducerID)
				}
				f.next = max(f.next, c.Offset+1)
			}
			continue
		case *protocol.RecordBatch:
			if b.Attributes.Transactional() {
				consumeAborted(b.BaseOffset)
				if abortedProducers[b.ProducerID] {
					if err := f.discard(b); err != nil {
						return msgs, err
					}
					continue
				}
			}
		}
		for {
			r, err := batch.ReadRecord()
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return msgs, fmt.Errorf("read record after offset %d: %w", f.next, err)
			}
			if r.Offset < f.next { // a batch starts before the offset asked for
				closeRecord(r)
				continue
			}
			m, err := f.message(r, p.HighWatermark)
			if err != nil {
				return msgs, err
			}
			msgs = append(msgs, m)
			f.next = r.Offset + 1
		}
	}
	return msgs, nil
}

// discard moves f.next past the records of an aborted batch.
func (f *fetcher) discard(b *protocol.RecordBatch) error {
	for {
		r, err := b.ReadRecord()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read aborted record after offset %d: %w", f.next, err)
		}
		f.next = max(f.next, r.Offset+1)
		closeRecord(r)
	}
}

func (f *fetcher) message(r *protocol.Record, hwm int64) (kafka.Message, error) {
	defer closeRecord(r)
	key, err := protocol.ReadAll(r.Key)
	if err != nil {
		return kafka.Message{}, fmt.Errorf("read key at offset %d: %w", r.Offset, err)
	}
	value, err := protocol.ReadAll(r.Value)
	if err != nil {
		return kafka.Message{}, fmt.Errorf("read value at offset %d: %w", r.Offset, err)
	}
	return kafka.Message{
		Topic:         f.topic,
		Partition:     f.partition,
		Offset:        r.Offset,
		HighWaterMark: hwm,
		Key:           key,
		Value:         value,
		Headers:       r.Headers,
		Time:          r.Time,
	}, nil
}

func closeRecord(r *protocol.Record) {
	if r.Key != nil {
		r.Key.Close()
	}
	if r.Value != nil {
		r.Value.Close()
	}
}

// resolveStart replaces the kafka.FirstOffset or kafka.LastOffset a group
// without a committed offset starts at with the offset it stands for.
func (f *fetcher) resolveStart(ctx context.Context) error {
	first, last, err := f.offsets(ctx)
	if err != nil {
		return err
	}
	if f.next == kafka.LastOffset {
		f.next = last
	} else {
		f.next = first
	}
	testhook.Run(hookStartResolved)
	return nil
}

// offsets returns the partition's first offset and its last: the next to be
// written, or under read committed the last stable offset (the first of a
// transaction still open). Starting a new group at the high watermark would
// skip the records of open transactions that commit later.
func (f *fetcher) offsets(ctx context.Context) (first, last int64, err error) {
	client := &kafka.Client{Addr: f.addr, Transport: f.transport}
	res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics:         map[string][]kafka.OffsetRequest{f.topic: {kafka.FirstOffsetOf(f.partition), kafka.LastOffsetOf(f.partition)}},
		IsolationLevel: f.isolation,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets: %w", err)
	}
	for _, po := range res.Topics[f.topic] {
		if po.Partition == f.partition {
			if po.Error != nil {
				return 0, 0, fmt.Errorf("list offsets: %w", po.Error)
			}
			return po.FirstOffset, po.LastOffset, nil
		}
	}
	return 0, 0, fmt.Errorf("list offsets: the broker did not list partition %d of %s", f.partition, f.topic)
}

// outOfRange handles an offset the partition does not hold. Before the log
// start, retention (or a DeleteRecords call) removed the records: reading
// resumes at the log start, and onReset is told the range skipped. Past the
// log end (the topic was deleted and created again, or an unclean leader
// election lost records), reading resumes where Config.StartOffset says: the
// log start (what the inbox has seen is skipped) or its end.
func (f *fetcher) outOfRange(ctx context.Context) error {
	first, last, err := f.offsets(ctx)
	if err != nil {
		return fmt.Errorf("offset %d out of range: %w", f.next, err)
	}
	from := f.next
	switch {
	case f.next < first:
		f.next = first
	case f.next > last && f.startOffset == kafka.LastOffset:
		f.next = last
	case f.next > last:
		f.next = first
	default:
		return nil // the log moved meanwhile; fetch again
	}
	f.onReset(from, f.next)
	return nil
}
