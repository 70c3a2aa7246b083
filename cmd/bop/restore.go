package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bopstore/bop/checkpoint"
	"github.com/bopstore/bop/manifest"
)

func init() {
	commands = append(commands, &command{
		name:    "restore",
		args:    "STORE_URL",
		summary: "write a plain SQLite file of a database at a boundary",
		help: `
Restore writes the database as it was at a boundary (by default the newest)
to a plain SQLite file that any SQLite opens. A txid between two boundaries
rounds down to the boundary below it (a txid past the newest boundary is
an error); -time picks the newest boundary published at or before that
time. The file is written under a temporary
name, verified page by page (every frame's page number and hash) and
renamed into place, so the output holds a whole database or nothing.

The catalog is built from the store alone (head, catalog snapshot, log
records), in a temporary folder next to the output, removed afterwards.

Examples:

	# the newest state of the quickstart's database, to ./app.db
	bop restore file:///tmp/bop-quickstart/app.db-bop/store

	# as of txid 42, to /tmp/old.db
	bop restore -txid 42 -o /tmp/old.db -db app.db s3://bucket/bop?region=eu-west-1
`,
		setup: func(fs *flag.FlagSet) func(context.Context, *cmdEnv, []string) error {
			var sf storeFlags
			sf.register(fs, true)
			txid := fs.Uint64("txid", 0, "restore the boundary at or below this txid (default: the newest)")
			at := fs.String("time", "", "restore the newest boundary published at or before this time (RFC 3339)")
			out := fs.String("o", "", "output file (default: the database's name in the current folder)")
			force := fs.Bool("f", false, "replace the output file if it exists")
			parallel := fs.Int("parallel", 8, "workers, each restoring one region of the file at a time (with up to 32 GETs)")
			return func(ctx context.Context, env *cmdEnv, args []string) error {
				url, err := oneURL(args)
				if err != nil {
					return err
				}
				txid, err := txidFlag(fs, *txid)
				if err != nil {
					return err
				}
				if txid != 0 && *at != "" {
					return usagef("give -txid or -time, not both")
				}
				var atTime time.Time
				if *at != "" {
					if atTime, err = time.Parse(time.RFC3339Nano, *at); err != nil {
						return usagef("-time %q: want RFC 3339, like 2026-01-02T15:04:05Z", *at)
					}
				}
				if *parallel < 1 || *parallel > 256 {
					return usagef("-parallel %d: want 1 to 256", *parallel)
				}
				return restore(ctx, env, &sf, url, restoreArgs{txid: txid, at: atTime, hasAt: *at != "", out: *out, force: *force, parallel: *parallel})
			}
		},
	})
}

type restoreArgs struct {
	txid     uint64
	at       time.Time
	hasAt    bool // -time given (its time may be the zero time)
	out      string
	force    bool
	parallel int
}

func restore(ctx context.Context, env *cmdEnv, sf *storeFlags, url string, a restoreArgs) error {
	out := a.out
	if out == "" && sf.db != "" {
		out = sf.db
	}
	// Check the output before any I/O to the store: a restore that would
	// fail at the end should fail now.
	if out != "" {
		if err := checkOutput(out, a.force); err != nil {
			return err
		}
	}
	tmpRoot := ""
	if out != "" {
		tmpRoot = filepath.Dir(out)
	}
	r, err := sf.openRemoteDB(ctx, url, tmpRoot)
	if err != nil {
		return err
	}
	defer r.close()
	r.warnSnapshot(env)
	if out == "" {
		out = r.layout.DB
		if err := checkOutput(out, a.force); err != nil {
			return err
		}
	}
	txid := a.txid
	switch {
	case a.hasAt && r.damage != nil:
		// A record in the damaged part may have been published at or
		// before the time asked for (record times need not increase:
		// writers' clocks differ), so no answer can be proven.
		return fmt.Errorf("%w (-time cannot choose a boundary past a damaged record; choose one with -txid)", r.damaged())
	case a.hasAt:
		if txid, err = boundaryAt(r, a.at); err != nil {
			return err
		}
	case txid != 0:
		if err := r.checkTxid(txid); err != nil {
			return err
		}
	case r.damage != nil:
		return r.damaged() // the newest boundary is in the damaged part
	}
	res, err := checkpoint.Restore(ctx, checkpoint.RestoreOptions{
		Store: r.store, Catalog: r.cat, Txid: txid, Path: out, Overwrite: a.force, Parallel: a.parallel,
	})
	if err != nil {
		if errors.Is(err, manifest.ErrSnapshotTooOld) {
			return fmt.Errorf("%w (run 'bop boundaries' for the restorable ones)", err)
		}
		if errors.Is(err, checkpoint.ErrNothingPublished) {
			return fmt.Errorf("%w (run 'bop boundaries' for the restorable ones)", err)
		}
		return err
	}
	fmt.Fprintf(env.stdout, "restored %s to %s\n", r.name(), res.Path)
	switch {
	case res.Rounded:
		fmt.Fprintf(env.stdout, "  boundary  txid %d (seq %d), rounded down from txid %d\n", res.Txid, res.Seq, res.Requested)
	case a.hasAt:
		fmt.Fprintf(env.stdout, "  boundary  txid %d (seq %d), the newest at or before %s\n", res.Txid, res.Seq, a.at.UTC().Format(time.RFC3339Nano))
	default:
		fmt.Fprintf(env.stdout, "  boundary  txid %d (seq %d)\n", res.Txid, res.Seq)
	}
	fmt.Fprintf(env.stdout, "  size      %d pages of %d bytes (%s)\n", res.DBPages, res.PageSize, sizeString(res.Size))
	fmt.Fprintf(env.stdout, "  fetched   %s in %d ranged GETs\n", sizeString(res.GetBytes), res.Gets)
	return nil
}

// checkOutput refuses an output that exists (unless force) or whose
// folder does not.
func checkOutput(path string, force bool) error {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("output %s is a directory", path)
	case err == nil && !force:
		return fmt.Errorf("output %s exists: choose another with -o, or replace it with -f", path)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("output: %w", err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil {
		return fmt.Errorf("output folder: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("output folder %s is not a directory", filepath.Dir(path))
	}
	return nil
}

// boundaryAt is the txid of the newest non-void boundary created at or
// before t.
func boundaryAt(r *remoteDB, t time.Time) (uint64, error) {
	var txid uint64
	var found bool
	ms := t.UnixMilli()
	err := r.publishes(func(p manifest.Publish) error {
		if !p.Void && p.Txid > 0 && p.CreatedMs <= ms {
			txid, found = p.Txid, true
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%s has no boundary published at or before %s (run 'bop boundaries')", r.name(), t.UTC().Format(time.RFC3339Nano))
	}
	return txid, nil
}

// sizeString prints bytes for people.
func sizeString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
