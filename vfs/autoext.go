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
	mf.conn = c
	if ro, _ := c.ReadOnly("main"); ro {
		return nil
	}
	deadline := time.Now().Add(walBusyWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		mode, err := journalModeWALDurable(c)
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

// journalModeWALDurable is journalModeWAL made durable whatever the
// connection's synchronous setting (the DSN's _pragma list ran first). The
// switch writes page 1 in rollback mode (for a new database its first page,
// after SQLite extended the empty file: SIZE_HINT), and with
// synchronous=OFF SQLite fsyncs neither its journal (nor its folder entry)
// nor the main file: a power loss could keep the file's new size and lose
// the page and the journal, leaving zeros SQLite refuses for good ("file
// is not a database"; TestPowerLossWALSwitch), or tear page 1 of an
// adopted rollback-mode file with no durable journal to roll it back. With
// FULL the journal (and, at its first fsync, its folder entry) is durable
// before the main file is written, so a power loss rolls the switch back;
// the connection gets its OFF back before anyone uses it (an error there
// fails the open). A database already in WAL mode writes nothing, and the
// setting costs no I/O.
//
// NORMAL is raised to FULL too. NORMAL fsyncs the journal once, after the
// journal header that makes it hot (its magic and record count) is
// written, so a power loss may keep that header and tear the page behind
// it; stock SQLite then rolls the torn page back into the file whenever
// its checksum, which samples one byte in 200, misses the tear, and page
// 1 of a small schema is mostly zeros (TestHeavyPowerLossAdopt,
// rollback-64k/normal, found it). FULL fsyncs the page before it writes
// the header. A DSN's journal_mode(wal) before its synchronous(normal)
// switches under the default FULL anyway; this costs one fsync only when
// bop switches a rollback-mode file under NORMAL, once in its life.
func journalModeWALDurable(c *sqlite3.Conn) (string, error) {
	prev, err := pragmaInt(c, "PRAGMA main.synchronous")
	if err != nil {
		return "", err
	}
	if prev >= 2 { // FULL and EXTRA: durable already
		return journalModeWAL(c)
	}
	if err := c.Exec("PRAGMA main.synchronous=FULL"); err != nil {
		return "", err
	}
	mode, err := journalModeWAL(c)
	if rerr := c.Exec(fmt.Sprintf("PRAGMA main.synchronous=%d", prev)); err == nil {
		err = rerr
	}
	return mode, err
}

// pragmaInt runs a pragma that returns one integer.
func pragmaInt(c *sqlite3.Conn, q string) (int64, error) {
	st, _, err := c.Prepare(q)
	if err != nil {
		return 0, err
	}
	var n int64
	if st.Step() {
		n = st.ColumnInt64(0)
	}
	if err := st.Err(); err != nil {
		st.Close()
		return 0, err
	}
	return n, st.Close()
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
