package wal

import (
	"fmt"
	"sort"
)

// MainWrite is called after a write to the main database file. Writes
// inside a checkpoint (the WAL being copied back) are ignored; others are
// rollback-journal-mode writes (before WAL mode is on). Capture notes the
// byte range; at the transaction's end (CommitPhaseTwo or MainUnlock) it
// reads the whole pages those ranges touch back from the file, so writes
// of any size are captured exactly as the file holds them. (A VACUUM that
// changes the page size writes the new file in old-size pieces.)
func (cn *Conn) MainWrite(p []byte, off int64) error {
	c := cn.c
	c.mu.Lock()
	inCkpt := cn.inCkpt
	c.mu.Unlock()
	if inCkpt || len(p) == 0 {
		return nil
	}
	if err := cn.waitForSpace(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("wal: main database write at offset %d: %w", off, ErrUnaligned)
	}
	if c.directOwner != nil && c.directOwner != cn {
		return c.failLocked(fmt.Errorf("wal: two connections write the main database at once: %w", ErrLost))
	}
	c.directOwner = cn
	end := off + int64(len(p))
	if n := len(c.direct); n > 0 && c.direct[n-1].end == off {
		c.direct[n-1].end = end // sequential pages: one range
	} else {
		c.direct = append(c.direct, byteRange{off, end})
	}
	return nil
}

// MainUnlock is called when the connection's lock on the main database is
// about to drop to SHARED or NONE (before the VFS releases it). Direct
// writes not yet spooled (a transaction that ended without
// COMMIT_PHASETWO: a rollback, whose journal playback wrote the old pages
// back) are spooled: the file then holds exactly those pages.
func (cn *Conn) MainUnlock() error {
	c := cn.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.directOwner != cn {
		return nil
	}
	if err := c.usableLocked(); err != nil {
		return err
	}
	return c.emitDirectLocked(cn)
}

// emitDirectLocked spools the pages the direct writes touched, read back
// from the main database file, as one KindDirect transaction.
func (c *Capture) emitDirectLocked(cn *Conn) error {
	ranges := c.direct
	c.direct = c.direct[:0]
	c.directOwner = nil
	if len(ranges) == 0 {
		return nil
	}
	if !c.reconciled {
		// Rollback-journal mode from the start: no WAL to reconcile.
		if err := c.reconcileLocked(nil); err != nil {
			return err
		}
	}
	if c.hdrValid {
		// SQLite writes the database directly only with no WAL in use:
		// the generation is over (even if its file was kept).
		if err := c.endGenerationLocked(nil); err != nil {
			return err
		}
	}
	if err := c.flushPendingLocked(); err != nil {
		return err
	}
	size, err := cn.main.Size()
	if err != nil {
		return c.failLocked(fmt.Errorf("wal: size of main database: %w", err))
	}
	var hdr [100]byte
	if size < int64(len(hdr)) {
		return c.failLocked(fmt.Errorf("wal: main database is %d bytes after a rollback-mode transaction: %w", size, ErrUnaligned))
	}
	if _, err := cn.main.ReadAt(hdr[:], 0); err != nil {
		return c.failLocked(fmt.Errorf("wal: read main database header: %w", err))
	}
	ps := int64(headerPageSize(hdr[:]))
	if ps == 0 || size%ps != 0 || size/ps > 1<<32-1 {
		return c.failLocked(fmt.Errorf("wal: main database is %d bytes with page size %d, not whole pages: %w", size, ps, ErrUnaligned))
	}
	dbPages := uint32(size / ps)
	// Pages touched, ascending and distinct.
	c.pgnos = c.pgnos[:0]
	sortRanges(ranges)
	next := uint32(1)
	for _, r := range ranges {
		first := uint32(r.off/ps) + 1
		last := min(uint32((r.end-1)/ps)+1, dbPages)
		for p := max(first, next); p <= last; p++ {
			c.pgnos = append(c.pgnos, p)
		}
		next = max(next, last+1)
	}
	a, err := c.spool.begin(RecordHeader{Kind: KindDirect, PageSize: uint32(ps), DBPages: dbPages, NPages: uint32(len(c.pgnos))})
	if err != nil {
		return c.failLocked(err)
	}
	const chunk = 64
	buf := make([]byte, int64(min(chunk, len(c.pgnos)))*ps)
	for i := 0; i < len(c.pgnos); {
		// A run of consecutive pages, read with one call.
		j := i + 1
		for j < len(c.pgnos) && j-i < chunk && c.pgnos[j] == c.pgnos[j-1]+1 {
			j++
		}
		b := buf[:int64(j-i)*ps]
		if _, err := cn.main.ReadAt(b, int64(c.pgnos[i]-1)*ps); err != nil {
			a.Abort()
			return c.failLocked(fmt.Errorf("wal: read back page %d of the main database: %w", c.pgnos[i], err))
		}
		if err := a.AddRun(c.pgnos[i:j], b); err != nil {
			a.Abort()
			return c.failLocked(err)
		}
		i = j
	}
	if _, err := a.Commit(); err != nil {
		return c.failLocked(err)
	}
	c.stats.DirectTxns++
	// The database file holds the transaction (SQLite synced it before
	// finalizing its journal): durable in both once the spool is synced.
	return c.persistConfirmedLocked()
}

func sortRanges(r []byteRange) {
	sort.Slice(r, func(i, j int) bool { return r[i].off < r[j].off })
}

// headerPageSize reads the page size from a database header (page 1).
func headerPageSize(p1 []byte) uint32 {
	if len(p1) < 18 || string(p1[:16]) != "SQLite format 3\x00" {
		return 0
	}
	v := uint32(p1[16])<<8 | uint32(p1[17])
	if v == 1 {
		return 65536
	}
	return v
}
