//go:build race

package testutil

// RaceEnabled reports whether the race detector is on. SQLite (wasm2go)
// runs about 20 times slower under it, so heavy tests skip and run in the
// test script's non-race pass instead.
const RaceEnabled = true
