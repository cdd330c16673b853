package gcsblobs_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs"
	"github.com/lethe-dev/lethe/infra/blobs/gcsblobs/fakegcs"
)

// env is one fake server with one bucket named from t.Name().
type env struct {
	srv    *fakestorage.Server
	name   string
	b      *gcsblobs.Bucket
	client *storage.Client // an independent client, to look behind the adapter
}

func newEnv(t *testing.T, versioned bool, tune func(*gcsblobs.Config)) *env {
	t.Helper()
	srv := fakegcs.Start(t)
	name := fakegcs.BucketName(t)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name, VersioningEnabled: versioned})
	cfg := gcsblobs.Config{Bucket: name, Endpoint: srv.URL()}
	if tune != nil {
		tune(&cfg)
	}
	b, err := gcsblobs.OpenDriver(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	client, err := storage.NewClient(t.Context(), option.WithEndpoint(srv.URL()+"/storage/v1/"), option.WithoutAuthentication(), storage.WithJSONReads())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return &env{srv: srv, name: name, b: b, client: client}
}

func (e *env) write(t *testing.T, key, data string) {
	t.Helper()
	if _, err := e.b.Write(t.Context(), key, strings.NewReader(data), blobs.WriteOptions{}); err != nil {
		t.Fatalf("Write(%q): %v", key, err)
	}
}

// versions lists every generation (live and noncurrent) under prefix, as
// "name@live" or "name@old", straight from the server.
func (e *env) versions(t *testing.T, prefix string) []string {
	t.Helper()
	it := e.client.Bucket(e.name).Objects(t.Context(), &storage.Query{Prefix: prefix, Versions: true})
	var out []string
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		state := "live"
		if !a.Deleted.IsZero() {
			state = "old"
		}
		out = append(out, a.Name+"@"+state)
	}
	slices.Sort(out)
	return out
}

func TestDeletePrefixRemovesNoncurrentVersions(t *testing.T) {
	if !fake.Versioning {
		t.Fatal("the fake lost versioning: this test needs a backend that keeps noncurrent versions")
	}
	e := newEnv(t, true, nil)
	ctx := t.Context()
	e.write(t, "users/u1/audio/a", "v1")
	e.write(t, "users/u1/audio/a", "v2")   // v1 becomes noncurrent
	e.write(t, "users/u1/audio/b", "gone") // deleted: noncurrent only
	if err := e.b.Delete(ctx, "users/u1/audio/b"); err != nil {
		t.Fatal(err)
	}
	e.write(t, "users/u10/audio/a", "other user, v1")
	e.write(t, "users/u10/audio/a", "other user, v2")

	// The setup is what we think: versions exist before the purge.
	want := []string{"users/u1/audio/a@live", "users/u1/audio/a@old", "users/u1/audio/b@old"}
	if got := e.versions(t, "users/u1/"); !slices.Equal(got, want) {
		t.Fatalf("versions before = %v, want %v", got, want)
	}
	n, err := e.b.DeletePrefix(ctx, "users/u1/")
	if err != nil || n != 1 {
		t.Fatalf("DeletePrefix = %d, %v; want 1 live object", n, err)
	}
	if got := e.versions(t, "users/u1/"); len(got) != 0 {
		t.Errorf("versions after DeletePrefix = %v, want none", got)
	}
	if got := e.versions(t, "users/u10/"); !slices.Equal(got, []string{"users/u10/audio/a@live", "users/u10/audio/a@old"}) {
		t.Errorf("other user's versions = %v, want untouched", got)
	}
	// A prefix with only noncurrent versions left: purged, none live.
	e.write(t, "users/u2/x", "x")
	if err := e.b.Delete(ctx, "users/u2/x"); err != nil {
		t.Fatal(err)
	}
	if n, err := e.b.DeletePrefix(ctx, "users/u2/"); err != nil || n != 0 {
		t.Errorf("DeletePrefix(noncurrent only) = %d, %v; want 0", n, err)
	}
	if got := e.versions(t, "users/u2/"); len(got) != 0 {
		t.Errorf("noncurrent versions survived: %v", got)
	}
}

func TestPurgeAndGenerations(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx := t.Context()
	k := "uploads/u1/c1/0000001"
	e.write(t, k, "first")
	g1, err := e.b.Generation(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	e.write(t, k, "second")
	g2, err := e.b.Generation(ctx, k)
	if err != nil || g2 == g1 {
		t.Fatalf("Generation after overwrite = %d, %v (first %d)", g2, err, g1)
	}
	// The notified generation is readable after an overwrite.
	r, a, err := e.b.ReadGeneration(ctx, k, g1)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(r)
	r.Close()
	if string(data) != "first" || a.Size != 5 {
		t.Errorf("ReadGeneration(g1) = %q size %d", data, a.Size)
	}
	// PurgeGeneration leaves no noncurrent copy of that generation.
	if err := e.b.PurgeGeneration(ctx, k, g1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.b.ReadGeneration(ctx, k, g1); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("ReadGeneration(purged) = %v, want ErrNotFound", err)
	}
	if err := e.b.PurgeGeneration(ctx, k, g1); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("second PurgeGeneration = %v, want ErrNotFound", err)
	}
	if got := e.versions(t, k); !slices.Equal(got, []string{k + "@live"}) {
		t.Errorf("versions = %v, want only the live one", got)
	}
	// Delete keeps a noncurrent copy (versioning's point); Purge does not.
	e.write(t, k+"x", "neighbour")
	if err := e.b.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if got := e.versions(t, k); !slices.Contains(got, k+"@old") {
		t.Errorf("versions after Delete = %v, want a noncurrent copy", got)
	}
	if n, err := e.b.Purge(ctx, k); err != nil || n != 1 {
		t.Errorf("Purge = %d, %v; want 1", n, err)
	}
	if got := e.versions(t, k); !slices.Equal(got, []string{k + "x@live"}) {
		t.Errorf("versions after Purge = %v, want only the neighbour", got)
	}
	if _, err := e.b.Purge(ctx, k); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("Purge of nothing = %v, want ErrNotFound", err)
	}
	for _, bad := range []int64{0, -1} {
		if err := e.b.PurgeGeneration(ctx, k, bad); err == nil {
			t.Errorf("PurgeGeneration(gen %d) accepted", bad)
		}
	}
}

func TestDeleteIfGeneration(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := t.Context()
	k := "users/u1/a"
	e.write(t, k, "one")
	g1, _ := e.b.Generation(ctx, k)
	e.write(t, k, "two")
	g2, _ := e.b.Generation(ctx, k)

	err := e.b.DeleteIfGeneration(ctx, k, g1)
	if fake.EnforcesDeleteGenerationMatch {
		if !errors.Is(err, blobs.ErrPrecondition) {
			t.Fatalf("DeleteIfGeneration(stale) = %v, want ErrPrecondition", err)
		}
		if err := e.b.DeleteIfGeneration(ctx, k, g2); err != nil {
			t.Fatalf("DeleteIfGeneration(live) = %v", err)
		}
	} else {
		// The known gap: the fake deletes the live object anyway. If this
		// starts failing the fake learned the precondition: set
		// EnforcesDeleteGenerationMatch.
		if err != nil {
			t.Fatalf("fake refused a stale-generation delete (%v): set fake.EnforcesDeleteGenerationMatch", err)
		}
		if _, err := e.b.Attrs(ctx, k); !errors.Is(err, blobs.ErrNotFound) {
			t.Fatalf("fake kept the object after a stale-generation delete: set fake.EnforcesDeleteGenerationMatch")
		}
	}
	if _, err := e.b.Attrs(ctx, k); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("object survived DeleteIfGeneration(live): %v", err)
	}
	if err := e.b.DeleteIfGeneration(ctx, k, g2); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("DeleteIfGeneration(absent) = %v, want ErrNotFound", err)
	}
	if err := e.b.DeleteIfGeneration(ctx, "../x", g2); !errors.Is(err, blobs.ErrInvalidKey) {
		t.Errorf("DeleteIfGeneration(../x) = %v, want ErrInvalidKey", err)
	}
}

// corruptingTransport flips one byte of the object data in every upload
// request after the client computed its checksum: corruption in transit.
type corruptingTransport struct {
	marker []byte
	hits   atomic.Int32
	// declared is set when an upload's metadata declares this crc32c.
	declaredCRC string
	declared    atomic.Bool
}

func (c *corruptingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && strings.HasPrefix(r.URL.Path, "/upload/") && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
		body, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		if c.declaredCRC != "" && bytes.Contains(body, []byte(`"crc32c":"`+c.declaredCRC+`"`)) {
			c.declared.Store(true)
		}
		if i := bytes.Index(body, c.marker); i >= 0 {
			body[i] ^= 0x01
			c.hits.Add(1)
		}
		r = r.Clone(r.Context())
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		r.ContentLength = int64(len(body))
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestCorruptionInTransitRejected(t *testing.T) {
	cases := []struct {
		name string
		// serverChecks: the backend itself refuses the upload (else the
		// adapter's post-write comparison must catch it).
		serverChecks bool
		size         int
		tune         func(*gcsblobs.Config)
	}{
		{"SingleShot", fake.ChecksSingleShotCRC32C, 100 << 10, nil},
		{"Streaming", fake.ChecksResumableCRC32C, 700 << 10, func(c *gcsblobs.Config) { c.SingleShotMax = 64 << 10; c.ChunkSize = 256 << 10 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			clean := newEnv(t, true, tc.tune)
			marker := []byte("CORRUPT-ME-" + tc.name)
			data := bytes.Repeat([]byte("x"), tc.size)
			copy(data[len(data)-len(marker)-10:], marker) // in the last chunk
			var crc [4]byte
			binary.BigEndian.PutUint32(crc[:], crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
			ct := &corruptingTransport{marker: marker, declaredCRC: base64.StdEncoding.EncodeToString(crc[:])}
			cfg := gcsblobs.Config{
				Bucket:        clean.name,
				Endpoint:      clean.srv.URL(),
				ClientOptions: []option.ClientOption{option.WithHTTPClient(&http.Client{Transport: ct})},
			}
			if tc.tune != nil {
				tc.tune(&cfg)
			}
			b, err := gcsblobs.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			// An existing object under the key must survive a corrupted
			// overwrite where the backend checks before storing.
			clean.write(t, "users/u1/kept", "old")
			for _, key := range []string{"users/u1/new", "users/u1/kept"} {
				_, err := b.Write(ctx, key, bytes.NewReader(data), blobs.WriteOptions{})
				if err == nil {
					t.Fatalf("Write(%s) of corrupted bytes succeeded", key)
				}
			}
			if ct.hits.Load() == 0 {
				t.Fatal("the transport corrupted nothing: test is broken")
			}
			// One-request uploads declare the CRC32C of the caller's bytes
			// in the object resource, before any data.
			if tc.name == "SingleShot" && !ct.declared.Load() {
				t.Error("single-shot upload did not declare the data's crc32c")
			}
			if _, err := clean.b.Attrs(ctx, "users/u1/new"); !errors.Is(err, blobs.ErrNotFound) {
				t.Errorf("corrupted new object stored: %v", err)
			}
			if tc.serverChecks {
				r, _, err := clean.b.Read(ctx, "users/u1/kept")
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(r)
				r.Close()
				if string(got) != "old" {
					t.Errorf("kept object = %d bytes, want the old one intact", len(got))
				}
			}
			// No generation anywhere holds the corrupted bytes.
			for _, v := range clean.versions(t, "users/u1/") {
				name := strings.TrimSuffix(strings.TrimSuffix(v, "@live"), "@old")
				it := clean.client.Bucket(clean.name).Objects(ctx, &storage.Query{Prefix: name, Versions: true})
				for {
					a, err := it.Next()
					if errors.Is(err, iterator.Done) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if a.Size == int64(tc.size) {
						t.Errorf("%s generation %d of the corrupted size survived", a.Name, a.Generation)
					}
				}
			}
			// The same bytes through a clean client are stored.
			if _, err := clean.b.Write(ctx, "users/u1/new", bytes.NewReader(data), blobs.WriteOptions{}); err != nil {
				t.Errorf("clean Write: %v", err)
			}
		})
	}
}

func TestOpenAndNew(t *testing.T) {
	ctx := t.Context()
	for _, name := range []string{"", "ab", "Upper", "-lead", "trail-", "has/slash", "has.dot", "goog-x", strings.Repeat("a", 64)} {
		if _, err := gcsblobs.Open(ctx, gcsblobs.Config{Bucket: name, Endpoint: "http://127.0.0.1:1"}); err == nil {
			t.Errorf("Open(bucket %q) accepted", name)
		}
	}
	e := newEnv(t, false, nil)
	b := blobs.New(gcsblobs.New(e.client, e.name))
	if _, err := b.Write(ctx, "k", strings.NewReader("v"), blobs.WriteOptions{CreateOnly: true}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// New's Close leaves the caller's client usable.
	if _, err := e.client.Bucket(e.name).Object("k").Attrs(ctx); err != nil {
		t.Errorf("client closed by New's Close: %v", err)
	}
	if _, err := e.b.Write(ctx, "k", strings.NewReader("v"), blobs.WriteOptions{CreateOnly: true}); !errors.Is(err, blobs.ErrPrecondition) {
		t.Errorf("CreateOnly across clients = %v, want ErrPrecondition", err)
	}
	// Metadata over Cloud Storage's 8 KiB is refused before any request.
	big := map[string]string{"k": strings.Repeat("v", 8<<10)}
	if _, err := blobs.New(e.b).Write(ctx, "big", strings.NewReader("v"), blobs.WriteOptions{Metadata: big}); err == nil {
		t.Error("Write with 8 KiB+ metadata accepted")
	}
}
