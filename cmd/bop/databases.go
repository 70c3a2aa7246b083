package main

import (
	"context"
	"flag"
	"fmt"
)

func init() {
	commands = append(commands, &command{
		name:    "databases",
		args:    "STORE_URL",
		summary: "list the databases in a store",
		help: `
Databases lists every database in the store as tenant/name: the folders
that hold a head. It lists every key of the store (-tenant: of one
tenant), so it takes a while on a large store.

Example:

	bop databases s3://bucket/bop?endpoint=http://127.0.0.1:7070&path_style=true
`,
		setup: func(fs *flag.FlagSet) func(context.Context, *cmdEnv, []string) error {
			var sf storeFlags
			sf.register(fs, false)
			sf.tenant = "" // every tenant unless -tenant says otherwise
			fs.Lookup("tenant").DefValue = ""
			fs.Lookup("tenant").Usage = "list the databases of this tenant only (default: every tenant)"
			return func(ctx context.Context, env *cmdEnv, args []string) error {
				url, err := oneURL(args)
				if err != nil {
					return err
				}
				tenant := sf.tenant
				sf.tenant = "default" // openStore validates it; the listing uses tenant
				if tenant != "" {
					sf.tenant = tenant
				}
				s, closeStore, err := sf.openStore(ctx, url)
				if err != nil {
					return err
				}
				defer closeStore()
				dbs, err := listDatabases(ctx, s, tenant)
				if err != nil {
					return err
				}
				if len(dbs) == 0 {
					return fmt.Errorf("no database in %s", url)
				}
				for _, d := range dbs {
					fmt.Fprintf(env.stdout, "%s/%s\n", d.tenant, d.db)
				}
				return nil
			}
		},
	})
}
