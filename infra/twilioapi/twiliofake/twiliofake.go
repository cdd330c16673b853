// Package twiliofake is an httptest server that behaves like the parts of
// Twilio's REST API lethe calls: basic auth with the account SID and auth
// token, Messages.json (201 with a message resource), recordings served as
// WAV only after they are ready (404 before) through a redirect to a media
// path, as api.twilio.com does, and DELETE of a recording (204, then 404).
package twiliofake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
)

// Message is an SMS the fake was asked to send.
type Message struct{ To, From, Body string }

// Server is the fake.
type Server struct {
	*httptest.Server
	account, token string

	mu         sync.Mutex
	messages   []Message
	recordings map[string]*recording
	deleted    []string
	fetches    map[string]int
	unauth     int
}

type recording struct {
	audio []byte
	// notReadyFor: fetches answered 404 before the media is served.
	notReadyFor int
	gone        bool
}

// New starts a fake for account (AC…) and token.
func New(account, token string) *Server {
	s := &Server{account: account, token: token, recordings: map[string]*recording{}, fetches: map[string]int{}}
	mux := http.NewServeMux()
	prefix := "/2010-04-01/Accounts/" + account
	mux.HandleFunc("POST "+prefix+"/Messages.json", s.auth(s.sendMessage))
	mux.HandleFunc("GET "+prefix+"/Recordings/{file}", s.auth(s.getRecording))
	mux.HandleFunc("DELETE "+prefix+"/Recordings/{file}", s.auth(s.deleteRecording))
	// Media is served without auth at another path, as Twilio's media
	// host does for the redirect target.
	mux.HandleFunc("GET /media/{sid}", s.media)
	s.Server = httptest.NewServer(mux)
	return s
}

// AddRecording makes recording sid exist; the first notReadyFor fetches
// answer 404, as Twilio does while the media is being processed.
func (s *Server) AddRecording(sid string, wav []byte, notReadyFor int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordings[sid] = &recording{audio: wav, notReadyFor: notReadyFor}
}

// Messages returns the SMS sent so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Deleted returns the recording SIDs deleted so far (each DELETE that
// found one).
func (s *Server) Deleted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.deleted...)
}

// Fetches returns how many times recording sid was requested.
func (s *Server) Fetches(sid string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches[sid]
}

// Unauthorized counts requests refused for bad credentials.
func (s *Server) Unauthorized() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unauth
}

func (s *Server) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != s.account || p != s.token {
			s.mu.Lock()
			s.unauth++
			s.mu.Unlock()
			twilioError(w, http.StatusUnauthorized, 20003, "Authenticate")
			return
		}
		next(w, r)
	}
}

func twilioError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg, "status": status})
}

func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		twilioError(w, http.StatusBadRequest, 21000, "bad form")
		return
	}
	to, body := r.PostForm.Get("To"), r.PostForm.Get("Body")
	from := r.PostForm.Get("From")
	if from == "" {
		from = r.PostForm.Get("MessagingServiceSid")
	}
	if !strings.HasPrefix(to, "+") || body == "" || from == "" {
		twilioError(w, http.StatusBadRequest, 21604, "A 'To' phone number, a 'From' and a 'Body' are required.")
		return
	}
	s.mu.Lock()
	s.messages = append(s.messages, Message{To: to, From: from, Body: body})
	n := len(s.messages)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"sid": fmt.Sprintf("SM%032x", n), "status": "queued", "to": to})
}

func (s *Server) getRecording(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	sid, ok := strings.CutSuffix(file, ".wav")
	s.mu.Lock()
	rec := s.recordings[sid]
	s.fetches[sid]++
	notReady := rec != nil && rec.notReadyFor > 0
	if notReady {
		rec.notReadyFor--
	}
	s.mu.Unlock()
	if !ok || rec == nil || rec.gone || notReady {
		twilioError(w, http.StatusNotFound, 20404, "The requested resource was not found")
		return
	}
	http.Redirect(w, r, "/media/"+url.PathEscape(sid), http.StatusFound)
}

func (s *Server) media(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		// Credentials must not follow a redirect to the media host; on
		// one host Go keeps them, so only flag it, do not refuse.
		w.Header().Set("X-Fake-Saw-Auth", "1")
	}
	s.mu.Lock()
	rec := s.recordings[r.PathValue("sid")]
	s.mu.Unlock()
	if rec == nil || rec.gone {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "audio/x-wav")
	_, _ = w.Write(rec.audio)
}

func (s *Server) deleteRecording(w http.ResponseWriter, r *http.Request) {
	sid, _ := strings.CutSuffix(r.PathValue("file"), ".json")
	s.mu.Lock()
	rec := s.recordings[sid]
	found := rec != nil && !rec.gone
	if found {
		rec.gone = true
		s.deleted = append(s.deleted, sid)
	}
	s.mu.Unlock()
	if !found {
		twilioError(w, http.StatusNotFound, 20404, "The requested resource was not found")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
