// Package quota keeps byte budgets in three levels: a global Pool, the
// Tenants under it and the Jobs under each tenant. Bytes are held by
// Reservations, which belong to a job and count at all three levels.
//
//	pool := quota.NewPool(8 << 30)              // 8 GiB in all
//	acme, _ := pool.NewTenant("acme", 2<<30)    // 2 GiB for this tenant
//	job, _ := acme.NewJob("checkpoint-42", 0)   // no job-level limit
//	r, err := job.ReserveWait(ctx, 64<<20)      // 64 MiB at all three levels
//	...
//	r.Close()                                   // returns whatever r holds
//
// Rules, kept by every method:
//   - A reservation, a growth or a wait counts at job, tenant and global
//     level at once or not at all: there is one lock for the whole pool.
//   - A Limit of 0 means no limit at that level; counters still never pass
//     math.MaxUint64, so a request that would wrap fails cleanly.
//   - No arithmetic wraps: every check is written as n <= limit - used
//     with used <= limit established first.
//   - Bytes come back only through the Reservation that holds them:
//     Release(n) of more than it holds is an error that changes nothing,
//     and Close (or Job.Close, Job.ReleaseAll, Tenant.Close) returns the
//     rest exactly once.
//   - After every reservation is released, every level's Used is 0.
//
// Refusals are *ExhaustedError values wrapping ErrExhausted, naming the
// level ("global", "tenant <name>", "job <id>"), its limit, what it had
// in use and what was asked. ReserveWait and GrowWait block until the
// request fits or their context ends; a request that can never fit (more
// than a level's whole limit) fails at once instead of waiting forever.
// Waiters are woken whenever bytes are released or a limit changes; the
// order in which competing waiters succeed is not specified.
package quota
