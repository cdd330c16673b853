package tfpolicy

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/bus"
)

// contract is what the code declares.
func contract(t *testing.T) Contract {
	t.Helper()
	reg, err := events.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	return Contract{
		Topics:           events.AllTopics(),
		DeadLetterTopic:  events.DeadLetterTopic,
		HoldSubscription: bus.DeadLetterHoldSubscription,
		PublicService:    "edge",
		MaxRotation:      90 * 24 * time.Hour,
		ValidateEvent: func(data []byte, attrs map[string]string) error {
			e, err := bus.FromMessage(data, attrs)
			if err != nil {
				return err
			}
			return reg.Validate(e)
		},
	}
}

// The repository's Terraform keeps every policy.
func TestRepositoryTerraform(t *testing.T) {
	m, err := Load(filepath.Join("..", "..", "terraform"))
	if err != nil {
		t.Fatal(err)
	}
	for name, vs := range Check(m, contract(t)) {
		for _, v := range vs {
			t.Errorf("%s: %s", name, v)
		}
	}
	// The checks saw what they are about (a policy over nothing passes).
	for typ, min := range map[string]int{
		"google_pubsub_topic": 12, "google_pubsub_subscription": 12, "google_storage_bucket": 1,
		"google_kms_crypto_key": 2, "google_cloud_run_v2_service": 1, "google_cloud_scheduler_job": 1,
		"google_cloud_run_v2_service_iam_member": 2, "google_secret_manager_secret": 1,
	} {
		if got := len(m.OfType(typ)); got < min {
			t.Errorf("%d %s, want at least %d", got, typ, min)
		}
	}
}

// A small configuration that keeps every policy; each case below breaks
// one and must be caught by exactly that policy.
var goodFiles = map[string]string{
	"topics.tf": `
resource "google_pubsub_topic" "audio" {
  name = "audio"
}
resource "google_pubsub_topic" "audio_dl" {
  name = "audio-dead-letter"
}
resource "google_pubsub_subscription" "hold" {
  name  = "audio-dead-letter-hold"
  topic = google_pubsub_topic.audio_dl.id
}
resource "google_pubsub_subscription" "transcribe" {
  name  = "transcribe"
  topic = google_pubsub_topic.audio.id
  push_config {
    push_endpoint = "https://w/push/transcribe"
    oidc_token {
      service_account_email = "push@p.iam.gserviceaccount.com"
      audience              = "lethe-push-transcribe"
    }
  }
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.audio_dl.id
    max_delivery_attempts = 10
  }
  retry_policy {
    minimum_backoff = "10s"
  }
}
`,
	"run.tf": `
variable "rotation" {
  default = "7776000s"
}
locals {
  plain = { LETHE_BUS = "gcp", LETHE_KEK = "gcpkms://k" }
  svc   = { edge = { ingress = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER" } }
}
resource "google_cloud_run_v2_service" "service" {
  for_each = local.svc
  ingress  = each.value.ingress
  template {
    containers {
      env {
        name  = "LETHE_ENV"
        value = "production"
      }
      dynamic "env" {
        for_each = local.plain
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name = "PINECONE_API_KEY"
        value_source {
          secret_key_ref {
            secret  = "pinecone-api-key"
            version = "latest"
          }
        }
      }
    }
  }
}
resource "google_cloud_run_v2_service_iam_member" "public" {
  name   = google_cloud_run_v2_service.service["edge"].name
  role   = "roles/run.invoker"
  member = "allUsers"
}
resource "google_project_iam_member" "fs" {
  role   = "roles/datastore.user"
  member = "serviceAccount:x"
}
resource "google_kms_crypto_key" "kek" {
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.rotation
}
resource "google_kms_crypto_key" "sign" {
  purpose = "ASYMMETRIC_SIGN"
}
resource "google_storage_bucket" "blobs" {
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  encryption {
    default_kms_key_name = google_kms_crypto_key.kek.id
  }
}
resource "google_cloud_scheduler_job" "sweep" {
  pubsub_target {
    topic_name = google_pubsub_topic.audio.id
    data       = base64encode(jsonencode({ requested_at = "2026-01-01T00:00:00Z" }))
    attributes = {
      "ce-specversion" = "1.0"
      "ce-id"          = "sweep"
      "ce-source"      = "//lethe.dev/pipeline"
      "ce-type"        = "dev.lethe.retention.sweep.requested.v1"
      "ce-subject"     = "retention/sweep"
      "ce-time"        = "2026-01-01T00:00:00Z"
      "ce-dataschema"  = "https://lethe.dev/schemas/dev.lethe.retention.sweep.requested.v1.json"
      "content-type"   = "application/json"
    }
  }
}
`,
}

func TestPoliciesRejectBadFixtures(t *testing.T) {
	c := contract(t)
	c.Topics = []string{"audio"}
	for _, tc := range []struct {
		name, file, old, new string
		policy               string // "" = the good configuration passes all
	}{
		{"good", "", "", "", ""},
		{"subscription without dead-letter policy", "topics.tf",
			"  dead_letter_policy {\n    dead_letter_topic     = google_pubsub_topic.audio_dl.id\n    max_delivery_attempts = 10\n  }\n", "",
			"subscriptions dead-letter"},
		{"dead letters to the wrong topic", "topics.tf",
			"dead_letter_topic     = google_pubsub_topic.audio_dl.id", "dead_letter_topic     = google_pubsub_topic.audio.id",
			"subscriptions dead-letter"},
		{"no max delivery attempts", "topics.tf", "    max_delivery_attempts = 10\n", "", "subscriptions dead-letter"},
		{"no retry policy", "topics.tf", "  retry_policy {\n    minimum_backoff = \"10s\"\n  }\n", "", "subscriptions dead-letter"},
		{"stray subscription on a dead-letter topic", "topics.tf", `name  = "audio-dead-letter-hold"`, `name  = "drain"`, "subscriptions dead-letter"},
		{"push without OIDC", "topics.tf",
			"    oidc_token {\n      service_account_email = \"push@p.iam.gserviceaccount.com\"\n      audience              = \"lethe-push-transcribe\"\n    }\n", "",
			"push subscriptions carry OIDC tokens"},
		{"OIDC without audience", "topics.tf", "      audience              = \"lethe-push-transcribe\"\n", "", "push subscriptions carry OIDC tokens"},
		{"topic the code does not declare", "topics.tf", `name = "audio"`, `name = "audoi"`, "topics match the code"},
		{"dead-letter topic missing", "topics.tf", `name = "audio-dead-letter"`, `name = "audio-dlq"`, "topics match the code"},
		{"public worker", "run.tf", `service["edge"]`, `service["transcribe"]`, "only the public service has a public invoker"},
		{"allAuthenticatedUsers on a bucket", "run.tf", `member = "serviceAccount:x"`, `member = "allAuthenticatedUsers"`, "only the public service has a public invoker"},
		{"owner", "run.tf", `role   = "roles/datastore.user"`, `role   = "roles/owner"`, "no basic roles"},
		{"editor in a local", "run.tf", `LETHE_BUS = "gcp"`, `LETHE_BUS = "roles/editor"`, "no basic roles"},
		{"bucket without CMEK", "run.tf", "  encryption {\n    default_kms_key_name = google_kms_crypto_key.kek.id\n  }\n", "", "bucket CMEK, uniform access, public access prevention"},
		{"bucket with ACLs", "run.tf", "uniform_bucket_level_access = true", "uniform_bucket_level_access = false", "bucket CMEK, uniform access, public access prevention"},
		{"bucket may go public", "run.tf", `public_access_prevention    = "enforced"`, `public_access_prevention    = "inherited"`, "bucket CMEK, uniform access, public access prevention"},
		{"secret as a plain env value", "run.tf", `name  = "LETHE_ENV"`, `name  = "DEEPGRAM_API_KEY"`, "secrets from Secret Manager only"},
		{"secret in a plain env local", "run.tf", `LETHE_KEK = "gcpkms://k"`, `INF_TWILIO_AUTH_TOKEN = "x"`, "secrets from Secret Manager only"},
		{"secret value in Terraform", "run.tf", `resource "google_project_iam_member" "fs" {`,
			"resource \"google_secret_manager_secret_version\" \"v\" {\n  secret_data = \"x\"\n}\nresource \"google_project_iam_member\" \"fs\" {",
			"secrets from Secret Manager only"},
		{"secret through a variable", "run.tf", `variable "rotation" {`, "variable \"twilio_auth_token\" {}\nvariable \"rotation\" {", "secrets from Secret Manager only"},
		{"key without rotation", "run.tf", "  rotation_period = var.rotation\n", "", "KMS keys rotate"},
		{"rotation too slow", "run.tf", `default = "7776000s"`, `default = "31536000s"`, "KMS keys rotate"},
		{"public ingress", "run.tf", `"INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"`, `"INGRESS_TRAFFIC_ALL"`, "no public ingress on Cloud Run"},
		{"sweep of an unknown type", "run.tf", `"ce-type"        = "dev.lethe.retention.sweep.requested.v1"`, `"ce-type"        = "dev.lethe.retention.sweep.v1"`, "scheduled sweep is a valid event"},
		{"sweep data off schema", "run.tf", `requested_at = "2026-01-01T00:00:00Z"`, `requested = "now"`, "scheduled sweep is a valid event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string][]byte{}
			for n, s := range goodFiles {
				if n == tc.file {
					if !strings.Contains(s, tc.old) {
						t.Fatalf("fixture %s lacks %q", n, tc.old)
					}
					s = strings.Replace(s, tc.old, tc.new, 1)
				}
				files[n] = []byte(s)
			}
			m, err := Parse(files)
			if err != nil {
				t.Fatal(err)
			}
			got := Check(m, c)
			if tc.policy == "" {
				for p, vs := range got {
					t.Errorf("good configuration fails %q: %v", p, vs)
				}
				return
			}
			if len(got[tc.policy]) == 0 {
				t.Errorf("policy %q did not catch it; got %v", tc.policy, got)
			}
			for p, vs := range got {
				// A missing topic also leaves its subscriptions dead-lettering nowhere.
				if p != tc.policy && !(tc.policy == "topics match the code" && p == "subscriptions dead-letter") {
					t.Errorf("also failed %q: %v", p, vs)
				}
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for name, src := range map[string]string{
		"syntax":          `resource "a" {`,
		"resource labels": `resource "a" {}`,
		"duplicate local": "locals {\n  a = 1\n}\nlocals {\n  a = 2\n}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(map[string][]byte{"x.tf": []byte(src)}); err == nil {
				t.Error("parsed")
			}
		})
	}
}

// Policies never panic on what parses, however odd.
func FuzzCheck(f *testing.F) {
	for _, s := range goodFiles {
		f.Add(s)
	}
	f.Add(`resource "google_pubsub_subscription" "s" { topic = local.x }`)
	f.Add(`resource "google_cloud_run_v2_service" "s" { dynamic "env" { content { value = 1 } } }`)
	c := Contract{
		Topics: []string{"audio"}, PublicService: "edge", MaxRotation: time.Hour,
		DeadLetterTopic:  func(t string) string { return t + "-dead-letter" },
		HoldSubscription: func(t string) string { return t + "-dead-letter-hold" },
		ValidateEvent:    func([]byte, map[string]string) error { return nil },
	}
	f.Fuzz(func(t *testing.T, src string) {
		m, err := Parse(map[string][]byte{"f.tf": []byte(src)})
		if err != nil {
			return
		}
		_ = Check(m, c)
	})
}
