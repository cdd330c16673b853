// Package processing builds the record of processing activities (GDPR
// art. 30) of one install from its running configuration: which personal
// data goes to which store and provider, for what purpose, protected how,
// kept how long. It is generated, not written, so it cannot drift from
// the adapters and retention actually in use.
package processing

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/app/records"
)

// Settings is what the record depends on: the chosen adapters and the
// retention in force. cmd/lethe fills it from its Config.
type Settings struct {
	Env       string
	Documents string // sqlite or firestore
	Blobs     string // dir or gcs
	Vectors   string // flat or pinecone
	STT       string // pocketsphinx, deepgram or openai
	Embedder  string // hashing, pinecone or openai
	KEK       string // file or gcpkms://...
	RateLimit string // memory or redis://...
	Auth      string // local or firebase
	Bus       string // embedded or gcp

	DataDir         string
	GCSBucket       string
	ProjectID       string
	OpenAIBaseURL   string
	OpenAISTTModel  string
	OpenAIEmbedding string
	ErasureJournal  string // where the erasure journal lives

	// Retention is the policy of users who set none.
	Retention    records.Retention
	ExportURLTTL time.Duration
	UploadURLTTL time.Duration
	RateWindow   time.Duration // the longest rate-limit window
}

// Recipient is a store or provider that receives the data.
type Recipient struct {
	Name string `json:"name"`
	// Role: "store" (holds the data), "processor" (a provider that
	// receives it to do a job), or "local" (runs in this process).
	Role       string `json:"role"`
	Adapter    string `json:"adapter"`
	Receives   string `json:"receives"`
	Protection string `json:"protection"`
}

// Activity is one purpose of processing.
type Activity struct {
	Name       string      `json:"name"`
	Purpose    string      `json:"purpose"`
	Data       []string    `json:"personal_data"`
	Recipients []Recipient `json:"recipients"`
	Retention  string      `json:"retention"`
}

// Record is the whole record.
type Record struct {
	Controller string     `json:"controller"`
	Subjects   string     `json:"data_subjects"`
	Env        string     `json:"environment"`
	Activities []Activity `json:"activities"`
	Erasure    string     `json:"erasure"`
	Transfers  string     `json:"transfers"`
}

func days(n int) string {
	switch n {
	case 0:
		return "deleted at the first retention sweep after it is processed"
	case 1:
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}

// Build makes the record of s.
func Build(s Settings) Record {
	r := Record{
		Controller: "the operator of this install (fill in name and contact in your own records)",
		Subjects:   "users of the app who record voice memories, identified only by a keyed pseudonym of their account id",
		Env:        s.Env,
		Erasure: "on request (DELETE /v1/me, DELETE /v1/admin/users/{uid}, lethe users erase): tombstone, crypto-shred of the user's keyset, " +
			"deletion in every store below, verification, receipt. The erasure is journaled (pseudonym only) at " + s.ErasureJournal +
			", outside backups, and replayed after any restore (lethe erasures reapply).",
	}
	docStore := Recipient{Name: "SQLite file " + s.DataDir + "/docs.db", Role: "store", Adapter: "sqlite",
		Protection: "content sealed with the user's own AES-256-GCM key; secure_delete on"}
	if s.Documents == "firestore" {
		docStore = Recipient{Name: "Google Cloud Firestore (project " + s.ProjectID + ")", Role: "store", Adapter: "firestore",
			Protection: "content sealed with the user's own AES-256-GCM key; Google encryption at rest; point-in-time recovery (7 days)"}
	}
	blobStore := Recipient{Name: "directory " + s.DataDir + "/blobs", Role: "store", Adapter: "dir",
		Protection: "sealed with the user's own key; file mode 0600"}
	if s.Blobs == "gcs" {
		blobStore = Recipient{Name: "Google Cloud Storage bucket " + s.GCSBucket, Role: "store", Adapter: "gcs",
			Protection: "sealed with the user's own key; CMEK; uniform access; public access prevented"}
	}
	vecStore := Recipient{Name: "flat vector files " + s.DataDir + "/vectors", Role: "store", Adapter: "flat",
		Protection: "one file per user, unlinked on erasure; vectors cannot be sealed"}
	if s.Vectors == "pinecone" {
		vecStore = Recipient{Name: "Pinecone (serverless index, one namespace per user pseudonym)", Role: "processor", Adapter: "pinecone",
			Protection: "API key; no text in metadata; vectors cannot be sealed; namespace deleted on erasure"}
	}

	stt := Recipient{Name: "CMU PocketSphinx, in this process", Role: "local", Adapter: "pocketsphinx",
		Receives: "audio, decoded in memory", Protection: "never leaves the machine"}
	switch s.STT {
	case "deepgram":
		stt = Recipient{Name: "Deepgram (api.deepgram.com, pre-recorded API, nova-3)", Role: "processor", Adapter: "deepgram",
			Receives: "each chunk's audio (16-bit WAV), no user id", Protection: "TLS; mip_opt_out=true on every request (no model training)"}
	case "openai":
		stt = Recipient{Name: "OpenAI-compatible speech-to-text at " + hostOf(s.OpenAIBaseURL) + " (model " + s.OpenAISTTModel + ")", Role: "processor", Adapter: "openai",
			Receives: "each chunk's audio (WAV), no user id", Protection: "TLS; the provider's account terms govern retention"}
	}
	emb := Recipient{Name: "feature-hashing embedder, in this process", Role: "local", Adapter: "hashing",
		Receives: "transcript text and search queries, in memory", Protection: "never leaves the machine"}
	switch s.Embedder {
	case "pinecone":
		emb = Recipient{Name: "Pinecone Inference (llama-text-embed-v2)", Role: "processor", Adapter: "pinecone",
			Receives: "each transcript segment's text and each search query, no user id", Protection: "TLS; Pinecone's account terms govern retention"}
	case "openai":
		emb = Recipient{Name: "OpenAI-compatible embeddings at " + hostOf(s.OpenAIBaseURL) + " (model " + s.OpenAIEmbedding + ")", Role: "processor", Adapter: "openai",
			Receives: "each transcript segment's text and each search query, no user id", Protection: "TLS; the provider's account terms govern retention"}
	}
	kek := Recipient{Name: "local key file " + s.DataDir + "/keys/kek.json", Role: "store", Adapter: "file",
		Receives: "nothing personal: wraps each user's keyset with the pseudonym as associated data", Protection: "file mode 0600 (development and single-instance installs)"}
	if strings.HasPrefix(s.KEK, "gcpkms://") || strings.HasPrefix(s.KEK, "gcp-kms://") {
		kek = Recipient{Name: "Google Cloud KMS key " + strings.TrimPrefix(strings.TrimPrefix(s.KEK, "gcpkms://"), "gcp-kms://"), Role: "processor", Adapter: "gcpkms",
			Receives: "each user's keyset to wrap or unwrap, with the pseudonym as associated data; never content", Protection: "key material never leaves Cloud KMS; rotation period set in terraform/; lethe keys rewrap re-wraps under the new version"}
	}
	idp := Recipient{Name: "local token issuer (" + s.DataDir + "/auth)", Role: "local", Adapter: "local",
		Receives: "the account id, in tokens it mints", Protection: "development only; refused in production"}
	if s.Auth == "firebase" {
		idp = Recipient{Name: "Firebase Authentication (Google)", Role: "processor", Adapter: "firebase",
			Receives: "the user's sign-in (email or phone, as the app configures it); lethe receives only the uid in a signed token", Protection: "RS256 tokens checked against Google's keys; sessions revoked on erasure"}
	}
	limiter := Recipient{Name: "in-process rate limiter", Role: "local", Adapter: "memory",
		Receives: "the pseudonym and the client address, as counters", Protection: "memory only"}
	if strings.HasPrefix(s.RateLimit, "redis") {
		limiter = Recipient{Name: "Redis (Memorystore) at " + hostOf(s.RateLimit), Role: "store", Adapter: "redis",
			Receives: "the pseudonym and the client address, as counters", Protection: "private network; keys expire with their window"}
	}
	bus := Recipient{Name: "in-process Pub/Sub (pstest)", Role: "local", Adapter: "embedded",
		Receives: "events naming the pseudonym; content in them sealed", Protection: "memory only"}
	if s.Bus == "gcp" {
		bus = Recipient{Name: "Google Cloud Pub/Sub (project " + s.ProjectID + ")", Role: "processor", Adapter: "gcp",
			Receives: "events naming the pseudonym; content in them sealed with the user's key", Protection: "unreadable once the user's key is shredded; dead letters likewise"}
	}

	with := func(rc Recipient, receives string) Recipient {
		if rc.Receives == "" {
			rc.Receives = receives
		}
		return rc
	}
	ret := s.Retention
	uploads := ""
	if s.Blobs == "gcs" {
		uploads = "; signed upload URLs live " + s.UploadURLTTL.String() + ", uploads not yet sealed are removed within a day"
	}
	r.Activities = []Activity{
		{
			Name: "audio capture", Purpose: "receive the user's recordings (app upload, streaming, signed upload) and keep them until transcribed and for the audio retention",
			Data:       []string{"voice recordings (may contain third parties' voices and special-category data)", "conversation ids and chunk times"},
			Recipients: []Recipient{with(blobStore, "sealed audio chunks"), with(docStore, "chunk records (status, sizes, times, keyed digests)")},
			Retention:  "audio: " + days(ret.AudioDays) + " (each user may set their own)" + uploads,
		},
		{
			Name: "transcription", Purpose: "turn recordings into text the user can read and search",
			Data:       []string{"voice recordings", "transcripts"},
			Recipients: []Recipient{stt, with(docStore, "transcript segments, sealed")},
			Retention:  "transcripts: " + days(ret.TranscriptDays) + " (each user may set their own)",
		},
		{
			Name: "search", Purpose: "find the user's memories by what was said",
			Data:       []string{"transcript text", "search queries", "embedding vectors derived from transcripts"},
			Recipients: []Recipient{emb, with(vecStore, "one vector per segment under the user's pseudonym")},
			Retention:  "vectors: " + days(ret.VectorDays) + ", never longer than their transcript; queries are not stored",
		},
		{
			Name: "export", Purpose: "give users their data (data portability)",
			Data:       []string{"everything above about the user, in one archive"},
			Recipients: []Recipient{with(blobStore, "the export archive, sealed")},
			Retention:  "export archives: " + days(ret.ExportDays) + "; download URLs live " + s.ExportURLTTL.String(),
		},
		{
			Name: "notes", Purpose: "keep the user's end-to-end encrypted notes",
			Data:       []string{"note ciphertext made by the app (lethe cannot read it)"},
			Recipients: []Recipient{with(docStore, "the ciphertext, sealed again")},
			Retention:  "until the user deletes the note or the account",
		},
		{
			Name: "accounts and keys", Purpose: "authenticate users and keep each user's data key",
			Data:       []string{"account id (reduced to a keyed pseudonym on arrival)", "the user's wrapped data keyset", "erasure tombstones (pseudonym only)"},
			Recipients: []Recipient{idp, kek, with(docStore, "wrapped keysets and tombstones under the pseudonym")},
			Retention:  "keyset: until erasure (then crypto-shredded); tombstone and erasure journal entry: kept, to refuse the account and re-erase after restores",
		},
		{
			Name: "abuse prevention", Purpose: "rate limits per user and per client address",
			Data:       []string{"pseudonym", "client IP address (rejected tokens only)"},
			Recipients: []Recipient{limiter},
			Retention:  "the limiter's window (" + s.RateWindow.String() + "); forgotten on erasure",
		},
		{
			Name: "audit and operations", Purpose: "prove erasures, exports and admin actions; run the pipeline",
			Data:       []string{"pseudonyms, actions, times and counts (no content)", "log lines with a keyed hash of the uid (no content, tokens or phone numbers)"},
			Recipients: []Recipient{with(docStore, "the audit trail (global collection, kept after erasure)"), bus},
			Retention:  "audit trail: kept as proof (no content); logs: the log sink's retention (operator)",
		},
	}
	var transfers []string
	for _, a := range r.Activities {
		for _, rc := range a.Recipients {
			if rc.Role == "processor" {
				transfers = append(transfers, rc.Name)
			}
		}
	}
	if len(transfers) == 0 {
		r.Transfers = "none: every store and provider runs on this machine"
	} else {
		r.Transfers = "to the processors named above: " + strings.Join(dedupe(transfers), "; ") + " (check each one's data processing terms and region)"
	}
	return r
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// hostOf names the host of a URL without its credentials or path.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable address)"
	}
	return u.Host
}

// Markdown writes r as a Markdown document.
func (r Record) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Record of processing activities\n\nGenerated by `lethe processing-records` from the running configuration (environment: %s).\n\n", r.Env)
	fmt.Fprintf(&b, "- **Controller:** %s\n- **Data subjects:** %s\n- **Erasure:** %s\n- **Transfers:** %s\n", r.Controller, r.Subjects, r.Erasure, r.Transfers)
	for _, a := range r.Activities {
		fmt.Fprintf(&b, "\n## %s\n\n**Purpose:** %s\n\n**Personal data:** %s\n\n**Kept:** %s\n\n", a.Name, a.Purpose, strings.Join(a.Data, "; "), a.Retention)
		b.WriteString("| recipient | role | adapter | receives | protection |\n|---|---|---|---|---|\n")
		for _, rc := range a.Recipients {
			fmt.Fprintf(&b, "| %s | %s | `%s` | %s | %s |\n", cell(rc.Name), rc.Role, rc.Adapter, cell(rc.Receives), cell(rc.Protection))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func cell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
