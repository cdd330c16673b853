package tfpolicy

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// Policy is one rule; Check returns what breaks it (empty: kept).
type Policy struct {
	Name  string
	Check func(*Module) []string
}

// Contract is what the code declares, which the Terraform must match.
type Contract struct {
	// Topics the code publishes and subscribes to (events.AllTopics).
	Topics []string
	// DeadLetterTopic names a topic's dead-letter topic (events.DeadLetterTopic).
	DeadLetterTopic func(string) string
	// HoldSubscription names the subscription that keeps a topic's dead
	// letters (bus.DeadLetterHoldSubscription).
	HoldSubscription func(string) string
	// PublicService is the one Cloud Run service that may be invoked by
	// anyone (its for_each key or resource name).
	PublicService string
	// ValidateEvent checks a Pub/Sub message (data, attributes) as the
	// workers would on receive; nil skips the scheduler check.
	ValidateEvent func(data []byte, attrs map[string]string) error
	// MaxRotation bounds KMS rotation periods.
	MaxRotation time.Duration
}

// Policies returns every policy, against c.
func Policies(c Contract) []Policy {
	return []Policy{
		{"subscriptions dead-letter", deadLetters(c)},
		{"push subscriptions carry OIDC tokens", pushOIDC},
		{"topics match the code", topics(c)},
		{"only the public service has a public invoker", publicInvoker(c)},
		{"no basic roles", basicRoles},
		{"bucket CMEK, uniform access, public access prevention", buckets},
		{"secrets from Secret Manager only", secretsOnly},
		{"KMS keys rotate", kmsRotation(c)},
		{"no public ingress on Cloud Run", ingress},
		{"scheduled sweep is a valid event", schedulerEvent(c)},
	}
}

// Check runs every policy; the result maps policy name to violations.
func Check(m *Module, c Contract) map[string][]string {
	out := map[string][]string{}
	for _, p := range Policies(c) {
		if v := p.Check(m); len(v) > 0 {
			out[p.Name] = v
		}
	}
	return out
}

// topicName resolves a subscription's topic expression to a name.
func (m *Module) topicName(expr hclsyntax.Expression) (string, bool) {
	if r := m.referencedResource(expr, "google_pubsub_topic"); r != nil {
		return m.stringValue(attr(r.Body, "name"))
	}
	return m.stringValue(expr)
}

func deadLetters(c Contract) func(*Module) []string {
	return func(m *Module) []string {
		var v []string
		dlt := map[string]string{} // dead-letter topic -> its topic
		for _, t := range c.Topics {
			dlt[c.DeadLetterTopic(t)] = t
		}
		for _, s := range m.OfType("google_pubsub_subscription") {
			topic, ok := m.topicName(attr(s.Body, "topic"))
			if !ok {
				v = append(v, s.Addr()+": topic is not a topic resource with a literal name")
				continue
			}
			if src, isDLT := dlt[topic]; isDLT {
				// A holding subscription: it is where dead letters rest.
				name, _ := m.stringValue(attr(s.Body, "name"))
				if name != c.HoldSubscription(src) {
					v = append(v, fmt.Sprintf("%s: a subscription on dead-letter topic %s must be the holding subscription %s", s.Addr(), topic, c.HoldSubscription(src)))
				}
				if len(blocks(s.Body, "push_config")) > 0 {
					v = append(v, s.Addr()+": a holding subscription must not push")
				}
				continue
			}
			dl := blocks(s.Body, "dead_letter_policy")
			if len(dl) != 1 {
				v = append(v, s.Addr()+": no dead_letter_policy")
				continue
			}
			if got, ok := m.topicName(attr(dl[0].Body, "dead_letter_topic")); !ok || got != c.DeadLetterTopic(topic) {
				v = append(v, fmt.Sprintf("%s: dead_letter_topic is %q, want %s", s.Addr(), got, c.DeadLetterTopic(topic)))
			}
			if attr(dl[0].Body, "max_delivery_attempts") == nil {
				v = append(v, s.Addr()+": dead_letter_policy without max_delivery_attempts")
			}
			if len(blocks(s.Body, "retry_policy")) != 1 {
				v = append(v, s.Addr()+": no retry_policy")
			}
		}
		return v
	}
}

func pushOIDC(m *Module) []string {
	var v []string
	for _, s := range m.OfType("google_pubsub_subscription") {
		for _, p := range blocks(s.Body, "push_config") {
			tok := blocks(p.Body, "oidc_token")
			if len(tok) != 1 {
				v = append(v, s.Addr()+": push_config without oidc_token")
				continue
			}
			for _, a := range []string{"service_account_email", "audience"} {
				if attr(tok[0].Body, a) == nil {
					v = append(v, s.Addr()+": oidc_token without "+a)
				}
			}
		}
	}
	return v
}

func topics(c Contract) func(*Module) []string {
	return func(m *Module) []string {
		var v []string
		want := map[string]bool{}
		for _, t := range c.Topics {
			want[t], want[c.DeadLetterTopic(t)] = true, true
		}
		have := map[string]bool{}
		for _, t := range m.OfType("google_pubsub_topic") {
			if attr(t.Body, "for_each") != nil || attr(t.Body, "count") != nil {
				v = append(v, t.Addr()+": topics are declared one by one, so each can be checked")
				continue
			}
			name, ok := m.stringValue(attr(t.Body, "name"))
			if !ok {
				v = append(v, t.Addr()+": name is not a literal")
				continue
			}
			if have[name] {
				v = append(v, "topic "+name+" declared twice")
			}
			have[name] = true
			if !want[name] {
				v = append(v, fmt.Sprintf("%s: topic %q is not declared by the code (events.AllTopics or its dead-letter topic)", t.Addr(), name))
			}
		}
		for _, t := range sortedKeys(want) {
			if !have[t] {
				v = append(v, "topic "+t+" declared by the code is missing")
			}
		}
		return v
	}
}

var publicMembers = []string{"allUsers", "allAuthenticatedUsers"}

func publicInvoker(c Contract) func(*Module) []string {
	return func(m *Module) []string {
		var v []string
		for _, r := range m.Resources {
			public := false
			for _, s := range stringLiterals(r.Body) {
				public = public || slices.Contains(publicMembers, s)
			}
			if !public {
				continue
			}
			if !strings.HasPrefix(r.Type, "google_cloud_run_v2_service_iam_") && !strings.HasPrefix(r.Type, "google_cloud_run_service_iam_") {
				v = append(v, r.Addr()+": grants to allUsers/allAuthenticatedUsers")
				continue
			}
			name := attr(r.Body, "name")
			if name == nil {
				name = attr(r.Body, "service")
			}
			if name == nil || !mentions(name, c.PublicService) || attr(r.Body, "for_each") != nil {
				v = append(v, r.Addr()+": a public invoker on a service other than "+c.PublicService)
			}
		}
		return v
	}
}

var basic = []string{"roles/owner", "roles/editor", "roles/viewer"}

func basicRoles(m *Module) []string {
	var v []string
	for _, r := range m.Resources {
		for _, s := range stringLiterals(r.Body) {
			if slices.Contains(basic, s) {
				v = append(v, r.Addr()+": grants basic role "+s)
			}
		}
	}
	for name, e := range m.Locals {
		for _, s := range literalStrings(e) {
			if slices.Contains(basic, s) {
				v = append(v, "local."+name+": names basic role "+s)
			}
		}
	}
	return v
}

func buckets(m *Module) []string {
	var v []string
	for _, b := range m.OfType("google_storage_bucket") {
		if u, ok := literal(attr(b.Body, "uniform_bucket_level_access")); !ok || u.Type() != cty.Bool || u.False() {
			v = append(v, b.Addr()+": uniform_bucket_level_access is not true")
		}
		if p, ok := m.stringValue(attr(b.Body, "public_access_prevention")); !ok || p != "enforced" {
			v = append(v, b.Addr()+`: public_access_prevention is not "enforced"`)
		}
		enc := blocks(b.Body, "encryption")
		if len(enc) != 1 || attr(enc[0].Body, "default_kms_key_name") == nil ||
			m.referencedResource(attr(enc[0].Body, "default_kms_key_name"), "google_kms_crypto_key") == nil {
			v = append(v, b.Addr()+": no encryption.default_kms_key_name naming a google_kms_crypto_key of this configuration")
		}
	}
	return v
}

// secretish matches names of credentials.
var secretish = regexp.MustCompile(`(?i)(token|secret|passw|api_?key|private_?key|credential|_key(_|$))`)

// secretVariable matches variable names that would carry a credential.
var secretVariable = regexp.MustCompile(`(?i)(token|passw|api_?key|private_?key|credential|secret_(value|data)|_secret$)`)

// envName is what an environment variable's name looks like.
var envName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

func secretsOnly(m *Module) []string {
	var v []string
	for _, r := range m.OfType("google_secret_manager_secret_version") {
		v = append(v, r.Addr()+": a secret's value in Terraform would sit in its state; add versions with gcloud")
	}
	for name := range m.Variables {
		if secretVariable.MatchString(name) {
			v = append(v, "variable "+name+": a credential passed to Terraform would sit in its state")
		}
	}
	for _, r := range m.Resources {
		_ = hclsyntax.VisitAll(r.Body, func(n hclsyntax.Node) hcl.Diagnostics {
			blk, ok := n.(*hclsyntax.Block)
			if !ok {
				return nil
			}
			switch {
			case blk.Type == "env":
				if attr(blk.Body, "value") == nil {
					return nil
				}
				name, ok := m.stringValue(attr(blk.Body, "name"))
				if !ok {
					v = append(v, r.Addr()+": env with a value and a computed name")
				} else if secretish.MatchString(name) {
					v = append(v, r.Addr()+": env "+name+" set from a plain value, not Secret Manager")
				}
			case blk.Type == "dynamic" && len(blk.Labels) == 1 && blk.Labels[0] == "env":
				content := blocks(blk.Body, "content")
				if len(content) != 1 || attr(content[0].Body, "value") == nil {
					return nil
				}
				// Plain values come from locals; every env name in them
				// (upper-case keys) must not be a credential.
				fe := attr(blk.Body, "for_each")
				for _, key := range m.envKeys(fe, map[string]bool{}) {
					if key == "" {
						v = append(v, r.Addr()+": dynamic env with plain values from something other than locals")
					} else if secretish.MatchString(key) {
						v = append(v, r.Addr()+": env "+key+" set from a plain value, not Secret Manager")
					}
				}
			}
			return nil
		})
	}
	return v
}

// envKeys collects the upper-case object keys reachable from expr through
// locals; "" marks a reference to anything but a local (unknowable here).
func (m *Module) envKeys(expr hclsyntax.Expression, seen map[string]bool) []string {
	if expr == nil {
		return []string{""}
	}
	var out []string
	for _, t := range expr.Variables() {
		switch t.RootName() {
		case "local":
			if len(t) < 2 {
				out = append(out, "")
				continue
			}
			a, ok := t[1].(hcl.TraverseAttr)
			if !ok {
				out = append(out, "")
				continue
			}
			if seen[a.Name] {
				continue
			}
			seen[a.Name] = true
			le, ok := m.Locals[a.Name]
			if !ok {
				out = append(out, "")
				continue
			}
			out = append(out, m.envKeys(le, seen)...)
		case "each", "var", "count":
			// selectors and values, not keys
		default:
			// Resource attributes are values (emails, ids), never keys,
			// when they appear inside locals' object constructors.
		}
	}
	walk(&hclsyntax.Body{Attributes: hclsyntax.Attributes{"x": {Name: "x", Expr: expr}}}, func(x hclsyntax.Expression) {
		oc, ok := x.(*hclsyntax.ObjectConsExpr)
		if !ok {
			return
		}
		for _, item := range oc.Items {
			if k, ok := literal(item.KeyExpr); ok && k.Type() == cty.String && envName.MatchString(k.AsString()) {
				out = append(out, k.AsString())
			}
		}
	})
	return out
}

func kmsRotation(c Contract) func(*Module) []string {
	return func(m *Module) []string {
		var v []string
		for _, k := range m.OfType("google_kms_crypto_key") {
			if p, ok := m.stringValue(attr(k.Body, "purpose")); ok && p != "ENCRYPT_DECRYPT" {
				continue // asymmetric keys cannot rotate automatically
			}
			rp, ok := m.stringValue(attr(k.Body, "rotation_period"))
			if !ok {
				v = append(v, k.Addr()+": no rotation_period (or not a literal or a variable's default)")
				continue
			}
			d, err := time.ParseDuration(rp)
			if err != nil || !strings.HasSuffix(rp, "s") {
				v = append(v, fmt.Sprintf("%s: rotation_period %q is not N seconds", k.Addr(), rp))
				continue
			}
			if d <= 0 || d > c.MaxRotation {
				v = append(v, fmt.Sprintf("%s: rotation_period %s exceeds %s", k.Addr(), d, c.MaxRotation))
			}
		}
		return v
	}
}

func ingress(m *Module) []string {
	var v []string
	for _, r := range m.Resources {
		for _, s := range stringLiterals(r.Body) {
			if s == "INGRESS_TRAFFIC_ALL" {
				v = append(v, r.Addr()+": ingress INGRESS_TRAFFIC_ALL (the edge takes traffic through the load balancer, workers from inside)")
			}
		}
	}
	for name, e := range m.Locals {
		if slices.Contains(literalStrings(e), "INGRESS_TRAFFIC_ALL") {
			v = append(v, "local."+name+": ingress INGRESS_TRAFFIC_ALL")
		}
	}
	return v
}

func literalStrings(e hclsyntax.Expression) []string {
	return stringLiterals(&hclsyntax.Body{Attributes: hclsyntax.Attributes{"x": {Name: "x", Expr: e}}})
}

// evalFuncs are the Terraform functions the scheduler message may use.
var evalFuncs = map[string]function.Function{
	"jsonencode": stdlib.JSONEncodeFunc,
	"base64encode": function.New(&function.Spec{
		Params: []function.Parameter{{Name: "s", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
		},
	}),
}

func schedulerEvent(c Contract) func(*Module) []string {
	return func(m *Module) []string {
		if c.ValidateEvent == nil {
			return nil
		}
		var v []string
		ctx := &hcl.EvalContext{Functions: evalFuncs}
		jobs := m.OfType("google_cloud_scheduler_job")
		if len(jobs) == 0 {
			return []string{"no google_cloud_scheduler_job requests retention sweeps"}
		}
		for _, j := range jobs {
			pt := blocks(j.Body, "pubsub_target")
			if len(pt) != 1 {
				continue
			}
			dv, diags := attr(pt[0].Body, "data").Value(ctx)
			if diags.HasErrors() || dv.Type() != cty.String {
				v = append(v, j.Addr()+": data is not a constant string")
				continue
			}
			data, err := base64.StdEncoding.DecodeString(dv.AsString())
			if err != nil {
				v = append(v, j.Addr()+": data is not base64")
				continue
			}
			attrs := map[string]string{}
			if ae := attr(pt[0].Body, "attributes"); ae != nil {
				av, diags := ae.Value(ctx)
				if diags.HasErrors() || !av.CanIterateElements() {
					v = append(v, j.Addr()+": attributes are not a constant map")
					continue
				}
				for it := av.ElementIterator(); it.Next(); {
					k, val := it.Element()
					if val.Type() != cty.String {
						v = append(v, j.Addr()+": attribute "+k.AsString()+" is not a string")
						continue
					}
					attrs[k.AsString()] = val.AsString()
				}
			}
			if err := c.ValidateEvent(data, attrs); err != nil {
				v = append(v, fmt.Sprintf("%s: the workers would reject this message: %v", j.Addr(), err))
			}
		}
		return v
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
