// Package s3store is the S3 backend of remote.Store, on aws-sdk-go-v2. It
// works with AWS S3 and with S3-compatible servers (versitygw, MinIO, ...)
// that implement conditional writes (If-None-Match: *, If-Match).
//
// Put streams: a body up to Config.MultipartThreshold goes up in one
// PutObject; a larger one goes up as a multipart upload with at most
// Config.Concurrency part buffers of Config.PartSize bytes alive at once,
// whatever the object's size, and the upload is aborted on any error or
// cancellation. Get is a ranged GET that never transfers more than asked.
// S3 errors map to the sentinels of package remote (errors.go).
//
// Every key the caller passes is stored at Config.Prefix + "/" + key.
package s3store
