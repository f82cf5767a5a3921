package consumer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestErrorClassification is the table of handler error → action.
func TestErrorClassification(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		err       error
		transient bool
		reason    string
	}{
		{"serialization failure", &pgconn.PgError{Code: "40001"}, true, ""},
		{"deadlock", fmt.Errorf("insert: %w", &pgconn.PgError{Code: "40P01"}), true, ""},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true, ""},
		{"connection exception", &pgconn.PgError{Code: "08006"}, true, ""},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false, ReasonHandlerError},
		{"http api down", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, false, ReasonHandlerError},
		{"plain error", errors.New("boom"), false, ReasonHandlerError},
		{"permanent", Permanent(errors.New("bad input")), false, ReasonPermanent},
		{"undecodable", fmt.Errorf("%w: json", ErrUndecodable), false, ReasonUndecodable},
		{"context deadline", context.DeadlineExceeded, false, ReasonHandlerError},
		{"PgError without a code", &pgconn.PgError{Message: "made by hand"}, false, ReasonHandlerError},
		{"PgError with a short code", &pgconn.PgError{Code: "4"}, false, ReasonHandlerError},
	} {
		if got := isTransient(tc.err); got != tc.transient {
			t.Errorf("%s: isTransient = %v, want %v", tc.name, got, tc.transient)
		}
		if !tc.transient {
			if got := handlerReason(tc.err); got != tc.reason {
				t.Errorf("%s: reason %q, want %q", tc.name, got, tc.reason)
			}
		}
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
}
