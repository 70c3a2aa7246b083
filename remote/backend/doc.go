// Package backend opens a remote.Store from a URL:
//
//	file:///abs/path                       a local directory (fsstore)
//	s3://bucket[/prefix][?endpoint=URL&region=R&path_style=true|false]
//	                                       S3 or a compatible server (s3store)
//
// A URL names where data lives, never who may read it: credentials come in
// Options (or from the AWS default chain), and a URL carrying a user or
// password is refused. Every part of a URL is checked; an unknown query
// parameter, a repeated one, or an unknown value is an error, never
// silently ignored.
package backend
