package deadletter

import (
	"slices"
	"strings"
	"testing"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
)

func TestReplayID(t *testing.T) {
	t.Parallel()
	a, b := ReplayID("orders", 3, 42), ReplayID("orders", 3, 42)
	if a != b || a == ReplayID("orders", 3, 43) || a == ReplayID("orders", 4, 42) {
		t.Fatalf("replay ids not stable per message: %s %s", a, b)
	}
	tok, err := inbox.ParseToken(a)
	if err != nil || tok.String() != a {
		t.Fatalf("replay id %q is not a canonical UUID token: %v", a, err)
	}
}

// TestReplayHeaders: which token a replay carries, by the dead letter's
// headers and reason.
func TestReplayHeaders(t *testing.T) {
	t.Parallel()
	derived := ReplayID("orders", 1, 7)
	for _, tc := range []struct {
		name    string
		reason  string
		headers []string // key, value, ...
		want    []string // the replay's headers
		id      string
	}{
		{"no token", consumer.ReasonNoToken, []string{"trace", "t"}, []string{"trace", "t"}, derived},
		{"too long", consumer.ReasonInvalidToken, []string{"Idempotency-Key", strings.Repeat("x", 1025), "trace", "t"}, []string{"trace", "t"}, derived},
		{"repeated", consumer.ReasonInvalidToken, []string{"Idempotency-Key", "a", "trace", "t", "IDEMPOTENCY-KEY", "b"}, []string{"trace", "t"}, derived},
		{"empty", consumer.ReasonNoToken, []string{"Idempotency-Key", ""}, nil, derived},
		// The group read another header; groups reading this one applied it.
		{"invalid elsewhere, usable here", consumer.ReasonInvalidToken, []string{"X-Id", strings.Repeat("x", 1025), "idempotency-key", "k1"}, []string{"X-Id", strings.Repeat("x", 1025), "Idempotency-Key", "k1"}, ""},
		{"own token", consumer.ReasonHandlerError, []string{"Idempotency-Key", "k1"}, []string{"Idempotency-Key", "k1"}, ""},
		{"own token, other case", consumer.ReasonPermanent, []string{"idempotency-key", "k1"}, []string{"Idempotency-Key", "k1"}, ""},
		{"own token repeated (before refused)", consumer.ReasonHandlerError, []string{"Idempotency-Key", "k1", "Idempotency-Key", "k2"}, []string{"Idempotency-Key", "k1"}, ""},
		{"no token header, another source", consumer.ReasonHandlerError, []string{"ce_id", "1"}, []string{"ce_id", "1"}, derived},
	} {
		var keys []string
		var values [][]byte
		for i := 0; i < len(tc.headers); i += 2 {
			keys, values = append(keys, tc.headers[i]), append(values, []byte(tc.headers[i+1]))
		}
		hs, id := ReplayHeaders(keys, values, tc.reason, "orders", 1, 7)
		var got []string
		for _, h := range hs {
			got = append(got, h.Key, string(h.Value))
		}
		if !slices.Equal(got, tc.want) || id != tc.id {
			t.Errorf("%s: headers %.80q, id %q; want %.80q, %q", tc.name, got, id, tc.want, tc.id)
		}
	}
}
