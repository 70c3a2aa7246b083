package vfs

import (
	"context"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/wal"
)

// The seam for the publisher (package checkpoint, issue 6). The VFS
// constructs one publisher per open database, after the spool is
// reconciled, and closes it at the last connection's close (before the
// spool). Until the publisher exists, newPublisher is nil: PRAGMA
// bop_checkpoint fails with ErrNotAvailable, the sync durability mode is
// refused at Register, and the spool only grows (a full spool fails
// commits after a short wait rather than blocking them forever).
//
// To plug it in, a file of this package sets newPublisher in an init
// function (importing checkpoint; checkpoint must not import vfs).

// publisher publishes one database's spooled transactions. The method set
// is a subset of *checkpoint.Publisher's (as that package stands), so it
// can be used as is.
type publisher interface {
	// PublishNow publishes every transaction confirmed in the spool now
	// and waits; it returns the published txid (PRAGMA bop_checkpoint).
	PublishNow(ctx context.Context) (uint64, error)
	// WaitPublished blocks until txid is published (sync durability).
	WaitPublished(ctx context.Context, txid uint64) error
	// Published is the newest published txid and the last publish error.
	Published() (txid uint64, lastErr error)
	// Close publishes what it can within ctx, writes a release record,
	// stops background work and releases the spool's leases.
	Close(ctx context.Context) error
}

// publisherParts is what the VFS hands the publisher of one database.
type publisherParts struct {
	Path   string // the main file
	Dir    string // its -bop folder
	Layout remote.Layout
	Store  remote.Store
	// Spool and Capture: read records with Spool.Newest/Records, call
	// Capture.SyncForPublish before publishing, Spool.Truncate after.
	Spool   *wal.Spool
	Capture *wal.Capture
	// Catalog is nil until a first publish creates <Dir>/catalog.db.
	Catalog     *manifest.Catalog
	CatalogPath string
	// TSeed is the boundary the image was created at; RemoteChecked is
	// false if the first open could not ask the remote whether it already
	// had the database (the publisher must, before its first publish).
	TSeed         uint64
	Origin        string
	RemoteChecked bool
	Writer        string // this process's writer id
	Config        Config
	// SetRemoteErr reports the state of the remote to PRAGMA bop_status
	// (nil: reachable again).
	SetRemoteErr func(error)
}

// newPublisher builds the publisher of a database; nil in this build.
var newPublisher func(publisherParts) (publisher, error)

func publisherAvailable() bool { return newPublisher != nil }

func (d *database) parts() publisherParts {
	return publisherParts{
		Path: d.path, Dir: d.dir, Layout: d.layout, Store: d.store,
		Spool: d.spool, Capture: d.capture, Catalog: d.catalog, CatalogPath: d.dir + "/catalog.db",
		TSeed: d.meta.TSeed, Origin: d.meta.Origin, RemoteChecked: d.meta.RemoteChecked,
		Writer: d.owner.owner.Writer, Config: d.cfg, SetRemoteErr: d.setRemoteErr,
	}
}
