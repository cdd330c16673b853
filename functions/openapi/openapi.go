// Package openapi holds the edge's API description (OpenAPI 3.1) and
// serves it. The description is checked against the routes the edge
// serves and the handlers' own body schemas by functions/openapi_test.go.
package openapi

import (
	_ "embed"
	"net/http"
	"strconv"
)

//go:embed openapi.yaml
var spec []byte

// Spec returns the OpenAPI 3.1 document (YAML); the caller gets a copy.
func Spec() []byte { return append([]byte(nil), spec...) }

// Handler serves the document as application/yaml. It is public and the
// same for every caller, so it may be cached briefly.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/yaml")
		h.Set("Content-Length", strconv.Itoa(len(spec)))
		h.Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(spec)
	})
}
