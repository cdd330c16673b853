package functions_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/workers/export"
)

// download does GET path with token and returns status, error code (for
// JSON replies) and body.
func (e *edge) download(path, token string) (int, string, []byte, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.url+path, nil)
	must(e.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	must(e.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(e.t, err)
	code := ""
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var m map[string]any
		if json.Unmarshal(body, &m) == nil {
			code = errCode(reply{body: m})
		}
	}
	return resp.StatusCode, code, body, resp.Header
}

// runExports hands every export event published so far to the worker, as
// the lifecycle subscription would.
func (e *edge) runExports(w *export.Worker) {
	e.t.Helper()
	for _, ev := range e.bus.published() {
		if ev.Type() != events.TypeUserExportRequested {
			continue
		}
		if err := w.Handle(context.Background(), ev); err != nil {
			e.t.Fatalf("export.Handle: %v", err)
		}
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	must(t, err)
	return b
}

func TestExportEndToEnd(t *testing.T) {
	clock := &steppingClock{t: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC), step: time.Millisecond}
	urlKey := randomBytes(t, 32)
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, now: clock.Now, exportKey: urlKey})
	alice, bob := e.token("alice"), e.token("bob")
	aliceUser := e.pseudo.User("alice")
	w := &export.Worker{Docs: e.docs, Blobs: e.blobs, Keys: e.keys, Events: e.events,
		Defaults: records.Retention{ExportDays: 3}, Now: clock.Now}

	wav, opus := readTestdata(t, "speech-hello.wav"), readTestdata(t, "speech-hello.opus")
	for _, up := range []struct {
		tok, path, ct string
		body          []byte
	}{
		{alice, "/v1/conversations/morning/chunks/0", "audio/wav", wav},
		{alice, "/v1/conversations/morning/chunks/1", "audio/ogg;codecs=opus", opus},
		{bob, "/v1/conversations/bobsconv/chunks/0", "audio/wav", tone(330, 400)},
	} {
		if r := e.do("PUT", up.path, up.tok, up.ct, up.body); r.status != http.StatusAccepted {
			t.Fatalf("PUT %s: %d %v", up.path, r.status, r.body)
		}
	}
	// A transcript, as the transcribe worker writes it.
	seg := records.Segment{ConversationID: "morning", Seq: 0, Model: "m", CreatedAt: clock.Now(),
		SealedText: mustSeal(t, e.keys, aliceUser, "good morning lethe", keys.AD(aliceUser, records.Segments, records.ChunkID("morning", 0), "text"))}
	d, err := seg.Doc(aliceUser)
	must(t, err)
	must(t, e.docs.Put(context.Background(), d))
	noteCT := randomBytes(t, 300)
	if r := e.do("POST", "/v1/notes", alice, "application/json", noteBody(noteCT)); r.status != http.StatusCreated {
		t.Fatalf("POST note: %d", r.status)
	}

	// Request: 202 with an id; asking again while pending answers the same.
	r := e.do("POST", "/v1/me/export", alice, "", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST export: %d %v", r.status, r.body)
	}
	id, _ := r.body["id"].(string)
	if r2 := e.do("POST", "/v1/me/export", alice, "", nil); r2.status != http.StatusAccepted || r2.body["id"] != id {
		t.Errorf("second POST while pending: %d %v, want the pending %s", r2.status, r2.body, id)
	}
	if r := e.do("GET", "/v1/me/export/"+id, alice, "", nil); r.body["state"] != records.ExportPending || r.body["download_url"] != nil {
		t.Errorf("pending status = %v", r.body)
	}
	if r := e.do("GET", "/v1/me/export/"+id, bob, "", nil); r.status != http.StatusNotFound {
		t.Errorf("bob reads alice's export status: %d, want 404", r.status)
	}
	e.runExports(w)

	r = e.do("GET", "/v1/me/export/"+id, alice, "", nil)
	if r.status != http.StatusOK || r.body["state"] != records.ExportDone {
		t.Fatalf("status after build: %d %v", r.status, r.body)
	}
	dl, _ := r.body["download_url"].(string)
	urlExp, _ := time.Parse(time.RFC3339, r.body["url_expires_at"].(string))
	if dl == "" || urlExp.Sub(clock.Now()) > 15*time.Minute || urlExp.Before(clock.Now()) {
		t.Fatalf("download_url %q expiring %v: want a URL of at most 15 minutes", dl, urlExp)
	}
	manifest, _ := r.body["manifest"].(map[string]any)

	status, _, body, hdr := e.download(dl, alice)
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/zip" || !strings.Contains(hdr.Get("Content-Disposition"), "attachment") {
		t.Fatalf("download: %d %q %q", status, hdr.Get("Content-Type"), hdr.Get("Content-Disposition"))
	}
	if sum := sha256.Sum256(body); manifest["archive_sha256"] != hex.EncodeToString(sum[:]) {
		t.Error("the download does not match the archive digest the status reported")
	}
	files := unzipChecked(t, body)
	if !bytes.Equal(files["audio/morning/0000000.wav"], wav) || !bytes.Equal(files["audio/morning/0000001.ogg"], opus) {
		t.Error("the archive's audio is not byte-identical to the uploads")
	}
	if !bytes.Contains(files[export.FileSegments], []byte("good morning lethe")) {
		t.Error("segments.ndjson lacks the decrypted transcript")
	}
	if !bytes.Contains(files[export.FileNotes], []byte(base64.StdEncoding.EncodeToString(noteCT))) {
		t.Error("notes.ndjson lacks the client's ciphertext")
	}
	if !bytes.Contains(files[export.FileAudit], []byte(audit.ActionExportRequested)) {
		t.Error("audit.ndjson lacks the export request")
	}
	for name, b := range files {
		if bytes.Contains(b, []byte("bobsconv")) || bytes.Contains(b, []byte(e.pseudo.User("bob"))) {
			t.Errorf("%s carries Bob's data", name)
		}
	}
	// At rest the archive is sealed: no ZIP, no transcript in the bucket.
	if _, err := e.blobs.Attrs(context.Background(), records.ExportBlobKey(aliceUser, id)); err != nil {
		t.Fatalf("the archive is not at %s: %v", records.ExportBlobKey(aliceUser, id), err)
	}
	// ZIP file names are never compressed: a plain archive would show them.
	must(t, filepath.WalkDir(filepath.Join(e.dir, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range []string{export.FileManifest, export.FileSegments, "good morning lethe"} {
			if bytes.Contains(raw, []byte(s)) {
				t.Errorf("a stored blob shows %q: readable without the user's key", s)
			}
		}
		return nil
	}))

	// The URL works for nobody else, not altered, not after expiry.
	u, err := url.Parse(dl)
	must(t, err)
	q := u.Query()
	exp, sig := q.Get("expires"), q.Get("sig")
	expN, _ := strconv.ParseInt(exp, 10, 64)
	flip := func(s string) string {
		b := []byte(s)
		if b[0] == 'a' {
			b[0] = 'b'
		} else {
			b[0] = 'a'
		}
		return string(b)
	}
	path := func(id, exp, sig string) string {
		return "/v1/me/export/" + id + "/download?expires=" + exp + "&sig=" + sig
	}
	otherID := records.NewExportID()
	cases := []struct {
		name, path, tok string
		status          int
		code            string
	}{
		{"another user's token", dl, bob, 403, "invalid_signature"},
		{"no token", dl, "", 401, "unauthenticated"},
		{"tampered signature", path(id, exp, flip(sig)), alice, 403, "invalid_signature"},
		{"tampered id", path(otherID, exp, sig), alice, 403, "invalid_signature"},
		{"tampered expiry", path(id, strconv.FormatInt(expN+3600, 10), sig), alice, 403, "invalid_signature"},
		{"no signature", path(id, exp, ""), alice, 403, "invalid_signature"},
		{"short signature", path(id, exp, sig[:32]), alice, 403, "invalid_signature"},
		{"expiry not a number", path(id, "soon", sig), alice, 403, "invalid_signature"},
		{"bob signs his own URL for alice's id", path(id, exp, hex.EncodeToString(hmacFor(urlKey, e.pseudo.User("bob"), id, expN))), bob, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, code, body, _ := e.download(tc.path, tc.tok)
			if status != tc.status || code != tc.code {
				t.Fatalf("status %d code %q, want %d %q", status, code, tc.status, tc.code)
			}
			if bytes.Contains(body, []byte("PK\x03\x04")) {
				t.Fatal("the archive was served")
			}
		})
	}
	clock.Advance(16 * time.Minute)
	if status, code, _, _ := e.download(dl, alice); status != http.StatusGone || code != "url_expired" {
		t.Errorf("after expiry: %d %q, want 410 url_expired", status, code)
	}
	// A fresh status gives a fresh URL that works again.
	r = e.do("GET", "/v1/me/export/"+id, alice, "", nil)
	if status, _, _, _ := e.download(r.body["download_url"].(string), alice); status != http.StatusOK {
		t.Errorf("fresh URL: %d, want 200", status)
	}
	if strings.Contains(e.logs.String(), sig) {
		t.Error("a download signature reached the logs")
	}

	// The trail holds request, ready and each download.
	entries, _, err := (&audit.Log{Docs: e.docs}).List(context.Background(), audit.Filter{Subject: aliceUser})
	must(t, err)
	count := map[string]int{}
	for _, en := range entries {
		count[en.Action]++
	}
	if count[audit.ActionExportRequested] != 1 || count[audit.ActionExportReady] != 1 || count[audit.ActionExportDownloaded] != 2 {
		t.Errorf("audit actions = %v", count)
	}
	// A new request after done is a new export.
	if r := e.do("POST", "/v1/me/export", alice, "", nil); r.status != http.StatusAccepted || r.body["id"] == id {
		t.Errorf("POST after done: %d %v, want a new export", r.status, r.body)
	}
}

func TestExportStatusAndDownloadEdges(t *testing.T) {
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20})
	tok := e.token("alice")
	for _, tc := range []struct{ name, path string }{
		{"malformed id", "/v1/me/export/xyz"},
		{"unknown id", "/v1/me/export/" + records.NewExportID()},
	} {
		if r := e.do("GET", tc.path, tok, "", nil); r.status != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", tc.name, r.status)
		}
	}
	if r := e.do("POST", "/v1/me/export", "", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("POST without token: %d", r.status)
	}
	// Without a URL key, downloads are off and no URL is handed out.
	if status, code, _, _ := e.download("/v1/me/export/"+records.NewExportID()+"/download?expires=1&sig=00", tok); status != http.StatusNotImplemented || code != "not_configured" {
		t.Errorf("download without a key: %d %q", status, code)
	}
	// A bus that is down: 503, and asking again republishes the same
	// export (the event id is derived from it).
	e.bus.setFail(io.ErrClosedPipe)
	if r := e.do("POST", "/v1/me/export", tok, "", nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("POST with the bus down: %d", r.status)
	}
	e.bus.setFail(nil)
	r := e.do("POST", "/v1/me/export", tok, "", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST again: %d", r.status)
	}
	pub := e.bus.published()
	if len(pub) != 1 || pub[0].Type() != events.TypeUserExportRequested {
		t.Fatalf("published %d events", len(pub))
	}
	var in events.UserExportRequested
	must(t, e.events.Decode(pub[0], &in))
	if in.RequestID != r.body["id"] || in.User != e.pseudo.User("alice") {
		t.Errorf("event = %+v", in)
	}
	// An erased account cannot ask.
	must(t, e.docs.Put(context.Background(), docsTombstone(e.pseudo.User("carol"))))
	if r := e.do("POST", "/v1/me/export", e.token("carol"), "", nil); r.status != http.StatusGone {
		t.Errorf("tombstoned POST: %d, want 410", r.status)
	}
}

func unzipChecked(t *testing.T, body []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatalf("the download is not a ZIP: %v", err)
	}
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		must(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		must(t, err)
		files[f.Name] = b
	}
	var m export.Manifest
	if err := json.Unmarshal(files[export.FileManifest], &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	listed := map[string]bool{}
	audio := 0
	for _, mf := range m.Files {
		b, ok := files[mf.Path]
		sum := sha256.Sum256(b)
		if !ok || hex.EncodeToString(sum[:]) != mf.SHA256 || int64(len(b)) != mf.Size {
			t.Errorf("manifest entry %s: absent or not matching its SHA-256/size", mf.Path)
		}
		listed[mf.Path] = true
		if strings.HasPrefix(mf.Path, export.AudioDir) {
			audio++
		}
	}
	for name := range files {
		if name != export.FileManifest && !listed[name] {
			t.Errorf("%s is not in the manifest", name)
		}
	}
	if audio == 0 {
		t.Error("the manifest lists no audio")
	}
	return files
}

func mustSeal(t *testing.T, k *keys.Keyring, user, text string, ad []byte) []byte {
	t.Helper()
	ct, err := k.Seal(context.Background(), user, []byte(text), ad)
	must(t, err)
	return ct
}

// hmacFor signs a download URL as the edge does (the documented scheme).
func hmacFor(key []byte, user, id string, expires int64) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("lethe-export-download/v1|" + user + "|" + id + "|" + strconv.FormatInt(expires, 10)))
	return m.Sum(nil)
}

func docsTombstone(user string) docs.Doc {
	return docs.Doc{Key: records.TombstoneKey(user), Data: []byte(`{}`)}
}

// TestErasureTakesNotesAndExports: notes and export archives live under the
// user, so the erasure takes them; a late export event is dropped.
func TestErasureTakesNotesAndExports(t *testing.T) {
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, exportKey: randomBytes(t, 32)})
	alice, bob := e.token("alice"), e.token("bob")
	aliceUser := e.pseudo.User("alice")
	w := &export.Worker{Docs: e.docs, Blobs: e.blobs, Keys: e.keys, Events: e.events, Defaults: records.Retention{ExportDays: 1}}
	if r := e.do("PUT", "/v1/conversations/c1/chunks/0", alice, "audio/wav", tone(440, 300)); r.status != http.StatusAccepted {
		t.Fatalf("upload: %d", r.status)
	}
	for _, tok := range []string{alice, bob} {
		if r := e.do("POST", "/v1/notes", tok, "application/json", noteBody([]byte("sealed by the client"))); r.status != http.StatusCreated {
			t.Fatalf("POST note: %d", r.status)
		}
	}
	r := e.do("POST", "/v1/me/export", alice, "", nil)
	id, _ := r.body["id"].(string)
	e.runExports(w)
	dl, _ := e.do("GET", "/v1/me/export/"+id, alice, "", nil).body["download_url"].(string)
	if dl == "" {
		t.Fatal("no download URL")
	}

	r = e.do("DELETE", "/v1/me", alice, "", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("DELETE /v1/me: %d", r.status)
	}
	if _, err := e.saga.Run(t.Context(), r.body["id"].(string)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/notes"}, {"POST", "/v1/me/export"}, {"GET", "/v1/me/export/" + id}, {"GET", dl},
	} {
		if r := e.do(c.method, c.path, alice, "", nil); r.status != http.StatusGone {
			t.Errorf("%s %s after erasure: %d, want 410", c.method, c.path, r.status)
		}
	}
	for _, coll := range []string{records.Notes, records.Exports} {
		found, err := e.docs.Query(context.Background(), docs.Query{User: aliceUser, Collection: coll})
		must(t, err)
		if len(found) != 0 {
			t.Errorf("%d %s documents of alice survive the erasure", len(found), coll)
		}
	}
	if left, err := e.blobs.List(context.Background(), records.ExportPrefix(aliceUser, "")); err != nil || len(left) != 0 {
		t.Errorf("export archives after erasure: %v %v", left, err)
	}
	// A late (redelivered) export event for the erased user is dropped.
	for _, ev := range e.bus.published() {
		if ev.Type() == events.TypeUserExportRequested {
			if err := w.Handle(context.Background(), ev); !errors.Is(err, events.ErrDropped) {
				t.Errorf("late export event: %v, want dropped", err)
			}
		}
	}
	if r := e.do("GET", "/v1/notes", bob, "", nil); len(r.body["notes"].([]any)) != 1 {
		t.Error("bob's note went with alice's erasure")
	}
}
