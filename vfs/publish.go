package vfs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/bopstore/bop/checkpoint"
)

// The publisher (package checkpoint) of an open database: one per
// database, started once the catalog exists and the writer role is taken
// (or left to it, when the store did not answer at open), closed first
// when the last connection closes (a final publish and a release record,
// bounded by Config.CloseTimeout).
//
// What the VFS does with it:
//   - every commit: Notify(txid) at COMMIT_PHASETWO, so the lag clock is
//     exact; then, in the WAL hook (hook.go), after SQLite released the
//     write lock: WaitPublished (sync) or WaitLag past MaxLag (async);
//   - PRAGMA bop_checkpoint: PublishNow;
//   - PRAGMA bop_status: Status;
//   - OnFenced: from then on every WAL write fails (ErrFenced).

// startPublisher builds and starts the database's publisher.
func (d *database) startPublisher() error {
	cfg := &d.cfg
	pub, err := checkpoint.New(checkpoint.Config{
		Store: d.store, Catalog: d.catalog, Writer: d.writer, Spool: d.spool, Capture: d.capture,
		StagingDir: filepath.Join(d.dir, "staging"), Quota: d.v.quota,
		Interval: cfg.CheckpointInterval, SpoolBytes: cfg.PublishBytes,
		// Renew well within the lease, so that a live writer is never
		// taken over without force.
		RenewEvery:    min(checkpoint.DefaultRenewEvery, cfg.LeaseTTL/3),
		ForceTakeover: d.force, OnTakeover: d.lateTakeover, OnFenced: d.onFenced,
		Logf: cfg.Logf,
	})
	if err != nil {
		return err
	}
	d.pub.Store(pub)
	return nil
}

// lateTakeover judges a takeover the publisher made itself (the store did
// not answer at open): publishes by another writer mean the local state
// predates the remote's, which only a reopen can quarantine; publishing
// stops until then.
func (d *database) lateTakeover(res checkpoint.TakeoverResult) error {
	if res.ForeignPublishes > 0 {
		return fmt.Errorf("%w: %s holds %d publishes of %s by other writers that this node's state does not continue: close every connection and reopen the database; its local state is then quarantined and rebuilt from the store",
			ErrRemoteHasDatabase, redactURL(d.remoteURL), res.ForeignPublishes, d.layout.Root())
	}
	d.setRemoteErr(nil)
	return nil
}

// onFenced is the publisher's OnFenced: commits fail from now on.
func (d *database) onFenced(err error) {
	d.fencedErr.CompareAndSwap(nil, &err)
	d.logf("bop: %s: fenced, commits fail from now on: %v", d.path, err)
}

// fenced returns the reason the writer is fenced, or nil.
func (d *database) fenced() error {
	if p := d.fencedErr.Load(); p != nil {
		return *p
	}
	return nil
}

// ensurePublisher starts the publisher of a database whose page size was
// unknown at open (a new database: SQLite has just written page 1), taking
// the writer role first. Called after WAL mode is set on a connection,
// and by the pragmas and hooks that need the publisher.
func (d *database) ensurePublisher() error {
	if d.pub.Load() != nil {
		return nil
	}
	d.roleMu.Lock()
	defer d.roleMu.Unlock()
	if d.pub.Load() != nil || d.readOnly && !d.rwJoined.Load() || d.roleClosed {
		return nil
	}
	if d.startErr != nil {
		return d.startErr
	}
	ps := d.knownPageSize()
	if ps == 0 {
		return nil
	}
	rb, err := d.takeRole(ps)
	if err == nil && rb.reason != "" {
		err = fmt.Errorf("%w: %s: close every connection and reopen the database: its local state is then quarantined and rebuilt from the store",
			ErrRemoteHasDatabase, rb.reason)
	}
	if err == nil {
		err = d.startPublisher()
	}
	if err != nil {
		// Sticky: the local state must not be published, and asking the
		// store again at every connection would only repeat the answer.
		d.startErr = fmt.Errorf("bop: %s: %w", d.path, err)
		d.logf("%v", d.startErr)
		return d.startErr
	}
	return nil
}

// startPublisherLate starts the publisher from a commit when nothing else
// did: a database whose commits no WAL hook of bop sees (ATTACHed to a
// connection whose main database is not bop, or attached in rollback
// mode), or a read-write connection that joined a read-only first one
// through such an attachment. It runs in the background (the commit is
// final; taking the writer role may wait for the store) and at most one
// at a time; a database whose first page does not exist yet tries again
// at its next commit, one that failed for good (startErr) does not.
func (d *database) startPublisherLate() {
	if d.readOnly && !d.rwJoined.Load() || !d.lateStart.CompareAndSwap(false, true) {
		return
	}
	go func() {
		if err := d.ensurePublisher(); err == nil && d.pub.Load() == nil {
			d.lateStart.Store(false)
		}
	}()
}

// publishNow is PRAGMA bop_checkpoint.
func (d *database) publishNow(ctx context.Context) (uint64, error) {
	if err := d.ensurePublisher(); err != nil {
		return 0, err
	}
	pub := d.pub.Load()
	if pub == nil {
		return 0, ErrNotAvailable
	}
	txid, err := pub.PublishNow(ctx)
	if errors.Is(err, checkpoint.ErrFenced) {
		err = fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return txid, err
}

// closePublisher publishes what it can within CloseTimeout and writes the
// release record.
func (d *database) closePublisher() error {
	pub := d.pub.Load()
	if pub == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.CloseTimeout)
	defer cancel()
	err := pub.Close(ctx)
	if err != nil {
		if d.fenced() != nil || errors.Is(err, checkpoint.ErrFenced) {
			// Expected: a fenced writer has nothing it may publish.
			return nil
		}
		err = fmt.Errorf("bop: %s: final publish at close (what is not published stays in the spool for the next open): %w", d.path, err)
		d.logf("%v", err)
	}
	return err
}
