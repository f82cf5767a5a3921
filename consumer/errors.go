package consumer

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrUndecodable marks a payload the handler cannot decode. Returned (wrapped)
// from a handler, it dead-letters the message at once with reason
// "undecodable": decoding the same bytes again cannot succeed.
var ErrUndecodable = errors.New("consumer: undecodable payload")

// permanentError marks a handler error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that the consumer dead-letters the message at once
// instead of retrying it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err: err}
}

// IsPermanent reports whether err was wrapped with Permanent or wraps
// ErrUndecodable.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p) || errors.Is(err, ErrUndecodable)
}

// Reasons recorded with a dead letter.
const (
	ReasonNoToken       = "no_token"       // no idempotency token where one is required
	ReasonInvalidToken  = "invalid_token"  // a token present but unusable (too long)
	ReasonTokenConflict = "token_conflict" // the token was used before for a different payload
	ReasonTokenExpired  = "token_expired"  // a UUIDv7 token older than the partitioned inbox keeps (inbox.Expired)
	ReasonOversized     = "oversized"      // key and value exceed Config.MaxMessageBytes
	ReasonUndecodable   = "undecodable"    // the handler returned ErrUndecodable
	ReasonPermanent     = "permanent"      // the handler returned Permanent(err)
	ReasonHandlerError  = "handler_error"  // the handler failed Config.MaxAttempts times
	ReasonProcessDied   = "process_died"   // the process ended while handling it, Config.MaxAttempts times
)

// isTransient reports whether a handler's err is a database or network
// condition that retrying the whole batch can heal: serialization failures,
// deadlocks, lost or refused connections, a server shutting down. A transient
// error never counts against a message's attempts and never dead-letters it.
// (Errors of the consumer's own statements are always retried: they are never
// the message's fault. A handler error on a dead connection shows up there
// too, when rolling back to the savepoint fails.)
func isTransient(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if len(pgErr.Code) != 5 { // not a SQLSTATE: nothing says retrying heals it
			return false
		}
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"53", // insufficient resources (too many connections, disk full)
			"57", // operator intervention (admin shutdown, crash shutdown, cannot connect now)
			"58": // system error (I/O)
			return true
		}
		switch pgErr.Code {
		case "40001", "40P01", // serialization failure, deadlock
			"55P03": // lock not available
			return true
		}
		return false
	}
	// Only pgconn's own errors: a network error from something else the
	// handler calls (an HTTP API) is the message's failure, retried up to
	// MaxAttempts, not an outage to wait out forever.
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var connErr *pgconn.ConnectError
	return errors.As(err, &connErr)
}

// handlerError is a failure of the user's handler for one message.
type handlerError struct {
	index int // position in the batch; -1 when the batch handler failed
	err   error
}

func (e *handlerError) Error() string { return fmt.Sprintf("handler: %v", e.err) }
func (e *handlerError) Unwrap() error { return e.err }

// PanicError is the error a recovered handler panic becomes.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }
