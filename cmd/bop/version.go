package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
// Without it, the module version (go install ...@version) or the VCS
// revision the binary was built from is printed.
var version = ""

func init() {
	commands = append(commands, &command{
		name:    "version",
		summary: "print the version of bop",
		help:    "Version prints the version of bop, the Go version it was built with, and the revision when known.",
		setup: func(fs *flag.FlagSet) func(context.Context, *cmdEnv, []string) error {
			return func(_ context.Context, env *cmdEnv, args []string) error {
				if len(args) != 0 {
					return usagef("version takes no arguments")
				}
				fmt.Fprintf(env.stdout, "bop %s %s %s/%s\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
				return nil
			}
		},
	})
}

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if v == "(devel)" && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return v + " " + rev + modified
	}
	return v
}
