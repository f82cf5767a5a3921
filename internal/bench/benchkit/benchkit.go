// Package benchkit holds what the benchmark programs share: the machine's
// CPU use and the median of repeated measurements.
package benchkit

import (
	"os"
	"slices"
	"strconv"
	"strings"
)

// CPU is a reading of the machine's CPU time, all processes, from /proc/stat
// (zero where /proc is missing).
type CPU struct{ busy, total int64 }

// ReadCPU reads the machine's CPU time now.
func ReadCPU() CPU {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPU{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var c CPU
	for i, f := range strings.Fields(line)[1:] {
		if i >= 8 { // guest time is already in user time
			break
		}
		v, _ := strconv.ParseInt(f, 10, 64)
		c.total += v
		if i != 3 && i != 4 { // idle, iowait
			c.busy += v
		}
	}
	return c
}

// BusySince returns the share of all cores' time that was busy between c0
// and now, 0..1.
func (c0 CPU) BusySince() float64 {
	c := ReadCPU()
	if c.total == c0.total {
		return 0
	}
	return float64(c.busy-c0.busy) / float64(c.total-c0.total)
}

// Median returns the middle of xs (the upper middle for an even count), or 0
// for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
