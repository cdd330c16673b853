package phones_test

import (
	"context"
	"errors"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/infra/keys/pseudonym"
)

// sms records codes as Twilio's Messages API would send them.
type sms struct {
	mu   sync.Mutex
	sent map[string][]string
	fail error
}

func (s *sms) SendSMS(_ context.Context, to, body string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if s.sent == nil {
		s.sent = map[string][]string{}
	}
	s.sent[to] = append(s.sent[to], body)
	return nil
}

var codeRE = regexp.MustCompile(`[0-9]{6}`)

func (s *sms) lastCode(t *testing.T, to string) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	msgs := s.sent[to]
	if len(msgs) == 0 {
		t.Fatalf("no SMS to %s", to)
	}
	return codeRE.FindString(msgs[len(msgs)-1])
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock                   { return &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)} }
func wrongCode(right string) string {
	return map[bool]string{true: "000001", false: "000000"}[right == "000000"]
}
func expect(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

type env struct {
	reg   *phones.Registry
	calls *phones.Calls
	sms   *sms
	clk   *clock
	docs  docs.Store
	hash  func(string) string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	d, err := sqlitedocs.Open(t.Context(), filepath.Join(dir, "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	kek, err := filekek.Open(filepath.Join(dir, "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	kr := keys.NewKeyring(kek, keys.NewDocsKeysetStore(d), keys.Options{})
	ps := pseudonym.New(1, []byte("0123456789abcdef0123456789abcdef"))
	e := &env{sms: &sms{}, clk: newClock(), docs: d, hash: ps.Phone}
	e.reg = &phones.Registry{Docs: d, Hash: ps.Phone, Digest: kr, SMS: e.sms, Now: e.clk.Now}
	e.calls = &phones.Calls{Docs: d, Now: e.clk.Now}
	return e
}

const (
	alice  = "1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	bob    = "1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	number = "+15551234567"
)

func TestVerifyHappyPath(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	p, err := e.reg.Add(ctx, alice, number)
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != e.hash(number) || p.Masked != "+1••••••••67" || p.Verified {
		t.Fatalf("added %+v", p)
	}
	if _, ok, _ := e.reg.OwnerOf(ctx, number); ok {
		t.Fatal("an unverified number has an owner")
	}
	p, err = e.reg.Verify(ctx, alice, p.ID, e.sms.lastCode(t, number))
	if err != nil || !p.Verified {
		t.Fatalf("verify: %+v %v", p, err)
	}
	if owner, ok, err := e.reg.OwnerOf(ctx, number); err != nil || !ok || owner != alice {
		t.Fatalf("owner %q %v %v", owner, ok, err)
	}
	list, err := e.reg.List(ctx, alice)
	if err != nil || len(list) != 1 || !list[0].Verified {
		t.Fatalf("list %+v %v", list, err)
	}
	if other, _ := e.reg.List(ctx, bob); len(other) != 0 {
		t.Fatalf("bob sees %+v", other)
	}
	expect(t, e.reg.Delete(ctx, bob, p.ID), phones.ErrNotFound)
	if err := e.reg.Delete(ctx, alice, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := e.reg.OwnerOf(ctx, number); ok {
		t.Fatal("deleted number still owned")
	}
}

func TestVerifyRefusals(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, e *env, id, code string) error
		want error
	}{
		{"wrong code", func(t *testing.T, e *env, id, code string) error {
			_, err := e.reg.Verify(t.Context(), alice, id, wrongCode(code))
			return err
		}, phones.ErrWrongCode},
		{"malformed code", func(t *testing.T, e *env, id, code string) error {
			_, err := e.reg.Verify(t.Context(), alice, id, "12ab56")
			return err
		}, phones.ErrWrongCode},
		{"expired code", func(t *testing.T, e *env, id, code string) error {
			e.clk.Advance(11 * time.Minute)
			_, err := e.reg.Verify(t.Context(), alice, id, code)
			return err
		}, phones.ErrExpired},
		{"too many attempts, then even the right code fails", func(t *testing.T, e *env, id, code string) error {
			for i := range 4 {
				if _, err := e.reg.Verify(t.Context(), alice, id, wrongCode(code)); !errors.Is(err, phones.ErrWrongCode) {
					t.Fatalf("attempt %d: %v", i, err)
				}
			}
			if _, err := e.reg.Verify(t.Context(), alice, id, wrongCode(code)); !errors.Is(err, phones.ErrTooManyAttempts) {
				t.Fatalf("fifth attempt: %v", err)
			}
			_, err := e.reg.Verify(t.Context(), alice, id, code)
			return err
		}, phones.ErrTooManyAttempts},
		{"another user's phone id", func(t *testing.T, e *env, id, code string) error {
			_, err := e.reg.Verify(t.Context(), bob, id, code)
			return err
		}, phones.ErrNotFound},
		{"unknown id", func(t *testing.T, e *env, id, code string) error {
			_, err := e.reg.Verify(t.Context(), alice, "../"+id, code)
			return err
		}, phones.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			p, err := e.reg.Add(t.Context(), alice, number)
			if err != nil {
				t.Fatal(err)
			}
			expect(t, tt.run(t, e, p.ID, e.sms.lastCode(t, number)), tt.want)
			if _, ok, _ := e.reg.OwnerOf(t.Context(), number); ok {
				t.Fatal("a refused verification made an owner")
			}
		})
	}
}

func TestCodeRateLimitAndNewCode(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for i := range 3 {
		if _, err := e.reg.Add(ctx, alice, number); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	_, err := e.reg.Add(ctx, alice, number)
	expect(t, err, phones.ErrTooManyCodes)
	if n := len(e.sms.sent[number]); n != 3 {
		t.Fatalf("%d SMS sent, want 3", n)
	}
	e.clk.Advance(time.Hour)
	p, err := e.reg.Add(ctx, alice, number)
	if err != nil {
		t.Fatalf("after the window: %v", err)
	}
	// Only the newest code works.
	if _, err := e.reg.Verify(ctx, alice, p.ID, e.sms.lastCode(t, number)); err != nil {
		t.Fatal(err)
	}
	_, err = e.reg.Add(ctx, alice, number)
	expect(t, err, phones.ErrAlreadyVerified)
}

func TestNumberOwnedByOne(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// Bob registers alice's number but cannot read the code sent to it.
	pb, err := e.reg.Add(ctx, bob, number)
	if err != nil {
		t.Fatal(err)
	}
	bobsCode := e.sms.lastCode(t, number)
	pa, err := e.reg.Add(ctx, alice, number)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Verify(ctx, alice, pa.ID, e.sms.lastCode(t, number)); err != nil {
		t.Fatal(err)
	}
	// Even with the code sent for bob's registration, bob cannot take it.
	_, err = e.reg.Verify(ctx, bob, pb.ID, bobsCode)
	expect(t, err, phones.ErrTaken)
	_, err = e.reg.Add(ctx, bob, number)
	expect(t, err, phones.ErrTaken)
	if owner, _, _ := e.reg.OwnerOf(ctx, number); owner != alice {
		t.Fatalf("owner %q", owner)
	}
}

func TestAddRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for _, n := range []string{"", "5551234567", "+0123456789", "+1", "+1234567890123456", "+1555 1234567", "++15551234567"} {
		_, err := e.reg.Add(ctx, alice, n)
		expect(t, err, phones.ErrInvalidNumber)
	}
	e.sms.fail = errors.New("twilio down")
	_, err := e.reg.Add(ctx, alice, number)
	expect(t, err, phones.ErrSendFailed)
}

func TestCallsAndIndex(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const sid = "CA0123456789abcdef0123456789abcdef"
	if err := e.calls.Start(ctx, sid, alice, "ringing"); err != nil {
		t.Fatal(err)
	}
	expect(t, e.calls.Start(ctx, sid, bob, "ringing"), phones.ErrOtherOwner)
	if ok, err := e.calls.SetStatus(ctx, sid, alice, "completed", 12); err != nil || !ok {
		t.Fatalf("set status %v %v", ok, err)
	}
	// A late, out-of-order callback does not undo a final status.
	if _, err := e.calls.SetStatus(ctx, sid, alice, "in-progress", 0); err != nil {
		t.Fatal(err)
	}
	c, ok, err := e.calls.Get(ctx, sid)
	if err != nil || !ok || c.Status != "completed" || c.DurationS != 12 || c.Owner != alice {
		t.Fatalf("call %+v %v %v", c, ok, err)
	}
	_, err = e.calls.SetStatus(ctx, sid, bob, "completed", 1)
	expect(t, err, phones.ErrOtherOwner)

	p, err := e.reg.Add(ctx, alice, number)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Verify(ctx, alice, p.ID, e.sms.lastCode(t, number)); err != nil {
		t.Fatal(err)
	}
	ix := phones.Index{Docs: e.docs}
	if n, err := ix.Held(ctx, alice); err != nil || n != 2 {
		t.Fatalf("held %d %v, want the ownership and the call", n, err)
	}
	if n, _ := ix.Held(ctx, bob); n != 0 {
		t.Fatalf("bob holds %d", n)
	}
	if n, err := ix.Forget(ctx, alice); err != nil || n != 2 {
		t.Fatalf("forget %d %v", n, err)
	}
	if n, _ := ix.Held(ctx, alice); n != 0 {
		t.Fatalf("after forget: %d", n)
	}
	if _, ok, _ := e.reg.OwnerOf(ctx, number); ok {
		t.Fatal("owner survives forget")
	}
}
