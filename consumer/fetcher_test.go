package consumer

import (
	"errors"
	"testing"

	"github.com/segmentio/kafka-go/protocol"
	fetchAPI "github.com/segmentio/kafka-go/protocol/fetch"
)

// failingReader is a record batch that cannot be decoded.
type failingReader struct{}

func (failingReader) ReadRecord() (*protocol.Record, error) { return nil, errors.New("corrupt batch") }

// TestRecordsErrorKeepsOffset: when a batch of a response fails to decode,
// the records decoded before it are not returned and the offset does not
// move past them, so the next fetch returns them. (It moved past them: they
// were lost.)
func TestRecordsErrorKeepsOffset(t *testing.T) {
	t.Parallel()
	f := &fetcher{topic: "t", next: 10}
	good := &protocol.RecordBatch{BaseOffset: 10, Records: protocol.NewRecordReader(
		protocol.Record{Offset: 10, Value: protocol.NewBytes([]byte("a"))},
		protocol.Record{Offset: 11, Value: protocol.NewBytes([]byte("b"))},
	)}
	p := &fetchAPI.ResponsePartition{RecordSet: protocol.RecordSet{Records: &protocol.RecordStream{
		Records: []protocol.RecordReader{good, failingReader{}},
	}}}
	msgs, err := f.records(p)
	if err == nil || len(msgs) != 0 || f.next != 10 {
		t.Fatalf("records: %d messages, err %v, next %d; want none, an error, next still 10", len(msgs), err, f.next)
	}
}

// TestRecordsAbortedAndControl: the filtering of one fetch response, as
// Kafka's consumer does it: producer 7's transaction (from offset 2) was
// aborted, producer 8's committed; markers are skipped; the offset passes
// everything.
func TestRecordsAbortedAndControl(t *testing.T) {
	t.Parallel()
	rec := func(off int64, v string) protocol.Record {
		return protocol.Record{Offset: off, Value: protocol.NewBytes([]byte(v))}
	}
	marker := func(off int64, typ int16) protocol.Record {
		return (&protocol.ControlRecord{Offset: off, Type: typ, Data: []byte{0, 0, 0, 0, 0, 0}}).Record()
	}
	tx := protocol.Transactional
	batches := []protocol.RecordReader{
		&protocol.RecordBatch{BaseOffset: 0, Records: protocol.NewRecordReader(rec(0, "plain-0"), rec(1, "plain-1"))},
		&protocol.RecordBatch{Attributes: tx, ProducerID: 7, BaseOffset: 2, Records: protocol.NewRecordReader(rec(2, "aborted-2"), rec(3, "aborted-3"))},
		&protocol.RecordBatch{Attributes: tx, ProducerID: 8, BaseOffset: 4, Records: protocol.NewRecordReader(rec(4, "committed-4"))},
		&protocol.ControlBatch{Attributes: tx | protocol.Control, ProducerID: 7, BaseOffset: 5, Records: protocol.NewRecordReader(marker(5, 0))},
		&protocol.ControlBatch{Attributes: tx | protocol.Control, ProducerID: 8, BaseOffset: 6, Records: protocol.NewRecordReader(marker(6, 1))},
		// Producer 7 again, in a new transaction that is not aborted.
		&protocol.RecordBatch{Attributes: tx, ProducerID: 7, BaseOffset: 7, Records: protocol.NewRecordReader(rec(7, "committed-7"))},
		&protocol.ControlBatch{Attributes: tx | protocol.Control, ProducerID: 7, BaseOffset: 8, Records: protocol.NewRecordReader(marker(8, 1))},
	}
	f := &fetcher{topic: "t", isolation: 1, next: 0}
	p := &fetchAPI.ResponsePartition{
		AbortedTransactions: []fetchAPI.ResponseTransaction{{ProducerID: 7, FirstOffset: 2}},
		RecordSet:           protocol.RecordSet{Records: &protocol.RecordStream{Records: batches}},
	}
	msgs, err := f.records(p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, string(m.Value))
	}
	want := []string{"plain-0", "plain-1", "committed-4", "committed-7"}
	if len(got) != len(want) {
		t.Fatalf("messages %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("messages %q, want %q", got, want)
		}
	}
	if f.next != 9 {
		t.Fatalf("next offset %d, want 9 (past the last marker)", f.next)
	}
}

// TestRecordsAbortMarkerFirst: a response that starts at an abort marker
// whose transaction began before the fetch offset. The marker ends that
// transaction; the producer's next transaction, committed, is kept. (The
// aborted entry was only taken at the producer's next data batch, after
// the marker, which then dropped a committed transaction: a loss.)
func TestRecordsAbortMarkerFirst(t *testing.T) {
	t.Parallel()
	rec := func(off int64, v string) protocol.Record {
		return protocol.Record{Offset: off, Value: protocol.NewBytes([]byte(v))}
	}
	marker := func(off int64, typ int16) protocol.Record {
		return (&protocol.ControlRecord{Offset: off, Type: typ, Data: []byte{0, 0, 0, 0, 0, 0}}).Record()
	}
	tx := protocol.Transactional
	for _, between := range []bool{false, true} {
		batches := []protocol.RecordReader{
			&protocol.ControlBatch{Attributes: tx | protocol.Control, ProducerID: 7, BaseOffset: 11, Records: protocol.NewRecordReader(marker(11, 0))},
		}
		want := []string{"committed-13"}
		if between {
			batches = append(batches, &protocol.RecordBatch{BaseOffset: 12, Records: protocol.NewRecordReader(rec(12, "plain-12"))})
			want = []string{"plain-12", "committed-13"}
		} else {
			batches = append(batches, &protocol.RecordBatch{BaseOffset: 12, Records: protocol.NewRecordReader()})
		}
		batches = append(batches,
			&protocol.RecordBatch{Attributes: tx, ProducerID: 7, BaseOffset: 13, Records: protocol.NewRecordReader(rec(13, "committed-13"))},
			&protocol.ControlBatch{Attributes: tx | protocol.Control, ProducerID: 7, BaseOffset: 14, Records: protocol.NewRecordReader(marker(14, 1))},
		)
		f := &fetcher{topic: "t", isolation: 1, next: 11}
		msgs, err := f.records(&fetchAPI.ResponsePartition{
			AbortedTransactions: []fetchAPI.ResponseTransaction{{ProducerID: 7, FirstOffset: 10}},
			RecordSet:           protocol.RecordSet{Records: &protocol.RecordStream{Records: batches}},
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range msgs {
			got = append(got, string(m.Value))
		}
		if len(got) != len(want) || got[len(got)-1] != want[len(want)-1] || f.next != 15 {
			t.Errorf("plain batch between=%v: messages %q, next %d; want %q, next 15", between, got, f.next, want)
		}
	}
}
