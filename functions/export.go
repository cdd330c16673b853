package functions

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/security"
)

// Export: POST starts an asynchronous build (the export worker), GET reports
// its state and, once done, a short-lived download URL. The URL is served
// here, not signed on Cloud Storage: the archive is sealed at rest, so a
// bucket URL could only hand out ciphertext. The download needs both the
// URL's HMAC signature (binding user, export and expiry) and the owner's
// bearer token, so a leaked URL is useless to anyone else and after expiry.

// DefaultExportURLTTL is a download URL's lifetime when Deps leaves it zero.
const DefaultExportURLTTL = 15 * time.Minute

// maxSealedExport bounds the sealed archive read back for a download.
const maxSealedExport = 2 << 30

// routeExport registers the export API.
func (s *Server) routeExport() {
	s.mux.Handle("POST /v1/me/export", s.authed(s.requestExport))
	s.mux.Handle("GET /v1/me/export/{id}", s.authed(s.getExport))
	s.mux.Handle("GET /v1/me/export/{id}/download", s.authed(s.downloadExport))
}

type exportManifest struct {
	ArchiveSHA256 string         `json:"archive_sha256"`
	ArchiveSize   int64          `json:"archive_size"`
	Files         int            `json:"files"`
	Counts        map[string]int `json:"counts"`
}

type exportView struct {
	ID           string          `json:"id"`
	State        string          `json:"state"`
	CreatedAt    time.Time       `json:"created_at"`
	DownloadURL  string          `json:"download_url,omitempty"`
	URLExpiresAt *time.Time      `json:"url_expires_at,omitempty"`
	ExpiresAt    *time.Time      `json:"expires_at,omitempty"`
	Manifest     *exportManifest `json:"manifest,omitempty"`
	Error        string          `json:"error,omitempty"`
}

// requestExport answers 202 with the export's id. While one export is
// pending or running, asking again answers that one (and republishes its
// event, with the same id, in case the first publish was lost).
func (s *Server) requestExport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	if gone, err := records.Tombstoned(ctx, s.d.Docs, user); err != nil {
		s.unavailable(w, r, "records.Tombstoned", err)
		return
	} else if gone {
		writeError(w, http.StatusGone, "account_erased", "this account was erased")
		return
	}
	x, created, err := records.RequestExport(ctx, s.d.Docs, user, audit.UserActor(user), s.d.Now())
	if err != nil {
		s.unavailable(w, r, "records.RequestExport", err)
		return
	}
	if created {
		if _, err := s.auditLog().Append(ctx, audit.Entry{
			Actor: audit.UserActor(user), Action: audit.ActionExportRequested, Subject: user, Ref: "exports/" + x.ID,
		}); err != nil {
			// No export without its entry: undo, so the retry starts over.
			_ = s.d.Docs.Delete(ctx, records.ExportKey(user, x.ID))
			s.unavailable(w, r, "audit.Append", err)
			return
		}
	}
	ev, err := records.ExportRequestedEvent(s.d.Events, user, x)
	if err != nil {
		s.unavailable(w, r, "records.ExportRequestedEvent", err)
		return
	}
	if err := s.d.Bus.Publish(ctx, events.TopicLifecycle, ev); err != nil {
		// The export stays pending; asking again republishes.
		s.unavailable(w, r, "bus.Publish export", err)
		return
	}
	writeJSON(w, http.StatusAccepted, exportView{ID: x.ID, State: x.State, CreatedAt: x.CreatedAt})
}

// getExport reports an export; another user's id is answered as missing.
func (s *Server) getExport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	x, ok := s.readExport(w, r, user)
	if !ok {
		return
	}
	view := exportView{ID: x.ID, State: x.State, CreatedAt: x.CreatedAt, Error: x.Error}
	if x.State == records.ExportDone {
		view.Manifest = &exportManifest{x.ArchiveSHA256, x.ArchiveSize, x.Files, x.Counts}
		if !x.ExpiresAt.IsZero() {
			view.ExpiresAt = &x.ExpiresAt
		}
		if len(s.d.ExportURLKey) > 0 {
			exp := s.d.Now().Add(s.exportURLTTL()).Truncate(time.Second).UTC()
			if !x.ExpiresAt.IsZero() && exp.After(x.ExpiresAt) {
				exp = x.ExpiresAt.Truncate(time.Second)
			}
			view.DownloadURL = exportDownloadPath(s.d.ExportURLKey, user, x.ID, exp.Unix())
			view.URLExpiresAt = &exp
		}
	}
	writeJSON(w, http.StatusOK, view)
}

// downloadExport streams the decrypted archive to its owner, given a URL
// from getExport that has not expired. 403 invalid_signature: the URL was
// not issued for this caller and export (or was altered); 410 url_expired:
// it was, but its time is up (ask GET /v1/me/export/{id} for a new one).
func (s *Server) downloadExport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := callerFrom(ctx).user
	if len(s.d.ExportURLKey) == 0 {
		writeError(w, http.StatusNotImplemented, "not_configured", "export downloads are not configured")
		return
	}
	id := r.PathValue("id")
	q := r.URL.Query()
	expires, err := strconv.ParseInt(q.Get("expires"), 10, 64)
	sig, herr := hex.DecodeString(q.Get("sig"))
	if err != nil || herr != nil || len(sig) != sha256.Size || !records.ValidExportID(id) ||
		!hmac.Equal(sig, exportSignature(s.d.ExportURLKey, user, id, expires)) {
		s.d.Logger.WarnContext(ctx, "rejected export URL", "security_event", "bad_signature")
		s.securityEvent(r, security.SignatureFailure, "export_url", callerFrom(ctx).uid)
		writeError(w, http.StatusForbidden, "invalid_signature", "this download URL is not valid for this account")
		return
	}
	if s.d.Now().Unix() > expires {
		writeError(w, http.StatusGone, "url_expired", "this download URL has expired; ask for a new one")
		return
	}
	x, ok := s.readExport(w, r, user)
	if !ok {
		return
	}
	if x.State != records.ExportDone {
		writeError(w, http.StatusConflict, "not_ready", "the export is not ready")
		return
	}
	rc, _, err := s.d.Blobs.Read(ctx, x.BlobKey)
	if errors.Is(err, blobs.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "the archive is gone (expired)")
		return
	}
	if err != nil {
		s.unavailable(w, r, "blobs.Read export", err)
		return
	}
	sealed, err := io.ReadAll(io.LimitReader(rc, maxSealedExport))
	rc.Close()
	if err != nil {
		s.unavailable(w, r, "blobs.Read export", err)
		return
	}
	zip, err := s.d.Keys.Open(ctx, user, sealed, records.ExportAD(user, x.BlobKey))
	if err != nil {
		s.keyError(w, r, "keys.Open export", err)
		return
	}
	if sum := sha256.Sum256(zip); hex.EncodeToString(sum[:]) != x.ArchiveSHA256 {
		s.unavailable(w, r, "export digest", errors.New("archive does not match its record"))
		return
	}
	if _, err := s.auditLog().Append(ctx, audit.Entry{
		Actor: audit.UserActor(user), Action: audit.ActionExportDownloaded, Subject: user, Ref: "exports/" + x.ID,
	}); err != nil {
		s.unavailable(w, r, "audit.Append", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/zip")
	h.Set("Content-Disposition", `attachment; filename="lethe-export-`+x.ID+`.zip"`)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(zip)
}

// readExport reads the caller's export {id}, answering 404 when it is not
// theirs or not there.
func (s *Server) readExport(w http.ResponseWriter, r *http.Request, user string) (records.Export, bool) {
	id := r.PathValue("id")
	if !records.ValidExportID(id) {
		writeError(w, http.StatusNotFound, "not_found", "no such export")
		return records.Export{}, false
	}
	d, err := s.d.Docs.Get(r.Context(), records.ExportKey(user, id))
	if errors.Is(err, docs.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no such export")
		return records.Export{}, false
	}
	if err != nil {
		s.unavailable(w, r, "docs.Get export", err)
		return records.Export{}, false
	}
	x, err := records.ExportFrom(d)
	if err != nil {
		s.unavailable(w, r, "records.ExportFrom", err)
		return records.Export{}, false
	}
	return x, true
}

func (s *Server) exportURLTTL() time.Duration {
	if s.d.ExportURLTTL > 0 {
		return s.d.ExportURLTTL
	}
	return DefaultExportURLTTL
}

// exportSignature is HMAC-SHA256 over user, export and expiry (unix
// seconds), domain-separated from any other use of the key.
func exportSignature(key []byte, user, id string, expires int64) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("lethe-export-download/v1|" + user + "|" + id + "|" + strconv.FormatInt(expires, 10)))
	return m.Sum(nil)
}

// exportDownloadPath is the download URL, relative to the API's base.
func exportDownloadPath(key []byte, user, id string, expires int64) string {
	v := url.Values{}
	v.Set("expires", strconv.FormatInt(expires, 10))
	v.Set("sig", hex.EncodeToString(exportSignature(key, user, id, expires)))
	return "/v1/me/export/" + id + "/download?" + v.Encode()
}
