package consumer

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// JSON adapts a handler of decoded values to a Handler. A value that does not
// decode as T is dead-lettered at once with reason "undecodable": the same
// bytes will never decode.
func JSON[T any](fn func(ctx context.Context, tx pgx.Tx, m Message, v T) error) Handler {
	return HandlerFunc(func(ctx context.Context, tx pgx.Tx, m Message) error {
		var v T
		if err := json.Unmarshal(m.Value, &v); err != nil {
			return fmt.Errorf("%w: %T: %w", ErrUndecodable, v, err)
		}
		return fn(ctx, tx, m, v)
	})
}
