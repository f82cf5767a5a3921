package outbox

import (
	"strings"
	"testing"

	"github.com/exactlyhq/exactly"
)

// TestMessageIDHeaderAnyCase: a row whose headers carry the message id
// header in another letter case is published with that header alone.
// Consumers read the header in any case and dead-letter a message that has
// two, so adding a second one would dead-letter every such message.
func TestMessageIDHeaderAnyCase(t *testing.T) {
	t.Parallel()
	msgs, err := kafkaMessages([]row{{
		id: 1, messageID: "0190a0e4-0000-7000-8000-000000000001", topic: "t",
		headers: []byte(`[{"key":"idempotency-key","value":"YWJj"}]`),
	}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, h := range msgs[0].Headers {
		if strings.EqualFold(h.Key, exactly.Header) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("headers %v: %d message id headers, want 1", msgs[0].Headers, n)
	}
}
