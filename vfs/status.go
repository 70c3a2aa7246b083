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
	// PublishedTxid is the newest published transaction (0 until the
	// publisher exists); LagTxns = Txid - PublishedTxid.
	PublishedTxid uint64 `json:"published_txid"`
	LagTxns       uint64 `json:"lag_txns"`
	// LagSeconds is how long the oldest unpublished transaction has been
	// waiting, counted from when this process first saw it.
	LagSeconds float64 `json:"lag_seconds"`
	SpoolBytes int64   `json:"spool_bytes"`
	SpoolLimit int64   `json:"spool_limit"` // 0: none
	CacheBytes int64   `json:"cache_bytes"`
	// Owner is this process: pid, host, writer id, start time.
	Owner string `json:"owner"`
	// TSeed is the boundary the image was created at; ImageMissingPages
	// the pages a sparse image still reads from the remote (0: complete).
	TSeed             uint64 `json:"t_seed"`
	ImageMissingPages uint32 `json:"image_missing_pages"`
	// Backpressure says why commits wait, if they do.
	Backpressure string `json:"backpressure,omitempty"`
	// RemoteError is the last error talking to the remote, if any.
	RemoteError string `json:"remote_error,omitempty"`
	// CaptureError is the error that stopped capture, if any (every
	// write fails until the database is reopened).
	CaptureError string `json:"capture_error,omitempty"`
	// Publisher is "running", or why there is none.
	Publisher string `json:"publisher"`
}

// status builds the database's Status.
func (d *database) status() Status {
	sp := d.spool.Status()
	st := Status{
		Mode: "primary", Durability: d.cfg.Durability.String(), Path: d.path,
		Tenant: d.layout.Tenant, Name: d.layout.DB, Remote: redactURL(d.remoteURL), Origin: d.meta.Origin,
		Txid: sp.LastTxid, SpoolBytes: sp.Bytes, SpoolLimit: sp.MaxBytes,
		Owner: d.owner.owner.String(), TSeed: d.meta.TSeed,
		Publisher: "not available in this build",
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
	if d.img != nil {
		st.ImageMissingPages = d.img.Missing()
	}
	var pubErr error
	if d.pub != nil {
		st.Publisher = "running"
		st.PublishedTxid, pubErr = d.pub.Published()
	}
	if st.Txid > st.PublishedTxid {
		st.LagTxns = st.Txid - st.PublishedTxid
	}
	d.mu.Lock()
	if st.LagTxns == 0 {
		d.lagSince = time.Time{}
	} else if d.lagSince.IsZero() {
		d.lagSince = time.Now()
	}
	if !d.lagSince.IsZero() {
		st.LagSeconds = time.Since(d.lagSince).Seconds()
	}
	if d.remoteErr != nil {
		st.RemoteError = d.remoteErr.Error()
	}
	d.mu.Unlock()
	if pubErr != nil && st.RemoteError == "" {
		st.RemoteError = pubErr.Error()
	}
	st.CacheBytes = dirBytes(d.cacheDir())
	return st
}

// noteCommit records that a transaction was captured (for the lag).
func (d *database) noteCommit() {
	d.mu.Lock()
	if d.lagSince.IsZero() {
		d.lagSince = time.Now()
	}
	d.mu.Unlock()
}

func (d *database) cacheDir() string {
	if d.cfg.CacheDir != "" {
		return d.cfg.CacheDir
	}
	return filepath.Join(d.dir, "cache")
}

// statusJSON is PRAGMA bop_status.
func (d *database) statusJSON() (string, error) {
	b, err := json.Marshal(d.status())
	return string(b), err
}

// txidString is PRAGMA bop_txid.
func (d *database) txidString() string {
	return strconv.FormatUint(d.spool.Status().LastTxid, 10)
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
