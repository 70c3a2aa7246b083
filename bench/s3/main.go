// Command s3 measures S3 throughput on loopback: PUT and GET MB/s with 1
// and 8 streams, s3store against a plain aws-sdk-go-v2 loop
// (PutObject/GetObject of the same bytes) as the baseline, in the same run.
//
//	go run ./bench/s3                        GET (the default)
//	BOP_S3_BENCH_OP=put go run ./bench/s3    PUT
//
// Without BOP_S3_ENDPOINT it starts versitygw (.tools/bin/versitygw, as
// scripts/test.sh installs it; BOP_VERSITYGW overrides the path) on
// 127.0.0.1 with a temporary posix root, and stops it at the end. With
// BOP_S3_ENDPOINT (and BOP_S3_BUCKET, BOP_S3_ACCESS_KEY, BOP_S3_SECRET_KEY)
// it uses that server; it must be on loopback. Credentials are always
// explicit and the EC2 metadata service is off.
//
// Each variant moves BOP_S3_BENCH_OBJECTS (8) objects of BOP_S3_BENCH_MB
// (32) MiB: one stream does them one after the other, 8 streams one each.
// s3store PUTs from a bytes.Reader (sent in sections, without copying) and,
// in the -stream variants, from a plain io.Reader (read into part
// buffers: the path for bodies that cannot seek).
// The MB/s extra (10^6 bytes per second) is measured around the transfers
// only, not the client set-up.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bopstore/bop/bench/harness"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/s3store"
)

// childEnv is the variable the harness sets in its child processes.
const childEnv = "BOP_BENCH_CHILD"

// harnessEnv marks the process that runs harness.Main for parent().
const harnessEnv = "BOP_S3_BENCH_HARNESS"

type settings struct {
	endpoint, region, bucket, access, secret string
	prefix                                   string // this run's keys
	objects                                  int
	size                                     int64
}

func load() (settings, error) {
	s := settings{
		endpoint: os.Getenv("BOP_S3_ENDPOINT"),
		region:   os.Getenv("BOP_S3_REGION"),
		bucket:   os.Getenv("BOP_S3_BUCKET"),
		access:   os.Getenv("BOP_S3_ACCESS_KEY"),
		secret:   os.Getenv("BOP_S3_SECRET_KEY"),
		prefix:   os.Getenv("BOP_S3_BENCH_PREFIX"),
		objects:  8,
		size:     32 << 20,
	}
	if s.region == "" {
		s.region = "us-east-1"
	}
	if v := os.Getenv("BOP_S3_BENCH_OBJECTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return s, fmt.Errorf("BOP_S3_BENCH_OBJECTS=%q: want 1..64", v)
		}
		s.objects = n
	}
	if v := os.Getenv("BOP_S3_BENCH_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1024 {
			return s, fmt.Errorf("BOP_S3_BENCH_MB=%q: want 1..1024", v)
		}
		s.size = int64(n) << 20
	}
	u, err := url.Parse(s.endpoint)
	if err != nil || u.Hostname() == "" {
		return s, fmt.Errorf("BOP_S3_ENDPOINT=%q: not a URL", s.endpoint)
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return s, fmt.Errorf("BOP_S3_ENDPOINT=%q: the benchmark runs on loopback only", s.endpoint)
	}
	return s, nil
}

func (s settings) getKey(i int) string { return fmt.Sprintf("%s/get/obj-%02d", s.prefix, i) }

// sdkClient is the baseline: a plain S3 client with the same endpoint,
// credentials and checksum setting as s3store, so both speak the same
// protocol on the wire.
func sdkClient(ctx context.Context, s settings) (*s3.Client, error) {
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion(s.region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(s.access, s.secret, "")),
		config.WithEC2IMDSClientEnableState(imds.ClientDisabled),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	)
	if err != nil {
		return nil, err
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.endpoint)
		o.UsePathStyle = true
	}), nil
}

func s3Store(ctx context.Context, s settings, prefix string) (*s3store.Store, error) {
	return s3store.New(ctx, s3store.Config{
		Bucket: s.bucket, Prefix: prefix, Endpoint: s.endpoint, Region: s.region, PathStyle: true,
		AccessKey: s.access, SecretKey: s.secret, DisableIMDS: true,
	})
}

// body returns the bytes every PUT variant uploads (the same for all).
func body(size int64) []byte {
	b := make([]byte, size)
	var x uint64 = 0x9e3779b97f4a7c15
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := range 8 {
			b[i+j] = byte(x >> (8 * j))
		}
	}
	return b
}

// parallel runs fn(i) for i in [0, n) on streams goroutines and returns
// the first error.
func parallel(n, streams int, fn func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range streams {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func result(bytes int64, d time.Duration) map[string]float64 {
	return map[string]float64{"MB/s": float64(bytes) / d.Seconds() / 1e6}
}

func getVariant(name string, streams int, useStore bool, baseline bool) harness.Variant {
	return harness.Variant{Name: name, Baseline: baseline, Run: func(string) (map[string]float64, error) {
		ctx := context.Background()
		s, err := load()
		if err != nil {
			return nil, err
		}
		var get func(i int) (int64, error)
		if useStore {
			st, err := s3Store(ctx, s, s.prefix)
			if err != nil {
				return nil, err
			}
			get = func(i int) (int64, error) {
				rc, _, err := st.Get(ctx, fmt.Sprintf("get/obj-%02d", i), 0, -1)
				if err != nil {
					return 0, err
				}
				defer rc.Close()
				return io.Copy(io.Discard, rc)
			}
		} else {
			c, err := sdkClient(ctx, s)
			if err != nil {
				return nil, err
			}
			get = func(i int) (int64, error) {
				out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.getKey(i))})
				if err != nil {
					return 0, err
				}
				defer out.Body.Close()
				return io.Copy(io.Discard, out.Body)
			}
		}
		start := time.Now()
		err = parallel(s.objects, streams, func(i int) error {
			n, err := get(i)
			if err == nil && n != s.size {
				err = fmt.Errorf("object %d: %d bytes, want %d", i, n, s.size)
			}
			return err
		})
		d := time.Since(start)
		if err != nil {
			return nil, err
		}
		return result(int64(s.objects)*s.size, d), nil
	}}
}

// putVariant uploads the same bytes with the SDK, or with s3store from a
// bytes.Reader (sent in sections, no copy) or, with stream, from a plain
// io.Reader (read into part buffers).
func putVariant(name string, streams int, useStore, stream, baseline bool) harness.Variant {
	return harness.Variant{Name: name, Baseline: baseline, Run: func(dir string) (map[string]float64, error) {
		ctx := context.Background()
		s, err := load()
		if err != nil {
			return nil, err
		}
		data := body(s.size)
		sub := s.prefix + "/put-" + filepath.Base(dir)
		var put func(key string) error
		var del func(key string) error
		if useStore {
			st, err := s3Store(ctx, s, sub)
			if err != nil {
				return nil, err
			}
			put = func(key string) error {
				var r io.Reader = bytes.NewReader(data)
				if stream {
					r = struct{ io.Reader }{r} // hides ReadAt and Seek
				}
				_, err := st.Put(ctx, key, r, remote.PutOptions{Size: int64(len(data))})
				return err
			}
			del = func(key string) error { return st.Delete(ctx, key) }
		} else {
			c, err := sdkClient(ctx, s)
			if err != nil {
				return nil, err
			}
			put = func(key string) error {
				_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(sub + "/" + key),
					Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))})
				return err
			}
			del = func(key string) error {
				_, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(sub + "/" + key)})
				return err
			}
		}
		start := time.Now()
		err = parallel(s.objects, streams, func(i int) error { return put(fmt.Sprintf("obj-%02d", i)) })
		d := time.Since(start)
		for i := range s.objects {
			if derr := del(fmt.Sprintf("obj-%02d", i)); derr != nil && err == nil {
				err = derr
			}
		}
		if err != nil {
			return nil, err
		}
		return result(int64(s.objects)*s.size, d), nil
	}}
}

func main() {
	op := os.Getenv("BOP_S3_BENCH_OP")
	var variants []harness.Variant
	switch op {
	case "", "get":
		op = "get"
		variants = []harness.Variant{
			getVariant("sdk-get-1", 1, false, false),
			getVariant("sdk-get-8", 8, false, true),
			getVariant("s3store-get-1", 1, true, false),
			getVariant("s3store-get-8", 8, true, false),
		}
	case "put":
		variants = []harness.Variant{
			putVariant("sdk-put-1", 1, false, false, false),
			putVariant("sdk-put-8", 8, false, false, true),
			putVariant("s3store-put-1", 1, true, false, false),
			putVariant("s3store-put-8", 8, true, false, false),
			putVariant("s3store-stream-put-1", 1, true, true, false),
			putVariant("s3store-stream-put-8", 8, true, true, false),
		}
	default:
		fmt.Fprintf(os.Stderr, "BOP_S3_BENCH_OP=%q: want get or put\n", op)
		os.Exit(2)
	}
	title := "S3 " + op + " throughput on loopback versitygw: s3store vs a plain aws-sdk-go-v2 loop"
	if os.Getenv(childEnv) != "" || os.Getenv(harnessEnv) == "1" {
		// A variant's child process, or the harness parent that
		// parent() below started.
		harness.Main(title, variants)
		return
	}
	os.Exit(parent(title, op, variants))
}

// parent starts versitygw if needed, uploads the GET objects, runs the
// harness, and cleans up (also when the harness fails).
func parent(title, op string, variants []harness.Variant) int {
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	if os.Getenv("BOP_S3_ENDPOINT") == "" {
		stop, err := startVersitygw()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/s3:", err)
			return 1
		}
		defer stop()
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	os.Setenv("BOP_S3_BENCH_PREFIX", "bench-s3/"+hex.EncodeToString(rnd[:]))
	s, err := load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/s3:", err)
		return 1
	}
	ctx := context.Background()
	c, err := sdkClient(ctx, s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/s3:", err)
		return 1
	}
	if op == "get" {
		data := body(s.size)
		for i := range s.objects {
			if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.getKey(i)),
				Body: bytes.NewReader(data), ContentLength: aws.Int64(s.size)}); err != nil {
				fmt.Fprintln(os.Stderr, "bench/s3: upload GET objects:", err)
				return 1
			}
		}
		defer func() {
			for i := range s.objects {
				c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.getKey(i))})
			}
		}()
	}
	fmt.Fprintf(os.Stderr, "bench/s3: %s, %d objects of %d MiB per variant run, server %s\n", op, s.objects, s.size>>20, s.endpoint)
	// harness.Main exits the process on failure; run it in a child of our
	// own so that the server and objects above are cleaned up either way.
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/s3:", err)
		return 1
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), harnessEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/s3: harness:", err)
		return 1
	}
	return 0
}

// startVersitygw runs versitygw on a free loopback port with a temporary
// posix root and sets the BOP_S3_* variables; stop kills it by PID and
// removes its data.
func startVersitygw() (stop func(), err error) {
	bin := os.Getenv("BOP_VERSITYGW")
	if bin == "" {
		bin = filepath.Join(".tools", "bin", "versitygw")
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("versitygw not found at %s (run ./scripts/test.sh once to install it, or set BOP_VERSITYGW or BOP_S3_ENDPOINT): %w", bin, err)
	}
	data, err := os.MkdirTemp("", "bop-bench-versitygw-")
	if err != nil {
		return nil, err
	}
	const bucket = "bop-bench"
	if err := os.MkdirAll(filepath.Join(data, "gw", bucket), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(data, "meta"), 0o755); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	access, secret := "bop-bench-access", "bop-bench-secret-"+strconv.FormatInt(time.Now().UnixNano(), 36)
	logf, err := os.Create(filepath.Join(data, "versitygw.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--port", addr, "--health", "/health", "--quiet",
		"posix", "--sidecar", filepath.Join(data, "meta"), filepath.Join(data, "gw"))
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+access, "ROOT_SECRET_KEY="+secret)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If this process dies without running stop, the kernel stops the
	// server too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		os.RemoveAll(data)
	}
	endpoint := "http://" + addr
	for i := 0; ; i++ {
		resp, err := http.Get(endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i == 100 {
			stop()
			return nil, fmt.Errorf("versitygw at %s did not become healthy", endpoint)
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.Setenv("BOP_S3_ENDPOINT", endpoint)
	os.Setenv("BOP_S3_REGION", "us-east-1")
	os.Setenv("BOP_S3_BUCKET", bucket)
	os.Setenv("BOP_S3_ACCESS_KEY", access)
	os.Setenv("BOP_S3_SECRET_KEY", secret)
	return stop, nil
}
