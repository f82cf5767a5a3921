//go:build race

package orders_test

// raceEnabled: the test runs with -race, so the programs it builds do too.
const raceEnabled = true
