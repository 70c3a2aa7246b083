package wal_test

import (
	"fmt"
	"math/rand/v2"
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
