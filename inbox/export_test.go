package inbox

import (
	"context"
	"time"
)

// CreatePartitionsAt is CreatePartitions as if the database's clock read at:
// a creation job that last ran at some other time.
func (s *Store) CreatePartitionsAt(ctx context.Context, at time.Time) (PartitionChanges, error) {
	return s.createPartitions(ctx, at)
}
