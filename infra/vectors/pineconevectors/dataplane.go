package pineconevectors

import (
	"context"
	"encoding/json"
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Pinecone's documented limits (serverless, API 2025-10). Sources:
//   - https://docs.pinecone.io/reference/api/database-limits/operation-limits
//     ("Max batch size for records with vectors: 1,000 records, up to 2 MB total")
//   - https://docs.pinecone.io/docs/limits ("Max size for an upsert request is
//     2MB", "Max metadata size per vector is 40 KB", "Max dimensionality for
//     dense vectors is 20,000", "Dense vectors must contain at least one
//     non-zero value", "Max vectors per fetch or delete request is 1,000")
//   - https://docs.pinecone.io/docs/query-data ("Max top_k value 10,000",
//     "Max result size 4MB")
//   - https://docs.pinecone.io/guides/data/list-record-ids ("returns up to
//     100 IDs per page", pagination_token for the next page)
//   - https://docs.pinecone.io/reference/api/database-limits/identifier-limits
//     (record ids up to 512 characters)
//
// Where the docs say "MB" or "KB" without saying which, the stricter decimal
// reading is used, so a request the fake accepts is accepted by Pinecone.
const (
	MaxUpsertRecords = 1000
	MaxUpsertBytes   = 2_000_000
	MaxDeleteIDs     = 1000
	MaxListLimit     = 100
	MaxTopK          = 10_000
	MaxResultBytes   = 4_000_000
	MaxMetadataBytes = 40_000
	MaxDimension     = 20_000
	MaxIDBytes       = 512
)

var (
	// ErrNotFound: the namespace does not exist. Pinecone answers NOT_FOUND
	// when deleting from or describing an absent namespace; the adapter
	// treats it as "nothing there".
	ErrNotFound = errors.New("pineconevectors: namespace not found")
	// ErrLimit: a request exceeds one of Pinecone's limits above. Data plane
	// errors carrying it also wrap vectors.ErrInvalid.
	ErrLimit = errors.New("pineconevectors: request exceeds a Pinecone limit")
)

// Vector is one record as sent to Pinecone. Metadata numbers are float64
// (Pinecone stores every number as a double).
type Vector struct {
	ID       string
	Values   []float32
	Metadata map[string]any
}

// ScoredVector is one query match.
type ScoredVector struct {
	ID       string
	Score    float32
	Metadata map[string]any
}

// DataPlane is the part of Pinecone's (gRPC) data plane the adapter uses,
// narrowed so that a fake can stand in for it. Implementations wrap
// ErrNotFound for an absent namespace, vectors.ErrDimension for a vector
// whose length differs from the index's, and vectors.ErrInvalid (plus
// ErrLimit for size limits) for requests Pinecone refuses as invalid.
// Namespace is never empty.
type DataPlane interface {
	// Upsert writes up to MaxUpsertRecords vectors in one request of at
	// most MaxUpsertBytes.
	Upsert(ctx context.Context, namespace string, vecs []Vector) error
	// Query returns up to topK matches with metadata, best first. filter is
	// Pinecone's filter language ({"field": {"$op": value}}, "$and", ...);
	// nil means none.
	Query(ctx context.Context, namespace string, values []float32, topK int, filter map[string]any) ([]ScoredVector, error)
	// List returns one page of ids with the prefix (limit ≤ MaxListLimit)
	// and the token for the next page, "" after the last.
	List(ctx context.Context, namespace, prefix string, limit int, token string) (ids []string, next string, err error)
	// DeleteIDs deletes up to MaxDeleteIDs ids; absent ids are ignored.
	DeleteIDs(ctx context.Context, namespace string, ids []string) error
	// DeleteNamespace deletes the namespace and every record in it.
	DeleteNamespace(ctx context.Context, namespace string) error
	// NamespaceCount returns the number of records in the namespace.
	NamespaceCount(ctx context.Context, namespace string) (int, error)
}

// wireVector is a record in the REST upsert body.
type wireVector struct {
	ID       string         `json:"id"`
	Values   []float32      `json:"values"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// vectorSizes returns a record's size in the REST (JSON) and the gRPC
// (protobuf) upsert request. Which encoding Pinecone's 2 MB limit counts is
// not documented, so callers hold requests within the limit in both.
func vectorSizes(v Vector) (jsonBytes, protoBytes int, err error) {
	j, err := json.Marshal(wireVector(v))
	if err != nil {
		return 0, 0, err
	}
	// Vector message: id = 1, values = 2 (packed float), metadata = 3.
	p := protowire.SizeTag(1) + protowire.SizeBytes(len(v.ID)) +
		protowire.SizeTag(2) + protowire.SizeBytes(4*len(v.Values))
	if len(v.Metadata) > 0 {
		s, err := structpb.NewStruct(v.Metadata)
		if err != nil {
			return 0, 0, err
		}
		p += protowire.SizeTag(3) + protowire.SizeBytes(proto.Size(s))
	}
	return len(j), p, nil
}
