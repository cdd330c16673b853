# Cloud Storage for the blobs adapter (infra/blobs/gcsblobs): sealed audio
# and export archives under users/<uid-hash>/..., and large recordings the
# app PUTs through V4 signed URLs to uploads/<uid-hash>/<cid>/<seq>
# (7-digit seq). The finalize notification of an upload enters the
# pipeline as an audio event; the pipeline seals the bytes elsewhere and
# deletes that exact generation (PurgeGeneration).
#
# Encrypted with the blobs KMS key (kms.tf); the data is also sealed per
# user by the application, so CMEK is a second layer the operator controls.

variable "blobs_bucket" {
  description = "Name of the blobs bucket (globally unique)."
  type        = string
}

variable "blobs_location" {
  description = "Location of the blobs bucket; keep it in the users' jurisdiction."
  type        = string
  default     = "EU"
}

variable "blobs_noncurrent_days" {
  description = "Days a noncurrent (overwritten or deleted) version is kept before deletion."
  type        = number
  default     = 3
}

resource "google_storage_bucket" "blobs" {
  project       = var.project_id
  name          = var.blobs_bucket
  location      = var.blobs_location
  storage_class = "STANDARD"
  force_destroy = false
  depends_on    = [google_kms_crypto_key_iam_member.gcs_uses_blobs_key]

  # IAM only, no object ACLs; nothing here is ever public.
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  encryption {
    default_kms_key_name = google_kms_crypto_key.blobs.id
  }

  # Versioning guards against a buggy overwrite or delete; noncurrent
  # versions live only a few days (rule below), and erasure removes them
  # at once (DeletePrefix deletes every generation).
  versioning {
    enabled = true
  }

  # Soft delete would keep every deleted object restorable for 7 days by
  # default: an erasure must leave nothing behind.
  soft_delete_policy {
    retention_duration_seconds = 0
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.blobs_noncurrent_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # Uploads are plaintext until the pipeline seals them and purges the
  # generation; one the pipeline never processed is gone within a day,
  # live or noncurrent.
  lifecycle_rule {
    condition {
      age            = 1
      matches_prefix = ["uploads/"]
      with_state     = "ANY"
    }
    action {
      type = "Delete"
    }
  }

  # XML multipart uploads left unfinished hold data invisibly.
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}

resource "google_pubsub_topic" "uploads" {
  project = var.project_id
  # events.TopicUploads: the code reads this name, it is not configurable.
  name = "gcs-uploads"
  # Notifications carry object names with uid hashes, never content; a
  # day covers any outage of the subscriber.
  message_retention_duration = "86400s"
}

# Cloud Storage publishes notifications as its per-project service agent.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_pubsub_topic_iam_member" "gcs_publishes_uploads" {
  project = var.project_id
  topic   = google_pubsub_topic.uploads.id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Only finalized uploads: sealed audio and exports written by the pipeline
# itself must not come back as events.
resource "google_storage_notification" "uploads_finalized" {
  bucket             = google_storage_bucket.blobs.name
  payload_format     = "JSON_API_V1"
  topic              = google_pubsub_topic.uploads.id
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = "uploads/"
  depends_on         = [google_pubsub_topic_iam_member.gcs_publishes_uploads]
}

output "blobs_bucket" {
  description = "Name of the blobs bucket (LETHE_GCS_BUCKET)."
  value       = google_storage_bucket.blobs.name
}

output "uploads_topic" {
  description = "Topic that receives the bucket's upload notifications."
  value       = google_pubsub_topic.uploads.id
}
