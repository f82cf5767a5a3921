package uuidv7

import (
	"bytes"
	"testing"
	"time"
)

func TestNewIsOrderedAndVersioned(t *testing.T) {
	t.Parallel()
	prev := New()
	start := time.Now().UnixMilli()
	for range 100000 {
		u := New()
		if bytes.Compare(prev[:], u[:]) >= 0 {
			t.Fatalf("%s not after %s", u, prev)
		}
		if u[6]>>4 != 7 || u[8]>>6 != 2 {
			t.Fatalf("%s: version %d variant %b", u, u[6]>>4, u[8]>>6)
		}
		prev = u
	}
	ms := int64(prev[0])<<40 | int64(prev[1])<<32 | int64(prev[2])<<24 | int64(prev[3])<<16 | int64(prev[4])<<8 | int64(prev[5])
	if ms < start-1 || ms > time.Now().UnixMilli()+1000 {
		t.Fatalf("timestamp %d far from now %d", ms, start)
	}
}
