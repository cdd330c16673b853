package pineconevectors

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lethe-dev/lethe/infra/vectors"
	"github.com/pinecone-io/go-pinecone/v5/pinecone"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// SDKDataPlane implements DataPlane with the Pinecone Go SDK's gRPC data
// plane. All namespaces share one gRPC connection (IndexConnection.
// WithNamespace copies the namespace, not the connection). It is a thin
// translation, tested against a local gRPC server speaking Pinecone's
// protocol, not against a real index.
type SDKDataPlane struct {
	mu     sync.Mutex
	base   *pinecone.IndexConnection
	closed bool
}

var _ DataPlane = (*SDKDataPlane)(nil)

// NewSDKDataPlane connects to the index at host (from DescribeIndex or
// EnsureIndex). The connection is made now, so a bad host fails at start-up.
func NewSDKDataPlane(client *pinecone.Client, host string, dialOpts ...grpc.DialOption) (*SDKDataPlane, error) {
	if client == nil || host == "" {
		return nil, errors.New("pineconevectors: NewSDKDataPlane needs a client and an index host")
	}
	// The SDK calls log.Fatalf when grpc.NewClient refuses the target, so
	// refuse such a host here first, with an error.
	target := strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
	probe, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("pineconevectors: index host: %w", err)
	}
	probe.Close()
	// The namespace given here is never used: every call picks its own.
	base, err := client.Index(pinecone.NewIndexConnParams{Host: host, Namespace: "unused"}, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("pinecone.Client.Index: %w", err)
	}
	return &SDKDataPlane{base: base}, nil
}

// Close closes the gRPC connection.
func (d *SDKDataPlane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.base.Close()
}

func (d *SDKDataPlane) conn(ns string) (*pinecone.IndexConnection, error) {
	if ns == "" || ns == vectors.DefaultNamespace {
		return nil, fmt.Errorf("%w: empty or default namespace", vectors.ErrInvalid)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	return d.base.WithNamespace(ns), nil
}

// Upsert implements DataPlane.
func (d *SDKDataPlane) Upsert(ctx context.Context, ns string, vecs []Vector) error {
	c, err := d.conn(ns)
	if err != nil {
		return err
	}
	in := make([]*pinecone.Vector, len(vecs))
	for i, v := range vecs {
		in[i] = &pinecone.Vector{Id: v.ID, Values: &vecs[i].Values}
		if len(v.Metadata) > 0 {
			s, err := structpb.NewStruct(v.Metadata)
			if err != nil {
				return fmt.Errorf("%w: metadata: %v", vectors.ErrInvalid, err)
			}
			in[i].Metadata = s
		}
	}
	_, err = c.UpsertVectors(ctx, in)
	return mapError(err)
}

// Query implements DataPlane.
func (d *SDKDataPlane) Query(ctx context.Context, ns string, values []float32, topK int, filter map[string]any) ([]ScoredVector, error) {
	c, err := d.conn(ns)
	if err != nil {
		return nil, err
	}
	if topK < 1 || topK > MaxTopK {
		return nil, fmt.Errorf("%w: %w: top_k %d", vectors.ErrInvalid, ErrLimit, topK)
	}
	req := &pinecone.QueryByVectorValuesRequest{Vector: values, TopK: uint32(topK), IncludeMetadata: true}
	if len(filter) > 0 {
		if req.MetadataFilter, err = structpb.NewStruct(filter); err != nil {
			return nil, fmt.Errorf("%w: filter: %v", vectors.ErrInvalid, err)
		}
	}
	res, err := c.QueryByVectorValues(ctx, req)
	if err != nil {
		return nil, mapError(err)
	}
	out := make([]ScoredVector, 0, len(res.Matches))
	for _, m := range res.Matches {
		if m == nil || m.Vector == nil {
			continue
		}
		sv := ScoredVector{ID: m.Vector.Id, Score: m.Score}
		if m.Vector.Metadata != nil {
			sv.Metadata = m.Vector.Metadata.AsMap()
		}
		out = append(out, sv)
	}
	return out, nil
}

// List implements DataPlane.
func (d *SDKDataPlane) List(ctx context.Context, ns, prefix string, limit int, token string) ([]string, string, error) {
	c, err := d.conn(ns)
	if err != nil {
		return nil, "", err
	}
	if limit < 0 || limit > MaxListLimit {
		return nil, "", fmt.Errorf("%w: %w: list limit %d", vectors.ErrInvalid, ErrLimit, limit)
	}
	req := &pinecone.ListVectorsRequest{}
	if prefix != "" {
		req.Prefix = &prefix
	}
	if limit > 0 {
		l := uint32(limit)
		req.Limit = &l
	}
	if token != "" {
		req.PaginationToken = &token
	}
	res, err := c.ListVectors(ctx, req)
	if err != nil {
		return nil, "", mapError(err)
	}
	ids := make([]string, 0, len(res.VectorIds))
	for _, id := range res.VectorIds {
		if id != nil {
			ids = append(ids, *id)
		}
	}
	next := ""
	if res.NextPaginationToken != nil {
		next = *res.NextPaginationToken
	}
	return ids, next, nil
}

// DeleteIDs implements DataPlane.
func (d *SDKDataPlane) DeleteIDs(ctx context.Context, ns string, ids []string) error {
	c, err := d.conn(ns)
	if err != nil {
		return err
	}
	return mapError(c.DeleteVectorsById(ctx, ids))
}

// DeleteNamespace implements DataPlane (serverless DeleteNamespace, which
// removes the namespace itself, not only its records).
func (d *SDKDataPlane) DeleteNamespace(ctx context.Context, ns string) error {
	c, err := d.conn(ns)
	if err != nil {
		return err
	}
	return mapError(c.DeleteNamespace(ctx, ns))
}

// NamespaceCount implements DataPlane with DescribeNamespace, which costs
// one namespace, where DescribeIndexStats lists all of them.
func (d *SDKDataPlane) NamespaceCount(ctx context.Context, ns string) (int, error) {
	c, err := d.conn(ns)
	if err != nil {
		return 0, err
	}
	desc, err := c.DescribeNamespace(ctx, ns)
	if err != nil {
		return 0, mapError(err)
	}
	return int(desc.RecordCount), nil
}

// mapError classifies a gRPC error from the data plane into the sentinels
// DataPlane promises, keeping the original (and its status) wrapped.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := strings.ToLower(st.Message())
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case codes.InvalidArgument, codes.OutOfRange:
		if strings.Contains(msg, "dimension") {
			return fmt.Errorf("%w: %w", vectors.ErrDimension, err)
		}
		return fmt.Errorf("%w: %w", vectors.ErrInvalid, err)
	case codes.ResourceExhausted:
		// gRPC's own message-size refusal, as opposed to a rate limit.
		if strings.Contains(msg, "larger than max") {
			return fmt.Errorf("%w: %w: %w", vectors.ErrInvalid, ErrLimit, err)
		}
	}
	return err
}

// IsRetryable reports whether a data plane error is transient: Pinecone
// unavailable, rate limited (429 → RESOURCE_EXHAUSTED), or aborted.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, ErrLimit) || errors.Is(err, vectors.ErrInvalid) {
		return false
	}
	switch status.Code(err) { // Code finds a status wrapped by fmt.Errorf

	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// IndexMismatchError: an index with the name exists but cannot serve the
// adapter (another dimension or metric, or not serverless).
type IndexMismatchError struct{ Reason string }

func (e *IndexMismatchError) Error() string {
	return "pineconevectors: existing index does not match: " + e.Reason
}

// EnsureIndex creates the serverless cosine index name (dim dimensions,
// in cloud/region, deletion protection on) unless it exists, waits until
// it is ready, and returns its data plane host. An existing index with
// another dimension or metric is an *IndexMismatchError, never altered.
// For `lethe pinecone ensure-index`; uses the control plane (REST).
func EnsureIndex(ctx context.Context, client *pinecone.Client, name string, dim int, cloud, region string) (string, error) {
	return ensureIndex(ctx, client, name, dim, cloud, region, 2*time.Second)
}

func ensureIndex(ctx context.Context, client *pinecone.Client, name string, dim int, cloud, region string, pollEvery time.Duration) (string, error) {
	if dim <= 0 || dim > MaxDimension {
		return "", fmt.Errorf("%w: dimension %d", vectors.ErrInvalid, dim)
	}
	if name == "" || cloud == "" || region == "" {
		return "", fmt.Errorf("%w: index name, cloud and region are required", vectors.ErrInvalid)
	}
	idx, err := client.DescribeIndex(ctx, name)
	if httpStatus(err) == 404 {
		d, metric, prot, vt := int32(dim), pinecone.Cosine, pinecone.DeletionProtectionEnabled, "dense"
		_, err = client.CreateServerlessIndex(ctx, &pinecone.CreateServerlessIndexRequest{
			Name: name, Cloud: pinecone.Cloud(cloud), Region: region,
			Metric: &metric, Dimension: &d, DeletionProtection: &prot, VectorType: &vt,
		})
		// 409: another instance created it first; describe it like any other.
		if err != nil && httpStatus(err) != 409 {
			return "", fmt.Errorf("pinecone.CreateServerlessIndex: %w", err)
		}
		idx, err = nil, nil
	}
	if err != nil {
		return "", fmt.Errorf("pinecone.DescribeIndex: %w", err)
	}
	for {
		if idx == nil {
			if idx, err = client.DescribeIndex(ctx, name); err != nil {
				return "", fmt.Errorf("pinecone.DescribeIndex: %w", err)
			}
		}
		if err := compatible(idx, dim); err != nil {
			return "", err
		}
		if idx.Status != nil {
			switch idx.Status.State {
			case pinecone.InitializationFailed, pinecone.Terminating:
				return "", fmt.Errorf("pineconevectors: index %s is %s", name, idx.Status.State)
			}
			if idx.Status.Ready && idx.Host != "" {
				return idx.Host, nil
			}
		}
		t := time.NewTimer(pollEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("pineconevectors: waiting for index %s to be ready: %w", name, ctx.Err())
		case <-t.C:
		}
		idx = nil
	}
}

func compatible(idx *pinecone.Index, dim int) error {
	switch {
	case idx.Metric != pinecone.Cosine:
		return &IndexMismatchError{Reason: fmt.Sprintf("metric %q, want cosine", idx.Metric)}
	case idx.Dimension == nil || int(*idx.Dimension) != dim:
		got := "none"
		if idx.Dimension != nil {
			got = fmt.Sprint(*idx.Dimension)
		}
		return &IndexMismatchError{Reason: fmt.Sprintf("dimension %s, want %d", got, dim)}
	case idx.VectorType != "" && idx.VectorType != "dense":
		return &IndexMismatchError{Reason: fmt.Sprintf("vector type %q, want dense", idx.VectorType)}
	case idx.Spec == nil || idx.Spec.Serverless == nil:
		return &IndexMismatchError{Reason: "not a serverless index (namespaces must be deletable)"}
	}
	return nil
}

// httpStatus returns the HTTP status of a control plane error, 0 if none.
func httpStatus(err error) int {
	var pe *pinecone.PineconeError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return 0
}
