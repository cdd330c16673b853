// Package twiliosig checks X-Twilio-Signature the way Twilio computes it:
// HMAC-SHA1 keyed by the account's auth token over the public URL of the
// webhook followed by its POST parameters, sorted by name (repeated names
// by sorted value), base64. JSON bodies are signed through a bodySHA256
// query parameter instead. The URL is the configured public one: a
// request's Host or X-Forwarded-* headers are the caller's to forge.
package twiliosig

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Errors of Verify*; all of them mean "not from Twilio" (403).
var (
	ErrMissing  = errors.New("twiliosig: no signature")
	ErrMismatch = errors.New("twiliosig: signature does not match")
	ErrBodyHash = errors.New("twiliosig: body does not match bodySHA256")
	ErrURL      = errors.New("twiliosig: request URI is not a path")
)

// maxSignature bounds the header: a base64 SHA-1 is 28 characters.
const maxSignature = 64

// Verifier checks signatures against one or two auth tokens (two during a
// rotation: Twilio signs with the primary, which may be either).
type Verifier struct {
	base   *url.URL
	tokens [][]byte
}

// New returns a Verifier for webhooks served under publicURL (scheme and
// host, optionally a path prefix; no query). Empty tokens are ignored; at
// least one is needed.
func New(publicURL string, tokens ...string) (*Verifier, error) {
	u, err := url.Parse(publicURL)
	if err != nil {
		return nil, fmt.Errorf("url.Parse public URL: %w", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("twiliosig: public URL %q: want http(s)://host[:port][/prefix] without credentials, query or fragment", publicURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	v := &Verifier{base: u}
	for _, t := range tokens {
		if t != "" {
			v.tokens = append(v.tokens, []byte(t))
		}
	}
	if len(v.tokens) == 0 {
		return nil, errors.New("twiliosig: no auth token")
	}
	return v, nil
}

// URL is the public URL Twilio signed for a request whose request-URI
// (path and query, as sent: r.URL.RequestURI()) is requestURI.
func (v *Verifier) URL(requestURI string) (string, error) {
	if !strings.HasPrefix(requestURI, "/") || strings.HasPrefix(requestURI, "//") {
		return "", ErrURL
	}
	return v.base.Scheme + "://" + v.base.Host + v.base.Path + requestURI, nil
}

// VerifyForm checks sig for a form-encoded POST to requestURI whose body
// parsed to form (the body only: query parameters are part of the URL).
func (v *Verifier) VerifyForm(requestURI string, form url.Values, sig string) error {
	u, err := v.URL(requestURI)
	if err != nil {
		return err
	}
	return v.verify(u, form, sig)
}

// VerifyJSON checks sig for a JSON POST: the URL (with its bodySHA256
// parameter) is signed alone and bodySHA256 must be the body's SHA-256.
func (v *Verifier) VerifyJSON(requestURI string, body []byte, sig string) error {
	u, err := v.URL(requestURI)
	if err != nil {
		return err
	}
	pu, err := url.Parse(u)
	if err != nil {
		return ErrURL
	}
	want := pu.Query().Get("bodySHA256")
	if want == "" {
		return ErrBodyHash
	}
	if err := v.verify(u, nil, sig); err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	got := hex.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(want)), []byte(got)) != 1 {
		return ErrBodyHash
	}
	return nil
}

func (v *Verifier) verify(fullURL string, form url.Values, sig string) error {
	if sig == "" {
		return ErrMissing
	}
	if len(sig) > maxSignature {
		return ErrMismatch
	}
	payload := Payload("", form)
	ok := 0
	for _, candidate := range portVariants(fullURL) {
		for _, tok := range v.tokens {
			// Every candidate and token is tried: the time taken does not
			// tell which one matched.
			ok |= subtle.ConstantTimeCompare([]byte(sign(tok, candidate, payload)), []byte(sig))
		}
	}
	if ok != 1 {
		return ErrMismatch
	}
	return nil
}

// Sign computes the signature Twilio sends for a POST of form to fullURL
// (nil form for a JSON body, whose bodySHA256 is in fullURL).
func Sign(token, fullURL string, form url.Values) string {
	return sign([]byte(token), fullURL, Payload("", form))
}

func sign(token []byte, fullURL, payload string) string {
	m := hmac.New(sha1.New, token)
	m.Write([]byte(fullURL))
	m.Write([]byte(payload))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Payload appends form to prefix as Twilio signs it: names sorted
// (byte order), each name followed by its value, a repeated name once per
// distinct value in sorted order (as Twilio's helper libraries do).
func Payload(prefix string, form url.Values) string {
	names := make([]string, 0, len(form))
	for k := range form {
		names = append(names, k)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString(prefix)
	for _, k := range names {
		vals := slices.Clone(form[k])
		slices.Sort(vals)
		vals = slices.Compact(vals)
		for _, val := range vals {
			b.WriteString(k)
			b.WriteString(val)
		}
	}
	return b.String()
}

// portVariants is fullURL as given plus, when it names no port, with the
// scheme's default port, and when it names the default port, without it:
// Twilio has signed both forms over time.
func portVariants(fullURL string) []string {
	u, err := url.Parse(fullURL)
	if err != nil {
		return []string{fullURL}
	}
	def := "443"
	if u.Scheme == "http" {
		def = "80"
	}
	out := []string{fullURL}
	host := u.Hostname()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	switch u.Port() {
	case "":
		out = append(out, replaceHost(fullURL, u.Host, net.JoinHostPort(u.Hostname(), def)))
	case def:
		out = append(out, replaceHost(fullURL, u.Host, host))
	}
	return out
}

// replaceHost swaps the authority in place, leaving path and query byte
// for byte as signed (url.URL.String would re-escape them).
func replaceHost(fullURL, from, to string) string {
	i := strings.Index(fullURL, "://")
	if i < 0 {
		return fullURL
	}
	rest := fullURL[i+3:]
	if !strings.HasPrefix(rest, from) {
		return fullURL
	}
	return fullURL[:i+3] + to + rest[len(from):]
}
