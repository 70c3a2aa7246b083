package wal

import (
	"fmt"
	"slices"
)

// Coalescing (CaptureOptions.Coalesce): consecutive final transactions of
// one WAL generation are merged into one pending record (the newest
// version of each page among them) that is appended to the spool only
// when something needs the spool current. One-row autocommit transactions
// rewrite the same few pages over and over; merged, a checkpoint cycle of
// a thousand of them spools a few dozen pages instead of a thousand, and
// the spool's copy, hash, write and fsync of every version go away.
//
// Why it is safe: a pending transaction is final (SQLite committed it) and
// its frames are settled, exactly as if it had been appended to a buffered
// spool (segFile) and not yet written: a process crash or power loss
// loses it from the spool, never from the WAL while its generation lives,
// and reconciliation captures it again (as one group: captureFromWAL). It is
// appended before anything the spool's durability rules depend on:
//   - before every spool sync that ends a wait for durability (Conn.Sync's
//     after the WAL sync, and persist: CheckpointStart, SyncForPublish, a
//     generation's end, a rollback-mode transaction), so the spool is
//     current whenever it is confirmed (the fsync that runs beside the
//     WAL's may miss what finalizes during it), and records are
//     confirmed only as before (its unconfirmed entry is its last commit
//     frame, which the WAL sync must cover);
//   - before any other record is appended (txids stay in commit order);
//   - at Flush and Close.
//
// What changes: one spool txid names the group. The record's WAL identity
// is its last transaction's commit frame (reconciliation keeps the record
// only if the WAL still holds that frame, and the chained checksum proves
// it holds every earlier one of the generation). A boundary inside a group
// can never be published or restored: groups end at every WAL sync, so
// with synchronous=FULL (a sync per commit) there is one transaction per
// record; and pages dropped by a transaction that shrank the database are
// dropped from the group, so replaying the group's record gives the
// database as of its last transaction, as replaying each would, with one
// harmless exception: a page of the database from before the group that
// a shrink cuts and a later transaction's growth takes back without
// writing it keeps its old bytes instead of zeros (SQLite writes every
// page it grows into, except the lock-byte page, so it never reads it).
type pendingRecord struct {
	n       int // transactions merged (0: nothing pending)
	txid    uint64
	gen     uint64
	hdr     walHeader
	first   uint32 // first frame of the group (for the test hook)
	id      WALIdentity
	dbPages uint32
	ps      int
	slots   map[uint32]int // pgno -> page slot in mem
	free    []int          // slots of pages dropped by a shrink
	nslots  int
	mem     []byte
	pgnos   []uint32 // scratch for flush: pgno by slot (0: free)
	// With read-back the group holds no page: refs names the frame of
	// each page's newest version, read back when the group is appended
	// (frames of final transactions stay in the WAL until the generation
	// ends, which appends the group first: readback.go).
	// refs is in frame order (transactions finalize in frame order, and
	// a transaction's newest versions are added in frame order), so it
	// is appended without sorting; an entry superseded by a later
	// version, or cut by a shrink, has pgno 0.
	readBack bool
	refs     []frameRef
	at       map[uint32]int32 // pgno -> its live entry in refs
}

func (p *pendingRecord) bytes() int {
	if p.readBack {
		return len(p.at) * p.ps
	}
	return p.nslots * p.ps
}

// coalesceLocked merges the provisional transaction P (frames first..commit
// in the store, keep marking the newest version of each page, count of
// them) into the pending record. It reports false if P must be appended
// on its own (coalescing is off, or P is large).
func (c *Capture) coalesceLocked(first, commit, dbPages uint32, id WALIdentity) (bool, error) {
	limit := c.opts.Coalesce
	ps := int(c.hdr.pageSize)
	if limit <= 0 {
		return false, nil
	}
	n := int(commit - first + 1)
	if n*ps > limit/2 {
		// Appended on its own: no other transaction of its size could
		// join it. Up to half the limit, merging pays even for big
		// transactions: bench/vfs W1's 1.3 MB ones (1,000 rows and a
		// random-key index) rewrite the same index pages within a WAL
		// generation, and merged the spool takes 120 MB instead of 250.
		return false, nil
	}
	s0 := int(first - c.storeBase)
	pgno := func(i int) uint32 { return c.meta.at(s0 + i).hdr.pgno() }
	keep, count := c.markNewest(n, pgno, dbPages)
	p := &c.pend
	if p.n > 0 && (p.gen != c.genSeq || p.ps != ps || p.readBack != c.readBack || p.bytes()+count*ps > limit) {
		if err := c.flushPendingLocked(); err != nil {
			return false, err
		}
	}
	if p.n == 0 {
		if p.ps != ps {
			p.mem = nil
		}
		*p = pendingRecord{txid: c.spool.lastTxid() + 1, gen: c.genSeq, hdr: c.hdr, first: first, ps: ps,
			slots: p.slots, mem: p.mem, free: p.free[:0], pgnos: p.pgnos,
			readBack: c.readBack, refs: p.refs[:0], at: p.at}
		if p.slots == nil {
			p.slots = map[uint32]int{}
		}
		clear(p.slots)
		if p.at == nil {
			p.at = map[uint32]int32{}
		}
		clear(p.at)
	}
	if testHookAppend != nil {
		testHookAppend(c.hdr, first, commit, p.txid, p.n > 0)
	}
	if p.readBack {
		if dbPages < p.dbPages {
			// The database shrank: as below.
			for pg, k := range p.at {
				if pg > dbPages {
					p.refs[k].pgno = 0
					delete(p.at, pg)
				}
			}
		}
		for i := 0; i < n; i++ {
			if keep[i/64]&(1<<(i%64)) == 0 {
				continue
			}
			pg := pgno(i)
			if k, ok := p.at[pg]; ok {
				p.refs[k].pgno = 0
			}
			p.at[pg] = int32(len(p.refs))
			p.refs = append(p.refs, c.refLocked(first+uint32(i)))
		}
		if len(p.refs) > 2*len(p.at)+1024 {
			p.compactRefs()
		}
		return c.joinedLocked(p, id, dbPages, limit)
	}
	if dbPages < p.dbPages {
		// The database shrank: versions beyond its new end are gone
		// (as replaying the transactions one by one would cut them).
		for pg, s := range p.slots {
			if pg > dbPages {
				delete(p.slots, pg)
				p.free = append(p.free, s)
			}
		}
	}
	for i := 0; i < n; i++ {
		if keep[i/64]&(1<<(i%64)) == 0 {
			continue
		}
		pg := pgno(i)
		s, ok := p.slots[pg]
		if !ok {
			if k := len(p.free); k > 0 {
				s, p.free = p.free[k-1], p.free[:k-1]
			} else {
				s = p.nslots
				p.nslots++
				if need := p.nslots * ps; need > len(p.mem) {
					m := make([]byte, max(need, 2*len(p.mem), 16*ps))
					copy(m, p.mem)
					p.mem = m
				}
			}
			p.slots[pg] = s
		}
		page, err := c.store.page(s0+i, c.scratch())
		if err != nil {
			return false, err
		}
		copy(p.mem[s*ps:(s+1)*ps], page)
	}
	return c.joinedLocked(p, id, dbPages, limit)
}

// compactRefs drops the entries of superseded versions, so that a group
// of many transactions rewriting the same pages (autocommits, with
// checkpoints far apart) holds about one entry per page, not one per
// version: memory bounded by the group's pages (Coalesce).
func (p *pendingRecord) compactRefs() {
	n := 0
	for _, r := range p.refs {
		if r.pgno == 0 {
			continue
		}
		p.at[r.pgno] = int32(n)
		p.refs[n] = r
		n++
	}
	p.refs = p.refs[:n]
}

// joinedLocked completes a transaction's merge into the group.
func (c *Capture) joinedLocked(p *pendingRecord, id WALIdentity, dbPages uint32, limit int) (bool, error) {
	if p.n > 0 {
		c.stats.Coalesced++
	}
	p.n++
	p.id, p.dbPages = id, dbPages
	if p.bytes() >= limit {
		return true, c.flushPendingLocked()
	}
	return true, nil
}

// flushPendingLocked appends the pending record to the spool (without
// syncing it) and notes it as unconfirmed until a WAL sync covers its last
// commit frame.
func (c *Capture) flushPendingLocked() error {
	p := &c.pend
	if p.n == 0 {
		return nil
	}
	if err := c.usableLocked(); err != nil {
		// Capture stopped: the group may be torn (coalesceLocked can fail
		// half-way through a merge, its pages already overwritten) and
		// is never appended; reconciliation captures its transactions
		// again from the WAL (TestCaptureTornGroupNeverAppended).
		return err
	}
	if p.readBack {
		// The pages in frame order, read back from the WAL.
		err := c.appendGroupLocked(p, len(p.at), func(a *Appender) error { return c.appendRefsLocked(a, p.refs) })
		if cap(p.refs) > 1<<16 {
			p.refs, p.at = nil, nil // do not keep a huge group's scratch
		}
		return err
	}
	// The pages go out in slot order, runs of live slots straight from
	// p.mem (a record's pages may come in any order: the directory names
	// them). A run of at least half the spool's buffer skips the buffer's
	// copy (segFile.WriteAt); a W1 group is one run of thousands of
	// pages. Slots freed by a shrink (pgno 0 here) end a run.
	p.pgnos = slices.Grow(p.pgnos[:0], p.nslots)[:p.nslots]
	clear(p.pgnos)
	for pg, s := range p.slots {
		p.pgnos[s] = pg
	}
	err := c.appendGroupLocked(p, len(p.slots), func(a *Appender) error {
		for i := 0; i < p.nslots; {
			if p.pgnos[i] == 0 {
				i++
				continue
			}
			j := i + 1
			for j < p.nslots && p.pgnos[j] != 0 {
				j++
			}
			if err := a.AddRun(p.pgnos[i:j], p.mem[i*p.ps:j*p.ps]); err != nil {
				return err
			}
			i = j
		}
		return nil
	})
	if len(p.mem) > 4*c.opts.Coalesce {
		p.mem = nil // do not keep a large buffer
	}
	return err
}

// appendGroupLocked appends the group as one record of npages pages,
// added by add, and notes it as unconfirmed until a WAL sync covers its
// last commit frame. Any failure stops capture.
func (c *Capture) appendGroupLocked(p *pendingRecord, npages int, add func(*Appender) error) error {
	a, err := c.spool.begin(RecordHeader{Kind: KindWAL, PageSize: uint32(p.ps), DBPages: p.dbPages, NPages: uint32(npages), WAL: p.id})
	if err != nil {
		return c.failLocked(err)
	}
	if a.Txid() != p.txid {
		// Something appended in between: the group's txid (which the
		// test hook saw) would be wrong. Never happens: every append
		// goes through capture, which flushes first.
		a.Abort()
		return c.failLocked(fmt.Errorf("wal: coalesced transactions were to be txid %d, but the spool appends %d", p.txid, a.Txid()))
	}
	if err := add(a); err != nil {
		a.Abort()
		return c.failLocked(err)
	}
	txid, err := a.Commit()
	if err != nil {
		return c.failLocked(err)
	}
	c.unconfirmed = append(c.unconfirmed, pendingConfirm{txid: txid, gen: p.gen, frame: p.id.Frame})
	p.n = 0
	return nil
}

// Flush appends the transactions coalescing holds back (CaptureOptions.
// Coalesce) to the spool, without syncing it. Afterwards the spool's last
// record holds every transaction SQLite has committed and capture has
// seen final.
func (c *Capture) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	return c.flushPendingLocked()
}

// LastFinal returns the txid of the newest final transaction: the spool's
// last record, or the group coalescing holds back (which keeps that txid
// while it grows and is appended with it). The VFS reports it as the
// database's txid, and the publisher takes it as the tip its lag is
// measured to: a group is appended (SyncForPublish) before it is
// published. Once capture has stopped (Err) a held group is never
// appended, so it is not reported.
func (c *Capture) LastFinal() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pend.n > 0 && c.failed == nil {
		return c.pend.txid
	}
	return c.spool.lastTxid()
}
