package manifest

import (
	"fmt"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// Lease holds a txid range for a holder (e.g. a checkpoint job holding the
// spool range it still needs, so truncation must wait). Leases of one
// kind must not overlap across holders.
type Lease struct {
	ID      int64
	Holder  string
	Kind    string
	MinTxid uint64
	MaxTxid uint64
	Expires time.Time // zero: never
}

// RegisterLease records a lease and returns its id. An unexpired lease of
// the same kind held by another holder whose range overlaps is
// ErrLeaseConflict, naming that holder: the caller must not proceed.
func (c *Catalog) RegisterLease(l Lease) (int64, error) {
	if l.Holder == "" || l.Kind == "" || l.MinTxid > l.MaxTxid {
		return 0, fmt.Errorf("manifest: bad lease %+v", l)
	}
	if err := c.lock(); err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	var id int64
	err := c.tx(func() error {
		var err error
		id, err = c.registerLeaseLocked(l)
		return err
	})
	return id, err
}

func (c *Catalog) registerLeaseLocked(l Lease) (int64, error) {
	now := c.now().UnixMilli()
	var holder string
	var lo, hi uint64
	found, err := c.queryOne(`SELECT holder, min_txid, max_txid FROM leases WHERE kind = ? AND holder != ?
		AND min_txid <= ? AND max_txid >= ? AND (expires = 0 OR expires > ?) LIMIT 1`,
		[]any{l.Kind, l.Holder, l.MaxTxid, l.MinTxid, now}, func(s *sqlite3.Stmt) error {
			holder, lo, hi = s.ColumnText(0), colU64(s, 1), colU64(s, 2)
			return nil
		})
	if err != nil {
		return 0, err
	}
	if found {
		return 0, fmt.Errorf("%w: %s lease on txids %d..%d overlaps %d..%d held by %s", ErrLeaseConflict, l.Kind, l.MinTxid, l.MaxTxid, lo, hi, holder)
	}
	var exp int64
	if !l.Expires.IsZero() {
		exp = l.Expires.UnixMilli()
	}
	if err := c.exec("INSERT INTO leases (holder, kind, min_txid, max_txid, expires) VALUES (?, ?, ?, ?, ?)",
		l.Holder, l.Kind, l.MinTxid, l.MaxTxid, exp); err != nil {
		return 0, err
	}
	id := c.conn.LastInsertRowID()
	return id, c.logChange("lease register", fmt.Sprintf("%d %s %s %d..%d", id, l.Holder, l.Kind, l.MinTxid, l.MaxTxid))
}

// ReleaseLease drops a lease (a missing one is not an error).
func (c *Catalog) ReleaseLease(id int64) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.tx(func() error {
		if err := c.exec("DELETE FROM leases WHERE id = ?", id); err != nil {
			return err
		}
		return c.logChange("lease release", fmt.Sprint(id))
	})
}

// Leases returns the unexpired leases of a kind ("" for all).
func (c *Catalog) Leases(kind string) ([]Lease, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	var out []Lease
	err := c.query(`SELECT id, holder, kind, min_txid, max_txid, expires FROM leases
		WHERE (? = '' OR kind = ?) AND (expires = 0 OR expires > ?) ORDER BY id`, []any{kind, kind, c.now().UnixMilli()},
		func(s *sqlite3.Stmt) error {
			l := Lease{ID: s.ColumnInt64(0), Holder: s.ColumnText(1), Kind: s.ColumnText(2), MinTxid: colU64(s, 3), MaxTxid: colU64(s, 4)}
			if e := s.ColumnInt64(5); e != 0 {
				l.Expires = time.UnixMilli(e)
			}
			out = append(out, l)
			return nil
		})
	return out, err
}

// LocalPin holds a boundary on this node (a replica connection, a
// restore in progress) so retention keeps it readable.
type LocalPin struct {
	ID       string
	Boundary uint64
	Owner    string
	Reason   string
	Expires  time.Time // zero: never
}

// PinLocal records (or replaces) a local pin.
func (c *Catalog) PinLocal(p LocalPin) error {
	if p.ID == "" || p.Owner == "" {
		return fmt.Errorf("manifest: local pin needs an id and an owner")
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	var exp int64
	if !p.Expires.IsZero() {
		exp = p.Expires.UnixMilli()
	}
	return c.tx(func() error {
		if err := c.exec(`INSERT INTO local_pins (id, boundary, owner, reason, expires) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET boundary = excluded.boundary, owner = excluded.owner,
			reason = excluded.reason, expires = excluded.expires`, p.ID, p.Boundary, p.Owner, p.Reason, exp); err != nil {
			return err
		}
		return c.logChange("pin", fmt.Sprintf("%s %d %s", p.ID, p.Boundary, p.Owner))
	})
}

// UnpinLocal drops a local pin.
func (c *Catalog) UnpinLocal(id string) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.tx(func() error {
		if err := c.exec("DELETE FROM local_pins WHERE id = ?", id); err != nil {
			return err
		}
		return c.logChange("unpin", id)
	})
}

// LocalPins returns the unexpired local pins, lowest boundary first.
func (c *Catalog) LocalPins() ([]LocalPin, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	var out []LocalPin
	err := c.query("SELECT id, boundary, owner, reason, expires FROM local_pins WHERE expires = 0 OR expires > ? ORDER BY boundary, id",
		[]any{c.now().UnixMilli()}, func(s *sqlite3.Stmt) error {
			p := LocalPin{ID: s.ColumnText(0), Boundary: colU64(s, 1), Owner: s.ColumnText(2), Reason: s.ColumnText(3)}
			if e := s.ColumnInt64(4); e != 0 {
				p.Expires = time.UnixMilli(e)
			}
			out = append(out, p)
			return nil
		})
	return out, err
}
