package manifest

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bopstore/bop/remote"
)

// Fencing: rounds of two writers (separate catalogs, as on two machines)
// racing to take over with force and then publish. After each round
// exactly one publish succeeded and the other writer got ErrFenced. Over
// the whole log: no record is void (a correct store never lets a stale
// writer in), epochs never decrease along seq, each record is at its own
// seq, and after every takeover record only its writer appears until the
// next takeover — the reader's view contains no record of a loser.
func runFencing(t *testing.T, store remote.Store, rounds int) {
	ctx := context.Background()
	nodes := [2]*node{
		newNode(t, store, "writer-a", 4, WriterOptions{}),
		newNode(t, store, "writer-b", 4, WriterOptions{}),
	}
	rngs := [2]*mrand.Rand{mrand.New(mrand.NewPCG(1, 1)), mrand.New(mrand.NewPCG(2, 2))}
	winners := make([]string, 0, rounds)
	for round := range rounds {
		var wg sync.WaitGroup
		var takeErr [2]error
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, takeErr[i] = n.w.Takeover(ctx, true)
			}()
		}
		wg.Wait()
		for i, err := range takeErr {
			if err != nil && !errors.Is(err, ErrFenced) {
				t.Fatalf("round %d: takeover by %s: %v", round, nodes[i].w.ID(), err)
			}
		}
		// Both try to publish, concurrently.
		var recs [2]*Record
		for i, n := range nodes {
			if takeErr[i] == nil {
				recs[i] = n.randomPublish(rngs[i], 24)
			}
		}
		var pubErr [2]error
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if recs[i] == nil {
					recs[i] = &Record{Txid: 1 << 40}
				}
				pubErr[i] = n.w.Publish(ctx, recs[i])
			}()
		}
		wg.Wait()
		won := -1
		for i, err := range pubErr {
			switch {
			case err == nil:
				if won >= 0 {
					t.Fatalf("round %d: both writers published", round)
				}
				won = i
			case !errors.Is(err, ErrFenced):
				t.Fatalf("round %d: publish by %s: %v, want success or ErrFenced", round, nodes[i].w.ID(), err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: nobody could publish (%v, %v)", round, pubErr[0], pubErr[1])
		}
		// The loser stays fenced.
		if err := nodes[1-won].w.Publish(ctx, &Record{Txid: 1 << 40}); !errors.Is(err, ErrFenced) {
			t.Fatalf("round %d: second publish by the loser: %v", round, err)
		}
		winners = append(winners, nodes[won].w.ID())
	}

	t.Logf("winners: %v", winners)
	// A reader's view of the whole log.
	rep, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "reader.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	rows, err := rep.Publishes(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var epoch uint64
	owner := ""
	var lastOwners []string // owner of the last takeover before each winning publish
	for i, r := range rows {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d at position %d", r.Seq, i)
		}
		if r.Void {
			t.Fatalf("record %d (%s by %s epoch %d) is void", r.Seq, r.Kind, r.Writer, r.Epoch)
		}
		if r.Epoch < epoch {
			t.Fatalf("epoch goes down at seq %d: %d after %d", r.Seq, r.Epoch, epoch)
		}
		epoch = r.Epoch
		if r.Kind == KindTakeover {
			owner = r.Writer
			continue
		}
		if r.Writer != owner {
			t.Fatalf("seq %d: %s record by %s after %s's takeover", r.Seq, r.Kind, r.Writer, owner)
		}
		lastOwners = append(lastOwners, owner)
	}
	if fmt.Sprint(lastOwners) != fmt.Sprint(winners) {
		t.Fatalf("publishes in the log by %v, winners per round %v", lastOwners, winners)
	}
}

func TestFencingRace(t *testing.T) {
	t.Run("fs", func(t *testing.T) { runFencing(t, fsStore(t), 12) })
	t.Run("s3", func(t *testing.T) { runFencing(t, s3Store(t), 50) })
}

// headRefuser refuses the first `refuse` conditional writes of head as a
// lost race (412), as a store busy with another taker's writes would.
type headRefuser struct {
	remote.Store
	mu      sync.Mutex
	refuse  int
	refused int
}

func (s *headRefuser) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	if key == testLayout.Head() {
		s.mu.Lock()
		refuse := s.refused < s.refuse
		if refuse {
			s.refused++
		}
		s.mu.Unlock()
		if refuse {
			return remote.PutResult{}, fmt.Errorf("test: put %s: %w", key, remote.ErrPrecondition)
		}
	}
	return s.Store.Put(ctx, key, r, opts)
}

// The head bump outlasts a run of refusals longer than its minimum count,
// and when it does give up, it says how long it tried and why.
func TestBumpEpochPatience(t *testing.T) {
	defer func(tries int, patience, backoff time.Duration) {
		bumpMinTries, bumpPatience, bumpBackoffMax = tries, patience, backoff
	}(bumpMinTries, bumpPatience, bumpBackoffMax)
	bumpMinTries, bumpPatience, bumpBackoffMax = 8, 5*time.Second, 2*time.Millisecond
	ctx := context.Background()

	// 100 refusals: more than the minimum count (and than the 64 tries
	// that were once the whole budget), within the patience.
	store := &headRefuser{Store: fsStore(t), refuse: 100}
	n := newNode(t, store, "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, true); err != nil {
		t.Fatalf("takeover after %d refusals: %v", store.refused, err)
	}
	if store.refused != 100 {
		t.Fatalf("head refused %d times, want 100", store.refused)
	}
	if err := n.w.Publish(ctx, n.randomPublish(mrand.New(mrand.NewPCG(3, 3)), 8)); err != nil {
		t.Fatal(err)
	}

	// Refused for ever: a clear error naming the tries and the refusal.
	bumpPatience = 300 * time.Millisecond
	store = &headRefuser{Store: fsStore(t), refuse: 1 << 30}
	n = newNode(t, store, "writer-b", 4, WriterOptions{})
	start := time.Now()
	_, err := n.w.Takeover(ctx, true)
	if err == nil || !strings.Contains(err.Error(), "gave up bumping the epoch") || !strings.Contains(err.Error(), remote.ErrPrecondition.Error()) {
		t.Fatalf("takeover against a head that is always refused: %v", err)
	}
	// Every create refused while head is never there: a phantom key on
	// the server (TestProbeDeletesAfterHead), said so.
	if !strings.Contains(err.Error(), "phantom") {
		t.Fatalf("takeover against a head whose create is always refused and that never exists: %v, want the phantom named", err)
	}
	if took := time.Since(start); took < bumpPatience {
		t.Fatalf("gave up after %s, before the patience of %s", took, bumpPatience)
	}
	t.Log(err)
}

// landedRefuser stores every head write but reports it refused (412), as
// a client sees a conditional write whose first attempt landed with its
// response lost and whose retry is refused by that very write.
type landedRefuser struct {
	remote.Store
	mu      sync.Mutex
	refused int
}

func (s *landedRefuser) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	res, err := s.Store.Put(ctx, key, r, opts)
	if err == nil && key == testLayout.Head() {
		s.mu.Lock()
		s.refused++
		s.mu.Unlock()
		return remote.PutResult{}, fmt.Errorf("test: put %s (retried): %w", key, remote.ErrPrecondition)
	}
	return res, err
}

// A head bump that landed but was reported refused is recognized as ours
// when head is read back: the takeover completes instead of bumping
// again and again over its own writes.
func TestBumpEpochOwnWriteRefused(t *testing.T) {
	defer func(tries int, patience, backoff time.Duration) {
		bumpMinTries, bumpPatience, bumpBackoffMax = tries, patience, backoff
	}(bumpMinTries, bumpPatience, bumpBackoffMax)
	bumpMinTries, bumpPatience, bumpBackoffMax = 8, 300*time.Millisecond, 2*time.Millisecond
	store := &landedRefuser{Store: fsStore(t)}
	n := newNode(t, store, "writer-a", 4, WriterOptions{})
	info, err := n.w.Takeover(context.Background(), true)
	if err != nil {
		t.Fatalf("takeover whose head writes are all reported refused: %v", err)
	}
	if store.refused != 1 || info.Epoch != 1 {
		t.Fatalf("head written %d times, epoch %d; want 1 write, epoch 1", store.refused, info.Epoch)
	}
}
