package manifest

import (
	"errors"
	"fmt"
	"math"

	"github.com/cespare/xxhash/v2"
	"github.com/ncruces/go-sqlite3"
)

// Thin helpers over one sqlite3.Conn. The Catalog serialises every use of
// the connection with its mutex; statements are prepared once and reused.

func (c *Catalog) stmt(q string) (*sqlite3.Stmt, error) {
	if s, ok := c.stmts[q]; ok {
		return s, nil
	}
	s, tail, err := c.conn.Prepare(q)
	if err != nil {
		return nil, fmt.Errorf("manifest: prepare %q: %w", q, err)
	}
	if tail != "" {
		s.Close()
		return nil, fmt.Errorf("manifest: prepare %q: trailing SQL %q", q, tail)
	}
	c.stmts[q] = s
	return s, nil
}

func bindAll(s *sqlite3.Stmt, args []any) error {
	for i, a := range args {
		p := i + 1
		var err error
		switch v := a.(type) {
		case nil:
			err = s.BindNull(p)
		case int:
			err = s.BindInt64(p, int64(v))
		case int64:
			err = s.BindInt64(p, v)
		case uint32:
			err = s.BindInt64(p, int64(v))
		case uint64:
			if v > math.MaxInt64 {
				return fmt.Errorf("manifest: value %d does not fit the catalog's 63 bits", v)
			}
			err = s.BindInt64(p, int64(v))
		case Hash: // full 64 bits, stored bit for bit
			err = s.BindInt64(p, int64(v))
		case bool:
			err = s.BindBool(p, v)
		case string:
			err = s.BindText(p, v)
		case []byte:
			if v == nil {
				err = s.BindNull(p)
			} else {
				err = s.BindBlob(p, v)
			}
		default:
			return fmt.Errorf("manifest: cannot bind %T", a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// exec runs a statement that returns no rows.
func (c *Catalog) exec(q string, args ...any) error {
	s, err := c.stmt(q)
	if err != nil {
		return err
	}
	defer s.Reset()
	defer s.ClearBindings()
	if err := bindAll(s, args); err != nil {
		return fmt.Errorf("manifest: %q: %w", q, err)
	}
	if err := s.Exec(); err != nil {
		return fmt.Errorf("manifest: %q: %w", q, err)
	}
	return nil
}

// query calls row for every result row.
func (c *Catalog) query(q string, args []any, row func(s *sqlite3.Stmt) error) error {
	s, err := c.stmt(q)
	if err != nil {
		return err
	}
	defer s.Reset()
	defer s.ClearBindings()
	if err := bindAll(s, args); err != nil {
		return fmt.Errorf("manifest: %q: %w", q, err)
	}
	for s.Step() {
		if err := row(s); err != nil {
			return err
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("manifest: %q: %w", q, err)
	}
	return nil
}

// queryOne runs a query expected to return at most one row; found reports
// whether it did.
func (c *Catalog) queryOne(q string, args []any, row func(s *sqlite3.Stmt) error) (found bool, err error) {
	err = c.query(q, args, func(s *sqlite3.Stmt) error {
		if found {
			return fmt.Errorf("manifest: %q returned more than one row", q)
		}
		found = true
		return row(s)
	})
	return found, err
}

// tx runs fn in one write transaction: every catalog change is atomic
// (SQLite's WAL with synchronous=FULL keeps it across a crash).
func (c *Catalog) tx(fn func() error) (err error) {
	if c.broken != nil {
		return c.broken
	}
	if err := c.conn.Exec("BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("manifest: begin: %w", err)
	}
	returned := false
	defer func() {
		if !returned {
			// fn panicked: never commit half a change. The panic goes on.
			c.conn.Exec("ROLLBACK")
		}
	}()
	err = fn()
	returned = true
	if err != nil {
		if rerr := c.conn.Exec("ROLLBACK"); rerr != nil && c.conn.GetAutocommit() == false {
			err = fmt.Errorf("%w (and rollback failed: %v)", err, rerr)
		}
		return err
	}
	if cerr := c.conn.Exec("COMMIT"); cerr != nil {
		c.conn.Exec("ROLLBACK")
		return fmt.Errorf("manifest: commit: %w", cerr)
	}
	return nil
}

// txLazy runs fn in one write transaction that is atomic but not durable
// when it returns: it commits with synchronous=NORMAL, so the WAL is not
// fsynced at its commit. A process crash keeps it (it is in the WAL, in
// the OS's cache); a power loss may lose it, together with the lazy
// commits after it, never a commit before it: the catalog's WAL holds
// commits in order, SQLite's recovery replays a prefix of them (frames
// carry cumulative checksums), and the next durable commit (tx) fsyncs the
// WAL, making every lazy commit before it durable too. Checkpoints keep
// syncing under NORMAL (the WAL before the backfill, the file after),
// which is why NORMAL and not OFF: a checkpoint run by a lazy commit never
// lets the WAL restart over frames whose pages are not durable in the
// file. SQLite documents WAL with synchronous=NORMAL as always
// consistent, losing only durability.
//
// Use it only for a change whose loss leaves a state the restart handles
// as well: a job's progress (it resumes from an earlier phase and repeats
// idempotent work), or a job's end after its record is applied (it is
// finished again).
func (c *Catalog) txLazy(fn func() error) error { return c.txAt("NORMAL", fn) }

// txAt runs tx at the synchronous level given, then restores FULL.
func (c *Catalog) txAt(level string, fn func() error) (err error) {
	if err := c.exec("PRAGMA synchronous = " + level); err != nil {
		return err
	}
	// Deferred, so that FULL comes back also when fn panics (after tx's
	// rollback: the level cannot change inside a transaction).
	defer func() {
		if perr := c.exec("PRAGMA synchronous = FULL"); perr != nil {
			// Every later commit would be lazy: the catalog must not be used.
			c.broken = fmt.Errorf("manifest: catalog %s: restore synchronous=FULL: %w", c.path, perr)
			err = errors.Join(err, c.broken)
		}
	}()
	return c.tx(fn)
}

// txCreate is txLazy with no sync at all (synchronous=OFF), for the meta
// row of a new catalog only: its commit writes the first frames of a new
// WAL (see Catalog.createMeta for why that needs no header sync). Its
// loss leaves a catalog that is created again.
func (c *Catalog) txCreate(fn func() error) error { return c.txAt("OFF", fn) }

// txFor is txLazy if lazy, tx otherwise.
func (c *Catalog) txFor(lazy bool) func(func() error) error {
	if lazy {
		return c.txLazy
	}
	return c.tx
}

func colU64(s *sqlite3.Stmt, i int) uint64 { return uint64(s.ColumnInt64(i)) }
func colU32(s *sqlite3.Stmt, i int) uint32 { return uint32(s.ColumnInt64(i)) }

type sqliteStmt = sqlite3.Stmt

func hashBytes(b []byte) uint64 { return xxhash.Sum64(b) }
