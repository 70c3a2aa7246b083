package manifest

import (
	"bytes"
	"context"
	"errors"
	mrand "math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

// catalogMatchesLog checks the catalog holds exactly the log: one row per
// seq 1..tip with the hash of the bytes at log/<seq>, and nothing after
// the tip; and a catalog rebuilt from the store alone has the same state.
func catalogMatchesLog(t *testing.T, store remote.Store, c *Catalog) {
	t.Helper()
	ctx := context.Background()
	tip := c.Tip()
	rows, err := c.Publishes(1, int(tip.Seq)+10)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(rows)) != tip.Seq {
		t.Fatalf("%d publishes rows for tip %d", len(rows), tip.Seq)
	}
	for i, r := range rows {
		_, raw, err := getRecord(ctx, store, testLayout, uint64(i+1))
		if err != nil {
			t.Fatalf("log %d: %v", i+1, err)
		}
		if r.Seq != uint64(i+1) || r.LogHash != hashBytes(raw) {
			t.Fatalf("catalog row %d (seq %d) is not the record in the log", i+1, r.Seq)
		}
	}
	if _, _, err := getRecord(ctx, store, testLayout, tip.Seq+1); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("log/%d after the catalog's tip: %v", tip.Seq+1, err)
	}
	rep, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "replica.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	if got, want := dumpState(t, rep), dumpState(t, c); got != want {
		t.Fatalf("catalog differs from one rebuilt from the log:\n--- rebuilt\n%s\n--- catalog\n%s", got, want)
	}
}

// A create of log/<s> times out and the read-back finds nothing, but the
// request is applied later. The writer must never offer a second, different
// record for s (a new CreatedMs is enough to differ): it offers the same
// bytes again until they are there (our record: no false ErrFenced) or
// another writer's record is (a true fence). Four orders of events.
func TestLateCreateLandsOnce(t *testing.T) {
	cases := []struct {
		name string
		// run gets the writer A, the late store and a second writer's
		// store (the inner one), after A's create of log/<s> timed out.
		run func(t *testing.T, a *node, ls *fault.Late, seq uint64, rec1 *Record, rng *mrand.Rand)
	}{
		{"late request lands before the retry", func(t *testing.T, a *node, ls *fault.Late, seq uint64, rec1 *Record, rng *mrand.Rand) {
			ls.Pass(true)
			rec2 := a.randomPublish(rng, 20)
			rec2.Txid = rec1.Txid + 1
			if err := a.w.Publish(context.Background(), rec2); err != nil {
				t.Fatalf("publish after the late create landed: %v", err)
			}
			checkLanded(t, a, ls, seq, rec1, rec2)
		}},
		{"retry lands, the late request is refused", func(t *testing.T, a *node, ls *fault.Late, seq uint64, rec1 *Record, rng *mrand.Rand) {
			ls.Pass(false)
			rec2 := a.randomPublish(rng, 20)
			rec2.Txid = rec1.Txid + 1
			if err := a.w.Publish(context.Background(), rec2); err != nil {
				t.Fatalf("publish after a timed-out create: %v", err)
			}
			if err := ls.LandRefused(context.Background()); err != nil {
				t.Fatalf("log/%d: %v", seq, err)
			}
			checkLanded(t, a, ls, seq, rec1, rec2)
		}},
		{"another writer claims the seq first", func(t *testing.T, a *node, ls *fault.Late, seq uint64, rec1 *Record, rng *mrand.Rand) {
			ctx := context.Background()
			b := newNode(t, ls.Inner(), "writer-b", 4, WriterOptions{})
			info, err := b.w.Takeover(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if info.Seq != seq {
				t.Fatalf("B's takeover at seq %d, want %d", info.Seq, seq)
			}
			if err := ls.LandRefused(context.Background()); err != nil {
				t.Fatal(err)
			}
			ls.Pass(false)
			if err := a.w.Publish(ctx, a.randomPublish(rng, 20)); !errors.Is(err, ErrFenced) {
				t.Fatalf("A after B claimed seq %d: %v, want ErrFenced", seq, err)
			}
			if tip := a.cat.Tip(); tip.Seq != seq-1 {
				t.Fatalf("A's catalog tip %d: a record that never landed was applied", tip.Seq)
			}
			catalogMatchesLog(t, ls.Inner(), b.cat)
			if err := ls.OneBodyPerKey(); err != nil {
				t.Fatal(err)
			}
		}},
		{"late request lands, then another writer takes over", func(t *testing.T, a *node, ls *fault.Late, seq uint64, rec1 *Record, rng *mrand.Rand) {
			ctx := context.Background()
			if _, err := ls.Land(ctx); err != nil {
				t.Fatal(err)
			}
			b := newNode(t, ls.Inner(), "writer-b", 4, WriterOptions{})
			info, err := b.w.Takeover(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if info.Seq != seq+1 {
				t.Fatalf("B's takeover at seq %d, want %d", info.Seq, seq+1)
			}
			ls.Pass(false)
			if err := a.w.CheckStillWriter(ctx); !errors.Is(err, ErrFenced) {
				t.Fatalf("A after B's takeover: %v, want ErrFenced", err)
			}
			// A settled its own record before learning it was fenced.
			if tip := a.cat.Tip(); tip.Seq != seq || tip.Txid != rec1.Txid {
				t.Fatalf("A's catalog tip %+v, want seq %d txid %d", tip, seq, rec1.Txid)
			}
			rows, err := a.cat.Publishes(seq, 1)
			if err != nil || len(rows) != 1 || rows[0].Job != rec1.Job || rows[0].Writer != "writer-a" {
				t.Fatalf("A's row at seq %d: %+v %v", seq, rows, err)
			}
			// A's history is B's up to seq: B applied A's late record too.
			ra, err := a.cat.Publishes(1, int(seq))
			if err != nil {
				t.Fatal(err)
			}
			rb, err := b.cat.Publishes(1, int(seq))
			if err != nil {
				t.Fatal(err)
			}
			if len(ra) != int(seq) || len(rb) != int(seq) {
				t.Fatalf("%d and %d rows up to seq %d", len(ra), len(rb), seq)
			}
			for i := range ra {
				if ra[i] != rb[i] {
					t.Fatalf("seq %d: A has %+v, B has %+v", i+1, ra[i], rb[i])
				}
			}
			catalogMatchesLog(t, ls.Inner(), b.cat)
			if err := ls.OneBodyPerKey(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stores(t, func(t *testing.T, store remote.Store) {
				ctx := context.Background()
				ls := fault.NewLate(store, testLayout.LogPrefix())
				a := newNode(t, ls, "writer-a", 4, WriterOptions{})
				if _, err := a.w.Takeover(ctx, false); err != nil {
					t.Fatal(err)
				}
				rng := mrand.New(mrand.NewPCG(5, 6))
				if err := a.w.Publish(ctx, a.randomPublish(rng, 20)); err != nil {
					t.Fatal(err)
				}
				seq := a.cat.Tip().Seq + 1
				rec1 := a.randomPublish(rng, 20)
				ls.Hold()
				err := a.w.Publish(ctx, rec1)
				if err == nil || errors.Is(err, ErrFenced) || !errors.Is(err, fault.ErrHeld) {
					t.Fatalf("publish whose create timed out: %v", err)
				}
				if _, _, err := getRecord(ctx, store, testLayout, seq); !errors.Is(err, remote.ErrNotFound) {
					t.Fatalf("log/%d before the late request lands: %v", seq, err)
				}
				if tip := a.cat.Tip(); tip.Seq != seq-1 {
					t.Fatalf("catalog applied a record of unknown outcome")
				}
				tc.run(t, a, ls, seq, rec1, rng)
			})
		})
	}
}

// checkLanded: rec1 is at seq (the bytes first offered), rec2 right
// after, each once, and the catalog is the log.
func checkLanded(t *testing.T, a *node, ls *fault.Late, seq uint64, rec1, rec2 *Record) {
	t.Helper()
	ctx := context.Background()
	if err := ls.OneBodyPerKey(); err != nil {
		t.Fatal(err)
	}
	_, raw, err := getRecord(ctx, ls.Inner(), testLayout, seq)
	if err != nil {
		t.Fatal(err)
	}
	if offered := ls.Offered(testLayout.Log(seq)); len(offered) == 0 || !bytes.Equal(raw, offered[0]) {
		t.Fatalf("log/%d is not the record first offered for it", seq)
	}
	rows, err := a.cat.Publishes(seq, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Job != rec1.Job || rows[1].Job != rec2.Job || rows[0].Txid != rec1.Txid || rows[1].Txid != rec2.Txid {
		t.Fatalf("rows from seq %d: %+v; want %s then %s", seq, rows, rec1.Job, rec2.Job)
	}
	catalogMatchesLog(t, ls.Inner(), a.cat)
	// The writer goes on.
	if err := a.w.CheckStillWriter(ctx); err != nil {
		t.Fatal(err)
	}
}

// A create times out, and its retries get 412 while the key reads as
// missing (versitygw answers so while a create is in flight): the writer
// waits, gives up, and keeps the record pending — the 412 may be its own
// first request. When that request lands, the next publish settles it as
// ours instead of offering a new record for the seq (a false fence).
func TestRefusedCreateStaysPending(t *testing.T) {
	ctx := context.Background()
	store := fsStore(t)
	ls := fault.NewLate(store, testLayout.LogPrefix())
	a := newNode(t, ls, "writer-a", 4, WriterOptions{})
	if _, err := a.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(7, 8))
	seq := a.cat.Tip().Seq + 1
	rec1 := a.randomPublish(rng, 20)
	ls.HoldRefusing()
	err := a.w.Publish(ctx, rec1)
	if err == nil || errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "stays missing") {
		t.Fatalf("publish refused while the key stays missing: %v", err)
	}
	ls.Pass(true)
	rec2 := a.randomPublish(rng, 20)
	rec2.Txid = rec1.Txid + 1
	if err := a.w.Publish(ctx, rec2); err != nil {
		t.Fatalf("publish after the first create landed: %v", err)
	}
	checkLanded(t, a, ls, seq, rec1, rec2)
}
