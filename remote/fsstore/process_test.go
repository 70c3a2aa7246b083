package fsstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/remote"
	"github.com/cespare/xxhash/v2"
)

// Child processes: the test binary re-run with FSSTORE_CHILD set runs
// TestHelperProcess, which does one job on the store at FSSTORE_ROOT.
//
//	race     print "ready", wait for a byte on stdin, put FSSTORE_KEY with
//	         this child's body (IfNoneMatch, or IfMatch FSSTORE_ETAG), print
//	         "win <etag>", "lost" or "error <msg>"
//	hang     put FSSTORE_KEY, print "half" after half the body, then block
//	         until killed
//	churn    put and replace self-checking objects in a loop until killed,
//	         printing "stored" once, after the first put
func TestHelperProcess(t *testing.T) {
	job := os.Getenv("FSSTORE_CHILD")
	if job == "" {
		t.Skip("runs only as a child process")
	}
	s, err := New(os.Getenv("FSSTORE_ROOT"))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(0)
	}
	key := os.Getenv("FSSTORE_KEY")
	id, _ := strconv.Atoi(os.Getenv("FSSTORE_ID"))
	ctx := context.Background()
	switch job {
	case "race":
		fmt.Println("ready")
		var b [1]byte
		os.Stdin.Read(b[:])
		opts := remote.PutOptions{IfNoneMatch: true, Size: -1}
		if etag := os.Getenv("FSSTORE_ETAG"); etag != "" {
			opts = remote.PutOptions{IfMatch: etag, Size: -1}
		}
		res, err := s.Put(ctx, key, bytes.NewReader(childBody(id)), opts)
		switch {
		case err == nil:
			fmt.Println("win", res.ETag)
		case errors.Is(err, remote.ErrPrecondition):
			fmt.Println("lost")
		default:
			fmt.Println("error", err)
		}
	case "hang":
		body := io.MultiReader(
			bytes.NewReader(selfChecking(uint64(id), 1<<20)[:512<<10]),
			&signalThenBlock{},
		)
		_, err := s.Put(ctx, key, body, remote.PutOptions{Size: 1 << 20})
		fmt.Println("error: put returned", err)
	case "churn":
		fmt.Println("ready")
		for i := 0; ; i++ {
			seed := uint64(id)<<32 | uint64(i)
			size := int64(16 + rand.IntN(300<<10))
			k := fmt.Sprintf("%s/%d", key, i%5)
			if _, err := s.Put(ctx, k, bytes.NewReader(selfChecking(seed, size)), remote.PutOptions{Size: size}); err != nil {
				fmt.Println("error", err)
				os.Exit(0)
			}
			if i == 0 {
				fmt.Println("stored")
			}
			if i%3 == 0 {
				s.Delete(ctx, fmt.Sprintf("%s/%d", key, (i+2)%5))
			}
		}
	}
	os.Exit(0)
}

// signalThenBlock tells the parent the body is half sent, then never ends.
type signalThenBlock struct{ done bool }

func (s *signalThenBlock) Read([]byte) (int, error) {
	if !s.done {
		s.done = true
		fmt.Println("half")
	}
	select {}
}

func childBody(id int) []byte { return selfChecking(uint64(id)+1, int64(1000+id*37)) }

// selfChecking returns an object that proves its own integrity: 8 bytes of
// length, 8 of xxhash64 of the rest, then seeded bytes.
func selfChecking(seed uint64, size int64) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	for i := 16; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	binary.LittleEndian.PutUint64(b[0:], uint64(size))
	binary.LittleEndian.PutUint64(b[8:], xxhash.Sum64(b[16:]))
	return b
}

func checkSelf(b []byte) error {
	if len(b) < 16 {
		return fmt.Errorf("%d bytes: shorter than the header", len(b))
	}
	if n := binary.LittleEndian.Uint64(b); n != uint64(len(b)) {
		return fmt.Errorf("%d bytes, header says %d", len(b), n)
	}
	if binary.LittleEndian.Uint64(b[8:]) != xxhash.Sum64(b[16:]) {
		return errors.New("hash mismatch")
	}
	return nil
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startChild runs TestHelperProcess as a child with env; it is killed
// when the test ends, if it has not exited.
func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	h := testutil.StartChild(t, "TestHelperProcess", 0, env...)
	return &child{cmd: h.Cmd, stdin: h.Stdin, out: bufio.NewScanner(h.Stdout)}
}

// line returns the child's next line of output (skipping the test
// framework's own lines).
func (c *child) line(t *testing.T) string {
	t.Helper()
	for c.out.Scan() {
		l := c.out.Text()
		if strings.HasPrefix(l, "ready") || strings.HasPrefix(l, "win") || strings.HasPrefix(l, "lost") ||
			strings.HasPrefix(l, "error") || strings.HasPrefix(l, "half") || strings.HasPrefix(l, "stored") {
			return l
		}
	}
	t.Fatalf("child ended without output: %v", c.out.Err())
	return ""
}

// TestCrossProcessRace: 8 processes race a create of one key, then 8 race
// a replace from one ETag: exactly one wins each time, and the stored
// object is the winner's.
func TestCrossProcessRace(t *testing.T) {
	const procs = 8
	dir := t.TempDir()
	s := newStore(t, dir)
	ctx := t.Context()
	etag := ""
	for round := range 6 {
		key := "xp/create"
		if round >= 3 {
			key = "xp/replace"
			if etag == "" {
				res, err := s.Put(ctx, key, strings.NewReader("initial"), remote.PutOptions{Size: -1})
				if err != nil {
					t.Fatal(err)
				}
				etag = res.ETag
			}
		} else {
			s.Delete(ctx, key)
		}
		children := make([]*child, procs)
		for i := range children {
			id := round*procs + i
			children[i] = startChild(t, "FSSTORE_CHILD=race", "FSSTORE_ROOT="+dir, "FSSTORE_KEY="+key,
				"FSSTORE_ID="+strconv.Itoa(id), "FSSTORE_ETAG="+etag)
		}
		for _, c := range children {
			if l := c.line(t); l != "ready" {
				t.Fatalf("child: %s", l)
			}
		}
		for _, c := range children {
			c.stdin.Write([]byte{1})
			c.stdin.Close()
		}
		winner, winTag := -1, ""
		for i, c := range children {
			l := c.line(t)
			switch {
			case strings.HasPrefix(l, "win "):
				if winner >= 0 {
					t.Fatalf("round %d: processes %d and %d both won %q", round, winner, i, key)
				}
				winner, winTag = i, strings.TrimPrefix(l, "win ")
			case l == "lost":
			default:
				t.Fatalf("round %d: process %d: %s", round, i, l)
			}
			c.cmd.Wait()
		}
		if winner < 0 {
			t.Fatalf("round %d: no process won", round)
		}
		rc, info, err := s.Get(ctx, key, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := childBody(round*procs + winner); !bytes.Equal(got, want) || info.ETag != winTag {
			t.Fatalf("round %d: stored object (%d bytes, etag %q) is not the winner's (%d bytes, etag %q)",
				round, len(got), info.ETag, len(want), winTag)
		}
		if round >= 3 {
			etag = winTag
		}
	}
}

// TestCrashMidPut: a writer killed (SIGKILL) halfway through a body leaves
// no object, only a temp file that List and Get ignore and that the next
// New sweeps; the key stays creatable.
func TestCrashMidPut(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	ctx := t.Context()
	for _, key := range []string{"crash/new", "crash/existing"} {
		var prev remote.PutResult
		if key == "crash/existing" {
			var err error
			prev, err = s.Put(ctx, key, strings.NewReader("old"), remote.PutOptions{Size: 3})
			if err != nil {
				t.Fatal(err)
			}
		}
		c := startChild(t, "FSSTORE_CHILD=hang", "FSSTORE_ROOT="+dir, "FSSTORE_KEY="+key, "FSSTORE_ID=7")
		if l := c.line(t); l != "half" {
			t.Fatalf("child: %s", l)
		}
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.cmd.Wait()

		temps, err := os.ReadDir(s.tmp)
		if err != nil {
			t.Fatal(err)
		}
		if len(temps) != 1 {
			t.Fatalf("%d temp files after the kill; want the victim's one", len(temps))
		}
		if fi, _ := temps[0].Info(); fi == nil || fi.Size() != 512<<10 {
			t.Fatalf("temp file %v does not hold the half body the child wrote", fi)
		}
		if key == "crash/new" {
			if _, err := s.Head(ctx, key); !errors.Is(err, remote.ErrNotFound) {
				t.Fatalf("Head after the kill: %v; want ErrNotFound", err)
			}
		} else if h, err := s.Head(ctx, key); err != nil || h.ETag != prev.ETag {
			t.Fatalf("Head after the kill = %+v, %v; want the old object", h, err)
		}
		var keys []string
		s.List(ctx, "", func(info remote.ObjectInfo) error { keys = append(keys, info.Key); return nil })
		if (key == "crash/new") != (len(keys) == 0) && (key == "crash/existing") != (len(keys) == 1) {
			t.Fatalf("List after the kill = %q", keys)
		}
		s2 := newStore(t, dir) // New sweeps
		if temps, _ := os.ReadDir(s.tmp); len(temps) != 0 {
			t.Fatalf("New left %d temp files of a dead writer", len(temps))
		}
		if key == "crash/new" {
			if _, err := s2.Put(ctx, key, strings.NewReader("fresh"), remote.PutOptions{IfNoneMatch: true, Size: 5}); err != nil {
				t.Fatalf("create after the crash: %v", err)
			}
		}
	}
}

// TestCrashChurn kills a writer that puts, replaces and deletes
// self-checking objects at random moments; every object left must be
// complete. Repeated with several kill delays.
func TestCrashChurn(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	ctx := t.Context()
	rounds := 8
	if testing.Short() {
		rounds = 3
	}
	seen, midPut := 0, 0
	for round := range rounds {
		c := startChild(t, "FSSTORE_CHILD=churn", "FSSTORE_ROOT="+dir, "FSSTORE_KEY=churn", "FSSTORE_ID="+strconv.Itoa(round))
		if l := c.line(t); l != "ready" {
			t.Fatalf("child: %s", l)
		}
		// Kill at a random moment after the first put: before it, a kill
		// could only find nothing, and on a slow disk every round could
		// end there, leaving the test nothing to check.
		if l := c.line(t); l != "stored" {
			t.Fatalf("child: %s", l)
		}
		time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond)
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.cmd.Wait()
		err := s.List(ctx, "churn/", func(info remote.ObjectInfo) error {
			rc, _, err := s.Get(ctx, info.Key, 0, -1)
			if err != nil {
				return err
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if err != nil {
				return err
			}
			if err := checkSelf(b); err != nil {
				return fmt.Errorf("round %d: %s: %w", round, info.Key, err)
			}
			seen++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		n, err := s.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		midPut += n
		if temps, _ := os.ReadDir(filepath.Join(dir, reserved, "tmp")); len(temps) != 0 {
			t.Fatalf("round %d: %d temp files survive Sweep", round, len(temps))
		}
	}
	if seen == 0 {
		t.Fatal("the writers never stored an object before being killed: the test checked nothing")
	}
	t.Logf("checked %d objects over %d kills; %d kills landed mid-put", seen, rounds, midPut)
}
