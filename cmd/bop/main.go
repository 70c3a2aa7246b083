package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// command is one subcommand: its flags are registered on fs by setup,
// which returns the function that runs it with the remaining arguments.
type command struct {
	name    string
	args    string // the argument synopsis after the flags
	summary string
	help    string // paragraphs after the synopsis
	setup   func(fs *flag.FlagSet) func(ctx context.Context, env *cmdEnv, args []string) error
}

// cmdEnv is what a running command writes to.
type cmdEnv struct {
	stdout, stderr io.Writer
}

// usageError is a mistake in the command line: exit status 2, with the
// command's usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

var commands []*command

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the process the
		// default way, in case cleaning up hangs.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args (without the program name) and returns
// the exit status. ctx ends the command (main cancels it on SIGINT).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		return runHelp(rest, stdout, stderr)
	}
	c := lookupCommand(name)
	if c == nil {
		fmt.Fprintf(stderr, "bop: unknown command %q\nRun 'bop help' for the list of commands.\n", name)
		return exitUsage
	}
	fs := flag.NewFlagSet("bop "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed below, once
	exec := c.setup(fs)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(stdout, c, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "bop %s: %v\n", c.name, err)
		commandUsage(stderr, c, fs)
		return exitUsage
	}
	err := exec(ctx, &cmdEnv{stdout: stdout, stderr: stderr}, fs.Args())
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "bop %s: %v\n", c.name, err)
		commandUsage(stderr, c, fs)
		return exitUsage
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		fmt.Fprintf(stderr, "bop %s: interrupted\n", c.name)
		return exitFail
	default:
		fmt.Fprintf(stderr, "bop %s: %v\n", c.name, err)
		return exitFail
	}
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stdout)
		return exitOK
	}
	if len(args) > 1 {
		fmt.Fprintf(stderr, "bop help: want one command, got %d arguments\n", len(args))
		return exitUsage
	}
	c := lookupCommand(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "bop help: unknown command %q\nRun 'bop help' for the list of commands.\n", args[0])
		return exitUsage
	}
	fs := flag.NewFlagSet("bop "+c.name, flag.ContinueOnError)
	c.setup(fs)
	commandUsage(stdout, c, fs)
	return exitOK
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `bop inspects and restores SQLite databases that the bop VFS keeps in an
object store.

Usage:

	bop <command> [arguments] STORE_URL

The commands are:

`)
	sorted := append([]*command(nil), commands...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		fmt.Fprintf(w, "\t%-11s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
STORE_URL is file:///absolute/dir or s3://bucket/prefix?endpoint=URL&region=R&path_style=true.
S3 credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
AWS_SESSION_TOKEN (else the AWS default chain; -no-imds or
AWS_EC2_METADATA_DISABLED=true keeps the EC2 metadata service out of it).

Use 'bop help <command>' for more about a command.
`)
}

func commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: bop %s", c.name)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, " [arguments]")
	}
	if c.args != "" {
		fmt.Fprintf(w, " %s", c.args)
	}
	fmt.Fprintf(w, "\n\n%s\n", strings.TrimSpace(c.help))
	if hasFlags {
		fmt.Fprint(w, "\nArguments:\n\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// oneURL checks that args is exactly the store URL.
func oneURL(args []string) (string, error) {
	switch len(args) {
	case 0:
		return "", usagef("missing STORE_URL")
	case 1:
		if strings.HasPrefix(args[0], "-") {
			return "", usagef("flags go before STORE_URL; got %q as the URL", args[0])
		}
		return args[0], nil
	}
	return "", usagef("want one STORE_URL, got %d arguments (%s); flags go before the URL", len(args), strings.Join(args, " "))
}
