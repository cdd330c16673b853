package console_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"testing"

	"github.com/lethe-dev/lethe/functions/console"
)

func TestServesPageAndAssets(t *testing.T) {
	h := console.Handler()
	for _, tc := range []struct {
		path, ctype string
		code        int
	}{
		{"/", "text/html; charset=utf-8", 200},
		{"/console/console.js", "text/javascript; charset=utf-8", 200},
		{"/console/pcm-worklet.js", "text/javascript; charset=utf-8", 200},
		{"/console/console.css", "text/css; charset=utf-8", 200},
		{"/console/missing.js", "", 404},
		// The mux cleans the path and redirects to /etc/passwd, which it does
		// not serve.
		{"/console/../../etc/passwd", "", 307},
	} {
		t.Run(tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
			if rec.Code != tc.code {
				t.Fatalf("GET %s = %d, want %d", tc.path, rec.Code, tc.code)
			}
			if tc.code == 200 && rec.Header().Get("Content-Type") != tc.ctype {
				t.Errorf("Content-Type %q, want %q", rec.Header().Get("Content-Type"), tc.ctype)
			}
			if tc.code == 200 && rec.Header().Get("Content-Security-Policy") == "" {
				t.Error("no Content-Security-Policy")
			}
		})
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", rec.Code)
	}
}

// TestNoExternalAssets: nothing the console ships loads from elsewhere, and
// no script is inline (the CSP allows only 'self').
func TestNoExternalAssets(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:`)
	inline := regexp.MustCompile(`(?is)<script(?:[^>]*)>\s*[^<\s]|\son[a-z]+\s*=`)
	fsys := os.DirFS("static")
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := fsys.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		if m := external.Find(b); m != nil {
			t.Errorf("%s references an external asset: %q", p, m)
		}
		if m := inline.Find(b); m != nil {
			t.Errorf("%s has inline script: %q", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
