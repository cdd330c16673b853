package twiliosig_test

import (
	"net/url"
	"testing"

	"github.com/lethe-dev/lethe/infra/twiliosig"
)

// FuzzVerify: any request URI, body and header is either accepted because
// it carries the right signature or refused; never a panic, and a valid
// signature over the parsed form always verifies.
func FuzzVerify(f *testing.F) {
	f.Add(vecURI, "Digits=1234&CallSid=CA1234567890ABCDE", vecSig)
	f.Add("/x?bodySHA256=00", `{"a":1}`, "")
	f.Add("//evil", "a=1&a=2&b", "AAAA")
	v, err := twiliosig.New("https://mycompany.com", vecToken)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, uri, body, sig string) {
		form, perr := url.ParseQuery(body)
		_ = v.VerifyForm(uri, form, sig)
		_ = v.VerifyJSON(uri, []byte(body), sig)
		if perr != nil {
			return
		}
		full, err := v.URL(uri)
		if err != nil {
			return
		}
		if err := v.VerifyForm(uri, form, twiliosig.Sign(vecToken, full, form)); err != nil {
			t.Fatalf("own signature refused for %q %q: %v", uri, body, err)
		}
	})
}
