package twiliosig_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/url"
	"testing"

	"github.com/lethe-dev/lethe/infra/twiliosig"
)

// Fixed vectors from twilio-go's own tests (client/request_validator_test.go,
// github.com/twilio/twilio-go): auth token "12345", the URL and parameters
// below, and the signatures Twilio's library expects. They were computed by
// Twilio, not by this package.
const (
	vecToken    = "12345"
	vecURI      = "/myapp.php?foo=1&bar=2"
	vecSig      = "RSOYDt4T1cUTdK1PDd93/VVr8B8=" // https, no port
	vecSig443   = "kvajT1Ptam85bY51eRf/AJRuM3w=" // https, with :443
	vecSigHTTP  = "0ZXoZLH/DfblKGATFgpif+LLRf4=" // http, no port
	vecSig1234  = "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=" // http, with :1234
	vecBodyHash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
	vecBody     = `{"property": "value", "boolean": true}`
	vecSigBody  = "a9nBmqA0ju/hNViExpshrM61xv4=" // vecURI&bodySHA256=vecBodyHash
	vecSigBody2 = "y77kIzt2vzLz71DgmJGsen2scGs=" // /myapp.php?bodySHA256=vecBodyHash
)

func vecForm() url.Values {
	return url.Values{
		"Digits": {"1234"}, "CallSid": {"CA1234567890ABCDE"}, "To": {"+18005551212"},
		"Caller": {"+14158675309"}, "From": {"+14158675309"},
	}
}

func mustNew(t *testing.T, base string, tokens ...string) *twiliosig.Verifier {
	t.Helper()
	v, err := twiliosig.New(base, tokens...)
	if err != nil {
		t.Fatalf("New(%q): %v", base, err)
	}
	return v
}

func TestVerifyFormVectors(t *testing.T) {
	changed := vecForm()
	changed.Set("Digits", "1235")
	added := vecForm()
	added.Set("Extra", "1")
	removed := vecForm()
	removed.Del("To")
	tests := []struct {
		name   string
		base   string
		tokens []string
		uri    string
		form   url.Values
		sig    string
		want   error
	}{
		{"valid", "https://mycompany.com", []string{vecToken}, vecURI, vecForm(), vecSig, nil},
		{"signed with default port, configured without", "https://mycompany.com", []string{vecToken}, vecURI, vecForm(), vecSig443, nil},
		{"signed without port, configured with default", "https://mycompany.com:443", []string{vecToken}, vecURI, vecForm(), vecSig, nil},
		{"http vector", "http://mycompany.com", []string{vecToken}, vecURI, vecForm(), vecSigHTTP, nil},
		{"http with explicit port", "http://mycompany.com:1234", []string{vecToken}, vecURI, vecForm(), vecSig1234, nil},
		{"rotation: old token second", "https://mycompany.com", []string{"new-token-abc", vecToken}, vecURI, vecForm(), vecSig, nil},
		{"rotation: old token first", "https://mycompany.com", []string{vecToken, "new-token-abc"}, vecURI, vecForm(), vecSig, nil},
		{"https signature, http configured", "http://mycompany.com", []string{vecToken}, vecURI, vecForm(), vecSig, twiliosig.ErrMismatch},
		{"http signature, https configured", "https://mycompany.com", []string{vecToken}, vecURI, vecForm(), vecSigHTTP, twiliosig.ErrMismatch},
		{"non-default port is not stripped", "https://mycompany.com:8443", []string{vecToken}, vecURI, vecForm(), vecSig, twiliosig.ErrMismatch},
		{"other token", "https://mycompany.com", []string{"54321"}, vecURI, vecForm(), vecSig, twiliosig.ErrMismatch},
		{"changed parameter", "https://mycompany.com", []string{vecToken}, vecURI, changed, vecSig, twiliosig.ErrMismatch},
		{"added parameter", "https://mycompany.com", []string{vecToken}, vecURI, added, vecSig, twiliosig.ErrMismatch},
		{"removed parameter", "https://mycompany.com", []string{vecToken}, vecURI, removed, vecSig, twiliosig.ErrMismatch},
		{"changed query", "https://mycompany.com", []string{vecToken}, "/myapp.php?foo=1&bar=3", vecForm(), vecSig, twiliosig.ErrMismatch},
		{"other path", "https://mycompany.com", []string{vecToken}, "/other.php?foo=1&bar=2", vecForm(), vecSig, twiliosig.ErrMismatch},
		{"missing signature", "https://mycompany.com", []string{vecToken}, vecURI, vecForm(), "", twiliosig.ErrMissing},
		{"oversized signature", "https://mycompany.com", []string{vecToken}, vecURI, vecForm(), vecSig + vecSig + vecSig, twiliosig.ErrMismatch},
		{"absolute request URI", "https://mycompany.com", []string{vecToken}, "https://evil.example/myapp.php", vecForm(), vecSig, twiliosig.ErrURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustNew(t, tt.base, tt.tokens...)
			err := v.VerifyForm(tt.uri, tt.form, tt.sig)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("VerifyForm = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyJSONVectors(t *testing.T) {
	changed := []byte(vecBody)
	changed[3] ^= 1
	tests := []struct {
		name string
		uri  string
		body []byte
		sig  string
		want error
	}{
		{"valid", vecURI + "&bodySHA256=" + vecBodyHash, []byte(vecBody), vecSigBody, nil},
		{"valid, only bodySHA256", "/myapp.php?bodySHA256=" + vecBodyHash, []byte(vecBody), vecSigBody2, nil},
		{"one byte changed", vecURI + "&bodySHA256=" + vecBodyHash, changed, vecSigBody, twiliosig.ErrBodyHash},
		{"no bodySHA256", vecURI, []byte(vecBody), vecSig, twiliosig.ErrBodyHash},
		{"form signature for a JSON body", vecURI + "&bodySHA256=" + vecBodyHash, []byte(vecBody), vecSig, twiliosig.ErrMismatch},
		{"missing", vecURI + "&bodySHA256=" + vecBodyHash, []byte(vecBody), "", twiliosig.ErrMissing},
	}
	v := mustNew(t, "https://mycompany.com", vecToken)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.VerifyJSON(tt.uri, tt.body, tt.sig)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("VerifyJSON = %v, want %v", err, tt.want)
			}
		})
	}
}

// Repeated names: the HMAC is computed here by hand over the documented
// concatenation (names sorted, each repeated name once per value, values
// sorted), not through the package.
func TestRepeatedKeys(t *testing.T) {
	const token, uri = "tok-repeated", "/twilio/sms"
	m := hmac.New(sha1.New, []byte(token))
	m.Write([]byte("https://lethe.example" + uri + "Bodyhi" + "MediaUrlhttps://a.example/1" + "MediaUrlhttps://a.example/2" + "ToX"))
	sig := base64.StdEncoding.EncodeToString(m.Sum(nil))
	v := mustNew(t, "https://lethe.example", token)
	form := url.Values{"To": {"X"}, "MediaUrl": {"https://a.example/2", "https://a.example/1"}, "Body": {"hi"}}
	if err := v.VerifyForm(uri, form, sig); err != nil {
		t.Fatalf("repeated keys: %v", err)
	}
	form["MediaUrl"] = form["MediaUrl"][:1]
	if err := v.VerifyForm(uri, form, sig); !errors.Is(err, twiliosig.ErrMismatch) {
		t.Fatalf("one repeated value dropped: %v, want mismatch", err)
	}
	if got := twiliosig.Sign(token, "https://lethe.example"+uri, url.Values{"To": {"X"}, "MediaUrl": {"https://a.example/1", "https://a.example/2"}, "Body": {"hi"}}); got != sig {
		t.Fatalf("Sign = %s, want %s", got, sig)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tt := range []struct {
		name, base string
		tokens     []string
	}{
		{"no token", "https://a.example", nil},
		{"empty token", "https://a.example", []string{""}},
		{"no scheme", "a.example", []string{"t"}},
		{"ftp", "ftp://a.example", []string{"t"}},
		{"credentials", "https://u:p@a.example", []string{"t"}},
		{"query", "https://a.example/?x=1", []string{"t"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := twiliosig.New(tt.base, tt.tokens...); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

func TestPrefixedPublicURL(t *testing.T) {
	v := mustNew(t, "https://lethe.example/hooks/", "tok")
	form := url.Values{"A": {"1"}}
	sig := twiliosig.Sign("tok", "https://lethe.example/hooks/twilio/sms", form)
	if err := v.VerifyForm("/twilio/sms", form, sig); err != nil {
		t.Fatal(err)
	}
}
