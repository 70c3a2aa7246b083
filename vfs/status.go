package vfs

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Status is the state of one open database, as PRAGMA bop_status returns
// it (one row, one column: this struct as JSON) and VFS.Status.
type Status struct {
	Mode       string `json:"mode"`       // "primary"
	Durability string `json:"durability"` // "async" or "sync"
	Path       string `json:"path"`
	Tenant     string `json:"tenant"`
	Name       string `json:"name"`
	Remote     string `json:"remote"` // store URL
	Origin     string `json:"origin"` // new, adopted, takeover
	// Txid is the newest transaction captured into the spool.
	Txid uint64 `json:"txid"`
	// PublishedTxid is the newest published transaction; LagTxns =
	// Txid - PublishedTxid.
	PublishedTxid uint64 `json:"published_txid"`
	LagTxns       uint64 `json:"lag_txns"`
	// LagSeconds is how long the oldest unpublished transaction has been
	// waiting, counted from its commit in this process.
	LagSeconds float64 `json:"lag_seconds"`
	// LastPublish is when this process last published (zero: never).
	LastPublish time.Time `json:"last_publish,omitzero"`
	// Publishing is true while a publish is in progress; Job and JobState
	// name its durable job.
	Publishing bool   `json:"publishing"`
	Job        string `json:"job,omitempty"`
	JobState   string `json:"job_state,omitempty"`
	// PublishError is the error of the last publish attempt (empty after
	// a good one).
	PublishError string `json:"publish_error,omitempty"`
	// Fenced: another writer took the database over; commits fail with
	// ErrFenced, reads work. Reopening quarantines and rebuilds.
	Fenced bool `json:"fenced"`
	// Halted: publishing stopped for good for another reason (reopen).
	Halted string `json:"halted,omitempty"`
	// LagWaits counts commits that waited for publishing to catch up
	// (async, past MaxLag).
	LagWaits   uint64 `json:"lag_waits"`
	SpoolBytes int64  `json:"spool_bytes"`
	SpoolLimit int64  `json:"spool_limit"` // 0: none
	CacheBytes int64  `json:"cache_bytes"`
	// Owner is this process: pid, host, writer id, start time; Writer its
	// writer id in the store's log.
	Owner  string `json:"owner"`
	Writer string `json:"writer"`
	// TSeed is the boundary the image was created at; ImageMissingPages
	// the pages a sparse image still reads from the remote (0: complete).
	TSeed             uint64 `json:"t_seed"`
	ImageMissingPages uint32 `json:"image_missing_pages"`
	// Quarantine is the folder this open moved stale local state to.
	Quarantine string `json:"quarantine,omitempty"`
	// Backpressure says why commits wait, if they do.
	Backpressure string `json:"backpressure,omitempty"`
	// RemoteError is the last error talking to the remote, if any.
	RemoteError string `json:"remote_error,omitempty"`
	// CaptureError is the error that stopped capture, if any (every
	// write fails until the database is reopened).
	CaptureError string `json:"capture_error,omitempty"`
	// MainSyncError: an fsync of the main database file failed; the WAL
	// is kept and WAL restarts fail until every connection is closed and
	// the database reopened (mainfile.go, beforeWALReuse).
	MainSyncError string `json:"main_sync_error,omitempty"`
	// Publisher is "running", "fenced", "halted", or why there is none.
	Publisher string `json:"publisher"`
}

// status builds the database's Status.
func (d *database) status() Status {
	sp := d.spool.Status()
	st := Status{
		Mode: "primary", Durability: d.cfg.Durability.String(), Path: d.path,
		Tenant: d.layout.Tenant, Name: d.layout.DB, Remote: redactURL(d.remoteURL), Origin: d.meta.Origin,
		Txid: d.capture.LastFinal(), SpoolBytes: sp.Bytes, SpoolLimit: sp.MaxBytes,
		Owner: d.owner.owner.String(), Writer: d.owner.owner.Writer, TSeed: d.meta.TSeed, LagWaits: d.lagWaits.Load(),
		Publisher: "not started (a new database starts it once its first page exists)",
	}
	if d.readOnly && !d.rwJoined.Load() {
		st.Publisher = "none (opened read-only)"
	}
	if sp.Blocked {
		st.Backpressure = sp.Reason
	}
	if sp.Err != nil {
		st.CaptureError = sp.Err.Error()
	}
	if err := d.capture.Err(); err != nil {
		st.CaptureError = err.Error()
	}
	if err := d.mainSyncErr(); err != nil {
		st.MainSyncError = err.Error()
	}
	if d.img != nil {
		st.ImageMissingPages = d.img.Missing()
	}
	d.roleMu.Lock()
	if d.startErr != nil {
		st.Publisher = "not started: " + d.startErr.Error()
	}
	cat := d.catalog // set by a late start, under roleMu
	d.roleMu.Unlock()
	pub := d.pub.Load()
	if pub != nil {
		ps := pub.Status()
		st.Publisher = "running"
		st.PublishedTxid, st.LastPublish, st.Publishing = ps.PublishedTxid, ps.LastPublish, ps.Running
		st.Job, st.JobState = ps.Job, string(ps.JobState)
		if ps.Job == "" {
			st.JobState = ""
		}
		if ps.LastError != nil {
			st.PublishError = ps.LastError.Error()
		}
		if ps.Halted != nil {
			st.Publisher, st.Halted = "halted", ps.Halted.Error()
		}
		st.Fenced = ps.Fenced
		st.LagSeconds = ps.Lag.Seconds()
	} else if cat != nil {
		// No publisher (a read-only process): what the store holds is
		// what the catalog knows, not nothing.
		st.PublishedTxid = cat.Tip().Txid
	}
	if d.fenced() != nil {
		st.Fenced = true
	}
	if st.Fenced {
		st.Publisher = "fenced"
	}
	if st.Txid > st.PublishedTxid {
		st.LagTxns = st.Txid - st.PublishedTxid
	}
	d.mu.Lock()
	if pub == nil {
		if st.LagTxns == 0 {
			d.lagSince = time.Time{}
		} else if d.lagSince.IsZero() {
			d.lagSince = time.Now()
		}
		if !d.lagSince.IsZero() {
			st.LagSeconds = time.Since(d.lagSince).Seconds()
		}
	}
	if d.remoteErr != nil {
		st.RemoteError = d.remoteErr.Error()
	}
	st.Quarantine = d.quarantined
	d.mu.Unlock()
	st.CacheBytes = d.cacheUsed()
	return st
}

// noteCommit records that a transaction was captured while no publisher
// runs (for the lag).
func (d *database) noteCommit() {
	d.mu.Lock()
	if d.lagSince.IsZero() {
		d.lagSince = time.Now()
	}
	d.mu.Unlock()
}

// statusJSON is PRAGMA bop_status.
func (d *database) statusJSON() (string, error) {
	b, err := json.Marshal(d.status())
	return string(b), err
}

// txidString is PRAGMA bop_txid.
func (d *database) txidString() string {
	return strconv.FormatUint(d.capture.LastFinal(), 10)
}

// dirBytes sums the sizes of the files under dir (0 if it is missing).
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// redactURL hides user info in a store URL before it is shown.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User("REDACTED")
	return u.String()
}

// Status returns the status of the database at path (as opened through
// this VFS), the same as PRAGMA bop_status.
func (v *VFS) Status(path string) (Status, error) {
	full, err := v.base.FullPathname(path)
	if err != nil && full == "" {
		return Status{}, err
	}
	d := lookupRef(full, v)
	if d == nil {
		return Status{}, fmt.Errorf("bop: %s is not open through VFS %q: %w", path, v.name, os.ErrNotExist)
	}
	defer d.release()
	return d.status(), nil
}
