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
	"github.com/bopstore/bop/wal"
)

// Power loss during adoption: the first open through bop of an existing
// database that stock SQLite built (rollback mode, page size 4096 or
// 65536, a file bigger than the spool's buffer, or WAL mode with a WAL
// left beside it holding committed frames), then two transactions and a
// clean close. The power goes at the n-th mutating operation on a followed
// file (SQLite's main file, WAL and journal, the spool, the seal and
// meta.json, the -bop folder's entries: the rig of powerloss_test.go), for
// every n (or every few in the race pass) until the boot completes without
// reaching it; the files come back as crashfs leaves them (lost, kept, a
// random subset). The user's database is precious. What must hold:
//   - stock SQLite, on a copy of the files as the power loss left them,
//     reads the original database or a later state of the boot, holding
//     every promised transaction, and integrity_check passes (nothing bop
//     did can cost the user the file, even without bop);
//   - the reopen through bop succeeds (a power loss during an adoption is
//     not an outside change nor a broken state) and holds the original
//     content plus a prefix of the boot's transactions that holds every
//     promised one (FULL: each COMMIT that returned; in every mode each
//     at or below the spool's confirmed watermark);
//   - integrity_check passes; the spool's first record is the original
//     database (byte for byte what stock SQLite reads from its files),
//     and the whole spool replays to the live database (checkReplay);
//   - it takes a new write, keeps it across a clean close, and stock
//     SQLite then reads the same content from the file.
//
// Limits: the rig follows no entry of the database's folder (main file,
// WAL, journal: durable at once; TestPowerLossAdoptWALEntry drops a WAL's
// by hand), nor the spool folder's own entry; adoption reads and fsyncs
// the original files with plain os calls, so they count as durable from
// the boot on.

// adoptSource is a database built by stock SQLite for adoption.
type adoptSource struct {
	dir string // holds app.db (and app.db-wal) to copy
	// ref: the database stock SQLite reads from them, checkpointed into
	// one file (for a rollback-mode file the file itself).
	ref  string
	rows map[int64]plRow
}

// adoptVariant builds the database at path with the default VFS.
type adoptVariant struct {
	name  string
	build func(t *testing.T, path string)
}

func adoptRows(t *testing.T, db *sql.DB, from, n, size int) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		if _, err := tx.Exec("INSERT OR REPLACE INTO t(id, k, v) VALUES(?, ?, ?)", i, fmt.Sprintf("k%d", i%97), bytesOf(size+i%300, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// rollbackSource is a rollback-mode (journal_mode=DELETE) database of
// rows rows of about size bytes, with page size ps.
func rollbackSource(ps, rows, size int) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		db := openDB(t, nil, path, fmt.Sprintf("page_size(%d)", ps), "journal_mode(delete)")
		db.SetMaxOpenConns(1)
		mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
		mustExec(t, db, "CREATE INDEX t_k ON t(k)")
		for i := 1; i <= rows; i += 500 {
			adoptRows(t, db, i, min(500, rows-i+1), size)
		}
		if got := queryInt(t, db, "PRAGMA page_size"); got != int64(ps) {
			t.Fatalf("page size %d, want %d", got, ps)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// walSource is a WAL-mode database copied (main file and WAL) while stock
// SQLite had it open: the WAL holds committed frames (a checkpoint copied
// the first ones into the file already, the WAL was not restarted), as a
// crash of a stock SQLite process leaves it.
func walSource(t *testing.T, path string) {
	live, db := liveWALSource(t)
	checkpointTruncate(t, db)
	adoptRows(t, db, 31, 20, 1200)
	if err := checkpointStmt("PASSIVE")(db); err != nil {
		t.Fatal(err)
	}
	adoptRows(t, db, 51, 10, 900)
	mustExec(t, db, "UPDATE t SET k = 'upd' WHERE id % 4 = 0")
	mustExec(t, db, "DELETE FROM t WHERE id % 9 = 0")
	copyFile(t, live, path)
	copyFile(t, live+"-wal", path+"-wal")
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("no WAL beside the copy: %v", err)
	}
	db.Close()
}

// liveWALSource opens a new database through stock SQLite in WAL mode,
// without automatic checkpoints, with the adoption table and 30 rows, all
// in its WAL.
func liveWALSource(t *testing.T) (string, *sql.DB) {
	live := filepath.Join(t.TempDir(), "live.db")
	db := openDB(t, nil, live, "journal_mode(wal)", "wal_autocheckpoint(0)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
	mustExec(t, db, "CREATE INDEX t_k ON t(k)")
	adoptRows(t, db, 1, 30, 1500)
	return live, db
}

// walTailSource is walSource's database with a transaction too big for
// its cache spilled into the WAL, uncommitted, when the copy was taken:
// frames past the last commit frame, which the boot's first transaction
// overwrites (same salts) and a power loss can leave in part.
func walTailSource(t *testing.T, path string) {
	live, db := liveWALSource(t)
	fi, err := os.Stat(live + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	committed := fi.Size()
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, "PRAGMA cache_size = 5")
	mustExec(t, conn, "BEGIN")
	mustExec(t, conn, "INSERT INTO t(id, k, v) SELECT 100000 + value, 'never', randomblob(1000) FROM generate_series(1, 200)")
	copyFile(t, live, path)
	copyFile(t, live+"-wal", path+"-wal")
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() <= committed {
		t.Fatalf("the transaction spilled nothing into the WAL (%d bytes after the last commit): %v", committed, err)
	}
	mustExec(t, conn, "ROLLBACK")
	conn.Close()
	db.Close()
}

// adoptHeavyStride: TestHeavyPowerLossAdopt cuts every so many operations.
const adoptHeavyStride = 8

var adoptVariants = []adoptVariant{
	{"rollback-4k", rollbackSource(4096, 40, 1500)},
	{"rollback-64k", rollbackSource(65536, 60, 2500)},
	{"wal-left", walSource},
	{"wal-uncommitted-tail", walTailSource},
	// Bigger than the spool's buffer (spoolBufferBytes): the image record
	// takes several spool writes.
	{"rollback-3mb", rollbackSource(4096, 1400, 2000)},
}

// makeAdoptSource builds the variant's files and reads the database they
// hold with stock SQLite (on a copy).
func makeAdoptSource(t *testing.T, av adoptVariant) adoptSource {
	t.Helper()
	src := adoptSource{dir: t.TempDir()}
	path := filepath.Join(src.dir, "app.db")
	av.build(t, path)
	src.ref = filepath.Join(t.TempDir(), "ref.db")
	copyFile(t, path, src.ref)
	if _, err := os.Stat(path + "-wal"); err == nil {
		copyFile(t, path+"-wal", src.ref+"-wal")
	}
	db := openDB(t, nil, src.ref)
	db.SetMaxOpenConns(1)
	var err error
	if _, src.rows, err = tableHash(db); err != nil {
		t.Fatal(err)
	}
	if len(src.rows) == 0 {
		t.Fatal("the source database holds no rows")
	}
	integrityOK(t, db)
	checkpointTruncate(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src.ref + "-wal"); err == nil {
		t.Fatal("stock SQLite left the reference's WAL")
	}
	return src
}

// adoptBoot is the workload after the adoption: two transactions.
func adoptBoot(src adoptSource) (stmts []func(db *sql.DB) error, states []uint64) {
	m := &plModel{rows: cloneRows(src.rows)}
	for id, row := range m.rows {
		m.sum += plRowHash(id, row.k, row.v)
	}
	states = []uint64{m.hash()}
	ins := plChange{id: 1_000_001, row: plRow{"new", bytesOf(5000, 3)}}
	var upd plChange
	for id := range src.rows {
		if upd.row.k == "" || id < upd.id {
			upd = plChange{id: id, row: plRow{"changed", bytesOf(700, 9)}}
		}
	}
	stmts = []func(db *sql.DB) error{
		func(db *sql.DB) error {
			_, err := db.Exec("INSERT INTO t(id, k, v) VALUES(?, ?, ?)", ins.id, ins.row.k, ins.row.v)
			return err
		},
		func(db *sql.DB) error {
			_, err := db.Exec("UPDATE t SET k = ?, v = ? WHERE id = ?", upd.row.k, upd.row.v, upd.id)
			return err
		},
	}
	for _, ch := range []plChange{ins, upd} {
		m.apply([]plChange{ch})
		states = append(states, m.hash())
	}
	return stmts, states
}

func TestPowerLossAdopt(t *testing.T) {
	modes := []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset}
	for _, av := range adoptVariants {
		t.Run(av.name, func(t *testing.T) {
			every, syncs := 5, []string{"full", "off"}
			if testutil.RaceEnabled {
				every, syncs = 17, []string{"full"}
			}
			if av.name == "rollback-3mb" {
				every *= 2
			}
			src := makeAdoptSource(t, av)
			for _, sync := range syncs {
				t.Run(sync, func(t *testing.T) {
					powerLossAdopt(t, src, offline(Config{AutoCheckpoint: 60}), sync, 1, every, modes, 1)
				})
			}
		})
	}
}

// TestPowerLossAdoptPublishing: the same with the embedded store online
// and Durability Sync: the publisher uploads the image as base objects
// (in the background: the operations it counts make the numbering vary
// from run to run) and each COMMIT returns once published, so it is
// promised in every synchronous mode. The store's files, in the -bop
// folder, are outside crashfs: as they were at the cut.
func TestPowerLossAdoptPublishing(t *testing.T) {
	modes := []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset}
	every := 3
	if testutil.RaceEnabled {
		every = 11
	}
	variants := adoptVariants[:3]
	if testutil.RaceEnabled {
		variants = adoptVariants[:1]
	}
	for _, av := range variants {
		t.Run(av.name, func(t *testing.T) {
			src := makeAdoptSource(t, av)
			powerLossAdopt(t, src, Config{AutoCheckpoint: 60, Durability: Sync}, "normal", 1, every, modes, 1)
		})
	}
}

// TestHeavyPowerLossAdopt cuts in every mode and synchronous setting (the
// random subset with three seeds: a cut keeps a given combination of
// entries and writes only by chance). Cutting at every operation of all
// 75 sweeps takes about 19 minutes here, too long for the script's heavy
// pass: each sweep cuts every adoptHeavyStride-th operation (twice that
// for the 3 MiB file) from an offset that rotates over the sweeps of a
// variant, so each operation is cut in some of its modes.
// BOP_ADOPT_EVERY_OP=1 cuts at every operation in every sweep.
func TestHeavyPowerLossAdopt(t *testing.T) {
	testutil.Heavy(t)
	for _, av := range adoptVariants {
		t.Run(av.name, func(t *testing.T) {
			src := makeAdoptSource(t, av)
			stride := adoptHeavyStride
			if av.name == "rollback-3mb" {
				stride *= 2
			}
			if os.Getenv("BOP_ADOPT_EVERY_OP") == "1" {
				stride = 1
			}
			sweep := 0
			for _, sync := range []string{"off", "normal", "full"} {
				for _, mode := range []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset} {
					seeds := []uint64{1}
					if mode == crashfs.RandomSubset {
						seeds = []uint64{1, 2, 3}
					}
					for _, seed := range seeds {
						first := 1 + sweep%stride
						sweep++
						t.Run(fmt.Sprintf("%s/%s/seed=%d", sync, mode, seed), func(t *testing.T) {
							powerLossAdopt(t, src, offline(Config{AutoCheckpoint: 60}), sync, first, stride, []crashfs.Mode{mode}, seed)
						})
					}
				}
			}
		})
	}
}

// powerLossAdopt cuts the power at operation first, first+every, ... of
// the adoption's boot until one is never reached; mode is modes[i%len],
// seed the random subset's.
func powerLossAdopt(t *testing.T, src adoptSource, cfg Config, syncMode string, first, every int, modes []crashfs.Mode, seed uint64) {
	v := newVFS(t, cfg)
	base := v.base
	t.Cleanup(func() { testSpoolFS, testStateFS = nil, nil })
	rng := rand.New(rand.NewPCG(seed, 0xad0b7))
	cuts := map[string]int{}
	n := 0
	for i, cut := 0, first; ; i, cut = i+1, cut+every {
		path := filepath.Join(t.TempDir(), "app.db")
		copySource(t, src, path)
		mode := modes[i%len(modes)]
		r := &powerRig{base: base, bopDir: path + "-bop"}
		v.base = crashVFS{r}
		testSpoolFS, testStateFS = crashSpoolFS{r}, crashStateFS{crashSpoolFS{r}}
		r.boot()
		r.cutAt.Store(int64(cut))
		what := adoptBootCut(t, v, r, src, path, syncMode, mode, rng)
		if what == "" {
			if i == 0 {
				t.Fatal("the adoption ran no operation on a followed file")
			}
			break
		}
		cuts[what]++
		n++
	}
	t.Logf("%d power cuts: %v", n, cuts)
}

// copySource puts the source's files at path.
func copySource(t *testing.T, src adoptSource, path string) {
	t.Helper()
	from := filepath.Join(src.dir, "app.db")
	copyFile(t, from, path)
	if _, err := os.Stat(from + "-wal"); err == nil {
		copyFile(t, from+"-wal", path+"-wal")
	}
}

// adoptBootCut runs the adoption's boot with the rig's cut armed, restores
// the files in mode and checks them, with stock SQLite and through bop.
// It returns where the power went ("": the boot completed first).
func adoptBootCut(t *testing.T, v *VFS, r *powerRig, src adoptSource, path, syncMode string, mode crashfs.Mode, rng *rand.Rand) (cutWhat string) {
	t.Helper()
	pragmas := []string{"synchronous(" + syncMode + ")"}
	db, err := sql.Open("sqlite3", dsn(path, v.Name(), pragmas...))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	stmts, states := adoptBoot(src)
	b := newBootProgress()
	for i, run := range stmts {
		if err := run(db); err != nil {
			if !r.isDown() {
				t.Fatalf("transaction %d failed with the power on: %v", i+1, err)
			}
			break
		}
		if !b.committed(t, v, r, path, i, syncMode == "full" || v.cfg.Durability == Sync) {
			break
		}
	}
	cutWhat, what := b.end(t, v, r, db, path, syncMode, mode, rng)
	if cutWhat == "" {
		return ""
	}
	txids, promised, confirmed := b.txids, b.promised, b.confirmed
	stateIndex := func(h uint64) int {
		for i := len(states) - 1; i >= 0; i-- {
			if states[i] == h {
				return i
			}
		}
		return -1
	}
	checkState := func(who string, h uint64) int {
		t.Helper()
		k := stateIndex(h)
		switch {
		case k < 0 || k > len(txids):
			t.Fatalf("%s: %s reads neither the original database nor a state of the boot up to the transaction the power stopped", what, who)
		case k < promised:
			t.Fatalf("%s: %s reads state %d of %d, but state %d was promised (confirmed txid %d)", what, who, k, len(states)-1, promised, confirmed)
		}
		return k
	}

	// Stock SQLite, on a copy of the files as they are: the user's data
	// is there without bop.
	plain := plainCopyHash(t, path, what)
	checkState("stock SQLite (on a copy)", plain)

	// The reopen through bop (a new machine).
	r.boot()
	db, h := openHashed(t, dsn(path, v.Name(), pragmas...), what, "reopening failed")
	defer db.Close()
	k := checkState("the reopen through bop", h)
	if s := queryString(t, db, "PRAGMA integrity_check"); s != "ok" {
		t.Fatalf("%s: integrity_check: %s", what, s)
	}
	if st := statusOf(t, db); st.CaptureError != "" || st.MainSyncError != "" {
		t.Fatalf("%s: status after the reopen: capture error %q, main sync error %q", what, st.CaptureError, st.MainSyncError)
	}
	checkImageRecord(t, v, path, src.ref, what)
	// A new write, the replay, a clean close, and stock SQLite reads it.
	want := checkWriteAcrossClose(t, v, r, db, path, pragmas, what,
		"INSERT INTO t(id, k, v) VALUES(2000000, 'after', randomblob(5000))")
	if got := plainCopyHash(t, path, what); got != want {
		t.Fatalf("%s: after bop's clean close, stock SQLite reads another content than bop", what)
	}
	t.Logf("%s: reopened at state %d of %d (%d promised)", what, k, len(states)-1, promised)
	return cutWhat
}

// openHashed opens the database at dsn with one connection (the caller
// closes it) and returns it with its table's hash; an error fails the
// test as "what: failing: err".
func openHashed(t *testing.T, dsn, what, failing string) (*sql.DB, uint64) {
	t.Helper()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	h, _, err := tableHash(db)
	if err != nil {
		db.Close()
		t.Fatalf("%s: %s: %v", what, failing, err)
	}
	return db, h
}

// plainCopyHash copies the database's files (main, WAL, journal) as they
// are and returns the table's hash as stock SQLite reads the copy (a hot
// journal rolled back, the WAL recovered), after its integrity_check.
func plainCopyHash(t *testing.T, path, what string) uint64 {
	t.Helper()
	out := filepath.Join(t.TempDir(), "plain.db")
	copyFile(t, path, out)
	for _, sfx := range []string{"-wal", "-journal"} {
		if _, err := os.Stat(path + sfx); err == nil {
			copyFile(t, path+sfx, out+sfx)
		}
	}
	db, h := openHashed(t, dsn(out, ""), what, "stock SQLite cannot read a copy of the files")
	defer db.Close()
	var s string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&s); err != nil || s != "ok" {
		t.Fatalf("%s: stock SQLite's integrity_check of a copy: %q, %v", what, s, err)
	}
	return h
}

// checkImageRecord: the spool's first record is an image of the database
// stock SQLite reads from the original files (ref), byte for byte.
func checkImageRecord(t *testing.T, v *VFS, path, ref, what string) {
	t.Helper()
	d := stateOf(t, v, path)
	if d.spool.Status().FirstTxid > 1 {
		return // published, and gone from the spool (checkReplay restores it)
	}
	h, err := d.spool.Header(1)
	if err != nil {
		t.Fatalf("%s: the spool's first record: %v", what, err)
	}
	if h.Kind != wal.KindImage {
		t.Fatalf("%s: the spool's first record is %+v, not an image", what, h)
	}
	if d.meta.Origin != originAdopted {
		t.Fatalf("%s: origin %q, want %q", what, d.meta.Origin, originAdopted)
	}
	out := filepath.Join(t.TempDir(), "image.db")
	replaySpoolFrom(t, d.spool, 1, 1, out)
	if err := sameFiles(ref, out); err != nil {
		t.Fatalf("%s: the image record is not the adopted database: %v", what, err)
	}
}

// TestPowerLossAdoptWALEntry: the database to adopt has a WAL holding
// committed transactions whose folder entry is not durable yet (stock
// SQLite fsyncs the database's folder at a WAL's first fsync, and with
// synchronous=NORMAL that comes only with a checkpoint: a process that
// crashes, or just exits without one, leaves a WAL whose contents the
// page cache holds and whose entry a power loss can lose). Adoption
// records the WAL's frames in its image (fsyncing the WAL's contents,
// not its entry) and meta.json makes the state bop's; the power goes
// right after the open, before SQLite ever fsyncs the WAL. If the
// database's folder was not fsynced before meta.json, the WAL is gone
// after the power loss, while the spool's confirmed image (and the store,
// once it is published) holds its transactions: the reopen reads another
// database than the one adopted. recordImage fsyncs the database's
// folder before the image is recorded.
func TestPowerLossAdoptWALEntry(t *testing.T) {
	src := makeAdoptSource(t, adoptVariant{"wal-left", walSource})
	_, states := adoptBoot(src)
	dir := t.TempDir()
	path := filepath.Join(dir, "app.db")
	copySource(t, src, path)
	walBytes, err := os.ReadFile(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	v := newVFS(t, offline(Config{}))
	r := newPowerRig(t, v, path)
	// The database's folder is followed: the main file's entry is
	// durable, the WAL's creation is not (its bytes are).
	tr := r.tracker()
	tr.FollowDir(dir)
	if err := tr.Open(path); err != nil {
		t.Fatal(err)
	}
	if err := tr.Create(path + "-wal"); err != nil {
		t.Fatal(err)
	}
	if err := tr.Write(path+"-wal", walBytes, 0); err != nil {
		t.Fatal(err)
	}
	if err := tr.Sync(path + "-wal"); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", dsn(path, v.Name(), "synchronous(normal)"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	h, _, err := tableHash(db)
	if err != nil || h != states[0] {
		t.Fatalf("the adoption reads %x, %v; want the original database", h, err)
	}
	r.powerCut("right after the adoption")
	db.Close()
	if err := r.putBackSnapshot(); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreKeepingMtimes(tr, crashfs.LoseUnsynced, nil, path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.bopDir, metaFileName)); err != nil {
		t.Fatalf("meta.json did not survive: %v", err)
	}
	r.boot()
	db = openDB(t, v, path, "synchronous(normal)")
	db.SetMaxOpenConns(1)
	if h, _, err := tableHash(db); err != nil || h != states[0] {
		t.Fatalf("after a power loss right after the adoption, the reopen reads %x, %v; want the original database (the WAL survived: %v)", h, err, fileExists(path+"-wal"))
	}
	integrityOK(t, db)
	checkImageRecord(t, v, path, src.ref, "reopen")
	checkReplay(t, v, path, db)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestPowerLossAdoptJournalCommit: an adopted rollback-mode database is
// switched to WAL mode by a rollback-mode transaction (page 1), committed
// by the deletion of its journal; SQLite reports the commit
// (COMMIT_PHASETWO, where capture spooled the transaction) only after
// that. The power goes at the first operation after the deletion (or, if
// none comes during the open, right after it): the main file holds the
// switch (fsynced before the deletion), the journal is gone, and the
// spool must hold the switch too, or it never replays to the database
// again (the header's journal-mode bytes differ; TestHeavyPowerLossAdopt
// /rollback-64k found it). VFS.Delete spools the transaction before the
// journal's deletion (journalCommit).
func TestPowerLossAdoptJournalCommit(t *testing.T) {
	for _, ps := range []int{4096, 65536} {
		t.Run(fmt.Sprint(ps), func(t *testing.T) {
			src := makeAdoptSource(t, adoptVariant{"rollback", rollbackSource(ps, 40, 1500)})
			_, states := adoptBoot(src)
			path := filepath.Join(t.TempDir(), "app.db")
			copySource(t, src, path)
			v := newVFS(t, offline(Config{}))
			r := newPowerRig(t, v, path)
			deleted := false
			cut := func(what string) bool {
				if deleted {
					return true
				}
				deleted = what == "delete app.db-journal"
				return false
			}
			r.cutWhen.Store(&cut)
			db, err := sql.Open("sqlite3", dsn(path, v.Name(), "synchronous(normal)"))
			if err != nil {
				t.Fatal(err)
			}
			db.SetMaxOpenConns(1)
			if _, err := db.Exec("SELECT count(*) FROM t"); err != nil && !r.isDown() {
				t.Fatal(err)
			}
			if !deleted {
				t.Fatal("the open deleted no rollback journal")
			}
			r.powerCut("right after the switch to WAL mode")
			db.Close()
			if err := r.putBackSnapshot(); err != nil {
				t.Fatal(err)
			}
			if _, err := restoreKeepingMtimes(r.tracker(), crashfs.LoseUnsynced, nil, path); err != nil {
				t.Fatal(err)
			}
			r.boot()
			db = openDB(t, v, path)
			db.SetMaxOpenConns(1)
			if h, _, err := tableHash(db); err != nil || h != states[0] {
				t.Fatalf("the reopen reads %x, %v; want the original database", h, err)
			}
			integrityOK(t, db)
			checkImageRecord(t, v, path, src.ref, "reopen")
			checkReplay(t, v, path, db)
		})
	}
}

// TestWALSwitchUnderNormalSyncsJournalTwice: bop switches an adopted
// rollback-mode file to WAL mode under synchronous=FULL even when the
// connection asked for NORMAL. NORMAL writes the journal's hot header
// (magic and record count) and fsyncs once, so a power loss can keep that
// header and tear the page behind it, which stock SQLite then rolls back
// into the file whenever its sampled checksum misses the tear
// (TestHeavyPowerLossAdopt found a malformed schema). FULL fsyncs the
// journal's pages before writing the header, then again: two journal
// fsyncs before the journal's deletion, and no main-file write in between
// the first journal write and the first fsync. The connection keeps NORMAL.
func TestWALSwitchUnderNormalSyncsJournalTwice(t *testing.T) {
	src := makeAdoptSource(t, adoptVariant{"rollback", rollbackSource(65536, 40, 1500)})
	path := filepath.Join(t.TempDir(), "app.db")
	copySource(t, src, path)
	v := newVFS(t, offline(Config{}))
	r := newPowerRig(t, v, path)
	var ops []string // the journal's writes and fsyncs, up to its deletion
	deleted := false
	record := func(what string) bool {
		switch {
		case what == "delete app.db-journal":
			deleted = true
		case !deleted && (what == "journal write" || what == "journal fsync"):
			ops = append(ops, what)
		}
		return false
	}
	r.cutWhen.Store(&record)
	db, err := sql.Open("sqlite3", dsn(path, v.Name(), "synchronous(normal)"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if mode := queryString(t, db, "PRAGMA journal_mode"); mode != "wal" {
		t.Fatalf("journal mode %s", mode)
	}
	if n := queryInt(t, db, "PRAGMA synchronous"); n != 1 {
		t.Fatalf("synchronous is %d after the switch, want the DSN's 1 (normal)", n)
	}
	if !deleted {
		t.Fatal("the open deleted no rollback journal")
	}
	syncs, lastWrite, firstSync := 0, -1, -1
	for i, op := range ops {
		switch op {
		case "journal fsync":
			syncs++
			if firstSync < 0 {
				firstSync = i
			}
		case "journal write":
			lastWrite = i
		}
	}
	if syncs < 2 || firstSync < 0 || lastWrite < firstSync {
		t.Fatalf("the switch's journal operations %q: want a fsync of the pages, then the header's write and a second fsync", ops)
	}
}
