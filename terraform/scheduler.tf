# Cloud Scheduler requests a retention sweep on the lifecycle topic, as
# `lethe run` does with LETHE_RETENTION_SWEEP_EVERY on one machine. The
# message is a CloudEvent in Pub/Sub binary mode (ce-* attributes, data the
# JSON body) that passes the events registry's schema check. Scheduler
# sends the same message each time: the sweep takes its cut-off from the
# worker's clock, not from requested_at, and a sweep is idempotent.

variable "retention_sweep_schedule" {
  description = "cron schedule of retention sweeps (in retention_sweep_time_zone)."
  type        = string
  default     = "17 * * * *"
}

variable "retention_sweep_time_zone" {
  description = "Time zone of retention_sweep_schedule."
  type        = string
  default     = "Etc/UTC"
}

# Scheduler publishes as its service agent, whose role carries
# pubsub.topics.publish: no account of lethe's is involved.
resource "google_cloud_scheduler_job" "retention_sweep" {
  project   = var.project_id
  region    = var.region
  name      = "lethe-retention-sweep"
  schedule  = var.retention_sweep_schedule
  time_zone = var.retention_sweep_time_zone

  pubsub_target {
    topic_name = google_pubsub_topic.lifecycle.id
    data       = base64encode(jsonencode({ requested_at = "2026-01-01T00:00:00Z" }))
    attributes = {
      "ce-specversion" = "1.0"
      "ce-id"          = "scheduler-retention-sweep"
      "ce-source"      = "//lethe.dev/pipeline"
      "ce-type"        = "dev.lethe.retention.sweep.requested.v1"
      "ce-subject"     = "retention/sweep"
      "ce-time"        = "2026-01-01T00:00:00Z"
      "ce-dataschema"  = "https://lethe.dev/schemas/dev.lethe.retention.sweep.requested.v1.json"
      "content-type"   = "application/json"
    }
  }

  retry_config {
    retry_count = 3
  }
}
