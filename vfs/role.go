package vfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bopstore/bop/checkpoint"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
)

// The writer role (DESIGN section 6). A process that opens a database for
// writing takes the role in the store with the manifest's takeover
// protocol (probe first, bump the epoch in head, walk the log to its end,
// create a takeover record), before SQLite reads a byte of the local
// files. What the walk finds decides the local state's fate:
//
//   - nothing foreign: the local image, WAL and spool continue the remote
//     history; the publisher takes it from there;
//   - publishes by another writer after this node's last record
//     (checkpoint.TakeoverResult.ForeignPublishes): the remote moved on
//     without us. The image, WAL and spool are moved to
//     <db>-bop/quarantine/<time>/ and the database is rebuilt as a sparse
//     image of the remote tip; nothing quarantined is ever published;
//   - a catalog that no longer matches the log (manifest.ErrDiverged,
//     ErrBehind): the catalog is quarantined too and rebuilt from the
//     store (manifest.OpenRemote), then the same.
//
// Another writer that published or renewed head within LeaseTTL makes the
// open fail with ErrOwnedElsewhere, unless forced (Config.ForceTakeover,
// bop_force_takeover=1). The one exception is the writer id of the last
// process that owned this local state (the lock file names it; we hold the
// lock, so that process is gone): its lease is taken over at once.
//
// An unreachable store does not stop an async database: the catalog is
// created locally if missing, the role is left to the publisher, which
// retries each cycle and stops (status: halted) if it then finds foreign
// publishes; the next open quarantines. With sync durability the open
// fails.

// roleTimeout bounds the takeover at open (a log walk may read many
// records).
const roleTimeout = 2 * time.Minute

// rebuild says why the local state must be rebuilt from the remote ("":
// it need not). resetCatalog: the catalog must be rebuilt too.
type rebuild struct {
	reason       string
	resetCatalog bool
}

func (d *database) catalogPath() string { return filepath.Join(d.dir, "catalog.db") }

// catalogOptions are the options of manifest.Open: pageSize != 0 creates
// a catalog (with Config.ChunkPages); 0 opens one as it is.
func (d *database) catalogOptions(pageSize uint32) manifest.Options {
	o := manifest.Options{Layout: d.layout, Directories: manifest.StoreDirectories{Store: d.store}}
	if pageSize != 0 {
		o.PageSize, o.ChunkPages = pageSize, d.cfg.ChunkPages
	}
	return o
}

// knownPageSize is the database's page size as the local state knows it:
// the catalog's, else the newest spooled record's (an adopted image, or
// page 1 of a new database); 0 while a new database has no page.
func (d *database) knownPageSize() uint32 {
	if d.catalog != nil {
		return d.catalog.Tip().PageSize
	}
	if h, ok := d.spool.LastHeader(); ok {
		return h.PageSize
	}
	return 0
}

// openCatalog opens <db>-bop/catalog.db, or makes one: from the store
// (manifest.OpenRemote) when the store has the database, else a new one
// with the database's page size. A catalog that never applied a record
// (created while the store was unreachable) is made again: it holds
// nothing but a guess. remoteErr reports a store that did not answer (the
// catalog is then created locally: async opens go on).
func (d *database) openCatalog(ctx context.Context, pageSize uint32) (remoteErr error, err error) {
	path := d.catalogPath()
	if _, err := os.Stat(path); err == nil {
		cat, err := manifest.Open(path, d.catalogOptions(0))
		if err != nil {
			return nil, err
		}
		if cat.Tip().Seq > 0 {
			d.catalog = cat
			return nil, nil
		}
		if err := cat.Close(); err != nil {
			return nil, err
		}
		if err := removeCatalog(path); err != nil {
			return nil, err
		}
	}
	_, _, herr := manifest.GetHead(ctx, d.store, d.layout)
	switch {
	case herr == nil:
		cat, err := manifest.OpenRemote(ctx, d.store, d.layout, path, d.catalogOptions(0))
		if err != nil {
			return nil, fmt.Errorf("build the catalog from %s: %w", redactURL(d.remoteURL), err)
		}
		if sd := cat.SnapshotDamage(); sd != nil {
			// Not an error: the catalog is the one the snapshot would
			// have given. The takeover below replaces the snapshot.
			d.logf("bop: %s: the catalog snapshot in %s: %v", d.path, redactURL(d.remoteURL), sd)
		}
		d.catalog = cat
		return nil, nil
	case errors.Is(herr, remote.ErrNotFound):
	default:
		remoteErr = fmt.Errorf("ask %s for %s: %w", redactURL(d.remoteURL), d.layout.Head(), herr)
	}
	cat, err := manifest.Open(path, d.catalogOptions(pageSize))
	if err != nil {
		return remoteErr, err
	}
	d.catalog = cat
	return remoteErr, nil
}

// removeCatalog removes a catalog file with its WAL and wal-index.
func removeCatalog(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// takeRole opens or creates the catalog and takes the writer role (see
// the top of this file). It returns a non-empty rebuild when the local
// state must be quarantined. A store that did not answer is an error with
// sync durability; with async it leaves the role to the publisher
// (d.writer not yet the writer) and the error in the status.
func (d *database) takeRole(pageSize uint32) (rebuild, error) {
	ctx, cancel := context.WithTimeout(d.ctx, roleTimeout)
	defer cancel()
	// A store that enforces conditional puts by construction (the
	// embedded fsstore: remote.ConditionEnforcer) has nothing a probe
	// could find; every other store is probed before anything is
	// written to it.
	storeProbed := d.enforcesConditions
	if d.catalog == nil {
		// The store probe (manifest.ProbeStore) needs no catalog: it runs
		// while the catalog is opened or created (both mostly wait for
		// fsyncs), and the writer made below does not probe again. A
		// failed probe only means the takeover probes itself (and fails
		// the same way if the store cannot fence).
		var probe chan error
		if !storeProbed {
			probe = make(chan error, 1)
			go func() {
				var err error
				d.probeLeftovers, err = manifest.ProbeStore(ctx, d.store, d.layout)
				probe <- err
			}()
		}
		remoteErr, err := d.openCatalog(ctx, pageSize)
		if probe != nil {
			storeProbed = <-probe == nil
		}
		if err != nil {
			return rebuild{}, err
		}
		if remoteErr != nil {
			if d.cfg.Durability == Sync {
				return rebuild{}, fmt.Errorf("the remote is unreachable and durability is sync: %w", remoteErr)
			}
			d.setRemoteErr(remoteErr)
		}
	}
	if d.writer == nil {
		w, err := manifest.NewWriter(d.store, d.layout, d.catalog, d.owner.owner.Writer,
			manifest.WriterOptions{LeaseTTL: d.cfg.LeaseTTL, StoreProbed: storeProbed, ProbeLeftovers: d.probeLeftovers})
		if err != nil {
			return rebuild{}, err
		}
		d.writer = w
	}
	res, err := d.takeover(ctx)
	switch {
	case err == nil:
	case errors.Is(err, manifest.ErrOwnedElsewhere):
		return rebuild{}, fmt.Errorf("%w: %w (set Config.ForceTakeover or bop_force_takeover=1 to take it over: that writer is then fenced)", ErrOwnedElsewhere, err)
	case errors.Is(err, manifest.ErrFenced):
		return rebuild{}, fmt.Errorf("%w: %w", ErrFenced, err)
	case errors.Is(err, manifest.ErrUnsafeStore):
		return rebuild{}, err
	case errors.Is(err, manifest.ErrDiverged), errors.Is(err, manifest.ErrBehind):
		return rebuild{reason: err.Error(), resetCatalog: true}, nil
	default:
		if d.cfg.Durability == Sync {
			return rebuild{}, fmt.Errorf("take the writer role in %s (durability is sync): %w", redactURL(d.remoteURL), err)
		}
		d.setRemoteErr(fmt.Errorf("take the writer role (the publisher retries): %w", err))
		return rebuild{}, nil
	}
	d.setRemoteErr(nil)
	if sd := d.catalog.SnapshotDamage(); sd != nil && !d.snapshotReplaced {
		// Every cold open rebuilds the catalog from the whole log until
		// head names a sound snapshot: the writer replaces it now, not
		// after its next SnapshotEvery records.
		d.snapshotReplaced = true
		if err := d.writer.UploadSnapshot(ctx); err != nil {
			d.logf("bop: %s: replacing the damaged catalog snapshot: %v", d.path, err)
		} else {
			d.logf("bop: %s: uploaded a catalog snapshot in place of the damaged one", d.path)
		}
	}
	tip := d.catalog.Tip()
	if res.ForeignPublishes > 0 {
		return rebuild{reason: fmt.Sprintf("the store holds %d publishes by other writers after this node's last one (remote tip txid %d)", res.ForeignPublishes, tip.Txid)}, nil
	}
	if d.spool == nil {
		return rebuild{}, nil // rebuilding already
	}
	if last := d.spool.Status().LastTxid; tip.Txid > last {
		return rebuild{reason: fmt.Sprintf("the store's log ends at txid %d, the local spool at %d", tip.Txid, last)}, nil
	}
	return rebuild{}, nil
}

// takeover runs checkpoint.TakeOver, forced if configured, or if the
// lease is held by the last local owner's writer id (a crashed process of
// ours: the flock we hold proves it is gone).
func (d *database) takeover(ctx context.Context) (checkpoint.TakeoverResult, error) {
	res, err := checkpoint.TakeOver(ctx, d.catalog, d.writer, d.force)
	if err == nil || d.force || !errors.Is(err, manifest.ErrOwnedElsewhere) || d.owner.prev.Writer == "" {
		return res, err
	}
	h, _, herr := manifest.GetHead(ctx, d.store, d.layout)
	if herr != nil || !d.owner.prevWrote(h.Writer) {
		return res, err
	}
	d.logf("bop: %s: taking over the lease of writer %s, this folder's previous owner (%s), which is gone", d.path, h.Writer, d.owner.prev)
	return checkpoint.TakeOver(ctx, d.catalog, d.writer, true)
}

// resetCatalog closes the catalog and forgets the writer, before the
// catalog file is quarantined and rebuilt.
func (d *database) resetCatalog() error {
	var err error
	if d.catalog != nil {
		err = d.catalog.Close()
		d.catalog = nil
	}
	d.writer = nil
	return err
}

// rebuildFromRemote quarantines the local state (if any) and lays out a
// sparse image of the remote tip at which this process holds the writer
// role: T_seed = the tip's txid; local txids continue after it. On return
// meta.json, the seal, the spool and the bitmap describe the new image;
// the caller reopens them. d.catalog and d.writer hold the role.
func (d *database) rebuildFromRemote(rb rebuild) error {
	if rb.resetCatalog {
		if err := d.resetCatalog(); err != nil {
			return err
		}
	}
	q, err := quarantine(d.path, rb.reason, rb.resetCatalog, d.owner.owner)
	if err != nil {
		return err
	}
	if q != "" {
		d.logf("bop: %s: local state moved to %s: %s", d.path, q, rb.reason)
		d.mu.Lock()
		d.quarantined = q
		d.mu.Unlock()
	}
	if d.catalog == nil {
		if _, err := d.takeRole(0); err != nil {
			return err
		}
		if d.writer.Epoch() == 0 {
			return fmt.Errorf("rebuild from %s: the writer role could not be taken", redactURL(d.remoteURL))
		}
	}
	tip := d.catalog.Tip()
	m := &meta{Format: metaFormat, Tenant: d.layout.Tenant, Name: d.layout.DB, CreatedMs: time.Now().UnixMilli(),
		TSeed: tip.Txid, Remote: d.cfg.Remote, RemoteChecked: true}
	if err := seedSparse(d.path, m, tip.PageSize, tip.DBPages); err != nil {
		return fmt.Errorf("rebuild from %s at txid %d: %w", redactURL(d.remoteURL), tip.Txid, err)
	}
	return nil
}

func (d *database) logf(format string, args ...any) {
	if d.cfg.Logf != nil {
		d.cfg.Logf(format, args...)
	}
}
