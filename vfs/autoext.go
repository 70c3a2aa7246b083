package vfs

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// WAL mode is required: go-sqlite3 runs auto-extension entry points for
// every new connection, after the DSN's _pragma list (so a page size given
// there is already in effect). The one registered here puts each
// read-write connection whose main database is a bop file into WAL mode,
// installs bop's WAL hook (hook.go) and, for a new database, starts its
// publisher. A later journal_mode change is vetoed by mainFile.Pragma.
var autoExtOnce sync.Once

func registerAutoExtension() {
	autoExtOnce.Do(func() { sqlite3.AutoExtension(enableWAL) })
}

// walBusyWait bounds the retries of PRAGMA journal_mode=wal while another
// connection holds a lock (the driver sets its busy timeout only after the
// auto-extensions ran).
const walBusyWait = 30 * time.Second

func enableWAL(c *sqlite3.Conn) error {
	fp, err := c.FileControl("main", sqlite3.FCNTL_FILE_POINTER)
	if err != nil {
		return nil
	}
	file, ok := fp.(vfs.File)
	if !ok {
		return nil
	}
	mf, ok := vfsutil.UnwrapFile[*mainFile](file)
	if !ok {
		return nil
	}
	if ro, _ := c.ReadOnly("main"); ro {
		return nil
	}
	deadline := time.Now().Add(walBusyWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		mode, err := journalModeWAL(c)
		if err == nil {
			if mode != "wal" {
				return fmt.Errorf("bop: %s: PRAGMA journal_mode=wal left the database in %s mode", mf.d.path, mode)
			}
			installHook(c, mf)
			// A new database has its first page now: its writer role and
			// publisher can start.
			return mf.d.ensurePublisher()
		}
		if !(errors.Is(err, sqlite3.BUSY) || errors.Is(err, sqlite3.LOCKED)) || time.Now().After(deadline) {
			return fmt.Errorf("bop: %s: set journal_mode=wal: %w", mf.d.path, err)
		}
		time.Sleep(wait)
	}
}

func journalModeWAL(c *sqlite3.Conn) (string, error) {
	st, _, err := c.Prepare("PRAGMA main.journal_mode=wal")
	if err != nil {
		return "", err
	}
	var mode string
	if st.Step() {
		mode = st.ColumnText(0)
	}
	if err := st.Err(); err != nil {
		st.Close()
		return "", err
	}
	if err := st.Close(); err != nil {
		return "", err
	}
	return mode, nil
}
