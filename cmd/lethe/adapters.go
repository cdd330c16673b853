package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/pinecone-io/go-pinecone/v5/pinecone"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"

	"github.com/lethe-dev/lethe/infra/auth"
	"github.com/lethe-dev/lethe/infra/auth/firebaserevoke"
	"github.com/lethe-dev/lethe/infra/auth/jwtverify"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs"
	"github.com/lethe-dev/lethe/infra/breaker"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/firestoredocs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
	"github.com/lethe-dev/lethe/infra/embed/openaiembed"
	"github.com/lethe-dev/lethe/infra/embed/pineconeembed"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/infra/keys/gcpkek"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/memlimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/redislimit"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/infra/stt/deepgram"
	"github.com/lethe-dev/lethe/infra/stt/openaistt"
	"github.com/lethe-dev/lethe/infra/stt/pocketsphinx"
	"github.com/lethe-dev/lethe/infra/vectors"
	"github.com/lethe-dev/lethe/infra/vectors/flatvectors"
	"github.com/lethe-dev/lethe/infra/vectors/pineconevectors"
)

// Each open* picks the adapter of one port from the configuration. The
// returned closer may be nil.

func openDocs(ctx context.Context, cfg Config, paths dataPaths) (docs.Store, error) {
	switch cfg.Documents {
	case "firestore":
		s, err := firestoredocs.Open(ctx, firestoredocs.Config{
			ProjectID: cfg.ProjectID, DatabaseID: cfg.FirestoreDatabase, EmulatorHost: cfg.FirestoreEmulatorHost,
			CallTimeout: cfg.FirestoreTimeout,
		})
		if err != nil {
			return docs.Store{}, fmt.Errorf("firestoredocs.Open (LETHE_DOCUMENTS=firestore): %w", err)
		}
		return s, nil
	default:
		s, err := sqlitedocs.Open(ctx, paths.docs())
		if err != nil {
			return docs.Store{}, fmt.Errorf("sqlitedocs.Open: %w", err)
		}
		return s, nil
	}
}

func openVectors(cfg Config, paths dataPaths) (vectors.Index, io.Closer, error) {
	switch cfg.Vectors {
	case "pinecone":
		pc, err := pinecone.NewClient(pinecone.NewClientParams{ApiKey: cfg.PineconeAPIKey, SourceTag: "lethe"})
		if err != nil {
			return vectors.Index{}, nil, fmt.Errorf("pinecone.NewClient (PINECONE_API_KEY): %w", err)
		}
		dp, err := pineconevectors.NewSDKDataPlane(pc, cfg.PineconeIndexHost)
		if err != nil {
			return vectors.Index{}, nil, fmt.Errorf("pineconevectors.NewSDKDataPlane (LETHE_PINECONE_INDEX_HOST): %w", err)
		}
		return pineconevectors.New(dp, pineconevectors.Options{Dim: embedDim(cfg)}), dp, nil
	default:
		idx, err := flatvectors.Open(paths.vectors())
		if err != nil {
			return vectors.Index{}, nil, fmt.Errorf("flatvectors.Open: %w", err)
		}
		return idx, idx, nil
	}
}

// embedDim is the dimension of the configured embedder's vectors.
func embedDim(cfg Config) int {
	if cfg.Embedder == "hashing" {
		return hashembed.Dim
	}
	return cfg.EmbedDim
}

func openKEK(ctx context.Context, cfg Config, paths dataPaths, kmsOpts ...option.ClientOption) (keys.KEK, error) {
	if cfg.KEK == "file" {
		kek, err := filekek.Open(paths.kek())
		if err != nil {
			return nil, fmt.Errorf("filekek.Open: %w", err)
		}
		return kek, nil
	}
	kek, err := gcpkek.Open(ctx, cfg.KEK, kmsOpts...)
	if err != nil {
		return nil, fmt.Errorf("gcpkek.Open: %w", err)
	}
	return kek, nil
}

func openEmbedder(cfg Config) (embed.Embedder, error) {
	switch cfg.Embedder {
	case "pinecone":
		e, err := pineconeembed.New(pineconeembed.Config{APIKey: cfg.PineconeAPIKey, Dim: cfg.EmbedDim})
		if err != nil {
			return nil, fmt.Errorf("pineconeembed.New: %w", err)
		}
		return e, nil
	case "openai":
		e, err := openaiembed.New(openaiembed.Config{BaseURL: cfg.OpenAIBaseURL, APIKey: cfg.OpenAIAPIKey, Model: cfg.OpenAIEmbedModel, Dim: cfg.EmbedDim})
		if err != nil {
			return nil, fmt.Errorf("openaiembed.New: %w", err)
		}
		return e, nil
	default:
		return hashembed.New(), nil
	}
}

func openSTT(cfg Config, logger *slog.Logger) (stt.Transcriber, error) {
	switch cfg.STT {
	case "deepgram":
		t, err := deepgram.New(deepgram.Config{APIKey: cfg.DeepgramAPIKey})
		if err != nil {
			return nil, fmt.Errorf("deepgram.New: %w", err)
		}
		return withBreaker(cfg, logger, "deepgram", t), nil
	case "openai":
		t, err := openaistt.New(openaistt.Config{BaseURL: cfg.OpenAIBaseURL, APIKey: cfg.OpenAIAPIKey, Model: cfg.OpenAISTTModel})
		if err != nil {
			return nil, fmt.Errorf("openaistt.New: %w", err)
		}
		return withBreaker(cfg, logger, "openai", t), nil
	default:
		ps, err := pocketsphinx.New(pocketsphinx.Config{Keywords: splitList(cfg.STTKeywords)})
		if err != nil {
			return nil, fmt.Errorf("pocketsphinx.New (LETHE_STT_KEYWORDS): %w", err)
		}
		// Say now, not at the first chunk, what to install.
		if err := ps.Check(); err != nil {
			return nil, err
		}
		return ps, nil
	}
}

// openLimiter returns the shared limiter (Redis) behind the fallback policy,
// or the in-process one.
func openLimiter(ctx context.Context, cfg Config) (*ratelimit.Fallback, io.Closer, error) {
	local := memlimit.New(memlimit.Options{})
	if cfg.RateLimit == "memory" {
		return ratelimit.NewFallback(local, local, nil), nil, nil
	}
	rl, err := redislimit.Open(ctx, cfg.RateLimit)
	if err != nil {
		return nil, nil, fmt.Errorf("redislimit.Open (LETHE_RATELIMIT): %w", err)
	}
	return ratelimit.NewFallback(rl, local, nil), rl, nil
}

// openVerifier returns the token verifier: Firebase ID tokens against
// Google's JWKS, or the local issuer's (the same code path).
func (a *app) openVerifier(ctx context.Context, cfg Config) (auth.Verifier, error) {
	if cfg.Auth == "firebase" {
		project := cfg.FirebaseProject
		if project == "" {
			project = cfg.ProjectID
		}
		hc := &http.Client{Timeout: 10 * time.Second}
		keys, err := jwtverify.KeysFromURL(ctx, jwtverify.GoogleSecureTokenJWKSURL, hc)
		if err != nil {
			return nil, fmt.Errorf("jwtverify.KeysFromURL: %w", err)
		}
		v, err := jwtverify.New(jwtverify.Config{Issuer: jwtverify.FirebaseIssuer(project), Audience: project, Keys: keys, RolesClaim: "roles"})
		if err != nil {
			return nil, fmt.Errorf("jwtverify.New: %w", err)
		}
		return v, nil
	}
	v, err := a.issuer.Verifier()
	if err != nil {
		return nil, fmt.Errorf("localissuer.Verifier: %w", err)
	}
	return v, nil
}

// openBlobs opens the blob store; with Cloud Storage it also returns the
// driver (reached through blobs.Bucket.As), for signed uploads.
func openBlobs(ctx context.Context, cfg Config, paths dataPaths) (blobs.Bucket, *gcsblobs.Bucket, error) {
	if cfg.Blobs == "gcs" {
		b, err := gcsblobs.Open(ctx, gcsblobs.Config{Bucket: cfg.GCSBucket, Endpoint: cfg.GCSEndpoint})
		if err != nil {
			return blobs.Bucket{}, nil, fmt.Errorf("gcsblobs.Open (LETHE_BLOBS=gcs): %w", err)
		}
		var d *gcsblobs.Bucket
		b.As(&d)
		return b, d, nil
	}
	b, err := dirblobs.Open(paths.blobs())
	if err != nil {
		return blobs.Bucket{}, nil, fmt.Errorf("dirblobs.Open: %w", err)
	}
	return b, nil, nil
}

// openUploadSigner signs upload URLs with LETHE_GCS_SIGNER_KEY_FILE (a PEM
// key with LETHE_GCS_SIGNER_EMAIL, or a service-account JSON key), or,
// without it, with the storage client's own credentials (IAM signBlob).
func openUploadSigner(cfg Config, bucket *gcsblobs.Bucket) (gcsblobs.UploadSigner, error) {
	u := gcsblobs.UploadSigner{Bucket: bucket}
	if cfg.GCSSignerKey == "" {
		if cfg.GCSSignerEmail != "" {
			return u, errors.New("LETHE_GCS_SIGNER_EMAIL needs LETHE_GCS_SIGNER_KEY_FILE (unset both to sign with the client's credentials)")
		}
		return u, nil
	}
	raw, err := os.ReadFile(cfg.GCSSignerKey)
	if err != nil {
		return u, fmt.Errorf("LETHE_GCS_SIGNER_KEY_FILE: %w", err)
	}
	u.Signer.GoogleAccessID = cfg.GCSSignerEmail
	u.Signer.PrivateKey = raw
	if trimmed := bytes.TrimSpace(raw); len(trimmed) > 0 && trimmed[0] == '{' {
		var key struct {
			ClientEmail string `json:"client_email"`
			PrivateKey  string `json:"private_key"`
		}
		if err := json.Unmarshal(trimmed, &key); err != nil || key.ClientEmail == "" || key.PrivateKey == "" {
			return u, errors.New("LETHE_GCS_SIGNER_KEY_FILE: not a service-account JSON key (client_email, private_key)")
		}
		u.Signer.PrivateKey = []byte(key.PrivateKey)
		if u.Signer.GoogleAccessID == "" {
			u.Signer.GoogleAccessID = key.ClientEmail
		}
	}
	if u.Signer.GoogleAccessID == "" {
		return u, errors.New("LETHE_GCS_SIGNER_EMAIL is required with a PEM LETHE_GCS_SIGNER_KEY_FILE")
	}
	return u, nil
}

// openSessionRevoker revokes Firebase refresh tokens of erased users with
// the service account's own credentials (Identity Toolkit accounts:update).
func openSessionRevoker(ctx context.Context, cfg Config) (*firebaserevoke.Revoker, error) {
	project := cfg.FirebaseProject
	if project == "" {
		project = cfg.ProjectID
	}
	hc, err := google.DefaultClient(ctx, firebaserevoke.Scope)
	if err != nil {
		return nil, fmt.Errorf("google.DefaultClient (session revocation, LETHE_AUTH=firebase): %w", err)
	}
	return &firebaserevoke.Revoker{Client: hc, Project: project}, nil
}

// withBreaker puts a hosted recogniser behind a circuit breaker: while the
// provider is down, messages are redelivered later instead of each one
// spending its retries on it. Changes of state are logged.
func withBreaker(cfg Config, logger *slog.Logger, provider string, t stt.Transcriber) stt.Transcriber {
	b := &breaker.Breaker{
		Threshold: cfg.STTBreakerThreshold, Cooldown: cfg.STTBreakerCooldown, Trips: stt.Unavailable,
		OnChange: func(from, to breaker.State) {
			logger.Warn("speech-to-text circuit", "provider", provider, "from", from.String(), "to", to.String())
		},
	}
	return stt.WithBreaker(t, b)
}
