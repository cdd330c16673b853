// Package phones holds users' phone numbers, proven by a code sent by SMS,
// and the record of each Twilio call. Without proof, registering someone
// else's number would route their calls and messages into your account, so
// only a verified number has an owner. Numbers are never stored: a phone is
// its keyed hash (pseudonym.Phone) and a masked form for display.
package phones

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
)

// Collections. Phones are under their user; owners and calls are global
// (a webhook knows a number or a call, not a user) and carry the owner in
// an indexed field, so an erasure finds and deletes them.
const (
	Collection       = "phones"
	OwnersCollection = "phone_owners"
	CallsCollection  = "twilio_calls"
	fieldOwner       = "owner"
)

// Errors of the registry; each maps to one answer of the API.
var (
	ErrInvalidNumber   = errors.New("phones: not an E.164 number")
	ErrNotFound        = errors.New("phones: no such phone")
	ErrTaken           = errors.New("phones: number verified by another account")
	ErrWrongCode       = errors.New("phones: wrong code")
	ErrExpired         = errors.New("phones: code expired")
	ErrTooManyAttempts = errors.New("phones: too many attempts")
	ErrTooManyCodes    = errors.New("phones: too many codes sent")
	ErrAlreadyVerified = errors.New("phones: already verified")
	ErrTooManyPhones   = errors.New("phones: too many phones")
	ErrSendFailed      = errors.New("phones: the code could not be sent")
)

var (
	e164RE = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
	codeRE = regexp.MustCompile(`^[0-9]{6}$`)
	idRE   = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// ValidNumber reports whether n is an E.164 number.
func ValidNumber(n string) bool { return e164RE.MatchString(n) }

// ValidID reports whether id can be a phone id (a keyed hash).
func ValidID(id string) bool { return idRE.MatchString(id) }

// Mask shows a number as its country prefix and last two digits:
// "+1••••••••12" for +15551234512.
func Mask(n string) string {
	if len(n) < 5 {
		return "•••"
	}
	b := []rune(n[:2])
	for range len(n) - 4 {
		b = append(b, '•')
	}
	return string(b) + n[len(n)-2:]
}

// Sender sends an SMS (Twilio's Messages API).
type Sender interface {
	SendSMS(ctx context.Context, to, body string) error
}

// Digester is the user's keyed digest (keys.Sealer.Digest): codes are
// kept only as digests under the user's key.
type Digester interface {
	Digest(ctx context.Context, user string, data []byte) (string, error)
}

// Phone is one number of a user.
type Phone struct {
	ID         string    `json:"id"` // keyed hash of the number
	Masked     string    `json:"masked"`
	Verified   bool      `json:"verified"`
	CreatedAt  time.Time `json:"created_at"`
	VerifiedAt time.Time `json:"verified_at,omitzero"`

	codeDigest  string
	codeExpires time.Time
	attempts    int
	sends       int
	sendsSince  time.Time
}

// stored is Phone as the document holds it.
type stored struct {
	ID          string    `json:"id"`
	Masked      string    `json:"masked"`
	Verified    bool      `json:"verified"`
	CreatedAt   time.Time `json:"created_at"`
	VerifiedAt  time.Time `json:"verified_at,omitzero"`
	CodeDigest  string    `json:"code_digest,omitempty"`
	CodeExpires time.Time `json:"code_expires,omitzero"`
	Attempts    int       `json:"attempts,omitempty"`
	Sends       int       `json:"sends,omitempty"`
	SendsSince  time.Time `json:"sends_since,omitzero"`
}

func (p Phone) doc(user string) (docs.Doc, error) {
	data, err := json.Marshal(stored{p.ID, p.Masked, p.Verified, p.CreatedAt, p.VerifiedAt, p.codeDigest, p.codeExpires, p.attempts, p.sends, p.sendsSince})
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal phone: %w", err)
	}
	return docs.Doc{Key: Key(user, p.ID), Data: data}, nil
}

func phoneFrom(d docs.Doc) (Phone, error) {
	var s stored
	if err := json.Unmarshal(d.Data, &s); err != nil {
		return Phone{}, fmt.Errorf("json.Unmarshal phone: %w", err)
	}
	return Phone{ID: s.ID, Masked: s.Masked, Verified: s.Verified, CreatedAt: s.CreatedAt, VerifiedAt: s.VerifiedAt,
		codeDigest: s.CodeDigest, codeExpires: s.CodeExpires, attempts: s.Attempts, sends: s.Sends, sendsSince: s.SendsSince}, nil
}

// Key is the document key of a user's phone.
func Key(user, id string) docs.Key { return docs.Key{User: user, Collection: Collection, ID: id} }

// OwnerKey is the document naming the verified owner of a number.
func OwnerKey(id string) docs.Key { return docs.Key{Collection: OwnersCollection, ID: id} }

// Registry is the use case behind /v1/me/phones.
type Registry struct {
	Docs docs.Store
	// Hash is the keyed hash of a number (pseudonym.Phone).
	Hash   func(e164 string) string
	Digest Digester
	SMS    Sender
	Now    func() time.Time
	// CodeTTL is a code's lifetime (default 10 minutes); MaxAttempts the
	// wrong codes before the code is void (default 5); MaxSends the codes
	// sent per phone per SendWindow (default 3 per hour); MaxPhones the
	// phones of one user (default 5).
	CodeTTL     time.Duration
	MaxAttempts int
	MaxSends    int
	SendWindow  time.Duration
	MaxPhones   int
}

func (r *Registry) now() time.Time {
	if r.Now == nil {
		return time.Now().UTC()
	}
	return r.Now().UTC()
}

func orDefault[T int | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// Add registers number for user (or refreshes its pending registration)
// and sends a new code to it. A number another account verified is
// ErrTaken; one this user verified is ErrAlreadyVerified.
func (r *Registry) Add(ctx context.Context, user, number string) (Phone, error) {
	if !ValidNumber(number) {
		return Phone{}, ErrInvalidNumber
	}
	id := r.Hash(number)
	owner, ok, err := r.Owner(ctx, id)
	if err != nil {
		return Phone{}, err
	}
	if ok && owner != user {
		return Phone{}, ErrTaken
	}
	code, err := newCode()
	if err != nil {
		return Phone{}, err
	}
	digest, err := r.codeDigest(ctx, user, id, code)
	if err != nil {
		return Phone{}, err
	}
	// Counted outside the transaction (SQLite's fn may not touch the
	// store); a race can exceed the bound by the racing requests only.
	if _, err := r.Docs.Get(ctx, Key(user, id)); errors.Is(err, docs.ErrNotFound) {
		if n, err := r.count(ctx, user); err != nil {
			return Phone{}, err
		} else if n >= orDefault(r.MaxPhones, 5) {
			return Phone{}, ErrTooManyPhones
		}
	} else if err != nil {
		return Phone{}, fmt.Errorf("docs.Get phone: %w", err)
	}
	now := r.now()
	var out Phone
	err = r.Docs.Update(ctx, Key(user, id), func(cur *docs.Doc) (*docs.Doc, error) {
		p := Phone{ID: id, Masked: Mask(number), CreatedAt: now}
		if cur != nil {
			var err error
			if p, err = phoneFrom(*cur); err != nil {
				return nil, err
			}
		}
		if p.Verified {
			return nil, ErrAlreadyVerified
		}
		if now.Sub(p.sendsSince) >= orDefault(r.SendWindow, time.Hour) {
			p.sends, p.sendsSince = 0, now
		}
		if p.sends >= orDefault(r.MaxSends, 3) {
			return nil, ErrTooManyCodes
		}
		p.sends++
		p.codeDigest, p.codeExpires, p.attempts = digest, now.Add(orDefault(r.CodeTTL, 10*time.Minute)), 0
		out = p
		d, err := p.doc(user)
		return &d, err
	})
	if err != nil {
		return Phone{}, err
	}
	// After the record: a code that was sent always has its digest stored.
	msg := fmt.Sprintf("Your lethe code is %s. It expires in %d minutes.", code, int(orDefault(r.CodeTTL, 10*time.Minute).Minutes()))
	if err := r.SMS.SendSMS(ctx, number, msg); err != nil {
		return out, fmt.Errorf("%w: %w", ErrSendFailed, err)
	}
	return out, nil
}

func (r *Registry) count(ctx context.Context, user string) (int, error) {
	ds, err := r.Docs.Query(ctx, docs.Query{User: user, Collection: Collection, Limit: 100})
	if err != nil {
		return 0, fmt.Errorf("docs.Query phones: %w", err)
	}
	return len(ds), nil
}

func (r *Registry) codeDigest(ctx context.Context, user, id, code string) (string, error) {
	d, err := r.Digest.Digest(ctx, user, []byte("phone-code|"+id+"|"+code))
	if err != nil {
		return "", fmt.Errorf("keys.Digest code: %w", err)
	}
	return d, nil
}

func newCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", fmt.Errorf("rand.Int: %w", err)
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

// Verify checks code for the user's phone id. A wrong code counts an
// attempt; past MaxAttempts, or after CodeTTL, the code is void and a new
// one must be asked for. A right code makes the user the number's owner,
// unless another account verified it first (ErrTaken).
func (r *Registry) Verify(ctx context.Context, user, id, code string) (Phone, error) {
	if !ValidID(id) {
		return Phone{}, ErrNotFound
	}
	if !codeRE.MatchString(code) {
		code = "" // still counts an attempt below
	}
	digest := ""
	if code != "" {
		var err error
		if digest, err = r.codeDigest(ctx, user, id, code); err != nil {
			return Phone{}, err
		}
	}
	now := r.now()
	var out Phone
	var verdict error
	err := r.Docs.Update(ctx, Key(user, id), func(cur *docs.Doc) (*docs.Doc, error) {
		verdict = nil
		if cur == nil {
			return nil, ErrNotFound
		}
		p, err := phoneFrom(*cur)
		if err != nil {
			return nil, err
		}
		out = p
		switch {
		case p.Verified:
			return nil, ErrAlreadyVerified
		case p.attempts >= orDefault(r.MaxAttempts, 5):
			return nil, ErrTooManyAttempts
		case p.codeDigest == "":
			return nil, ErrExpired
		case !now.Before(p.codeExpires):
			p.codeDigest = ""
			verdict = ErrExpired
		case digest == "" || digest != p.codeDigest:
			p.attempts++
			verdict = ErrWrongCode
			if p.attempts >= orDefault(r.MaxAttempts, 5) {
				p.codeDigest = ""
				verdict = ErrTooManyAttempts
			}
		default:
			p.Verified, p.VerifiedAt, p.codeDigest, p.attempts = true, now, "", 0
		}
		out = p
		d, err := p.doc(user)
		return &d, err
	})
	if err != nil {
		return Phone{}, err
	}
	if verdict != nil {
		return out, verdict
	}
	if err := r.claim(ctx, user, id, now); err != nil {
		// Undo: the phone is not the user's after all.
		_ = r.Docs.Update(ctx, Key(user, id), func(cur *docs.Doc) (*docs.Doc, error) {
			if cur == nil {
				return nil, nil
			}
			p, err := phoneFrom(*cur)
			if err != nil {
				return nil, err
			}
			p.Verified, p.VerifiedAt = false, time.Time{}
			d, err := p.doc(user)
			return &d, err
		})
		return Phone{}, err
	}
	return out, nil
}

type ownerDoc struct {
	Owner string    `json:"owner"`
	Since time.Time `json:"since"`
}

// claim makes user the owner of id, unless another user is.
func (r *Registry) claim(ctx context.Context, user, id string, now time.Time) error {
	return r.Docs.Update(ctx, OwnerKey(id), func(cur *docs.Doc) (*docs.Doc, error) {
		if cur != nil {
			var o ownerDoc
			if err := json.Unmarshal(cur.Data, &o); err != nil {
				return nil, fmt.Errorf("json.Unmarshal owner: %w", err)
			}
			if o.Owner != user {
				return nil, ErrTaken
			}
			return cur, nil
		}
		data, err := json.Marshal(ownerDoc{Owner: user, Since: now})
		if err != nil {
			return nil, err
		}
		return &docs.Doc{Key: OwnerKey(id), Data: data, Fields: map[string]any{fieldOwner: user}}, nil
	})
}

// Owner returns the user who verified the number whose keyed hash is id.
func (r *Registry) Owner(ctx context.Context, id string) (string, bool, error) {
	d, err := r.Docs.Get(ctx, OwnerKey(id))
	if errors.Is(err, docs.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("docs.Get phone owner: %w", err)
	}
	var o ownerDoc
	if err := json.Unmarshal(d.Data, &o); err != nil {
		return "", false, fmt.Errorf("json.Unmarshal owner: %w", err)
	}
	return o.Owner, true, nil
}

// OwnerOf returns the verified owner of number.
func (r *Registry) OwnerOf(ctx context.Context, number string) (string, bool, error) {
	if !ValidNumber(number) {
		return "", false, nil
	}
	return r.Owner(ctx, r.Hash(number))
}

// List returns the user's phones.
func (r *Registry) List(ctx context.Context, user string) ([]Phone, error) {
	ds, err := r.Docs.Query(ctx, docs.Query{User: user, Collection: Collection, Limit: 100})
	if err != nil {
		return nil, fmt.Errorf("docs.Query phones: %w", err)
	}
	out := make([]Phone, 0, len(ds))
	for _, d := range ds {
		p, err := phoneFrom(d)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Delete removes the user's phone and, if the user owned the number, the
// ownership: calls and messages from it are dropped from then on.
func (r *Registry) Delete(ctx context.Context, user, id string) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	if _, err := r.Docs.Get(ctx, Key(user, id)); errors.Is(err, docs.ErrNotFound) {
		return ErrNotFound
	} else if err != nil {
		return fmt.Errorf("docs.Get phone: %w", err)
	}
	// The ownership first: a crash between leaves a phone to delete
	// again, never an owner without a phone.
	err := r.Docs.Update(ctx, OwnerKey(id), func(cur *docs.Doc) (*docs.Doc, error) {
		if cur == nil {
			return nil, nil
		}
		var o ownerDoc
		if err := json.Unmarshal(cur.Data, &o); err != nil {
			return nil, err
		}
		if o.Owner != user {
			return cur, nil
		}
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("docs.Update phone owner: %w", err)
	}
	if err := r.Docs.Delete(ctx, Key(user, id)); err != nil && !errors.Is(err, docs.ErrNotFound) {
		return fmt.Errorf("docs.Delete phone: %w", err)
	}
	return nil
}
