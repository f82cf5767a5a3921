package exactly_test

import (
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly"
)

// A pool, a connection and a transaction are each a DB.
var (
	_ exactly.DB = (*pgxpool.Pool)(nil)
	_ exactly.DB = (*pgx.Conn)(nil)
	_ exactly.DB = pgx.Tx(nil)
)
