// Package firebaserevoke revokes a Firebase user's refresh tokens (what the
// Admin SDK's revokeRefreshTokens does) through the Identity Toolkit REST
// API: accounts:update with validSince set to now, so every session the
// user signed in before is refused a new ID token. An erased user must not
// be able to sign back in with an old session.
package firebaserevoke

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// DefaultBaseURL is Identity Toolkit's endpoint.
const DefaultBaseURL = "https://identitytoolkit.googleapis.com"

// Scope is the OAuth scope the client's credentials need.
const Scope = "https://www.googleapis.com/auth/cloud-platform"

// Revoker revokes sessions of one Firebase project.
type Revoker struct {
	// Client carries the service account's credentials (oauth2
	// google.DefaultClient in production).
	Client  *http.Client
	Project string
	BaseURL string // default DefaultBaseURL
	Now     func() time.Time
}

// RevokeSessions sets the user's validSince to now. A user unknown to
// Firebase (USER_NOT_FOUND) has no session to revoke: not an error.
func (r *Revoker) RevokeSessions(ctx context.Context, uid string) error {
	base := r.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	body, err := json.Marshal(map[string]string{"localId": uid, "validSince": strconv.FormatInt(now().Unix(), 10)})
	if err != nil {
		return fmt.Errorf("json.Marshal: %w", err)
	}
	u := base + "/v1/projects/" + url.PathEscape(r.Project) + "/accounts:update"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("http.NewRequest: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.Client.Do(req)
	if err != nil {
		return fmt.Errorf("identitytoolkit accounts:update: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(raw, &e)
	if resp.StatusCode == http.StatusBadRequest && e.Error.Message == "USER_NOT_FOUND" {
		return nil
	}
	// The message is Firebase's error code, never user data.
	return fmt.Errorf("identitytoolkit accounts:update: HTTP %d %s", resp.StatusCode, e.Error.Message)
}
