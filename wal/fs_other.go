//go:build !linux

package wal

// Sync is the operating system's fsync.
func (f osFile) Sync() error { return f.File.Sync() }
