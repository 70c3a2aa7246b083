package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChildProcess is not a test: it is the child of TestStartChild.
//
//	echo:  print "pid <pid>", then echo stdin lines back until it closes.
//	stuck: print "pid <pid>", then ignore stdin and sleep.
func TestChildProcess(t *testing.T) {
	mode := os.Getenv("TESTUTIL_CHILD")
	if mode == "" {
		t.Skip("child process only")
	}
	fmt.Printf("pid %d\n", os.Getpid())
	if mode == "stuck" {
		time.Sleep(time.Minute)
		os.Exit(3)
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fmt.Println("echo", in.Text())
	}
	os.Exit(0)
}

// StartChild runs only the named test, with the added environment, and
// talks to it over its pipes; at the test's end a child that exits when
// its stdin closes is reaped cleanly, and one that does not is killed
// once the grace runs out.
func TestStartChild(t *testing.T) {
	var echo, stuck *Child
	t.Run("run", func(t *testing.T) {
		echo = StartChild(t, "TestChildProcess", 30*time.Second, "TESTUTIL_CHILD=echo")
		stuck = StartChild(t, "TestChildProcess", 100*time.Millisecond, "TESTUTIL_CHILD=stuck")
		out := bufio.NewReader(echo.Stdout)
		if line, err := out.ReadString('\n'); err != nil || line != fmt.Sprintf("pid %d\n", echo.Cmd.Process.Pid) {
			t.Fatalf("first line %q, %v", line, err)
		}
		io.WriteString(echo.Stdin, "hello\n")
		if line, err := out.ReadString('\n'); err != nil || line != "echo hello\n" {
			t.Fatalf("answer %q, %v", line, err)
		}
		line, err := bufio.NewReader(stuck.Stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "pid ") {
			t.Fatalf("stuck child: %q, %v", line, err)
		}
	})
	if echo == nil || stuck == nil {
		t.Fatal("children not started")
	}
	if st := echo.Cmd.ProcessState; st == nil || !st.Exited() || st.ExitCode() != 0 {
		t.Fatalf("echo child after cleanup: %v, want a clean exit", st)
	}
	st := stuck.Cmd.ProcessState
	if st == nil {
		t.Fatal("stuck child not reaped by the cleanup")
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("stuck child after cleanup: %v, want killed", st)
	}
}
