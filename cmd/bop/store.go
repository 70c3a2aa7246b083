package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/backend"
)

// storeFlags are the flags every command that opens a store takes.
type storeFlags struct {
	tenant string
	db     string
	noIMDS bool
}

func (sf *storeFlags) register(fs *flag.FlagSet, withDB bool) {
	fs.StringVar(&sf.tenant, "tenant", remote.DefaultTenant, "the tenant, the first level of the store's key layout")
	if withDB {
		fs.StringVar(&sf.db, "db", "", "the database's name in the store (default: the only database of the tenant)")
	}
	fs.BoolVar(&sf.noIMDS, "no-imds", false, "keep the EC2 instance metadata service out of the AWS credential chain\n(also AWS_EC2_METADATA_DISABLED=true)")
}

// backendOptions reads S3 credentials from the environment. Static keys
// come as a pair; half a pair is an error rather than a silent fall back
// to the default chain.
func (sf *storeFlags) backendOptions() (backend.Options, error) {
	opts := backend.Options{
		AccessKey:    os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretKey:    os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken: os.Getenv("AWS_SESSION_TOKEN"),
		DisableIMDS:  sf.noIMDS || strings.EqualFold(os.Getenv("AWS_EC2_METADATA_DISABLED"), "true"),
	}
	if (opts.AccessKey == "") != (opts.SecretKey == "") {
		return opts, fmt.Errorf("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")
	}
	if opts.SessionToken != "" && opts.AccessKey == "" {
		return opts, fmt.Errorf("AWS_SESSION_TOKEN needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	return opts, nil
}

// openStore opens the store at rawURL for reading only (every command
// only reads): a file:// store must already exist, and nothing is created
// in it, so a typo in a path says so instead of showing an empty store,
// and a store on a read-only mount can be inspected and restored from.
func (sf *storeFlags) openStore(ctx context.Context, rawURL string) (remote.Store, func(), error) {
	if _, err := backend.Parse(rawURL); err != nil {
		return nil, nil, usagef("%v", err)
	}
	if sf.tenant == "" {
		return nil, nil, usagef("-tenant is empty")
	}
	if err := remote.ValidateName("tenant", sf.tenant); err != nil {
		return nil, nil, usagef("-tenant: %v", err)
	}
	if sf.db != "" {
		if err := remote.ValidateName("database", sf.db); err != nil {
			return nil, nil, usagef("-db: %v", err)
		}
	}
	opts, err := sf.backendOptions()
	if err != nil {
		return nil, nil, err
	}
	opts.ReadOnly = true
	s, err := backend.Open(ctx, rawURL, opts)
	if err != nil {
		return nil, nil, err
	}
	closeFn := func() {
		if c, ok := s.(io.Closer); ok {
			c.Close()
		}
	}
	return s, closeFn, nil
}

// dbRef is a database found in a store.
type dbRef struct{ tenant, db string }

// listDatabases lists the databases (folders with a head) in the store,
// of one tenant, or of all when tenant is "". It lists every key below:
// an administrative path, never a hot one.
func listDatabases(ctx context.Context, s remote.Store, tenant string) ([]dbRef, error) {
	prefix := ""
	if tenant != "" {
		prefix = tenant + "/"
	}
	var out []dbRef
	err := s.List(ctx, prefix, func(info remote.ObjectInfo) error {
		parts := strings.Split(info.Key, "/")
		if len(parts) == 3 && parts[2] == "head" {
			out = append(out, dbRef{parts[0], parts[1]})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].tenant != out[j].tenant {
			return out[i].tenant < out[j].tenant
		}
		return out[i].db < out[j].db
	})
	return out, nil
}

// layout names the database the flags choose: -db, or the only database
// of the tenant.
func (sf *storeFlags) layout(ctx context.Context, s remote.Store, rawURL string) (remote.Layout, error) {
	if sf.db != "" {
		return remote.NewLayout(sf.tenant, sf.db)
	}
	dbs, err := listDatabases(ctx, s, sf.tenant)
	if err != nil {
		return remote.Layout{}, err
	}
	switch len(dbs) {
	case 0:
		return remote.Layout{}, fmt.Errorf("no database of tenant %q in %s (is this the store URL the VFS was given? 'bop databases' lists every tenant)", sf.tenant, rawURL)
	case 1:
		return remote.NewLayout(dbs[0].tenant, dbs[0].db)
	}
	names := make([]string, len(dbs))
	for i, d := range dbs {
		names[i] = d.db
	}
	return remote.Layout{}, usagef("tenant %q has %d databases (%s): choose one with -db", sf.tenant, len(dbs), strings.Join(names, ", "))
}

// remoteDB is one database's store and a catalog built from it alone.
type remoteDB struct {
	store  remote.Store
	layout remote.Layout
	head   *manifest.Head
	cat    *manifest.Catalog
	// damage, if not nil, is where the log stopped applying: cat holds
	// the records before damage.Seq, and boundaries from there on are
	// unknown (manifest.OpenRemotePartial).
	damage *manifest.Damage
	close  func()
}

// errDamaged: the store's log cannot be applied to its end, or the
// catalog snapshot head names is unusable (snapshotDamaged).
var errDamaged = errors.New("the store is damaged")

// damaged describes the damage as an error, with the newest boundary that
// can still be read.
func (r *remoteDB) damaged() error {
	newest := "no boundary before it can be read"
	if tip := r.cat.Tip(); tip.Txid > 0 {
		newest = fmt.Sprintf("the newest boundary before it is txid %d", tip.Txid)
	}
	return fmt.Errorf("%w: %s: log record seq %d and every record after it cannot be applied (%s): %v",
		errDamaged, r.name(), r.damage.Seq, newest, r.damage.Err)
}

// snapshotDamaged is the error of a store whose catalog snapshot (the one
// head names) could not be used, nil if it could. The catalog was then
// built from the whole log and is complete: status and verify report it,
// boundaries and restore only warn.
func (r *remoteDB) snapshotDamaged() error {
	sd := r.cat.SnapshotDamage()
	if sd == nil {
		return nil
	}
	return fmt.Errorf("%w: %s: %v", errDamaged, r.name(), sd)
}

// warnSnapshot prints the snapshot's damage, if any, as a warning.
func (r *remoteDB) warnSnapshot(env *cmdEnv) {
	if err := r.snapshotDamaged(); err != nil {
		fmt.Fprintf(env.stderr, "bop: warning: %v\n", err)
	}
}

// openRemoteDB opens the store, finds the database and builds its catalog
// in a temporary folder (manifest.OpenRemotePartial: head, the snapshot it
// names, log records after it; every one verified as it is read). A log
// that stops applying part way is not an error here: the commands report
// it (status, boundaries, verify) and refuse boundaries past it (restore).
func (sf *storeFlags) openRemoteDB(ctx context.Context, rawURL, tmpRoot string) (*remoteDB, error) {
	s, closeStore, err := sf.openStore(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*remoteDB, error) {
		closeStore()
		return nil, err
	}
	layout, err := sf.layout(ctx, s, rawURL)
	if err != nil {
		return fail(err)
	}
	head, _, err := manifest.GetHead(ctx, s, layout)
	if errors.Is(err, remote.ErrNotFound) {
		return fail(fmt.Errorf("no database %s in %s (no head)", strings.TrimSuffix(layout.Root(), "/"), rawURL))
	}
	if err != nil {
		return fail(err)
	}
	tmp, err := os.MkdirTemp(tmpRoot, "bop-catalog-")
	if err != nil {
		return fail(err)
	}
	cat, damage, err := manifest.OpenRemotePartial(ctx, s, layout, filepath.Join(tmp, "catalog.db"), manifest.Options{})
	if err != nil {
		os.RemoveAll(tmp)
		return fail(fmt.Errorf("read %s from %s: %w", strings.TrimSuffix(layout.Root(), "/"), rawURL, err))
	}
	return &remoteDB{store: s, layout: layout, head: head, cat: cat, damage: damage, close: func() {
		cat.Close()
		os.RemoveAll(tmp)
		closeStore()
	}}, nil
}

// checkTxid refuses a txid past what the catalog can answer for: past the
// newest boundary (a point in time that does not exist yet is more likely
// a mistake than a wish for the newest), or past the damage.
func (r *remoteDB) checkTxid(txid uint64) error {
	tip := r.cat.Tip()
	switch {
	case txid <= tip.Txid:
		return nil
	case r.damage != nil:
		return r.damaged()
	}
	return fmt.Errorf("txid %d is past the newest boundary of %s, txid %d (run 'bop boundaries')", txid, r.name(), tip.Txid)
}

// txidFlag is a -txid flag: 0 when not given; given as 0, a usage error.
func txidFlag(fs *flag.FlagSet, v uint64) (uint64, error) {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "txid" })
	if set && v == 0 {
		return 0, usagef("-txid 0: txid 0 is the empty database before the first transaction; give 1 or more, or leave -txid out for the newest boundary")
	}
	return v, nil
}

// name is tenant/db.
func (r *remoteDB) name() string { return strings.TrimSuffix(r.layout.Root(), "/") }

// publishes calls fn for every publishes row in seq order, a page at a
// time (bounded memory for long histories).
func (r *remoteDB) publishes(fn func(manifest.Publish) error) error {
	const page = 1000
	for from := uint64(1); ; {
		rows, err := r.cat.Publishes(from, page)
		if err != nil {
			return err
		}
		for _, p := range rows {
			if err := fn(p); err != nil {
				return err
			}
		}
		if len(rows) < page {
			return nil
		}
		from = rows[len(rows)-1].Seq + 1
	}
}
