// Package tfpolicy checks lethe's Terraform (terraform/*.tf) against the
// rules its deployment must keep: every subscription dead-letters, every
// push is OIDC-authenticated, the topics are exactly the ones the code
// declares, only the edge is public, no account holds a basic role, the
// bucket is CMEK-encrypted with uniform access and public access
// prevention, secrets come from Secret Manager only, KMS keys rotate, and
// the scheduled retention sweep is an event the code accepts.
//
// It reads the configuration with github.com/hashicorp/hcl/v2 (the parser
// Terraform itself uses) and checks it statically: the provider plugins
// are not reachable from the machines that test lethe, so neither
// `terraform validate` nor `plan` can run here.
package tfpolicy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Resource is one resource (or data source) block.
type Resource struct {
	Type, Name string
	Body       *hclsyntax.Body
	File       string
}

// Addr is TYPE.NAME.
func (r *Resource) Addr() string { return r.Type + "." + r.Name }

// Module is every .tf file of one directory.
type Module struct {
	Resources []*Resource
	Data      []*Resource
	Locals    map[string]hclsyntax.Expression
	Variables map[string]*hclsyntax.Body
	// Files by name, for policies that look at every expression.
	Files map[string]*hclsyntax.Body
}

// Load parses every .tf file in dir.
func Load(dir string) (*Module, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil {
		return nil, fmt.Errorf("filepath.Glob: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no .tf files", dir)
	}
	src := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("os.ReadFile: %w", err)
		}
		src[filepath.Base(n)] = b
	}
	return Parse(src)
}

// Parse parses the given files (name -> HCL source).
func Parse(files map[string][]byte) (*Module, error) {
	m := &Module{Locals: map[string]hclsyntax.Expression{}, Variables: map[string]*hclsyntax.Body{}, Files: map[string]*hclsyntax.Body{}}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		f, diags := hclsyntax.ParseConfig(files[name], name, hcl.InitialPos)
		if diags.HasErrors() {
			return nil, fmt.Errorf("hclsyntax.ParseConfig: %w", diags)
		}
		body := f.Body.(*hclsyntax.Body)
		m.Files[name] = body
		for _, b := range body.Blocks {
			switch b.Type {
			case "resource", "data":
				if len(b.Labels) != 2 {
					return nil, fmt.Errorf("%s:%d: %s block wants two labels", name, b.TypeRange.Start.Line, b.Type)
				}
				r := &Resource{Type: b.Labels[0], Name: b.Labels[1], Body: b.Body, File: name}
				if b.Type == "resource" {
					m.Resources = append(m.Resources, r)
				} else {
					m.Data = append(m.Data, r)
				}
			case "locals":
				for n, a := range b.Body.Attributes {
					if _, dup := m.Locals[n]; dup {
						return nil, fmt.Errorf("%s: local.%s declared twice", name, n)
					}
					m.Locals[n] = a.Expr
				}
			case "variable":
				if len(b.Labels) != 1 {
					return nil, fmt.Errorf("%s:%d: variable block wants one label", name, b.TypeRange.Start.Line)
				}
				if _, dup := m.Variables[b.Labels[0]]; dup {
					return nil, fmt.Errorf("%s: variable %s declared twice", name, b.Labels[0])
				}
				m.Variables[b.Labels[0]] = b.Body
			}
		}
	}
	return m, nil
}

// OfType returns the resources of one type.
func (m *Module) OfType(typ string) []*Resource {
	var out []*Resource
	for _, r := range m.Resources {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// Resource finds TYPE.NAME.
func (m *Module) Resource(typ, name string) *Resource {
	for _, r := range m.Resources {
		if r.Type == typ && r.Name == name {
			return r
		}
	}
	return nil
}

// literal is the value of expr when it needs no variables or functions.
func literal(expr hclsyntax.Expression) (cty.Value, bool) {
	if expr == nil || len(expr.Variables()) > 0 {
		return cty.NilVal, false
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() || !v.IsWhollyKnown() {
		return cty.NilVal, false
	}
	return v, true
}

// stringValue is expr as a string: a literal, or var.NAME with a literal
// default.
func (m *Module) stringValue(expr hclsyntax.Expression) (string, bool) {
	if v, ok := literal(expr); ok && v.Type() == cty.String {
		return v.AsString(), true
	}
	if st, ok := expr.(*hclsyntax.ScopeTraversalExpr); ok && len(st.Traversal) == 2 && st.Traversal.RootName() == "var" {
		if a, ok := st.Traversal[1].(hcl.TraverseAttr); ok {
			if body := m.Variables[a.Name]; body != nil {
				if def := body.Attributes["default"]; def != nil {
					return m.stringValue(def.Expr)
				}
			}
		}
	}
	return "", false
}

// attr returns the expression of a top-level attribute, or nil.
func attr(b *hclsyntax.Body, name string) hclsyntax.Expression {
	if a := b.Attributes[name]; a != nil {
		return a.Expr
	}
	return nil
}

// blocks returns the nested blocks of one type.
func blocks(b *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, blk := range b.Blocks {
		if blk.Type == typ {
			out = append(out, blk)
		}
	}
	return out
}

// referencedResource is the resource an expression like
// google_pubsub_topic.audio.id points at.
func (m *Module) referencedResource(expr hclsyntax.Expression, typ string) *Resource {
	st, ok := expr.(*hclsyntax.ScopeTraversalExpr)
	if !ok || st.Traversal.RootName() != typ || len(st.Traversal) < 2 {
		return nil
	}
	a, ok := st.Traversal[1].(hcl.TraverseAttr)
	if !ok {
		return nil
	}
	return m.Resource(typ, a.Name)
}

// walk calls fn for every expression in body, nested ones included.
func walk(body *hclsyntax.Body, fn func(hclsyntax.Expression)) {
	_ = hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
		if e, ok := n.(hclsyntax.Expression); ok {
			fn(e)
		}
		return nil
	})
}

// stringLiterals returns every literal string in body (template parts
// included).
func stringLiterals(body *hclsyntax.Body) []string {
	var out []string
	walk(body, func(e hclsyntax.Expression) {
		if lv, ok := e.(*hclsyntax.LiteralValueExpr); ok && lv.Val.Type() == cty.String {
			out = append(out, lv.Val.AsString())
		}
	})
	return out
}

func mentions(expr hclsyntax.Expression, name string) bool {
	for _, t := range expr.Variables() {
		for _, step := range t {
			switch s := step.(type) {
			case hcl.TraverseAttr:
				if s.Name == name {
					return true
				}
			case hcl.TraverseIndex:
				if s.Key.Type() == cty.String && s.Key.AsString() == name {
					return true
				}
			}
		}
	}
	if v, ok := literal(expr); ok && v.Type() == cty.String && strings.Contains(v.AsString(), name) {
		return true
	}
	return false
}
