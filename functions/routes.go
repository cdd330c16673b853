package functions

import (
	"net/http"
	"slices"
)

// routeMux is the edge's ServeMux that remembers every pattern it is given,
// so the served surface can be listed (Server.Routes) and checked against
// the API description (functions/openapi) rather than described by hand.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func newRouteMux() *routeMux { return &routeMux{ServeMux: http.NewServeMux()} }

// Handle registers handler for pattern and records the pattern.
func (m *routeMux) Handle(pattern string, handler http.Handler) {
	m.ServeMux.Handle(pattern, handler)
	m.patterns = append(m.patterns, pattern)
}

// HandleFunc registers handler for pattern and records the pattern.
func (m *routeMux) HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request)) {
	m.ServeMux.HandleFunc(pattern, handler)
	m.patterns = append(m.patterns, pattern)
}

// Routes lists the patterns the edge serves ("GET /v1/conversations",
// and "/" for the catch-all), sorted. Routes that depend on configuration
// (JWKS, Twilio, the dev console) appear only when configured.
func (s *Server) Routes() []string {
	out := slices.Clone(s.mux.patterns)
	slices.Sort(out)
	return out
}
