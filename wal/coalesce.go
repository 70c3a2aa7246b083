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
	slots   map[uint32]pendSlot // pgno -> where its newest version is
	free    []int               // copy slots no page uses any more
	nslots  int                 // copy slots in mem (used or free)
	mem     []byte              // the copy buffer
	taken   []takenBuf          // arena buffers of large transactions
	held    int                 // bytes in taken
	pgnos   []uint32            // scratch for flush: pgno by copy slot (0: free)
}

// pendSlot is where a page's newest version in the group is: slot of the
// copy buffer (buf < 0) or of taken[buf].
type pendSlot struct {
	buf  int32
	slot int32
}

// takenBuf is a transaction's frames as capture's arena held them: the
// group took the arena instead of copying them (pageStore.take). pgnos
// names the page of each slot still the newest version in the group, 0
// for the others (superseded, or not the newest within the transaction).
type takenBuf struct {
	mem   []byte
	pgnos []uint32
}

// takeMinFrames is the smallest transaction whose arena the group takes
// instead of copying its pages: a copy of a few pages costs less than a
// buffer per transaction, and a large transaction's copy (bench/vfs W1:
// 1.3 MB per transaction, the whole WAL's volume) is not free.
const takeMinFrames = 64

func (p *pendingRecord) bytes() int { return p.nslots*p.ps + p.held }

// drop forgets the version at r (a newer one replaces it, or a shrink
// cut its page).
func (p *pendingRecord) drop(r pendSlot) {
	if r.buf < 0 {
		p.free = append(p.free, int(r.slot))
		return
	}
	p.taken[r.buf].pgnos[r.slot] = 0
}

// copySlot returns a free slot of the copy buffer, growing it if needed.
func (p *pendingRecord) copySlot() int {
	if k := len(p.free); k > 0 {
		s := p.free[k-1]
		p.free = p.free[:k-1]
		return s
	}
	s := p.nslots
	p.nslots++
	if need := p.nslots * p.ps; need > len(p.mem) {
		m := make([]byte, max(need, 2*len(p.mem), 16*p.ps))
		copy(m, p.mem)
		p.mem = m
	}
	return s
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
	// A large transaction that starts the store, all in its arena, is
	// taken whole: the group keeps the arena's first n slots (every
	// version, counted in full against the limit) and the store goes on
	// with another buffer.
	take := n >= takeMinFrames && s0 == 0 && c.store.inMemory(n)
	add := count * ps
	if take {
		add = n * ps
	}
	p := &c.pend
	if p.n > 0 && (p.gen != c.genSeq || p.ps != ps || p.bytes()+add > limit) {
		if err := c.flushPendingLocked(); err != nil {
			return false, err
		}
	}
	if p.n == 0 {
		if p.ps != ps {
			p.mem = nil
		}
		*p = pendingRecord{txid: c.spool.lastTxid() + 1, gen: c.genSeq, hdr: c.hdr, first: first, ps: ps,
			slots: p.slots, mem: p.mem, free: p.free[:0], taken: p.taken[:0], pgnos: p.pgnos}
		if p.slots == nil {
			p.slots = map[uint32]pendSlot{}
		}
		clear(p.slots)
	}
	if testHookAppend != nil {
		testHookAppend(c.hdr, first, commit, p.txid, p.n > 0)
	}
	if dbPages < p.dbPages {
		// The database shrank: versions beyond its new end are gone
		// (as replaying the transactions one by one would cut them).
		for pg, r := range p.slots {
			if pg > dbPages {
				delete(p.slots, pg)
				p.drop(r)
			}
		}
	}
	if take {
		b := len(p.taken)
		if b < cap(p.taken) {
			p.taken = p.taken[:b+1] // reuse the entry's pgnos
		} else {
			p.taken = append(p.taken, takenBuf{})
		}
		t := &p.taken[b]
		t.mem = c.store.take(n, c.meta.n)
		c.stats.Taken++
		t.pgnos = slices.Grow(t.pgnos[:0], n)[:n]
		clear(t.pgnos)
		p.held += n * ps
		for i := 0; i < n; i++ {
			if keep[i/64]&(1<<(i%64)) == 0 {
				continue
			}
			pg := pgno(i)
			if r, ok := p.slots[pg]; ok {
				p.drop(r)
			}
			p.slots[pg] = pendSlot{buf: int32(b), slot: int32(i)}
			t.pgnos[i] = pg
		}
	} else {
		for i := 0; i < n; i++ {
			if keep[i/64]&(1<<(i%64)) == 0 {
				continue
			}
			pg := pgno(i)
			r, ok := p.slots[pg]
			if !ok || r.buf >= 0 {
				if ok {
					p.drop(r)
				}
				r = pendSlot{buf: -1, slot: int32(p.copySlot())}
				p.slots[pg] = r
			}
			page, err := c.store.page(s0+i, c.scratch())
			if err != nil {
				return false, err
			}
			copy(p.mem[int(r.slot)*ps:(int(r.slot)+1)*ps], page)
		}
	}
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
	// The pages go out in slot order, runs of live slots straight from
	// the copy buffer, then from each taken arena (a record's pages may
	// come in any order: the directory names them). A run of at least
	// half the spool's buffer skips the buffer's copy (segFile.WriteAt); a
	// W1 transaction is one run of hundreds of pages. Slots no page uses
	// (pgno 0 here) end a run.
	p.pgnos = slices.Grow(p.pgnos[:0], p.nslots)[:p.nslots]
	clear(p.pgnos)
	for pg, r := range p.slots {
		if r.buf < 0 {
			p.pgnos[r.slot] = pg
		}
	}
	a, err := c.spool.begin(RecordHeader{Kind: KindWAL, PageSize: uint32(p.ps), DBPages: p.dbPages, NPages: uint32(len(p.slots)), WAL: p.id})
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
	if err := addRuns(a, p.pgnos, p.mem, p.ps); err != nil {
		a.Abort()
		return c.failLocked(err)
	}
	for _, t := range p.taken {
		if err := addRuns(a, t.pgnos, t.mem, p.ps); err != nil {
			a.Abort()
			return c.failLocked(err)
		}
	}
	txid, err := a.Commit()
	if err != nil {
		return c.failLocked(err)
	}
	c.unconfirmed = append(c.unconfirmed, pendingConfirm{txid: txid, gen: p.gen, frame: p.id.Frame})
	p.n = 0
	for i := range p.taken {
		c.store.recycle(p.taken[i].mem)
		p.taken[i].mem = nil
	}
	p.taken, p.held = p.taken[:0], 0
	if len(p.mem) > 4*c.opts.Coalesce {
		p.mem = nil // do not keep a large buffer
	}
	return nil
}

// addRuns appends the pages of mem whose pgnos entry is not 0, as runs of
// consecutive slots.
func addRuns(a *Appender, pgnos []uint32, mem []byte, ps int) error {
	for i := 0; i < len(pgnos); {
		if pgnos[i] == 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(pgnos) && pgnos[j] != 0 {
			j++
		}
		if err := a.AddRun(pgnos[i:j], mem[i*ps:j*ps]); err != nil {
			return err
		}
		i = j
	}
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
