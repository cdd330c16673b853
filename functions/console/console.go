// Package console is the developer console `lethe run` serves at "/": plain
// HTML and JavaScript embedded in the binary, no build step and no external
// asset. It talks to the edge's own API with a token pasted in (from
// `lethe token`): record from the microphone over the streaming WebSocket or
// upload a file, watch each chunk move through the stages, search, set
// retention, export and erase.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// contentSecurityPolicy allows only the console's own scripts, styles and
// connections (HTTP and its WebSocket, same origin): no inline script, no
// framing, no third party.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; media-src 'self' blob:; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the console: the page at "/" and its assets under
// "/console/".
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", secured(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, sub, "index.html")
	}))
	mux.Handle("GET /console/", secured(http.StripPrefix("/console/", files).ServeHTTP))
	return mux
}

func secured(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		// The microphone, for this origin only.
		h.Set("Permissions-Policy", "microphone=(self), camera=(), geolocation=()")
		next(w, r)
	})
}
