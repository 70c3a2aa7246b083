package wal_test

import (
	"errors"
	"io/fs"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/bopstore/bop/internal/crashfs"
	"github.com/bopstore/bop/wal"
)

// Power losses around a spool's reopen, with its folder followed (entries
// durable only at the folder's fsync). Found by a review of session 14's
// change to Truncate (its deletions are not fsynced).

// crashSpool is a spool folder on crashfs, followed.
type crashSpool struct {
	t    *testing.T
	dir  string
	tr   *crashfs.Tracker
	opts wal.SpoolOptions
}

func newCrashSpool(t *testing.T, wrap func(wal.FS, *crashfs.Tracker) wal.FS) *crashSpool {
	dir := filepath.Join(t.TempDir(), "spool")
	tr := crashfs.New()
	tr.FollowDir(dir)
	var fsys wal.FS = crashFS{crashfs.FS{T: tr}}
	if wrap != nil {
		fsys = wrap(fsys, tr)
	}
	return &crashSpool{t: t, dir: dir, tr: tr, opts: wal.SpoolOptions{FS: fsys, SegmentBytes: 8000}}
}

func (c *crashSpool) open() *wal.Spool { c.t.Helper(); return openSpool(c.t, c.dir, c.opts) }

// powerLoss cuts the power with sp open and brings back what was durable
// (keep, if set, picks folder operations that survive anyway).
func (c *crashSpool) powerLoss(sp *wal.Spool, keep func(kind, name string) bool) {
	c.t.Helper()
	c.tr.Crash()
	sp.Close()
	if keep != nil {
		c.tr.KeepDirOps(keep)
	}
	if _, err := c.tr.Restore(crashfs.LoseUnsynced, nil); err != nil {
		c.t.Fatal(err)
	}
}

// A segment made by a rotation before a close (or a kill) has no durable
// folder entry; the reopen must make it durable before its records can be
// confirmed.
func TestSpoolReopenSyncsNewSegmentEntries(t *testing.T) {
	for _, truncate := range []bool{false, true} {
		c := newCrashSpool(t, nil)
		sp := c.open()
		for i := 0; i < 4; i++ {
			appendRec(t, sp, 1024, 30, uint32(i+1), 30)
		}
		confirmAll(t, sp)
		last := appendRec(t, sp, 1024, 30, 9) // a rotation: a new segment, its entry not synced
		sp.Close()
		sp = c.open()
		if truncate {
			if err := sp.Truncate(4); err != nil {
				t.Fatal(err)
			}
		}
		if err := sp.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := sp.SetConfirmed(last); err != nil {
			t.Fatal(err)
		}
		c.powerLoss(sp, nil)
		sp, err := wal.OpenSpool(c.dir, c.opts)
		if err != nil {
			t.Fatalf("truncate=%v: confirmed txid %d lost: %v", truncate, last, err)
		}
		if st := sp.Status(); st.ConfirmedTxid != last || st.LastTxid != last {
			t.Fatalf("truncate=%v: %+v", truncate, st)
		}
		sp.Close()
	}
}

// failStateSync fails the state file's fsyncs while fail is set.
type failStateSync struct {
	wal.FS
	fail *atomic.Bool
}

func (f failStateSync) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || filepath.Base(name) != "state" {
		return file, err
	}
	return failingSync{file, f.fail}, nil
}

type failingSync struct {
	wal.File
	fail *atomic.Bool
}

func (f failingSync) Sync() error {
	if f.fail.Load() {
		return errors.New("injected fsync failure")
	}
	return f.File.Sync()
}

// A state save whose fsync failed (or was never reached: a kill) is
// still in the page cache at the reopen, which acts on it (deleting the
// segments it truncated, durably): it must be made durable first.
func TestSpoolReopenSyncsStateRead(t *testing.T) {
	var fail atomic.Bool
	c := newCrashSpool(t, func(f wal.FS, _ *crashfs.Tracker) wal.FS { return failStateSync{f, &fail} })
	sp := c.open()
	for i := 0; i < 20; i++ {
		appendRec(t, sp, 1024, 30, uint32(i%30+1), 30)
	}
	confirmAll(t, sp)
	fail.Store(true)
	if err := sp.Truncate(20); err == nil {
		t.Fatal("Truncate succeeded with the state's fsync failing")
	}
	sp.Close()
	fail.Store(false)
	sp = c.open()
	c.powerLoss(sp, nil)
	sp, err := wal.OpenSpool(c.dir, c.opts)
	if err != nil {
		t.Fatalf("reopen after a power loss: %v", err)
	}
	if st := sp.Status(); st.ConfirmedTxid != 20 || st.LastTxid != 20 {
		t.Fatalf("%+v", st)
	}
	sp.Close()
}

// Rotations' folder entries become durable in any order before the
// folder's fsync: a later segment may survive an earlier one. With every
// missing record above the confirmed watermark that is a torn tail, not
// corruption.
func TestSpoolLostEarlierSegmentAboveConfirmed(t *testing.T) {
	c := newCrashSpool(t, nil)
	sp := c.open()
	for i := 0; i < 4; i++ {
		appendRec(t, sp, 1024, 30, 1, 2)
	}
	confirmAll(t, sp)
	for i := 0; i < 8; i++ {
		appendRec(t, sp, 1024, 30, 1, 2)
	}
	segs, _ := filepath.Glob(filepath.Join(c.dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("%d segments: the test needs smaller segments", len(segs))
	}
	newest := filepath.Base(segs[len(segs)-1])
	c.powerLoss(sp, func(kind, name string) bool { return name == newest })
	sp, err := wal.OpenSpool(c.dir, c.opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer sp.Close()
	if st := sp.Status(); st.ConfirmedTxid != 4 || st.LastTxid < 4 {
		t.Fatalf("%+v", st)
	}
	if left, _ := filepath.Glob(filepath.Join(c.dir, newest)); len(left) != 0 {
		t.Fatalf("segment %s after the gap kept", newest)
	}
	if txid := appendRec(t, sp, 1024, 30, 3); txid != sp.Status().LastTxid {
		t.Fatalf("append after the cut: txid %d", txid)
	}
}

// crashAtSyncDir cuts the power at the spool folder's next fsync once
// armed.
type crashAtSyncDir struct {
	wal.FS
	tr  *crashfs.Tracker
	arm *atomic.Bool
}

func (c crashAtSyncDir) SyncDir(dir string) error {
	if c.arm.Load() {
		c.tr.Crash()
	}
	return c.FS.SyncDir(dir)
}

// The state's first save (its file empty at the open) fsyncs the folder
// before it writes: a segment an earlier life created has no durable entry
// until then, and a state confirming its records must not be durable
// first. (Found by a review: the save fsynced the folder after the state.)
func TestSpoolFirstStateSaveSyncsFolderFirst(t *testing.T) {
	var arm atomic.Bool
	c := newCrashSpool(t, func(f wal.FS, tr *crashfs.Tracker) wal.FS { return crashAtSyncDir{f, tr, &arm} })
	sp := c.open()
	appendRec(t, sp, 1024, 30, 1)
	sp.Close() // the segment's entry never synced
	sp = c.open()
	if err := sp.Sync(); err != nil {
		t.Fatal(err)
	}
	arm.Store(true)
	sp.SetConfirmed(1) // the power goes at the folder's fsync
	sp.Close()
	c.tr.KeepDirOps(func(kind, name string) bool { return name == "state" })
	if _, err := c.tr.Restore(crashfs.LoseUnsynced, nil); err != nil {
		t.Fatal(err)
	}
	sp, err := wal.OpenSpool(c.dir, wal.SpoolOptions{SegmentBytes: 8000})
	if err != nil {
		t.Fatalf("reopen after a power loss in the first state save: %v", err)
	}
	sp.Close()
}
