package pineconevectors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/vectors"
	"github.com/lethe-dev/lethe/infra/vectors/vectortest"
	"github.com/pinecone-io/go-pinecone/v5/pinecone"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

const testAPIKey = "test-key-not-secret"

// grpcBridge is a gRPC server speaking Pinecone's data plane protocol
// (the SDK's own generated message types, found in the protobuf registry)
// in front of a FakeDataPlane, so the SDK data plane runs over real gRPC.
type grpcBridge struct{ dp *FakeDataPlane }

var bridgeMethods = map[string][2]protoreflect.FullName{
	"/VectorService/Upsert":            {"UpsertRequest", "UpsertResponse"},
	"/VectorService/Query":             {"QueryRequest", "QueryResponse"},
	"/VectorService/List":              {"ListRequest", "ListResponse"},
	"/VectorService/Delete":            {"DeleteRequest", "DeleteResponse"},
	"/VectorService/DeleteNamespace":   {"DeleteNamespaceRequest", "DeleteResponse"},
	"/VectorService/DescribeNamespace": {"DescribeNamespaceRequest", "NamespaceDescription"},
}

func startBridge(t *testing.T, dp *FakeDataPlane) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &grpcBridge{dp: dp}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(b.handle))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return "http://" + lis.Addr().String() // http: the SDK dials without TLS
}

func (b *grpcBridge) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	names, ok := bridgeMethods[method]
	if !ok {
		return status.Error(codes.Unimplemented, method)
	}
	if md, _ := metadata.FromIncomingContext(stream.Context()); strings.Join(md.Get("api-key"), ",") != testAPIKey {
		return status.Error(codes.Unauthenticated, "missing or wrong Api-Key")
	}
	reqType, err := protoregistry.GlobalTypes.FindMessageByName(names[0])
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	req := reqType.New().Interface()
	if err := stream.RecvMsg(req); err != nil {
		return err
	}
	in, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(req)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	out, err := b.call(stream.Context(), method, in)
	if err != nil {
		return statusOf(err)
	}
	respType, err := protoregistry.GlobalTypes.FindMessageByName(names[1])
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	resp := respType.New().Interface()
	if err := protojson.Unmarshal(out, resp); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return stream.SendMsg(resp)
}

// statusOf maps fake errors to the gRPC codes Pinecone answers with.
func statusOf(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, vectors.ErrInvalid), errors.Is(err, vectors.ErrDimension):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (b *grpcBridge) call(ctx context.Context, method string, in []byte) ([]byte, error) {
	var req struct {
		Namespace       string         `json:"namespace"`
		Vectors         []wireVector   `json:"vectors"`
		Vector          []float32      `json:"vector"`
		TopK            int            `json:"top_k"`
		Filter          map[string]any `json:"filter"`
		IncludeMetadata bool           `json:"include_metadata"`
		Prefix          string         `json:"prefix"`
		Limit           int            `json:"limit"`
		Token           string         `json:"pagination_token"`
		IDs             []string       `json:"ids"`
		DeleteAll       bool           `json:"delete_all"`
	}
	if err := json.Unmarshal(in, &req); err != nil {
		return nil, err
	}
	switch method {
	case "/VectorService/Upsert":
		vs := make([]Vector, len(req.Vectors))
		for i, v := range req.Vectors {
			vs[i] = Vector(v)
		}
		if err := b.dp.Upsert(ctx, req.Namespace, vs); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]any{"upserted_count": len(vs)})
	case "/VectorService/Query":
		if !req.IncludeMetadata {
			return nil, fmt.Errorf("%w: adapter must ask for metadata", vectors.ErrInvalid)
		}
		m, err := b.dp.Query(ctx, req.Namespace, req.Vector, req.TopK, req.Filter)
		if err != nil {
			return nil, err
		}
		type match struct {
			ID       string         `json:"id"`
			Score    float32        `json:"score"`
			Metadata map[string]any `json:"metadata,omitempty"`
		}
		out := []match{}
		for _, x := range m {
			out = append(out, match(x))
		}
		return json.Marshal(map[string]any{"matches": out, "namespace": req.Namespace})
	case "/VectorService/List":
		ids, next, err := b.dp.List(ctx, req.Namespace, req.Prefix, req.Limit, req.Token)
		if err != nil {
			return nil, err
		}
		items := []map[string]string{}
		for _, id := range ids {
			items = append(items, map[string]string{"id": id})
		}
		resp := map[string]any{"vectors": items, "namespace": req.Namespace}
		if next != "" {
			resp["pagination"] = map[string]string{"next": next}
		}
		return json.Marshal(resp)
	case "/VectorService/Delete":
		if req.DeleteAll {
			return nil, fmt.Errorf("%w: adapter never deletes all", vectors.ErrInvalid)
		}
		return []byte("{}"), b.dp.DeleteIDs(ctx, req.Namespace, req.IDs)
	case "/VectorService/DeleteNamespace":
		return []byte("{}"), b.dp.DeleteNamespace(ctx, req.Namespace)
	case "/VectorService/DescribeNamespace":
		n, err := b.dp.NamespaceCount(ctx, req.Namespace)
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]any{"name": req.Namespace, "record_count": n})
	}
	return nil, fmt.Errorf("unexpected method %s", method)
}

func newSDKPlane(t *testing.T, host string) *SDKDataPlane {
	t.Helper()
	client, err := pinecone.NewClient(pinecone.NewClientParams{ApiKey: testAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	dp, err := NewSDKDataPlane(client, host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	return dp
}

type sdkHarness struct{ sdk *SDKDataPlane }

func (h *sdkHarness) MakeIndex(context.Context) (vectors.Index, error) {
	return New(h.sdk, Options{}), nil
}
func (h *sdkHarness) Reopen(_ context.Context, idx vectors.Index) (vectors.Index, error) {
	if err := idx.Close(); err != nil {
		return vectors.Index{}, err
	}
	return New(h.sdk, Options{}), nil
}
func (h *sdkHarness) Capabilities() vectortest.Capabilities {
	return vectortest.Capabilities{Exact: true}
}
func (h *sdkHarness) Close() {}

// TestConformanceOverGRPC runs the suite through the SDK data plane, the
// SDK's gRPC client and a local server in front of the fake: it checks the
// SDK translation and error mapping, not Pinecone itself.
func TestConformanceOverGRPC(t *testing.T) {
	vectortest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (vectortest.Harness, error) {
		return &sdkHarness{sdk: newSDKPlane(t, startBridge(t, NewFakeDataPlane(0)))}, nil
	})
}

func TestSDKDataPlaneBatchingOverGRPC(t *testing.T) {
	ctx := context.Background()
	fake := NewFakeDataPlane(0)
	idx := New(newSDKPlane(t, startBridge(t, fake)), Options{})
	var recs []vectors.Record
	var ids []string
	for i := range 1000 {
		id := fmt.Sprintf("c%d#%d", i/100, i%100)
		ids = append(ids, id)
		recs = append(recs, vectors.Record{ID: id, Values: []float32{1, float32(i)}, Metadata: map[string]any{"pad": strings.Repeat("p", 5000)}})
	}
	if err := idx.Upsert(ctx, nsA, recs); err != nil {
		t.Fatal(err)
	}
	got, err := idx.ListIDs(ctx, nsA, "")
	if err != nil || len(got) != 1000 {
		t.Fatalf("ListIDs: %d ids, %v", len(got), err)
	}
	n, _, maxBytes, refused := countOps(fake.Requests(), "upsert")
	if n < 3 || refused || maxBytes > MaxUpsertBytes {
		t.Fatalf("upserts over gRPC: %d, max %d bytes, refused %v", n, maxBytes, refused)
	}
	if n, _, _, _ := countOps(fake.Requests(), "list"); n != 10 {
		t.Fatalf("list requests over gRPC: %d, want 10", n)
	}
	if err := idx.Delete(ctx, nsA, ids); err != nil {
		t.Fatal(err)
	}
}

func TestSDKDataPlaneSendsAPIKey(t *testing.T) {
	host := startBridge(t, NewFakeDataPlane(0))
	client, err := pinecone.NewClient(pinecone.NewClientParams{ApiKey: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	dp, err := NewSDKDataPlane(client, host)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if _, err := dp.NamespaceCount(context.Background(), nsA); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong key: %v, want Unauthenticated (test is void otherwise)", err)
	}
}

func TestSDKDataPlaneRefusesDefaultNamespace(t *testing.T) {
	dp := newSDKPlane(t, startBridge(t, NewFakeDataPlane(0)))
	for _, ns := range []string{"", vectors.DefaultNamespace} {
		if err := dp.DeleteNamespace(context.Background(), ns); !errors.Is(err, vectors.ErrInvalid) {
			t.Fatalf("DeleteNamespace(%q): %v", ns, err)
		}
	}
	dp.Close()
	if _, err := dp.NamespaceCount(context.Background(), nsA); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestMapError(t *testing.T) {
	for _, tc := range []struct {
		in        error
		want      error
		retryable bool
	}{
		{status.Error(codes.NotFound, "Namespace not found"), ErrNotFound, false},
		{status.Error(codes.InvalidArgument, "Vector dimension 3 does not match the dimension of the index 4"), vectors.ErrDimension, false},
		{status.Error(codes.InvalidArgument, "Metadata size is 50000 bytes"), vectors.ErrInvalid, false},
		{status.Error(codes.ResourceExhausted, "grpc: received message larger than max (5000000 vs. 4194304)"), ErrLimit, false},
		{status.Error(codes.ResourceExhausted, "Request rate limit exceeded"), nil, true},
		{status.Error(codes.Unavailable, "connection refused"), nil, true},
		{status.Error(codes.PermissionDenied, "bad key"), nil, false},
		{context.Canceled, context.Canceled, false},
	} {
		t.Run(tc.in.Error(), func(t *testing.T) {
			got := mapError(fmt.Errorf("call: %w", tc.in))
			if tc.want != nil && !errors.Is(got, tc.want) {
				t.Fatalf("mapError = %v, want %v", got, tc.want)
			}
			if status.Code(got) != status.Code(tc.in) {
				t.Fatalf("status code lost: %v", got)
			}
			if r := IsRetryable(fmt.Errorf("pinecone.Query: %w", got)); r != tc.retryable {
				t.Fatalf("IsRetryable = %v, want %v", r, tc.retryable)
			}
		})
	}
}

// controlPlane answers Pinecone's control plane API (2025-10) the way its
// OpenAPI spec describes: IndexModel JSON, ErrorResponse JSON on errors.
type controlPlane struct {
	mu          sync.Mutex
	exists      bool
	model       map[string]any
	readyAfter  int // describes answered "Initializing" before "Ready"
	createCode  int // status for POST /indexes (0: 201)
	creates     int
	describes   int
	createdBody map[string]any
}

func indexModel(name string, dim int, metric string, ready bool, state string) map[string]any {
	return map[string]any{
		"name": name, "dimension": dim, "metric": metric, "vector_type": "dense",
		"host":                name + "-abc1234.svc.gcp-us-central1-4a9f.pinecone.io",
		"deletion_protection": "enabled",
		"spec":                map[string]any{"serverless": map[string]any{"cloud": "gcp", "region": "us-central1"}},
		"status":              map[string]any{"ready": ready, "state": state},
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": errCode, "message": msg}, "status": code})
}

func (c *controlPlane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Header.Get("Api-Key") != testAPIKey {
		apiError(w, 401, "UNAUTHENTICATED", "Invalid API Key")
		return
	}
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/indexes/"):
		c.describes++
		if !c.exists {
			apiError(w, 404, "NOT_FOUND", "Resource "+strings.TrimPrefix(r.URL.Path, "/indexes/")+" not found")
			return
		}
		m := c.model
		if c.describes <= c.readyAfter {
			m = withKey(m, "status", map[string]any{"ready": false, "state": "Initializing"})
		}
		writeJSON(w, 200, m)
	case r.Method == http.MethodPost && r.URL.Path == "/indexes":
		c.creates++
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &c.createdBody)
		if c.createCode != 0 {
			apiError(w, c.createCode, map[int]string{409: "ALREADY_EXISTS", 403: "FORBIDDEN"}[c.createCode], "refused")
			if c.createCode == 409 {
				c.exists = true
			}
			return
		}
		b := c.createdBody
		spec := b["spec"].(map[string]any)["serverless"].(map[string]any)
		c.model = indexModel(b["name"].(string), int(b["dimension"].(float64)), b["metric"].(string), true, "Ready")
		c.model["spec"] = map[string]any{"serverless": spec}
		c.exists = true
		writeJSON(w, 201, withKey(c.model, "status", map[string]any{"ready": false, "state": "Initializing"}))
	default:
		apiError(w, 404, "NOT_FOUND", "no route")
	}
}

// withKey returns a copy of m with key set to v.
func withKey(m map[string]any, key string, v any) map[string]any {
	out := map[string]any{}
	for k, x := range m {
		out[k] = x
	}
	out[key] = v
	return out
}

func TestEnsureIndex(t *testing.T) {
	const name = "lethe-test"
	for _, tc := range []struct {
		name        string
		cp          *controlPlane
		timeout     time.Duration
		wantHost    bool
		wantCreates int
		wantErr     func(error) bool
	}{
		{name: "creates when absent", cp: &controlPlane{readyAfter: 3}, wantHost: true, wantCreates: 1},
		{name: "existing and ready", cp: &controlPlane{exists: true, model: indexModel(name, 384, "cosine", true, "Ready")}, wantHost: true},
		{name: "existing, still initializing", cp: &controlPlane{exists: true, readyAfter: 2, model: indexModel(name, 384, "cosine", true, "Ready")}, wantHost: true},
		{name: "created concurrently (409)", cp: &controlPlane{createCode: 409, model: indexModel(name, 384, "cosine", true, "Ready")}, wantHost: true, wantCreates: 1},
		{name: "other dimension", cp: &controlPlane{exists: true, model: indexModel(name, 768, "cosine", true, "Ready")}, wantErr: isMismatch},
		{name: "other metric", cp: &controlPlane{exists: true, model: indexModel(name, 384, "dotproduct", true, "Ready")}, wantErr: isMismatch},
		{name: "pod index", cp: &controlPlane{exists: true, model: withKey(indexModel(name, 384, "cosine", true, "Ready"), "spec", map[string]any{"pod": map[string]any{"environment": "us-east1-gcp", "pod_type": "p1.x1", "pods": 1, "replicas": 1, "shards": 1}})}, wantErr: isMismatch},
		{name: "initialization failed", cp: &controlPlane{exists: true, model: indexModel(name, 384, "cosine", false, "InitializationFailed")}, wantErr: func(err error) bool { return strings.Contains(err.Error(), "InitializationFailed") }},
		{name: "never ready", cp: &controlPlane{exists: true, model: indexModel(name, 384, "cosine", false, "Initializing")}, timeout: 200 * time.Millisecond, wantErr: func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }},
		{name: "create refused", cp: &controlPlane{createCode: 403}, wantCreates: 1, wantErr: func(err error) bool { return httpStatus(err) == 403 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.cp)
			defer srv.Close()
			client, err := pinecone.NewClient(pinecone.NewClientParams{ApiKey: testAPIKey, Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			host, err := ensureIndex(ctx, client, name, 384, "gcp", "us-central1", 5*time.Millisecond)
			if tc.wantErr != nil {
				if err == nil || !tc.wantErr(err) {
					t.Fatalf("err = %v", err)
				}
			} else if err != nil {
				t.Fatalf("EnsureIndex: %v", err)
			}
			if tc.wantHost && host != name+"-abc1234.svc.gcp-us-central1-4a9f.pinecone.io" {
				t.Fatalf("host = %q", host)
			}
			tc.cp.mu.Lock()
			defer tc.cp.mu.Unlock()
			if tc.cp.creates != tc.wantCreates {
				t.Fatalf("creates = %d, want %d", tc.cp.creates, tc.wantCreates)
			}
			if tc.wantCreates > 0 {
				b := tc.cp.createdBody
				spec, _ := b["spec"].(map[string]any)["serverless"].(map[string]any)
				if b["name"] != name || b["dimension"] != 384.0 || b["metric"] != "cosine" || b["vector_type"] != "dense" ||
					b["deletion_protection"] != "enabled" || spec["cloud"] != "gcp" || spec["region"] != "us-central1" {
					t.Fatalf("create request = %v", b)
				}
			}
		})
	}
}

func isMismatch(err error) bool {
	var m *IndexMismatchError
	return errors.As(err, &m)
}

func TestEnsureIndexArguments(t *testing.T) {
	client, err := pinecone.NewClient(pinecone.NewClientParams{ApiKey: testAPIKey, Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, dim := range []int{0, -1, MaxDimension + 1} {
		if _, err := EnsureIndex(context.Background(), client, "x", dim, "gcp", "us-central1"); !errors.Is(err, vectors.ErrInvalid) {
			t.Errorf("dim %d: %v", dim, err)
		}
	}
	if _, err := EnsureIndex(context.Background(), client, "", 384, "gcp", "us-central1"); !errors.Is(err, vectors.ErrInvalid) {
		t.Errorf("empty name: %v", err)
	}
}

func TestNewSDKDataPlaneBadHost(t *testing.T) {
	client, err := pinecone.NewClient(pinecone.NewClientParams{ApiKey: testAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"", "unix:///%zz"} {
		if dp, err := NewSDKDataPlane(client, host); err == nil {
			dp.Close()
			t.Errorf("host %q accepted", host)
		}
	}
}
