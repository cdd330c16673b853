# Audit and alerting. Data Access audit logs record who read or wrote
# documents, objects, keys and secrets (admin activity is always logged).
# The services log security events as JSON with a security_event field
# (functions/server.go: auth_failure, forbidden_admin, rate_limited, ...)
# and ALERT-severity entries for what needs a human at once; log-based
# metrics count them and alert policies page.

variable "notification_channels" {
  description = "Monitoring notification channel ids (projects/P/notificationChannels/N) that alerts page."
  type        = list(string)
  default     = []
}

variable "security_event_thresholds" {
  description = "Per security event kind: events per 5 minutes, across all services, above which an alert opens."
  type        = map(number)
  default = {
    auth_failure      = 100
    forbidden_admin   = 1
    schema_rejection  = 50
    rate_limited      = 500
    signature_failure = 10
    bad_signature     = 10
  }
}

resource "google_project_iam_audit_config" "data_access" {
  for_each = toset([
    "datastore.googleapis.com",
    "storage.googleapis.com",
    "cloudkms.googleapis.com",
    "secretmanager.googleapis.com",
    "pubsub.googleapis.com",
  ])
  project = var.project_id
  service = each.key

  audit_log_config {
    log_type = "ADMIN_READ"
  }
  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}

resource "google_logging_metric" "security_events" {
  project = var.project_id
  name    = "lethe/security_events"
  filter  = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=~\"^lethe-\" AND jsonPayload.security_event:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "lethe security events"
    labels {
      key         = "kind"
      value_type  = "STRING"
      description = "security_event field: auth_failure, forbidden_admin, schema_rejection, rate_limited, signature_failure, ..."
    }
    labels {
      key         = "service"
      value_type  = "STRING"
      description = "Cloud Run service"
    }
  }

  label_extractors = {
    kind    = "EXTRACT(jsonPayload.security_event)"
    service = "EXTRACT(resource.labels.service_name)"
  }
}

resource "google_logging_metric" "alert_entries" {
  project = var.project_id
  name    = "lethe/alert_entries"
  filter  = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=~\"^lethe-\" AND severity>=ALERT"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "lethe ALERT log entries"
  }
}

resource "google_monitoring_alert_policy" "security_event" {
  for_each     = var.security_event_thresholds
  project      = var.project_id
  display_name = "lethe: ${each.key} above ${each.value} per 5 min"
  combiner     = "OR"

  conditions {
    display_name = "${each.key} events"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.security_events.name}\" AND resource.type=\"cloud_run_revision\" AND metric.label.kind=\"${each.key}\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }

  notification_channels = var.notification_channels
  documentation {
    content   = "Security events of kind ${each.key} exceed ${each.value} in 5 minutes. See docs/SECURITY.md and the runbook."
    mime_type = "text/markdown"
  }
}

# Every ALERT entry pages at once (log-match condition), at most one
# notification per 5 minutes.
resource "google_monitoring_alert_policy" "alert_entries" {
  project      = var.project_id
  display_name = "lethe: ALERT log entry"
  combiner     = "OR"

  conditions {
    display_name = "severity ALERT from a lethe service"
    condition_matched_log {
      filter = google_logging_metric.alert_entries.filter
    }
  }

  alert_strategy {
    notification_rate_limit {
      period = "300s"
    }
    auto_close = "1800s"
  }

  notification_channels = var.notification_channels
  documentation {
    content   = "A lethe service logged an ALERT entry. See docs/SECURITY.md and the runbook."
    mime_type = "text/markdown"
  }
}

# Dead letters waiting: poison or a worker failing for good.
resource "google_monitoring_alert_policy" "dead_letters" {
  project      = var.project_id
  display_name = "lethe: dead letters waiting"
  combiner     = "OR"

  conditions {
    display_name = "undelivered messages in a dead-letter holding subscription"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=ends_with(\"-dead-letter-hold\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  notification_channels = var.notification_channels
  documentation {
    content   = "Messages are waiting in a dead-letter topic: inspect with `lethe dlq list TOPIC` and replay per the runbook."
    mime_type = "text/markdown"
  }
}
