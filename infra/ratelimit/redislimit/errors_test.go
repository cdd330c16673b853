package redislimit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/memlimit"
)

var oneMinute = ratelimit.PerMinute(1, 1)

// fastClient points at addr with short timeouts so outage tests are quick.
func fastClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	opts, err := parseURL("redis://" + addr + "/0?dial_timeout=200ms&read_timeout=100ms&write_timeout=100ms&max_retries=-1")
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRedisDownIsUnavailable(t *testing.T) {
	// Port 1 on loopback: nothing listens, the dial is refused at once.
	l := New(fastClient(t, "127.0.0.1:1"), DefaultPrefix)
	_, err := l.Allow(t.Context(), t.Name(), oneMinute)
	if !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("Allow with Redis down: err = %v, want ErrUnavailable", err)
	}
	if err := l.Ping(t.Context()); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Errorf("Ping with Redis down: err = %v, want ErrUnavailable", err)
	}
}

func TestOpenRedisDown(t *testing.T) {
	_, err := Open(t.Context(), "redis://127.0.0.1:1/0")
	if !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("Open with Redis down: err = %v, want ErrUnavailable", err)
	}
}

func TestClosedClientIsUnavailable(t *testing.T) {
	c := fastClient(t, "127.0.0.1:1")
	_ = c.Close()
	_, err := New(c, DefaultPrefix).Allow(t.Context(), t.Name(), oneMinute)
	if !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("Allow on a closed client: err = %v, want ErrUnavailable", err)
	}
}

// silentServer accepts connections and never answers, like a Redis stuck
// behind a dead network path.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_, _ = io.Copy(io.Discard, conn)
			})
		}
	})
	return ln.Addr().String()
}

func TestTimeoutIsUnavailable(t *testing.T) {
	l := New(fastClient(t, silentServer(t)), DefaultPrefix)
	start := time.Now()
	_, err := l.Allow(t.Context(), t.Name(), oneMinute)
	if !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("Allow against a silent server: err = %v, want ErrUnavailable", err)
	}
	t.Logf("failed after %s", time.Since(start))
}

// TestCallerDeadlineIsNotAnOutage: when the caller's own context ends first,
// the error is the context's, so Fallback does not count it as Redis down.
func TestCallerDeadlineIsNotAnOutage(t *testing.T) {
	addr := silentServer(t)
	opts, err := parseURL("redis://" + addr + "/0?read_timeout=10s&write_timeout=10s&max_retries=-1")
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = New(c, DefaultPrefix).Allow(ctx, t.Name(), oneMinute)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("err = %v, want context.DeadlineExceeded and not ErrUnavailable", err)
	}
}

// replyServer speaks just enough RESP to answer every command with reply
// (HELLO with an unknown-command error, as Redis 5 does).
func replyServer(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					args, err := readCommand(r)
					if err != nil {
						return
					}
					out := reply
					switch strings.ToUpper(args[0]) {
					case "HELLO":
						out = "-ERR unknown command 'HELLO'\r\n"
					case "CLIENT", "PING", "SELECT":
						out = "+OK\r\n"
					}
					if _, err := io.WriteString(conn, out); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// readCommand reads one RESP array of bulk strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, fmt.Errorf("not an array: %q", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("bad array length %q", line)
	}
	args := make([]string, n)
	for i := range args {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(hdr, "$")))
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}

func TestErrorReplies(t *testing.T) {
	tests := []struct {
		reply       string
		unavailable bool
	}{
		{"-LOADING Redis is loading the dataset in memory\r\n", true},
		{"-READONLY You can't write against a read only replica.\r\n", true},
		{"-MASTERDOWN Link with MASTER is down\r\n", true},
		{"-OOM command not allowed when used memory > 'maxmemory'.\r\n", true},
		{"-BUSY Redis is busy running a script.\r\n", true},
		{"-NOAUTH Authentication required.\r\n", true},
		{"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", false},
		{"-ERR Error running script\r\n", false},
	}
	for _, tc := range tests {
		name, _, _ := strings.Cut(tc.reply[1:], " ")
		t.Run(name, func(t *testing.T) {
			l := New(fastClient(t, replyServer(t, tc.reply)), DefaultPrefix)
			_, err := l.Allow(t.Context(), t.Name(), oneMinute)
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ratelimit.ErrUnavailable); got != tc.unavailable {
				t.Errorf("errors.Is(%v, ErrUnavailable) = %v, want %v", err, got, tc.unavailable)
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url     string
		wantErr bool
		check   func(*redis.Options) error
	}{
		{url: "redis://127.0.0.1:6379/0", check: func(o *redis.Options) error {
			if o.Addr != "127.0.0.1:6379" || o.DB != 0 || o.DialTimeout != DefaultDialTimeout ||
				o.ReadTimeout != DefaultReadTimeout || o.WriteTimeout != DefaultWriteTimeout ||
				o.PoolTimeout != DefaultPoolTimeout || o.MaxRetries != DefaultMaxRetries || o.DialerRetries != DefaultDialerRetries || !o.ContextTimeoutEnabled {
				return fmt.Errorf("defaults not applied: %+v", o)
			}
			return nil
		}},
		{url: "redis://h:1/3?dial_timeout=2s&read_timeout=1s&write_timeout=3s&pool_timeout=4s&max_retries=5", check: func(o *redis.Options) error {
			if o.Addr != "h:1" || o.DB != 3 || o.DialTimeout != 2*time.Second || o.ReadTimeout != time.Second ||
				o.WriteTimeout != 3*time.Second || o.PoolTimeout != 4*time.Second || o.MaxRetries != 5 {
				return fmt.Errorf("URL options not honoured: %+v", o)
			}
			return nil
		}},
		{url: "rediss://user:secret@h:6380/1", check: func(o *redis.Options) error {
			if o.TLSConfig == nil || o.Username != "user" || o.Password != "secret" {
				return fmt.Errorf("TLS or credentials lost")
			}
			return nil
		}},
		{url: "redis://h/0", check: func(o *redis.Options) error {
			if o.Addr != "h:6379" {
				return fmt.Errorf("Addr = %q, want the default port", o.Addr)
			}
			return nil
		}},
		{url: "", wantErr: true},
		{url: "memory", wantErr: true},
		{url: "http://h:6379/0", wantErr: true},
		{url: "unix:///tmp/redis.sock", wantErr: true},
		{url: "redis:///0", wantErr: true},
		{url: "redis://h:6379/notanumber", wantErr: true},
		{url: "redis://h:6379/0?bogus=1", wantErr: true},
		{url: "rediss://h:6379/0?skip_verify=true", wantErr: true},
		{url: "redis://:p%zz@h/0", wantErr: true},
	}
	for _, tc := range tests {
		o, err := parseURL(tc.url)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseURL(%q): err = %v, wantErr %v", tc.url, err, tc.wantErr)
			continue
		}
		if err == nil && tc.check != nil {
			if err := tc.check(o); err != nil {
				t.Errorf("parseURL(%q): %v", tc.url, err)
			}
		}
	}
}

// FuzzParseURL: configuration is outside input too. Parsing never panics and
// an error never repeats the password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"redis://127.0.0.1:6379/0", "rediss://u:hunter2@h:1/2?dial_timeout=1s",
		"redis://:hunter2@h:port/0", "redis://:hunter2@h/x?read_timeout=zz", "redis://h/0?db=hunter2",
		"redis://[::1]:6379/0", "redis://u:p@h/0/1", "%", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := parseURL(s)
		if err == nil {
			return
		}
		if len(s) >= 8 && strings.Contains(err.Error(), s) {
			t.Errorf("error repeats the whole URL: %v", err)
		}
		// Only a password that is not also elsewhere in the URL counts.
		at := strings.LastIndex(s, "@")
		scheme := strings.Index(s, "://")
		if at < 0 || scheme < 0 || at < scheme {
			return
		}
		userinfo := s[scheme+3 : at]
		_, pw, ok := strings.Cut(userinfo, ":")
		if !ok || len(pw) < 4 || strings.Contains(s[at:], pw) || strings.Contains(s[:scheme+3], pw) {
			return
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("error repeats the password: %v", err)
		}
	})
}

// TestClassify covers the mapping on its own, including a reply error
// wrapped by a caller.
func TestClassify(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name        string
		ctx         context.Context
		err         error
		unavailable bool
		ctxErr      bool
	}{
		{"refused", context.Background(), &net.OpError{Op: "dial", Err: errors.New("connection refused")}, true, false},
		{"eof", context.Background(), io.EOF, true, false},
		{"closed", context.Background(), redis.ErrClosed, true, false},
		{"internalDeadline", context.Background(), context.DeadlineExceeded, true, false},
		{"callerCanceled", canceled, context.Canceled, false, true},
		{"loading", context.Background(), fmt.Errorf("wrapped: %w", replyErr("LOADING x")), true, false},
		{"busygroupIsNotBusy", context.Background(), replyErr("BUSYGROUP x"), false, false},
		{"wrongtype", context.Background(), replyErr("WRONGTYPE x"), false, false},
	}
	for _, tc := range tests {
		err := classify(tc.ctx, "call", tc.err)
		if got := errors.Is(err, ratelimit.ErrUnavailable); got != tc.unavailable {
			t.Errorf("%s: unavailable = %v, want %v (%v)", tc.name, got, tc.unavailable, err)
		}
		if got := errors.Is(err, tc.ctx.Err()) && tc.ctx.Err() != nil; got != tc.ctxErr {
			t.Errorf("%s: context error = %v, want %v (%v)", tc.name, got, tc.ctxErr, err)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v does not wrap the original", tc.name, err)
		}
	}
}

type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

// TestFallbackOverRedisDown: the policy over the real adapters, Redis
// unreachable: per-user routes are limited locally, fail-closed ones refuse.
func TestFallbackOverRedisDown(t *testing.T) {
	f := ratelimit.NewFallback(New(fastClient(t, "127.0.0.1:1"), DefaultPrefix), memlimit.New(memlimit.Options{}), nil)
	limit := ratelimit.PerMinute(1, 2)
	for i, want := range []bool{true, true, false} {
		r, err := f.Allow(t.Context(), t.Name(), limit, ratelimit.FallbackLocal)
		if err != nil || r.Allowed != want {
			t.Errorf("FallbackLocal call %d: %+v, %v; want Allowed=%v", i+1, r, err, want)
		}
	}
	if _, err := f.Allow(t.Context(), t.Name(), limit, ratelimit.FailClosed); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Errorf("FailClosed: %v, want ErrUnavailable", err)
	}
}
