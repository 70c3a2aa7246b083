package vfs

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/internal/crashfs"
	"github.com/bopstore/bop/internal/testutil"
)

// Power loss during a database's first boot: its first open (the new
// main file, the seal's creation and first save, the spool, meta.json's
// temporary file, fsync, rename and the -bop folder's fsync), its first
// transactions and its first close (the seal's clean save). The power
// goes at the n-th mutating operation on a followed file, for every n (or
// every few in the race pass) until the boot completes without reaching
// it; the files come back as crashfs leaves them (the -bop folder's
// entries are durable only at its fsync: see the rig's boot) and the
// database is reopened through bop. What must hold: the reopen succeeds
// (a power loss during a first open is not an outside change, nor a
// broken state), the database is one of the boot's committed states and
// holds every promised one (with FULL each COMMIT that returned; in every
// mode each transaction at or below the spool's confirmed watermark),
// integrity_check passes, the spool replays to the live database, and the
// database takes and keeps new writes across a clean close.

func TestPowerLossFirstOpen(t *testing.T) {
	modes := []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset}
	for _, sync := range []string{"off", "normal", "full"} {
		t.Run(sync, func(t *testing.T) {
			every := 3
			if testutil.RaceEnabled {
				every = 7
			}
			powerLossFirstOpen(t, sync, 1, every, modes)
		})
	}
}

// TestHeavyPowerLossFirstOpen cuts at every operation, in every mode.
func TestHeavyPowerLossFirstOpen(t *testing.T) {
	testutil.Heavy(t)
	for _, sync := range []string{"off", "normal", "full"} {
		for _, mode := range []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset} {
			t.Run(fmt.Sprintf("%s/%s", sync, mode), func(t *testing.T) {
				powerLossFirstOpen(t, sync, 1, 1, []crashfs.Mode{mode})
			})
		}
	}
}

// firstBoot is the first boot's workload, run after the first open: a
// CREATE TABLE and two inserts (a small and a multi-page row).
var firstBoot = []struct {
	q   string
	row plRow // inserted with id 1, 2...
}{
	{q: "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)"},
	{q: "INSERT INTO t(id, k, v) VALUES(?, ?, ?)", row: plRow{"a", bytesOf(3000, 1)}},
	{q: "INSERT INTO t(id, k, v) VALUES(?, ?, ?)", row: plRow{"b", bytesOf(9000, 2)}},
}

func bytesOf(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// firstBootStates returns the table's hash in each state of the first
// boot: [0] no table, [i] after statement i-1.
func firstBootStates() []uint64 {
	m := &plModel{rows: map[int64]plRow{}}
	states := []uint64{noTable, m.hash()}
	for i, st := range firstBoot[1:] {
		m.apply([]plChange{{id: int64(i + 1), row: st.row}})
		states = append(states, m.hash())
	}
	return states
}

// powerLossFirstOpen cuts the power at operation first, first+every, ...
// of the first boot until one is never reached; mode is modes[i%len].
func powerLossFirstOpen(t *testing.T, syncMode string, first, every int, modes []crashfs.Mode) {
	v := newVFS(t, offline(Config{AutoCheckpoint: 60}))
	base := v.base
	t.Cleanup(func() { testSpoolFS, testStateFS = nil, nil })
	rng := rand.New(rand.NewPCG(uint64(first), 0x5eed))
	cuts := map[string]int{}
	for i, cut := 0, first; ; i, cut = i+1, cut+every {
		path := filepath.Join(t.TempDir(), "app.db")
		mode := modes[i%len(modes)]
		r := &powerRig{base: base, bopDir: path + "-bop"}
		v.base = crashVFS{r}
		testSpoolFS, testStateFS = crashSpoolFS{r}, crashStateFS{crashSpoolFS{r}}
		r.boot()
		r.cutAt.Store(int64(cut))
		what := firstBootCut(t, v, r, path, syncMode, mode, rng)
		if what == "" {
			if i == 0 {
				t.Fatal("the first boot ran no operation on a followed file")
			}
			break
		}
		cuts[what]++
	}
	t.Logf("power cuts: %v", cuts)
}

// bootProgress follows a boot's transactions while the power may go: the
// txid capture reported after each (txids[i] for state i; 0: unknown) and
// the last state promised.
type bootProgress struct {
	txids     []uint64
	promised  int    // the last state promised (by FULL or Sync, or confirmed)
	confirmed uint64 // the spool's confirmed watermark last seen with the power on
}

func newBootProgress() *bootProgress { return &bootProgress{txids: []uint64{0}} }

// committed notes that the boot's statement i returned (state i+1),
// promised by itself if promise; it reports false if the power is down.
func (b *bootProgress) committed(t *testing.T, v *VFS, r *powerRig, path string, i int, promise bool) bool {
	txid := uint64(0)
	if d := lookup(fullPath(t, v, path)); d != nil && !r.isDown() {
		txid = d.capture.LastFinal()
	}
	b.txids = append(b.txids, txid)
	if promise {
		b.promised = i + 1
	}
	if r.isDown() {
		return false
	}
	if d := lookup(fullPath(t, v, path)); d != nil {
		b.confirmed = d.spool.Confirmed()
	}
	return true
}

// end closes the boot's connection. If the power went during the boot, it
// raises promised to the newest state whose txid the spool had confirmed,
// puts the files back as the crash left them (mode) and returns where the
// power went and a description of the cut; "" if the boot completed.
func (b *bootProgress) end(t *testing.T, v *VFS, r *powerRig, db *sql.DB, path, syncMode string, mode crashfs.Mode, rng *rand.Rand) (cutWhat, what string) {
	t.Helper()
	db.Close()
	if lookup(fullPath(t, v, path)) != nil {
		t.Fatal("the database state is still open after its last connection closed")
	}
	if !r.isDown() {
		return "", ""
	}
	for i := len(b.txids) - 1; i > b.promised; i-- {
		if b.txids[i] != 0 && b.txids[i] <= b.confirmed {
			b.promised = i
			break
		}
	}
	r.mu.Lock()
	cutWhat = r.cutWhat
	r.mu.Unlock()
	what = fmt.Sprintf("synchronous=%s, %s, power cut at %s", syncMode, mode, cutWhat)
	if err := r.putBackSnapshot(); err != nil {
		t.Fatal(err)
	}
	rep, err := restoreKeepingMtimes(r.tracker(), mode, rng, path)
	if err != nil {
		t.Fatal(err)
	}
	return cutWhat, what + " (" + rep.String() + ")"
}

// checkWriteAcrossClose runs insert on db (the database reopened after a
// cut), checks that its spool replays to it, closes it cleanly and checks
// that a reopen through bop reads the same tables; it returns their hash.
func checkWriteAcrossClose(t *testing.T, v *VFS, r *powerRig, db *sql.DB, path string, pragmas []string, what, insert string) uint64 {
	t.Helper()
	mustExec(t, db, insert)
	want, _, err := tableHash(db)
	if err != nil {
		t.Fatal(err)
	}
	checkReplay(t, v, path, db)
	db.Close()
	r.boot()
	db2, err := sql.Open("sqlite3", dsn(path, v.Name(), pragmas...))
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if got, _, err := tableHash(db2); err != nil || got != want {
		t.Fatalf("%s: after a write and a clean close, the reopen gives %x, %v; want %x", what, got, err, want)
	}
	return want
}

// firstBootCut runs the first boot with the rig's cut armed, restores the
// files in mode and checks the reopen. It returns where the power went
// ("": the boot completed without reaching the cut).
func firstBootCut(t *testing.T, v *VFS, r *powerRig, path, syncMode string, mode crashfs.Mode, rng *rand.Rand) (cutWhat string) {
	t.Helper()
	pragmas := []string{"synchronous(" + syncMode + ")"}
	db, err := sql.Open("sqlite3", dsn(path, v.Name(), pragmas...))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	states := firstBootStates()
	b := newBootProgress()
	for i, st := range firstBoot {
		var err error
		if i == 0 {
			_, err = db.Exec(st.q)
		} else {
			_, err = db.Exec(st.q, i, st.row.k, st.row.v)
		}
		if err != nil {
			if !r.isDown() {
				t.Fatalf("statement %d (%s) failed with the power on: %v", i, st.q, err)
			}
			break
		}
		if !b.committed(t, v, r, path, i, syncMode == "full") {
			break
		}
	}
	cutWhat, what := b.end(t, v, r, db, path, syncMode, mode, rng)
	if cutWhat == "" {
		return ""
	}
	txids, promised, confirmed := b.txids, b.promised, b.confirmed

	// The reopen (with a new machine) must work and hold a promised state.
	r.boot()
	db, h := openHashed(t, dsn(path, v.Name(), pragmas...), what, "reopening failed")
	defer db.Close()
	k := -1
	for i := len(states) - 1; i >= 0 && k < 0; i-- {
		if states[i] == h {
			k = i
		}
	}
	switch {
	case k < 0 || k > len(txids):
		t.Fatalf("%s: the database holds no state of the first boot up to the statement the power stopped", what)
	case k < promised:
		t.Fatalf("%s: the database holds state %d of %d, but state %d was promised (confirmed txid %d)", what, k, len(states)-1, promised, confirmed)
	}
	if s := queryString(t, db, "PRAGMA integrity_check"); s != "ok" {
		t.Fatalf("%s: integrity_check: %s", what, s)
	}
	if st := statusOf(t, db); st.CaptureError != "" || st.MainSyncError != "" {
		t.Fatalf("%s: status after the reopen: capture error %q, main sync error %q", what, st.CaptureError, st.MainSyncError)
	}
	// It takes new writes, replays from its spool, and keeps them across
	// a clean close.
	mustExec(t, db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
	checkWriteAcrossClose(t, v, r, db, path, pragmas, what,
		"INSERT INTO t(id, k, v) VALUES(100, 'after', randomblob(5000))")
	t.Logf("%s: reopened at state %d of %d (%d promised)", what, k, len(states)-1, promised)
	return cutWhat
}

// TestPowerLossMetaBeforeEntries: the power goes at the first open's
// fsync of the -bop folder that follows meta.json's rename; the folder's
// entries created by this open were not durable yet, and the crash keeps
// meta.json's rename but loses another entry (POSIX orders no entry
// before the folder's fsync, and fsync(2) of a new file does not persist
// its entry). meta.json marks the state initialized, so every entry the
// state needs must be durable before it:
//   - seal: the seal's creation is lost; the reopen failed for good with
//     ErrBadState (the seal is missing), although nothing was committed;
//   - spool: the spool folder of an adopted file (its first record is the
//     file's image) is lost; the reopen started an empty spool, whose
//     replay is not the database.
//
// writeMeta fsyncs the folder before the rename.
func TestPowerLossMetaBeforeEntries(t *testing.T) {
	for _, lost := range []string{sealFileName, "spool"} {
		t.Run(lost, func(t *testing.T) {
			v := newVFS(t, offline(Config{}))
			path := filepath.Join(t.TempDir(), "app.db")
			before := ""
			if lost == "spool" {
				plainDatabase(t, path, 1)
				before = fileHash(t, path)
			}
			r := newPowerRig(t, v, path)
			renamed := false
			cut := func(what string) bool {
				renamed = renamed || what == "rename "+metaFileName+".tmp"
				return renamed && what == "state folder fsync"
			}
			openUntilCut(t, r, dsn(path, v.Name()), cut, "the first open made no folder fsync after renaming meta.json into place")
			r.tracker().KeepDirOps(func(op, name string) bool { return name != lost })
			if _, err := restoreKeepingMtimes(r.tracker(), crashfs.KeepUnsynced, nil, path); err != nil {
				t.Fatal(err)
			}
			if lost == "spool" && r.foldersSynced.Load() == 0 {
				// crashfs follows no folder's entry: the spool folder,
				// created after the last fsync of -bop, is lost by hand.
				if err := os.RemoveAll(filepath.Join(r.bopDir, "spool")); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := os.Stat(filepath.Join(r.bopDir, metaFileName)); err != nil {
				t.Fatalf("meta.json's rename was not kept: %v", err)
			}
			r.boot()
			db := openDB(t, v, path)
			db.SetMaxOpenConns(1)
			if _, _, err := tableHash(db); err != nil {
				t.Fatalf("reopen after a power loss at the first open's folder fsync, %s entry lost: %v", lost, err)
			}
			integrityOK(t, db)
			if got := fileHash(t, path); before != "" && got != before {
				t.Fatal("the main file changed")
			}
			mustExec(t, db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k INT, v BLOB)")
			mustExec(t, db, "INSERT INTO t(k, v) VALUES(1, randomblob(100))")
			checkReplay(t, v, path, db)
		})
	}
}

// openUntilCut opens the database at dsn with the power going where cut
// says (noCut fails the test if it never did): the first statement must
// fail, and the unfollowed files of -bop are put back as the cut left them.
func openUntilCut(t *testing.T, r *powerRig, dsn string, cut func(what string) bool, noCut string) {
	t.Helper()
	r.cutWhen.Store(&cut)
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("SELECT count(*) FROM sqlite_schema"); err == nil {
		t.Fatal("the open succeeded after the power cut")
	}
	db.Close()
	if !r.isDown() {
		t.Fatal(noCut)
	}
	if err := r.putBackSnapshot(); err != nil {
		t.Fatal(err)
	}
}

// TestPowerLossWALSwitch: a new database's first write is bop's switch to
// WAL mode (enableWAL), in rollback mode: SQLite extends the empty main
// file (SIZE_HINT: fallocate) and writes page 1. With synchronous=OFF
// from the DSN (applied before the switch) SQLite would fsync neither its
// journal nor the directory, and the power going at the page's write
// can keep the extension (file size is metadata the file system commits
// on its own) and lose the never-fsynced journal: a file of zeros that
// SQLite refuses for good ("file is not a database"), nothing committed.
// TestHeavyPowerLossFirstOpen/off/random-subset found it. bop makes its
// switch with synchronous=FULL at least: the journal (and its entry) is
// durable before the main file is written, so the reopen rolls it back.
func TestPowerLossWALSwitch(t *testing.T) {
	v := newVFS(t, offline(Config{}))
	path := filepath.Join(t.TempDir(), "app.db")
	r := newPowerRig(t, v, path)
	journalSynced := false
	cut := func(what string) bool {
		journalSynced = journalSynced || what == "journal fsync"
		return what == "main file write"
	}
	openUntilCut(t, r, dsn(path, v.Name(), "synchronous(off)"), cut, "no write to the main file")
	if _, err := restoreKeepingMtimes(r.tracker(), crashfs.KeepUnsynced, nil, path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("the main file's extension was not kept: %v", err)
	}
	if !journalSynced {
		// The restore keeps every entry operation (KeepUnsynced): a
		// journal never fsynced (nor its folder) is lost by hand.
		if err := os.Remove(path + "-journal"); err != nil {
			t.Fatal(err)
		}
	}
	r.boot()
	db := openDB(t, v, path, "synchronous(off)")
	db.SetMaxOpenConns(1)
	h, _, err := tableHash(db)
	if err != nil {
		t.Fatalf("reopen after a power loss at the switch to WAL mode: %v", err)
	}
	if h != noTable {
		t.Fatal("the database holds a table nobody committed")
	}
	if mode := queryString(t, db, "PRAGMA journal_mode"); mode != "wal" {
		t.Fatalf("journal mode %s", mode)
	}
	if n := queryInt(t, db, "PRAGMA synchronous"); n != 0 {
		t.Fatalf("synchronous is %d after the switch, want the DSN's 0 (off)", n)
	}
	mustExec(t, db, firstBoot[0].q)
	integrityOK(t, db)
	checkReplay(t, v, path, db)
}
