package wal_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/walgen"
	"github.com/bopstore/bop/wal"
)

// BenchmarkCapture measures capture + spool alone, per committed
// transaction (ns/op) and per page (ns/page), on the write stream SQLite
// makes for transactions of 1, 35 and 335 frames of 4 KiB (the bulk insert
// benchmark's transactions are about 35 frames without a secondary index,
// 335 with one). The WAL restarts every 1000 frames (autocheckpoint); the
// spool is published and truncated as it goes.
//
//	go test -run '^$' -bench Capture -benchtime 2000x ./wal/
func BenchmarkCapture(b *testing.B) {
	for _, frames := range []int{1, 35, 335} {
		b.Run(fmt.Sprintf("frames=%d", frames), func(b *testing.B) {
			benchCapture(b, frames)
		})
	}
}

type walWrite struct {
	off  int64
	data []byte
}

// benchCapture replays a pre-generated write stream (one WAL generation
// of transactions of the given size, up to 1000 frames) through capture,
// cycle after cycle, and reports capture's CPU time per page (getrusage:
// user+system of the process, which runs nothing else meanwhile).
func benchCapture(b *testing.B, frames int) {
	const ps = 4096
	const dbPages = 60000
	var stream [][]walWrite // per transaction; stream[0] starts with the header
	var cur []walWrite
	w := walgen.New(ps, 1, 2, func(p []byte, off int64) error {
		cur = append(cur, walWrite{off, append([]byte(nil), p...)})
		return nil
	})
	w.Header()
	rng := rand.New(rand.NewPCG(1, 2))
	pgnos := make([]uint32, frames)
	pages := make([][]byte, frames)
	for w.Frames+uint32(frames) <= 1000 {
		for j := range pages {
			pgnos[j] = 1 + uint32(rng.IntN(dbPages))
			pages[j] = make([]byte, ps)
			for k := range pages[j] {
				pages[j][k] = byte(rng.Uint32())
			}
		}
		w.Commit(dbPages, pgnos, pages)
		stream = append(stream, cur)
		cur = nil
	}

	dir := b.TempDir()
	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	c, _ := wal.NewCapture(sp, wal.CaptureOptions{})
	defer c.Close()
	conn := c.NewConn(nopMain{})
	conn.AttachWAL(emptyWAL{})
	b.SetBytes(int64(frames * ps))
	var cpu time.Duration
	b.ResetTimer()
	start := cpuTime()
	for i := 0; i < b.N; i++ {
		t := i % len(stream)
		if t == 0 && i > 0 {
			// An autocheckpoint, then the WAL restarts (same header bytes:
			// a new generation all the same).
			cpu += cpuTime() - start
			b.StopTimer()
			conn.CheckpointStart()
			conn.CheckpointDone()
			if st := sp.Status(); st.ConfirmedTxid >= st.FirstTxid {
				sp.Truncate(st.ConfirmedTxid)
			}
			b.StartTimer()
			start = cpuTime()
		}
		for _, wr := range stream[t] {
			if err := conn.Write(wr.data, wr.off); err != nil {
				b.Fatal(err)
			}
		}
		conn.CommitPhaseTwo()
	}
	cpu += cpuTime() - start
	b.StopTimer()
	if err := c.Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*frames), "cpu-ns/page")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/txn")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCaptureAutocommit replays the write stream of bench/vfs W2
// (one-row autocommit inserts, WAL, synchronous=NORMAL) through capture:
// per transaction one frame (header and page as two writes) and
// COMMIT_PHASETWO; every 1,000 frames SQLite's checkpoint cycle: the WAL
// sync, CKPT_START/DONE, the restart's header write and its sync. All of
// it is timed, fsyncs of the spool included (the WAL syncs are no-ops).
// buffer=0 writes each record at its commit; buffer=256K collects records
// in memory until a sync (SpoolOptions.BufferBytes, as the VFS does).
//
//	go test -run '^$' -bench CaptureAutocommit -benchtime 20000x ./wal/
func BenchmarkCaptureAutocommit(b *testing.B) {
	b.Run("buffer=0", func(b *testing.B) { benchAutocommit(b, 0, 0) })
	b.Run("buffer=256K", func(b *testing.B) { benchAutocommit(b, 256<<10, 0) })
	b.Run("buffer=256K,coalesce=8M", func(b *testing.B) { benchAutocommit(b, 256<<10, 8<<20) })
}

func benchAutocommit(b *testing.B, bufferBytes, coalesce int) {
	const ps = 4096
	const perGen = 1000
	// Two WAL generations of the stream, pre-generated (so the WAL
	// writer's own checksums are not timed) and used alternately: each
	// restart is a new generation for capture.
	var gens [2][][]walWrite // [generation][transaction]
	for g := range gens {
		var cur []walWrite
		w := walgen.New(ps, uint32(7+g), uint32(100+g), func(p []byte, off int64) error {
			cur = append(cur, walWrite{off, append([]byte(nil), p...)})
			return nil
		})
		w.Header()
		page := make([]byte, ps)
		rng := rand.New(rand.NewPCG(1, uint64(g)))
		for k := range page {
			page[k] = byte(rng.Uint32())
		}
		for i := 0; i < perGen; i++ {
			// The row goes into the rightmost leaf: a new page every ~28 rows.
			pgno := 2 + uint32(i/28)
			binary.LittleEndian.PutUint32(page, uint32(i))
			w.Commit(pgno+1, []uint32{pgno}, [][]byte{page})
			gens[g] = append(gens[g], cur)
			cur = nil
		}
	}
	// Like W2, each run of 10,000 transactions starts from a new spool
	// (set up and removed with the timer stopped), so the page cache
	// holds what a W2 run writes, not b.N times that.
	const perRun = 10 * perGen
	dir := b.TempDir()
	var (
		sp      *wal.Spool
		c       *wal.Capture
		conn    *wal.Conn
		commits uint64
	)
	closeRun := func() {
		if c == nil {
			return
		}
		if err := c.Err(); err != nil {
			b.Fatal(err)
		}
		commits += c.Stats().Commits
		c.Close()
		sp.Close()
		os.RemoveAll(filepath.Join(dir, "spool"))
		c = nil
	}
	defer closeRun()
	nop := func() error { return nil }
	b.SetBytes(ps)
	b.ResetTimer()
	var cpu time.Duration
	var start time.Duration
	for i := 0; i < b.N; i++ {
		g, t := (i/perGen)%2, i%perGen
		if i%perRun == 0 {
			if i > 0 {
				cpu += cpuTime() - start
			}
			b.StopTimer()
			closeRun()
			var err error
			if sp, err = wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{BufferBytes: bufferBytes}); err != nil {
				b.Fatal(err)
			}
			c, _ = wal.NewCapture(sp, wal.CaptureOptions{Coalesce: coalesce})
			conn = c.NewConn(nopMain{})
			conn.AttachWAL(emptyWAL{})
			b.StartTimer()
			start = cpuTime()
		} else if t == 0 {
			// The autocheckpoint: WAL sync, checkpoint; the next write
			// restarts the WAL (below) and SQLite syncs its header.
			if err := conn.Sync(nop); err != nil {
				b.Fatal(err)
			}
			if err := conn.CheckpointStart(); err != nil {
				b.Fatal(err)
			}
			conn.CheckpointDone()
		}
		for j, wr := range gens[g][t] {
			if err := conn.Write(wr.data, wr.off); err != nil {
				b.Fatal(err)
			}
			if j == 0 && wr.off == 0 && i%perRun != 0 {
				if err := conn.Sync(nop); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := conn.CommitPhaseTwo(); err != nil {
			b.Fatal(err)
		}
	}
	cpu += cpuTime() - start
	b.StopTimer()
	closeRun()
	if commits != uint64(b.N) {
		b.Fatalf("%d commits spooled, want %d", commits, b.N)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/txn")
}

// emptyWAL is a WAL file with nothing in it: the benchmark feeds capture
// directly (without read-back, capture never reads the file).
type emptyWAL struct{}

func (emptyWAL) ReadAt(p []byte, off int64) (int, error) { return 0, io.EOF }
func (emptyWAL) Size() (int64, error)                    { return 0, nil }
func (emptyWAL) Sync() error                             { return nil }
func (emptyWAL) Name() string                            { return "empty-wal" }
