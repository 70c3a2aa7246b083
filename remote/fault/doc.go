// Package fault wraps a remote.Store with fault injection and metering, for
// tests and benchmarks. With no faults configured it is a transparent
// Store (it passes the storetest suite) that counts requests and bytes.
//
// Faults, all safe to change while the store is in use:
//
//   - latency per operation (Config.Latency, SetLatency), honouring ctx;
//   - a random error rate per operation (Config.ErrorRate, SetErrorRate),
//     drawn from a generator seeded by Config.Seed, so that a run with the
//     same seed and the same call order fails the same calls;
//   - scripted faults (Inject): fail the Nth matching call, once or from
//     then on (sticky); lose the response of a call that did reach the
//     inner store (the put landed, the caller sees an error); truncate a
//     Get body after some bytes, ending in an error or, nastier, in a clean
//     io.EOF that only a decoder checking lengths and hashes can catch;
//   - ignored conditions (SetIgnoreConditions): IfNoneMatch and IfMatch are
//     dropped, making a store that does not enforce conditional writes;
//   - an outage (SetOutage): every call, and every read of an open body,
//     fails until it is lifted.
//
// Every injected error wraps ErrInjected. Keys are validated before any
// fault, so a bad key is always remote.ErrInvalidKey.
//
// Late (NewLate) is a second wrapper, for requests a store applies after
// their client gave up: it holds Puts back, answers them with a timeout
// (ErrHeld) and applies them later, and records every body offered per
// key so a test can check a retry offered the same bytes.
package fault
