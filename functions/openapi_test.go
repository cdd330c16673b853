package functions_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/functions/openapi"
	"github.com/lethe-dev/lethe/infra/twiliosig"
)

// The API description (functions/openapi/openapi.yaml) is held to the edge
// that serves it: every route served is described and every described
// operation is served; every JSON request example passes the handler's own
// body schema (sent to a real edge) and the description's; every answer
// the edge gives to the described requests is a documented status whose
// body matches the documented schema.

// specURL is where the description is added to the schema compiler (never
// fetched).
const specURL = "https://lethe.dev/openapi.json"

// notPublicAPI: served patterns the description leaves out on purpose.
func notPublicAPI(pattern string) bool {
	path := pattern
	if _, p, ok := strings.Cut(pattern, " "); ok {
		path = p
	}
	switch {
	case path == "/": // the catch-all: answers 404 not_found
	case path == "/{$}", strings.HasPrefix(path, "/console/"): // the dev console, development only
	case strings.HasPrefix(path, "/push/"): // Pub/Sub push deliveries, OIDC-authenticated, not the user API
	default:
		return false
	}
	return true
}

// openAPIEdge is an edge with every optional route configured.
func openAPIEdge(t *testing.T) *edge {
	t.Helper()
	at := time.Date(2026, 12, 1, 1, 2, 3, 0, time.UTC)
	dl := &fakeDeadLetters{held: map[string][]functions.DeadLetter{events.TopicAudio: {
		{ID: "101", EventType: events.TypeChunkReceived, EventID: "e1", Reason: "permanent: bad chunk", Time: at, Subscription: "transcribe", MessageID: "7"},
	}}}
	return newEdgeWith(t, edgeOptions{
		maxChunk: 1 << 20, uploads: newUploadBucket(t).signer, maxUpload: 8 << 20, ttl: time.Minute,
		exportKey: randomBytes(t, 32), deadLetters: dl,
		twilio: &twilioSetup{tokens: []string{twToken}, sms: &fakeSMS{}},
	})
}

// apiDoc is the description as JSON values (numbers as json.Number), and a
// compiler holding it, so any schema in it can be compiled by pointer.
type apiDoc struct {
	root     map[string]any
	compiler *jsonschema.Compiler
}

func loadAPIDoc(t testing.TB) *apiDoc {
	t.Helper()
	var y any
	if err := yaml.Unmarshal(openapi.Spec(), &y); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	raw, err := json.Marshal(y)
	if err != nil {
		t.Fatalf("openapi.yaml is not JSON-compatible (non-string keys?): %v", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	must(t, err)
	root, ok := v.(map[string]any)
	if !ok {
		t.Fatal("openapi.yaml is not a mapping")
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noFetch{})
	if err := c.AddResource(specURL, v); err != nil {
		t.Fatalf("jsonschema.AddResource: %v", err)
	}
	return &apiDoc{root: root, compiler: c}
}

type noFetch struct{}

func (noFetch) Load(u string) (any, error) { return nil, fmt.Errorf("no fetching %s", u) }

// schema compiles the schema at JSON pointer ptr ("/components/...").
func (d *apiDoc) schema(t testing.TB, ptr string) *jsonschema.Schema {
	t.Helper()
	s, err := d.compiler.Compile(specURL + "#" + ptr)
	if err != nil {
		t.Fatalf("schema %s: %v", ptr, err)
	}
	return s
}

// at returns the value at JSON pointer ptr.
func (d *apiDoc) at(ptr string) (any, bool) {
	var v any = d.root
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return v, true
}

// deref follows a local $ref (of a response, parameter or header) and
// returns the object and its pointer.
func (d *apiDoc) deref(t testing.TB, v any, ptr string) (map[string]any, string) {
	t.Helper()
	for range 8 {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: not an object", ptr)
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return m, ptr
		}
		if !strings.HasPrefix(ref, "#/") {
			t.Fatalf("%s: $ref %q is not local", ptr, ref)
		}
		ptr = ref[1:]
		if v, ok = d.at(ptr); !ok {
			t.Fatalf("$ref %q resolves to nothing", ref)
		}
	}
	t.Fatalf("%s: $ref chain too long", ptr)
	return nil, ""
}

func ptrEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// specOp is one described operation.
type specOp struct {
	method, path string         // "POST", "/v1/search"
	ptr          string         // JSON pointer of the operation
	op           map[string]any // the operation object
	pathItem     map[string]any
}

func (o specOp) String() string { return o.method + " " + o.path }

var specMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

func (d *apiDoc) ops(t testing.TB) []specOp {
	t.Helper()
	paths, ok := d.root["paths"].(map[string]any)
	if !ok || len(paths) == 0 {
		t.Fatal("no paths")
	}
	var out []specOp
	for path, item := range paths {
		pi, ok := item.(map[string]any)
		if !ok {
			t.Fatalf("path %s is not an object", path)
		}
		for _, m := range specMethods {
			if op, ok := pi[m].(map[string]any); ok {
				out = append(out, specOp{strings.ToUpper(m), path, "/paths/" + ptrEscape(path) + "/" + m, op, pi})
			}
		}
	}
	slices.SortFunc(out, func(a, b specOp) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// params are the operation's parameters (path item's and its own),
// dereferenced, by "in:name".
func (d *apiDoc) params(t testing.TB, o specOp) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, src := range []struct {
		list any
		ptr  string
	}{{o.pathItem["parameters"], "/paths/" + ptrEscape(o.path) + "/parameters"}, {o.op["parameters"], o.ptr + "/parameters"}} {
		list, _ := src.list.([]any)
		for i, p := range list {
			pm, _ := d.deref(t, p, fmt.Sprintf("%s/%d", src.ptr, i))
			out[fmt.Sprint(pm["in"])+":"+fmt.Sprint(pm["name"])] = pm
		}
	}
	return out
}

// bearer reports whether the operation's security (its own, else the
// document's) takes the bearer token.
func (d *apiDoc) security(o specOp) []string {
	sec, ok := o.op["security"]
	if !ok {
		sec = d.root["security"]
	}
	var names []string
	list, _ := sec.([]any)
	for _, req := range list {
		for name := range req.(map[string]any) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func TestOpenAPIDocumentIsOpenAPI31(t *testing.T) {
	d := loadAPIDoc(t)
	if d.root["openapi"] != "3.1.0" {
		t.Fatalf("openapi: %v, want 3.1.0", d.root["openapi"])
	}
	info, _ := d.root["info"].(map[string]any)
	if s, _ := info["title"].(string); s == "" {
		t.Error("info.title missing")
	}
	if s, _ := info["version"].(string); s == "" {
		t.Error("info.version missing (a string)")
	}
	comps, _ := d.root["components"].(map[string]any)
	schemes, _ := comps["securitySchemes"].(map[string]any)
	bearer, _ := schemes["bearerAuth"].(map[string]any)
	if bearer["type"] != "http" || bearer["scheme"] != "bearer" || bearer["bearerFormat"] != "JWT" {
		t.Errorf("bearerAuth: %v, want an http bearer JWT scheme", bearer)
	}
	tw, _ := schemes["twilioSignature"].(map[string]any)
	if tw["type"] != "apiKey" || tw["in"] != "header" || tw["name"] != "X-Twilio-Signature" {
		t.Errorf("twilioSignature: %v, want the X-Twilio-Signature header", tw)
	}
	// Every $ref anywhere is local and resolves.
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, found := d.at(strings.TrimPrefix(ref, "#")); !strings.HasPrefix(ref, "#/") || !found {
					t.Errorf("%s: $ref %q does not resolve", at, ref)
				}
			}
			for k, x := range v {
				walk(x, at+"/"+ptrEscape(k))
			}
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s/%d", at, i))
			}
		}
	}
	walk(d.root, "")
	// Every named schema compiles as JSON Schema 2020-12, its $refs resolved.
	schemas, _ := comps["schemas"].(map[string]any)
	if len(schemas) == 0 {
		t.Fatal("no components.schemas")
	}
	for name := range schemas {
		d.schema(t, "/components/schemas/"+ptrEscape(name))
	}
	// The error shape is the one every refusal has.
	errSchema := d.schema(t, "/components/schemas/Error")
	for _, bad := range []string{`{"error":{"code":"x"}}`, `{"code":"x","message":"y"}`, `{"error":{"code":"x","message":"y","stack":"z"}}`} {
		v, _ := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if errSchema.Validate(v) == nil {
			t.Errorf("Error schema admits %s", bad)
		}
	}

	ids := map[string]string{}
	templateRE := regexp.MustCompile(`\{([^}]+)\}`)
	for _, o := range d.ops(t) {
		t.Run(o.String(), func(t *testing.T) {
			id, _ := o.op["operationId"].(string)
			if id == "" {
				t.Error("no operationId")
			} else if prev, dup := ids[id]; dup {
				t.Errorf("operationId %s also names %s", id, prev)
			}
			ids[id] = o.String()
			params := d.params(t, o)
			for _, m := range templateRE.FindAllStringSubmatch(o.path, -1) {
				p, ok := params["path:"+m[1]]
				if !ok || p["required"] != true {
					t.Errorf("path parameter {%s} is not declared required", m[1])
				} else if _, ok := p["example"]; !ok {
					t.Errorf("path parameter {%s} has no example", m[1])
				}
			}
			responses, _ := o.op["responses"].(map[string]any)
			if len(responses) == 0 {
				t.Fatal("no responses")
			}
			for code, r := range responses {
				rm, rptr := d.deref(t, r, o.ptr+"/responses/"+code)
				content, _ := rm["content"].(map[string]any)
				if jc, ok := content["application/json"].(map[string]any); ok && jc["schema"] != nil {
					d.schema(t, rptr+"/content/application~1json/schema")
				}
				if code[0] >= '4' && code != "405" && content["application/json"] == nil && o.path != "/v1/listen" {
					t.Errorf("response %s has no JSON error body", code)
				}
			}
			sec := d.security(o)
			switch {
			case strings.HasPrefix(o.path, "/twilio/"):
				if !slices.Equal(sec, []string{"twilioSignature"}) {
					t.Errorf("security %v, want twilioSignature", sec)
				}
			case slices.Contains(sec, "bearerAuth") && o.path != "/v1/listen": // the stream refuses with close codes
				want := []string{"401", "429", "503"}
				// Only the erasure request and its status are open to an
				// erased account; every other authenticated route is 410.
				if id != "eraseMe" && id != "erasureStatus" {
					want = append(want, "410")
				}
				if strings.HasPrefix(o.path, "/v1/admin/") {
					want = append(want, "403")
				}
				for _, c := range want {
					if _, ok := responses[c]; !ok {
						t.Errorf("an authenticated route without a %s response", c)
					}
				}
			}
			if rb, ok := o.op["requestBody"].(map[string]any); ok {
				content, _ := rb["content"].(map[string]any)
				for mt, c := range content {
					cm, _ := c.(map[string]any)
					if (mt == "application/json" || mt == "application/x-www-form-urlencoded") && cm["example"] == nil {
						t.Errorf("request body %s has no example", mt)
					}
				}
			}
		})
	}
}

func TestOpenAPIServedAtOpenAPIYAML(t *testing.T) {
	e := newEdge(t, 1<<20)
	resp, err := http.Get(e.url + "/openapi.yaml")
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("GET /openapi.yaml: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(body, openapi.Spec()) || !bytes.HasPrefix(body, []byte("openapi: 3.1.0\n")) {
		t.Fatal("GET /openapi.yaml does not answer the embedded description")
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("the description lost the edge's security headers")
	}
}

// TestOpenAPICoversEveryRoute: the description and the mux agree, both ways.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	d := loadAPIDoc(t)
	e := openAPIEdge(t)
	served := map[string]bool{}
	for _, p := range e.srv.Routes() {
		if notPublicAPI(p) {
			continue
		}
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			t.Errorf("route %q serves every method: give it one so it can be described", p)
			continue
		}
		if host, _, _ := strings.Cut(path, "/"); host != "" {
			t.Errorf("route %q is host-specific", p)
		}
		served[method+" "+path] = true
	}
	if len(served) < 10 {
		t.Fatalf("only %d routes recorded: %v", len(served), e.srv.Routes())
	}
	described := map[string]bool{}
	for _, o := range d.ops(t) {
		described[o.String()] = true
	}
	for _, r := range slices.Sorted(maps.Keys(served)) {
		if !described[r] {
			t.Errorf("served but not in openapi.yaml: %s", r)
		}
	}
	for _, r := range slices.Sorted(maps.Keys(described)) {
		if !served[r] {
			t.Errorf("in openapi.yaml but not served: %s", r)
		}
	}
}

// TestOpenAPIExamplesPassTheHandlers sends each operation, with its
// examples (path parameters, JSON body), to a real edge with a valid token:
// the answer must be a documented status, never a refusal of the request's
// shape, and its body must match the documented schema. Each JSON body
// example also passes the description's own schema, and the same body with
// an unknown field is refused by both.
func TestOpenAPIExamplesPassTheHandlers(t *testing.T) {
	d := loadAPIDoc(t)
	e := openAPIEdge(t)
	cid, _ := d.at("/components/parameters/cid/example")
	for i, o := range d.ops(t) {
		t.Run(o.String(), func(t *testing.T) {
			// The caller has a conversation (the example one), so reads
			// answer real records, not only empty lists.
			if r := e.do("PUT", fmt.Sprintf("/v1/conversations/%v/chunks/0", cid), opToken(e, o, i), "audio/wav", tone(440, 200)); r.status != http.StatusAccepted {
				t.Fatalf("seeding the example conversation: %d %v", r.status, r.body)
			}
			path := o.path
			query := url.Values{}
			header := http.Header{} // what a described request carries besides the token
			for key, p := range d.params(t, o) {
				ex, ok := p["example"]
				if !ok {
					continue
				}
				in, name, _ := strings.Cut(key, ":")
				switch in {
				case "path":
					path = strings.ReplaceAll(path, "{"+name+"}", url.PathEscape(fmt.Sprint(ex)))
				case "query":
					query.Set(name, fmt.Sprint(ex))
				case "header":
					header.Set(name, fmt.Sprint(ex))
				}
			}
			if len(query) > 0 {
				path += "?" + query.Encode()
			}
			var body []byte
			var ctype string
			if rb, ok := o.op["requestBody"].(map[string]any); ok {
				content, _ := rb["content"].(map[string]any)
				jsonPtr := o.ptr + "/requestBody/content/application~1json"
				switch {
				case content["application/json"] != nil:
					ex := content["application/json"].(map[string]any)["example"]
					schema := d.schema(t, jsonPtr+"/schema")
					if err := schema.Validate(ex); err != nil {
						t.Fatalf("the example fails the description's schema: %v", err)
					}
					var err error
					body, err = json.Marshal(ex)
					must(t, err)
					ctype = "application/json"
					if obj, ok := ex.(map[string]any); ok {
						// The description and the handler both refuse an unknown field.
						extra := map[string]any{"x_unknown": json.Number("1")}
						for k, v := range obj {
							extra[k] = v
						}
						if schema.Validate(extra) == nil {
							t.Error("the description's schema admits an unknown field")
						}
						raw, err := json.Marshal(extra)
						must(t, err)
						if r := e.do(o.method, path, opToken(e, o, i), ctype, raw); r.status != http.StatusBadRequest {
							t.Errorf("the handler takes an unknown field: %d %v", r.status, r.body)
						}
						// Every constraint described is one the handler enforces.
						for _, m := range d.violations(t, jsonPtr+"/schema", obj) {
							if schema.Validate(m.body) == nil {
								continue // not a violation after all (oneOf and the like)
							}
							raw, err := json.Marshal(m.body)
							must(t, err)
							r := e.do(o.method, path, opToken(e, o, i), ctype, raw)
							if r.status != http.StatusBadRequest && r.status != http.StatusRequestEntityTooLarge && r.status != http.StatusUnsupportedMediaType {
								t.Errorf("%s: the description refuses it, the handler answers %d %v", m.what, r.status, r.body)
							}
						}
					}
				case content["audio/wav"] != nil:
					body, ctype = tone(440, 200), "audio/wav"
				case content["application/x-www-form-urlencoded"] != nil:
					form := url.Values{}
					ex, _ := content["application/x-www-form-urlencoded"].(map[string]any)["example"].(map[string]any)
					if err := d.schema(t, o.ptr+"/requestBody/content/application~1x-www-form-urlencoded/schema").Validate(ex); err != nil {
						t.Fatalf("the form example fails the description's schema: %v", err)
					}
					for k, v := range ex {
						form.Set(k, fmt.Sprint(v))
					}
					body, ctype = []byte(form.Encode()), "application/x-www-form-urlencoded"
					header.Set("X-Twilio-Signature", twiliosig.Sign(twToken, twPublic+path, form))
				}
			}
			req := e.request(o.method, path, opToken(e, o, i), ctype, body)
			for k := range header {
				req.Header.Set(k, header.Get(k))
			}
			r := e.doRaw(req)
			if r.status == http.StatusNotFound && bytes.Contains(r.body, []byte(`"no such route"`)) {
				t.Fatal("not served: the catch-all answered")
			}
			if r.status == http.StatusForbidden && header.Get("X-Twilio-Signature") != "" {
				t.Fatalf("a signed webhook is refused: %s", r.body)
			}
			switch r.status {
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType,
				http.StatusUnprocessableEntity, http.StatusInternalServerError:
				t.Fatalf("the described request is refused: %d %s", r.status, r.body)
			}
			responses, _ := o.op["responses"].(map[string]any)
			resp, ok := responses[fmt.Sprint(r.status)]
			if !ok {
				t.Fatalf("status %d is not documented (%s)", r.status, r.body)
			}
			rm, rptr := d.deref(t, resp, o.ptr+"/responses/"+fmt.Sprint(r.status))
			headers, _ := rm["headers"].(map[string]any)
			for name, h := range headers {
				hm, hptr := d.deref(t, h, rptr+"/headers/"+ptrEscape(name))
				if c, ok := hm["schema"].(map[string]any)["const"]; ok && r.header.Get(name) != fmt.Sprint(c) {
					t.Errorf("status %d: header %s %q, documented %v (%s)", r.status, name, r.header.Get(name), c, hptr)
				}
			}
			content, _ := rm["content"].(map[string]any)
			if jc, ok := content["application/json"].(map[string]any); ok && jc["schema"] != nil {
				if mt := r.header.Get("Content-Type"); mt != "application/json" {
					t.Fatalf("status %d: Content-Type %q, documented application/json", r.status, mt)
				}
				v, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.body))
				if err != nil {
					t.Fatalf("status %d: not JSON: %s", r.status, r.body)
				}
				if err := d.schema(t, rptr+"/content/application~1json/schema").Validate(v); err != nil {
					t.Fatalf("status %d: the body does not match the documented schema: %v\n%s", r.status, err, r.body)
				}
			} else if len(content) > 0 && r.status != http.StatusNoContent {
				mt := strings.TrimSpace(strings.Split(r.header.Get("Content-Type"), ";")[0])
				if _, ok := content[mt]; !ok {
					t.Fatalf("status %d: Content-Type %q is not documented", r.status, mt)
				}
			}
		})
	}
}

// violation is a request body that breaks one described constraint.
type violation struct {
	what string
	body map[string]any
}

// violations breaks, one at a time, each constraint of the object schema
// at ptr on a copy of the valid example ex: a required field left out, a
// value of the wrong type, below its minimum, above its maximum, too long,
// too short, off its pattern, off its enum or const.
func (d *apiDoc) violations(t testing.TB, ptr string, ex map[string]any) []violation {
	t.Helper()
	v, _ := d.at(ptr)
	sch, _ := d.deref(t, v, ptr)
	with := func(k string, val any) map[string]any {
		out := maps.Clone(ex)
		out[k] = val
		return out
	}
	var out []violation
	req, _ := sch["required"].([]any)
	for _, k := range req {
		body := maps.Clone(ex)
		delete(body, k.(string))
		out = append(out, violation{fmt.Sprintf("%v left out", k), body})
	}
	props, _ := sch["properties"].(map[string]any)
	for _, k := range slices.Sorted(maps.Keys(props)) {
		p, _ := d.deref(t, props[k], ptr+"/properties/"+ptrEscape(k))
		num := func(key string, delta int64) (json.Number, bool) {
			n, ok := p[key].(json.Number)
			if !ok {
				return "", false
			}
			i, err := n.Int64()
			if err != nil {
				return "", false
			}
			return json.Number(fmt.Sprint(i + delta)), true
		}
		switch p["type"] {
		case "integer":
			out = append(out, violation{k + " a string", with(k, "1")}, violation{k + " a fraction", with(k, json.Number("1.5"))})
		case "string":
			out = append(out, violation{k + " a number", with(k, json.Number("1"))})
		}
		if n, ok := num("minimum", -1); ok {
			out = append(out, violation{k + " below its minimum", with(k, n)})
		}
		if n, ok := num("maximum", 1); ok {
			out = append(out, violation{k + " above its maximum", with(k, n)})
		}
		if n, ok := num("maxLength", 1); ok {
			l, _ := n.Int64()
			out = append(out, violation{k + " too long", with(k, strings.Repeat("A", int(l)))})
		}
		if n, ok := num("minLength", -1); ok {
			if l, _ := n.Int64(); l >= 0 {
				out = append(out, violation{k + " too short", with(k, strings.Repeat("A", int(l)))})
			}
		}
		if _, ok := p["pattern"]; ok {
			out = append(out, violation{k + " off its pattern", with(k, "~!")})
		}
		if _, ok := p["enum"]; ok {
			out = append(out, violation{k + " off its enum", with(k, "~!")})
		}
		if c, ok := p["const"]; ok {
			out = append(out, violation{k + " off its const", with(k, fmt.Sprint(c)+"~")})
		}
	}
	return out
}

// opToken is a token for a fresh user per operation (an erasure never
// reaches another case), with the admin role for admin routes.
func opToken(e *edge, o specOp, i int) string {
	uid := fmt.Sprintf("openapi-%d", i)
	if strings.HasPrefix(o.path, "/v1/admin/") {
		return e.adminToken(uid)
	}
	return e.token(uid)
}
