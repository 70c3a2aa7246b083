package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
)

func init() {
	commands = append(commands, &command{
		name:    "status",
		args:    "STORE_URL",
		summary: "the head, the newest boundary, publishes, objects and sizes",
		help: `
Status shows what the store holds for one database: its head (format,
epoch, writer, when the writer last published or renewed its lease, the
catalog snapshot it names), the newest boundary, how many publishes the
log holds, the objects the newest boundary reads and their size, the
objects stored under obj/ (a LIST: it includes retired objects that GC has
not deleted yet), and the pins other nodes hold. If the log cannot be
applied to its end (a record, or a delta object whose directory it needs,
is missing or corrupt),
it says where, shows the catalog before that point and exits 1. If the
catalog snapshot head names is missing or corrupt, it says so and exits 1
(the catalog shown is built from the whole log instead).

Example:

	bop status file:///tmp/bop-quickstart/app.db-bop/store
`,
		setup: func(fs *flag.FlagSet) func(context.Context, *cmdEnv, []string) error {
			var sf storeFlags
			sf.register(fs, true)
			return func(ctx context.Context, env *cmdEnv, args []string) error {
				url, err := oneURL(args)
				if err != nil {
					return err
				}
				return status(ctx, env, &sf, url)
			}
		},
	})
}

func status(ctx context.Context, env *cmdEnv, sf *storeFlags, url string) error {
	r, err := sf.openRemoteDB(ctx, url, "")
	if err != nil {
		return err
	}
	defer r.close()

	snap := r.cat.Snapshot()
	var records, void int
	kinds := map[string]int{}
	var boundaryMs int64
	if err := r.publishes(func(p manifest.Publish) error {
		records++
		if p.Seq == snap.BoundarySeq() {
			boundaryMs = p.CreatedMs
		}
		if p.Void {
			void++
			return nil
		}
		kinds[p.Kind]++
		return nil
	}); err != nil {
		return err
	}
	var live, liveBase, liveDelta int
	var liveBytes int64
	for _, o := range snap.Objects() {
		live++
		liveBytes += o.Size
		if o.Kind == manifest.ObjectBase {
			liveBase++
		} else {
			liveDelta++
		}
	}
	var stored int
	var storedBytes int64
	if err := r.store.List(ctx, r.layout.ObjectPrefix(), func(info remote.ObjectInfo) error {
		stored++
		storedBytes += info.Size
		return nil
	}); err != nil {
		return fmt.Errorf("list %s: %w", r.layout.ObjectPrefix(), err)
	}
	pins, err := manifest.ListPins(ctx, r.store, r.layout)
	if err != nil {
		return err
	}

	h := r.head
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	row("database", "%s in %s", r.name(), url)
	row("head", "format %d, epoch %d, seq %d (txid %d)", h.Format, h.Epoch, h.Seq, h.Txid)
	writer := fmt.Sprintf("%s, last published or renewed %s", h.Writer, timeString(h.RenewedMs))
	if h.Released {
		writer += ", released (handed off at close)"
	}
	row("writer", "%s", writer)
	row("page size", "%d bytes, %d pages per chunk", h.PageSize, h.ChunkPages)
	if s := h.Snapshot; s != nil {
		row("snapshot", "catalog snapshot at seq %d, %s", s.Seq, sizeString(s.Size))
	} else {
		row("snapshot", "none (the catalog is built from the log alone)")
	}
	if sd := r.cat.SnapshotDamage(); sd != nil {
		row("DAMAGED", "%v", sd)
	}
	if r.damage != nil {
		row("DAMAGED", "%v", r.damage)
		row("", "the catalog below holds the %d records before seq %d", r.damage.Seq-1, r.damage.Seq)
	}
	if snap.Txid() == 0 {
		row("newest boundary", "none: nothing published yet")
	} else {
		row("newest boundary", "txid %d, seq %d, %s, %d pages (%s)", snap.Txid(), snap.BoundarySeq(),
			timeString(boundaryMs), snap.DBPages(), sizeString(int64(snap.DBPages())*int64(snap.PageSize())))
	}
	var ks []string
	for _, k := range []string{manifest.KindPublish, manifest.KindTakeover, manifest.KindRelease} {
		ks = append(ks, fmt.Sprintf("%d %s", kinds[k], k))
	}
	row("log", "%d records (%s; %d void)", records, strings.Join(ks, ", "), void)
	row("objects", "%d read by the newest boundary (%d base, %d delta), %s; %d pages from deltas",
		live, liveBase, liveDelta, sizeString(liveBytes), snap.DeltaPages())
	row("stored", "%d objects under %s, %s", stored, r.layout.ObjectPrefix(), sizeString(storedBytes))
	if len(pins) == 0 {
		row("pins", "none")
	}
	for i, p := range pins {
		k := ""
		if i == 0 {
			k = "pins"
		}
		exp := "never expires"
		if p.ExpiresMs != 0 {
			exp = "expires " + timeString(p.ExpiresMs)
		}
		row(k, "%s: txid %d, owner %s, %s %s", p.ID, p.Boundary, p.Owner, exp, p.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.damage != nil {
		return r.damaged()
	}
	return r.snapshotDamaged()
}

// timeString prints a Unix time in milliseconds, UTC.
func timeString(ms int64) string {
	if ms == 0 {
		return "never"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}
