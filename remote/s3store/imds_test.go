package s3store

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dialRecorder is an HTTP transport that records every address dialled.
type dialRecorder struct {
	mu    sync.Mutex
	addrs []string
}

func (d *dialRecorder) client(t *testing.T) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d.mu.Lock()
		d.addrs = append(d.addrs, addr)
		d.mu.Unlock()
		return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
	}
	return withTransport(t, tr)
}

func (d *dialRecorder) dialled() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// noCredentialEnv empties every source of the AWS default credential chain
// but IMDS: no key variables, no profile, shared files that do not exist,
// no container or web identity credentials.
func noCredentialEnv(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
		"AWS_REGION", "AWS_DEFAULT_REGION"} {
		t.Setenv(k, "")
	}
	t.Setenv("HOME", dir)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-credentials"))
}

// fakeIMDS is a metadata service on loopback that counts requests and
// knows no role, so that the control case can show the chain does reach
// IMDS when it is enabled, without leaving the machine.
func fakeIMDS(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestDisableIMDS: with no static and no environment credentials, a store
// with DisableIMDS (or AWS_EC2_METADATA_DISABLED=true) fails in New
// without contacting the metadata service, nor dialling anything at all.
// The control case, with IMDS enabled and its endpoint moved to a loopback
// fake, shows that the same setup does reach IMDS and that the recorder
// sees the credential chain's connections.
func TestDisableIMDS(t *testing.T) {
	base := Config{Bucket: "bop-test", Endpoint: "http://127.0.0.1:1", Region: "us-east-1", PathStyle: true, MaxAttempts: 1}

	t.Run("control-enabled", func(t *testing.T) {
		noCredentialEnv(t)
		imdsSrv, hits := fakeIMDS(t)
		t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imdsSrv.URL)
		t.Setenv("AWS_EC2_METADATA_DISABLED", "false")
		var rec dialRecorder
		cfg := base
		cfg.HTTPClient = rec.client(t)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if _, err := New(ctx, cfg); err == nil {
			t.Fatal("New without credentials succeeded")
		}
		if hits.Load() == 0 {
			t.Fatal("the credential chain never asked the (fake) IMDS: the control case shows nothing")
		}
		if d := rec.dialled(); len(d) == 0 || d[0] != strings.TrimPrefix(imdsSrv.URL, "http://") {
			t.Fatalf("dials %q, want the fake IMDS at %s", d, imdsSrv.URL)
		}
	})

	for _, tc := range []struct {
		name    string
		disable bool
		env     string
		fake    bool
	}{
		{"config-fake-endpoint", true, "false", true},
		{"env-fake-endpoint", false, "true", true},
		{"config-default-endpoint", true, "false", false},
		{"env-default-endpoint", false, "true", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noCredentialEnv(t)
			var hits *atomic.Int32
			if tc.fake {
				var srv *httptest.Server
				srv, hits = fakeIMDS(t)
				t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", srv.URL)
			}
			t.Setenv("AWS_EC2_METADATA_DISABLED", tc.env)
			var rec dialRecorder
			cfg := base
			cfg.DisableIMDS = tc.disable
			cfg.HTTPClient = rec.client(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			s, err := New(ctx, cfg)
			if err == nil {
				t.Fatalf("New without credentials succeeded: %+v", s.Config())
			}
			if !strings.Contains(err.Error(), "credentials") {
				t.Errorf("error does not say what is missing: %v", err)
			}
			if d := rec.dialled(); len(d) != 0 {
				t.Errorf("New dialled %q with IMDS disabled", d)
			}
			if hits != nil && hits.Load() != 0 {
				t.Errorf("the fake IMDS got %d requests with IMDS disabled", hits.Load())
			}
		})
	}
}

// TestStaticCredentialsSendNothingInNew: static credentials need no
// lookup, so New dials nothing.
func TestStaticCredentialsSendNothingInNew(t *testing.T) {
	noCredentialEnv(t)
	var rec dialRecorder
	s, err := New(t.Context(), Config{Bucket: "bop-test", Endpoint: "http://127.0.0.1:1", PathStyle: true,
		AccessKey: "a", SecretKey: "s", HTTPClient: rec.client(t)})
	if err != nil {
		t.Fatal(err)
	}
	if d := rec.dialled(); len(d) != 0 {
		t.Errorf("New dialled %q", d)
	}
	if c := s.Config(); c.SecretKey != "REDACTED" || c.Region != DefaultRegion {
		t.Errorf("Config() = %+v", c)
	}
}
