# Pub/Sub: every topic the code declares (events.AllTopics), each with its
# dead-letter topic (events.DeadLetterTopic: <topic>-dead-letter) and the
# holding subscription that keeps dead letters for `lethe dlq` and the
# admin routes (bus.DeadLetterHoldSubscription: <topic>-dead-letter-hold),
# and one push subscription per worker, named as the worker
# (cmd/lethe topology()). The gcs-uploads topic is in storage.tf with the
# bucket notification that feeds it.
#
# Workers receive by push (POST /push/<subscription>, OIDC-verified by the
# worker and by Cloud Run's IAM): a Cloud Run service must serve HTTP, and
# push lets each worker scale on its own backlog. Poison is copied by the
# worker to the dead-letter topic with its reason; the dead-letter policy
# is the backstop for messages that fail max_delivery_attempts times.
# internal/tfpolicy checks all of this against the events catalog.

variable "max_delivery_attempts" {
  description = "Deliveries before Pub/Sub moves a message to the dead-letter topic (5..100)."
  type        = number
  default     = 10
}

variable "message_retention" {
  description = "How long a topic keeps messages for replay (seconds, s suffix). Events carry sealed data and uid hashes only."
  type        = string
  default     = "86400s"
}

variable "dead_letter_retention" {
  description = "How long the holding subscriptions keep dead letters (seconds, s suffix; at most 7 days)."
  type        = string
  default     = "604800s"
}

resource "google_pubsub_topic" "audio" {
  project                    = var.project_id
  name                       = "audio"
  message_retention_duration = var.message_retention
}

resource "google_pubsub_topic" "transcripts" {
  project                    = var.project_id
  name                       = "transcripts"
  message_retention_duration = var.message_retention
}

resource "google_pubsub_topic" "embeddings" {
  project                    = var.project_id
  name                       = "embeddings"
  message_retention_duration = var.message_retention
}

resource "google_pubsub_topic" "twilio" {
  project                    = var.project_id
  name                       = "twilio"
  message_retention_duration = var.message_retention
}

resource "google_pubsub_topic" "lifecycle" {
  project                    = var.project_id
  name                       = "lifecycle"
  message_retention_duration = var.message_retention
}

resource "google_pubsub_topic" "audio_dead_letter" {
  project                    = var.project_id
  name                       = "audio-dead-letter"
  message_retention_duration = var.dead_letter_retention
}

# Pub/Sub drops what is published to a topic with no subscription: this
# one holds the dead letters until an operator lists or replays them.
resource "google_pubsub_subscription" "audio_dead_letter_hold" {
  project                    = var.project_id
  name                       = "audio-dead-letter-hold"
  topic                      = google_pubsub_topic.audio_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic" "uploads_dead_letter" {
  project                    = var.project_id
  name                       = "gcs-uploads-dead-letter"
  message_retention_duration = var.dead_letter_retention
}

# Pub/Sub drops what is published to a topic with no subscription: this
# one holds the dead letters until an operator lists or replays them.
resource "google_pubsub_subscription" "uploads_dead_letter_hold" {
  project                    = var.project_id
  name                       = "gcs-uploads-dead-letter-hold"
  topic                      = google_pubsub_topic.uploads_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic" "transcripts_dead_letter" {
  project                    = var.project_id
  name                       = "transcripts-dead-letter"
  message_retention_duration = var.dead_letter_retention
}

# Pub/Sub drops what is published to a topic with no subscription: this
# one holds the dead letters until an operator lists or replays them.
resource "google_pubsub_subscription" "transcripts_dead_letter_hold" {
  project                    = var.project_id
  name                       = "transcripts-dead-letter-hold"
  topic                      = google_pubsub_topic.transcripts_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic" "embeddings_dead_letter" {
  project                    = var.project_id
  name                       = "embeddings-dead-letter"
  message_retention_duration = var.dead_letter_retention
}

# Pub/Sub drops what is published to a topic with no subscription: this
# one holds the dead letters until an operator lists or replays them.
resource "google_pubsub_subscription" "embeddings_dead_letter_hold" {
  project                    = var.project_id
  name                       = "embeddings-dead-letter-hold"
  topic                      = google_pubsub_topic.embeddings_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic" "twilio_dead_letter" {
  project                    = var.project_id
  name                       = "twilio-dead-letter"
  message_retention_duration = var.dead_letter_retention
}

# Pub/Sub drops what is published to a topic with no subscription: this
# one holds the dead letters until an operator lists or replays them.
resource "google_pubsub_subscription" "twilio_dead_letter_hold" {
  project                    = var.project_id
  name                       = "twilio-dead-letter-hold"
  topic                      = google_pubsub_topic.twilio_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic" "lifecycle_dead_letter" {
  project                    = var.project_id
  name                       = "lifecycle-dead-letter"
  message_retention_duration = var.dead_letter_retention
}

# Pub/Sub drops what is published to a topic with no subscription: this
# one holds the dead letters until an operator lists or replays them.
resource "google_pubsub_subscription" "lifecycle_dead_letter_hold" {
  project                    = var.project_id
  name                       = "lifecycle-dead-letter-hold"
  topic                      = google_pubsub_topic.lifecycle_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "transcribe" {
  project              = var.project_id
  name                 = "transcribe"
  topic                = google_pubsub_topic.audio.id
  ack_deadline_seconds = 600

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.service["transcribe"].uri}/push/transcribe"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.push_audience["transcribe"]
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.audio_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "uploads" {
  project              = var.project_id
  name                 = "uploads"
  topic                = google_pubsub_topic.uploads.id
  ack_deadline_seconds = 600

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.service["uploads"].uri}/push/uploads"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.push_audience["uploads"]
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.uploads_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "embed" {
  project              = var.project_id
  name                 = "embed"
  topic                = google_pubsub_topic.transcripts.id
  ack_deadline_seconds = 120

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.service["embed"].uri}/push/embed"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.push_audience["embed"]
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.transcripts_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "store" {
  project              = var.project_id
  name                 = "store"
  topic                = google_pubsub_topic.embeddings.id
  ack_deadline_seconds = 120

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.service["store"].uri}/push/store"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.push_audience["store"]
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.embeddings_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "lifecycle" {
  project              = var.project_id
  name                 = "lifecycle"
  topic                = google_pubsub_topic.lifecycle.id
  ack_deadline_seconds = 600

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.service["lifecycle"].uri}/push/lifecycle"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.push_audience["lifecycle"]
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.lifecycle_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "twilio" {
  project              = var.project_id
  name                 = "twilio"
  topic                = google_pubsub_topic.twilio.id
  ack_deadline_seconds = 300

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.service["twilio"].uri}/push/twilio"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.push_audience["twilio"]
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.twilio_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

locals {
  # Topic ids by the keys services.tf uses.
  topic_ids = {
    audio       = google_pubsub_topic.audio.id
    uploads     = google_pubsub_topic.uploads.id
    transcripts = google_pubsub_topic.transcripts.id
    embeddings  = google_pubsub_topic.embeddings.id
    twilio      = google_pubsub_topic.twilio.id
    lifecycle   = google_pubsub_topic.lifecycle.id
  }
  dead_letter_topic_ids = {
    audio       = google_pubsub_topic.audio_dead_letter.id
    uploads     = google_pubsub_topic.uploads_dead_letter.id
    transcripts = google_pubsub_topic.transcripts_dead_letter.id
    embeddings  = google_pubsub_topic.embeddings_dead_letter.id
    twilio      = google_pubsub_topic.twilio_dead_letter.id
    lifecycle   = google_pubsub_topic.lifecycle_dead_letter.id
  }
  hold_subscription_ids = {
    audio       = google_pubsub_subscription.audio_dead_letter_hold.id
    uploads     = google_pubsub_subscription.uploads_dead_letter_hold.id
    transcripts = google_pubsub_subscription.transcripts_dead_letter_hold.id
    embeddings  = google_pubsub_subscription.embeddings_dead_letter_hold.id
    twilio      = google_pubsub_subscription.twilio_dead_letter_hold.id
    lifecycle   = google_pubsub_subscription.lifecycle_dead_letter_hold.id
  }
  worker_subscription_ids = {
    transcribe = google_pubsub_subscription.transcribe.id
    uploads    = google_pubsub_subscription.uploads.id
    embed      = google_pubsub_subscription.embed.id
    store      = google_pubsub_subscription.store.id
    lifecycle  = google_pubsub_subscription.lifecycle.id
    twilio     = google_pubsub_subscription.twilio.id
  }
}

# Dead-letter policies act as the Pub/Sub service agent: it publishes to
# the dead-letter topics and acknowledges on the source subscriptions.
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  for_each = local.dead_letter_topic_ids
  project  = var.project_id
  topic    = each.value
  role     = "roles/pubsub.publisher"
  member   = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_forwards_dead_letters" {
  for_each     = local.worker_subscription_ids
  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
