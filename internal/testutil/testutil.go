// Package testutil holds helpers shared by bop's tests: the S3 test server's
// settings, the split between the race pass and the heavy pass, and child
// processes run from the test binary.
package testutil

import (
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Heavy marks a test that takes long under the race detector (big
// databases, thousands of SQLite transactions, crash loops). Heavy tests
// are named TestHeavy*; under -race they skip, and scripts/test.sh runs them
// in its second, non-race pass (go test -run '^TestHeavy').
func Heavy(t testing.TB) {
	t.Helper()
	if RaceEnabled {
		t.Skip("heavy test: runs in the non-race pass of scripts/test.sh")
	}
}

// S3 describes the S3-compatible server that scripts/test.sh starts
// (versitygw on 127.0.0.1). Credentials are always explicit: tests never
// use the AWS default chain or the cloud metadata address.
type S3 struct {
	Endpoint  string // http://127.0.0.1:PORT
	Region    string
	Bucket    string
	AccessKey string
	SecretKey string
}

// S3Server returns the test server's settings from the environment that
// scripts/test.sh exports. Without them the test skips, unless
// BOP_REQUIRE_S3=1 (set by the script), in which case it fails: a run of
// the full suite must never skip the S3 tests silently.
func S3Server(t testing.TB) S3 {
	t.Helper()
	s := S3{
		Endpoint:  os.Getenv("BOP_S3_ENDPOINT"),
		Region:    os.Getenv("BOP_S3_REGION"),
		Bucket:    os.Getenv("BOP_S3_BUCKET"),
		AccessKey: os.Getenv("BOP_S3_ACCESS_KEY"),
		SecretKey: os.Getenv("BOP_S3_SECRET_KEY"),
	}
	if s.Endpoint == "" || s.Bucket == "" || s.AccessKey == "" || s.SecretKey == "" {
		if os.Getenv("BOP_REQUIRE_S3") == "1" {
			t.Fatal("BOP_REQUIRE_S3=1 but BOP_S3_ENDPOINT/BUCKET/ACCESS_KEY/SECRET_KEY are not all set")
		}
		t.Skip("no S3 test server: run ./scripts/test.sh, which starts versitygw")
	}
	if s.Region == "" {
		s.Region = "us-east-1"
	}
	// The AWS SDK must never reach for 169.254.169.254 in tests.
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return s
}

// Child is this test binary running again as a helper process (see
// StartChild).
type Child struct {
	Cmd    *exec.Cmd
	Stdin  io.WriteCloser
	Stdout io.ReadCloser
}

// StartChild runs this test binary again with -test.run=^test$, so the
// child runs only that test, which acts as the child when it finds its
// settings in env (added to this process's environment); a plain run of
// that test skips. The child's stderr is this process's, and the returned
// pipes reach its stdin and stdout. When t ends, the child's stdin is
// closed and it has grace to exit before it is killed (by its PID; a grace
// of 0 kills it at once); the cleanup always reaps it, so no child
// outlives its test.
func StartChild(t testing.TB, test string, grace time.Duration, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			cmd.Process.Kill() // a no-op if it has exited meanwhile
			<-done
		}
	})
	return &Child{Cmd: cmd, Stdin: stdin, Stdout: stdout}
}
