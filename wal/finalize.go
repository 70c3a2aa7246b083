package wal

// finalizeLocked appends the provisional transaction to the spool and
// settles its frames. It never waits for spool space: the transaction is
// committed in SQLite and is never refused (backpressure applies to the
// next write instead).
func (c *Capture) finalizeLocked() error {
	P := c.prov
	if P == nil {
		return nil
	}
	id := WALIdentity{Salt1: c.hdr.salt1, Salt2: c.hdr.salt2, Frame: P.commit, Cksum: P.ck}
	merged, err := c.coalesceLocked(P.first, P.commit, P.dbPages, id)
	if err != nil {
		return c.failLocked(err)
	}
	if !merged {
		// Records stay in commit order: what coalescing holds goes first.
		if err := c.flushPendingLocked(); err != nil {
			return err
		}
		txid, err := c.appendFramesLocked(P.first, P.commit, P.dbPages, id)
		if err != nil {
			return c.failLocked(err)
		}
		c.unconfirmed = append(c.unconfirmed, pendingConfirm{txid: txid, gen: c.genSeq, frame: P.commit})
	}
	c.stats.Commits++
	c.prov = nil
	c.wakeLocked()
	return c.settleLocked(P.end)
}

// appendFramesLocked spools frames first..last (held in the store) as one
// record: the newest version of each page (later frames win), pages beyond
// dbPages dropped.
func (c *Capture) appendFramesLocked(first, last, dbPages uint32, id WALIdentity) (uint64, error) {
	if testHookAppend != nil {
		testHookAppend(c.hdr, first, last, c.spool.lastTxid()+1, false)
	}
	n := int(last - first + 1)
	s0 := int(first - c.storeBase)
	keep, count := c.markNewest(n, func(i int) uint32 { return c.meta.at(s0 + i).hdr.pgno() }, dbPages)
	a, err := c.spool.begin(RecordHeader{Kind: KindWAL, PageSize: c.hdr.pageSize, DBPages: dbPages, NPages: uint32(count), WAL: id})
	if err != nil {
		return 0, err
	}
	if c.readBack {
		err = c.appendKeptLocked(a, first, n, keep)
	} else {
		err = c.writeRuns(a, c.store, s0, n, keep, func(i int) uint32 { return c.meta.at(s0 + i).hdr.pgno() })
	}
	if err != nil {
		a.Abort()
		return 0, err
	}
	return a.Commit()
}

// testHookAppend, set by tests, sees every WAL transaction before it is
// spooled: the generation's header, its frame range and its txid; merge
// is true when it joins the transactions before it in one record
// (coalescing).
var testHookAppend func(h walHeader, first, last uint32, txid uint64, merge bool)

// markNewest sets bit i of c.keep for the newest version of each page
// among n entries (pgno(i)), skipping pages beyond dbPages.
func (c *Capture) markNewest(n int, pgno func(int) uint32, dbPages uint32) ([]uint64, int) {
	words := (n + 63) / 64
	if cap(c.keep) < words {
		c.keep = make([]uint64, words)
	}
	keep := c.keep[:words]
	clear(keep)
	// Pages seen, from the newest frame back: a bitmap over the database
	// size when that is small compared to the frames, else a map.
	useBits := uint64(dbPages) <= uint64(n)*64+4096
	var bits []uint64
	if useBits {
		w := (int(dbPages) + 64) / 64
		if cap(c.bits) < w {
			c.bits = make([]uint64, w)
		}
		bits = c.bits[:w]
		clear(bits)
	} else {
		clear(c.seen)
	}
	count := 0
	for i := n - 1; i >= 0; i-- {
		p := pgno(i)
		if p == 0 || p > dbPages {
			continue
		}
		if useBits {
			if bits[p/64]&(1<<(p%64)) != 0 {
				continue
			}
			bits[p/64] |= 1 << (p % 64)
		} else {
			if _, ok := c.seen[p]; ok {
				continue
			}
			c.seen[p] = struct{}{}
		}
		keep[i/64] |= 1 << (i % 64)
		count++
	}
	if !useBits && len(c.seen) > 1<<16 {
		c.seen = map[uint32]struct{}{} // do not keep a huge map
	}
	return keep, count
}

// writeRuns appends the kept entries of slots s0..s0+n-1 of st, in order,
// as runs of consecutive slots: a run in memory is one write straight from
// the arena; spilled slots are copied through a bounded buffer.
func (c *Capture) writeRuns(a *Appender, st *pageStore, s0, n int, keep []uint64, pgno func(int) uint32) error {
	ps := st.ps
	const chunk = 64
	var tmp []byte
	for i := 0; i < n; {
		if keep[i/64]&(1<<(i%64)) == 0 {
			i++
			continue
		}
		j := i
		c.pgnos = c.pgnos[:0]
		for j < n && keep[j/64]&(1<<(j%64)) != 0 && (j-i) < 1<<14 {
			c.pgnos = append(c.pgnos, pgno(j))
			j++
		}
		if run := st.run(s0+i, j-i); run != nil {
			if err := a.AddRun(c.pgnos, run); err != nil {
				return err
			}
			i = j
			continue
		}
		// Not all in memory: go page-chunk by page-chunk.
		for k := i; k < j; {
			m := min(j-k, chunk)
			if run := st.run(s0+k, m); run != nil {
				if err := a.AddRun(c.pgnos[k-i:k-i+m], run); err != nil {
					return err
				}
				k += m
				continue
			}
			if tmp == nil {
				tmp = make([]byte, chunk*ps)
			}
			for q := 0; q < m; q++ {
				pg, err := st.page(s0+k+q, tmp[q*ps:(q+1)*ps])
				if err != nil {
					return err
				}
				if &pg[0] != &tmp[q*ps] {
					copy(tmp[q*ps:], pg)
				}
			}
			if err := a.AddRun(c.pgnos[k-i:k-i+m], tmp[:m*ps]); err != nil {
				return err
			}
			k += m
		}
		i = j
	}
	return nil
}

// appendKeptLocked reads the kept frames among first..first+n-1 back
// from the WAL into a (ReadBack), a bounded batch of references at a
// time.
func (c *Capture) appendKeptLocked(a *Appender, first uint32, n int, keep []uint64) error {
	const batch = 4096
	refs := c.refs[:0]
	for i := 0; i < n; i++ {
		if keep[i/64]&(1<<(i%64)) == 0 {
			continue
		}
		refs = append(refs, c.refLocked(first+uint32(i)))
		if len(refs) == batch {
			if err := c.appendRefsLocked(a, refs); err != nil {
				return err
			}
			refs = refs[:0]
		}
	}
	c.refs = refs
	return c.appendRefsLocked(a, refs)
}
