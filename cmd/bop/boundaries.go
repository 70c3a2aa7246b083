package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/bopstore/bop/manifest"
)

func init() {
	commands = append(commands, &command{
		name:    "boundaries",
		args:    "STORE_URL",
		summary: "list the restorable boundaries (txid, seq, time)",
		help: `
Boundaries lists the log records of a database, oldest first: each one's
seq, the txid it ends at (its boundary: 'bop restore -txid' takes it),
when it was published, its kind (publish, takeover, release) and the
database's size there. A record that a later takeover voided (its writer
had been fenced) is no boundary and is listed only with -void.

Example:

	bop boundaries file:///tmp/bop-quickstart/app.db-bop/store
`,
		setup: func(fs *flag.FlagSet) func(context.Context, *cmdEnv, []string) error {
			var sf storeFlags
			sf.register(fs, true)
			showVoid := fs.Bool("void", false, "also list void records")
			return func(ctx context.Context, env *cmdEnv, args []string) error {
				url, err := oneURL(args)
				if err != nil {
					return err
				}
				return boundaries(ctx, env, &sf, url, *showVoid)
			}
		},
	})
}

func boundaries(ctx context.Context, env *cmdEnv, sf *storeFlags, url string, showVoid bool) error {
	r, err := sf.openRemoteDB(ctx, url, "")
	if err != nil {
		return err
	}
	defer r.close()
	r.warnSnapshot(env)
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SEQ\tTXID\tPUBLISHED (UTC)\tKIND\tPAGES\tSIZE\t")
	var listed, hidden int
	err = r.publishes(func(p manifest.Publish) error {
		kind := p.Kind
		if p.Compaction {
			kind += " (compaction)"
		}
		if p.Void {
			if !showVoid {
				hidden++
				return nil
			}
			kind += " (void)"
		}
		listed++
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%d\t%s\t\n", p.Seq, p.Txid, timeString(p.CreatedMs), kind, p.DBPages,
			sizeString(int64(p.DBPages)*int64(r.head.PageSize)))
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if listed == 0 {
		fmt.Fprintf(env.stdout, "%s has no log records yet\n", r.name())
	}
	if hidden > 0 {
		fmt.Fprintf(env.stdout, "%d void records not listed (-void lists them)\n", hidden)
	}
	if r.damage != nil {
		fmt.Fprintf(env.stdout, "DAMAGED from seq %d on: not listed\n", r.damage.Seq)
		return r.damaged()
	}
	return nil
}
