# Twilio intake: the twilio topic, its dead-letter topic (with a holding
# subscription an operator replays from), and the push subscription that
# delivers to the twilio worker's /push/twilio with an OIDC token the
# receiver verifies (LETHE_PUSH_AUDIENCE, LETHE_PUSH_SERVICE_ACCOUNT).
# Names match lethe's topology (cmd/lethe/run.go).
#
# Expects var.project_id (declared with the provider).

variable "twilio_worker_url" {
  description = "Base URL of the Cloud Run service that runs the twilio worker (LETHE_DELIVERY=push)"
  type        = string
}

variable "push_service_account" {
  description = "Service account Pub/Sub signs push OIDC tokens as (LETHE_PUSH_SERVICE_ACCOUNT)"
  type        = string
}

variable "push_audience" {
  description = "Audience of push OIDC tokens (LETHE_PUSH_AUDIENCE)"
  type        = string
}

resource "google_pubsub_topic" "twilio" {
  project = var.project_id
  name    = "twilio"
  # Events carry keyed hashes and sealed bodies only; a day covers an outage.
  message_retention_duration = "86400s"
}

resource "google_pubsub_topic" "twilio_dead_letter" {
  project                    = var.project_id
  name                       = "twilio-dead-letter"
  message_retention_duration = "604800s"
}

resource "google_pubsub_subscription" "twilio_dead_letter_hold" {
  project                    = var.project_id
  name                       = "twilio-dead-letter-hold"
  topic                      = google_pubsub_topic.twilio_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "twilio" {
  project              = var.project_id
  name                 = "twilio"
  topic                = google_pubsub_topic.twilio.id
  ack_deadline_seconds = 60

  push_config {
    push_endpoint = "${trimsuffix(var.twilio_worker_url, "/")}/push/twilio"
    oidc_token {
      service_account_email = var.push_service_account
      audience              = var.push_audience
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.twilio_dead_letter.id
    max_delivery_attempts = 10
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering needs the Pub/Sub service agent to publish to the
# dead-letter topic and to acknowledge on the source subscription.
data "google_project" "twilio" {
  project_id = var.project_id
}

locals {
  pubsub_service_agent = "serviceAccount:service-${data.google_project.twilio.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic_iam_member" "twilio_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.twilio_dead_letter.id
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "twilio_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.twilio.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Pub/Sub mints the push OIDC tokens as push_service_account.
resource "google_service_account_iam_member" "pubsub_mints_push_tokens" {
  service_account_id = "projects/${var.project_id}/serviceAccounts/${var.push_service_account}"
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
