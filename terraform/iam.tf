# What each service account may do, resource by resource. No account holds
# a basic role (owner, editor, viewer), and no grant is project-wide but
# Firestore's, which IAM conditions restrict to lethe's database.
# tfpolicy checks the basic roles and the public invokers.

locals {
  publish_grants = flatten([for k, s in local.services : [for t in s.publishes : { service = k, topic = t }]])

  # The subscription each pushed worker receives from, by topic key.
  worker_topic = {
    transcribe = "audio"
    uploads    = "uploads"
    embed      = "transcripts"
    store      = "embeddings"
    lifecycle  = "lifecycle"
    twilio     = "twilio"
  }
}

# Publisher on the topics the role publishes to.
resource "google_pubsub_topic_iam_member" "publishes" {
  for_each = { for g in local.publish_grants : "${g.service}/${g.topic}" => g }
  project  = var.project_id
  topic    = local.topic_ids[each.value.topic]
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.service[each.value.service].email}"
}

# A worker copies poison to its topic's dead-letter topic with the reason,
# and reads its subscription's dead-letter policy to find that topic.
resource "google_pubsub_topic_iam_member" "worker_dead_letters" {
  for_each = local.worker_topic
  project  = var.project_id
  topic    = local.dead_letter_topic_ids[each.value]
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.service[each.key].email}"
}

resource "google_pubsub_subscription_iam_member" "worker_reads_subscription" {
  for_each     = local.worker_topic
  project      = var.project_id
  subscription = local.worker_subscription_ids[each.key]
  role         = "roles/pubsub.viewer"
  member       = "serviceAccount:${google_service_account.service[each.key].email}"
}

# Readiness pings the audio topic (bus.Config.PingTopic).
resource "google_pubsub_topic_iam_member" "ping" {
  for_each = local.services
  project  = var.project_id
  topic    = google_pubsub_topic.audio.id
  role     = "roles/pubsub.viewer"
  member   = "serviceAccount:${google_service_account.service[each.key].email}"
}

# The edge's admin routes list and replay dead letters (/v1/admin/dlq):
# they pull from the holding subscriptions and republish to the topic.
resource "google_pubsub_subscription_iam_member" "edge_holds" {
  for_each     = local.hold_subscription_ids
  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.service["edge"].email}"
}

resource "google_pubsub_topic_iam_member" "edge_replays" {
  for_each = { for k, id in local.topic_ids : k => id if !contains(local.services.edge.publishes, k) }
  project  = var.project_id
  topic    = each.value
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.service["edge"].email}"
}

# Objects in the one bucket, at the role each service needs.
resource "google_storage_bucket_iam_member" "objects" {
  for_each = { for k, s in local.services : k => s.bucket_role if s.bucket_role != null }
  bucket   = google_storage_bucket.blobs.name
  role     = each.value
  member   = "serviceAccount:${google_service_account.service[each.key].email}"
}

# Firestore: read and write documents of lethe's database only.
resource "google_project_iam_member" "firestore" {
  for_each = local.services
  project  = var.project_id
  role     = "roles/datastore.user"
  member   = "serviceAccount:${google_service_account.service[each.key].email}"

  condition {
    title      = "lethe database only"
    expression = "resource.name == \"projects/${var.project_id}/databases/${var.firestore_database}\""
  }
}

# The edge signs upload URLs with IAM signBlob as itself (no key file).
resource "google_service_account_iam_member" "edge_signs_urls" {
  service_account_id = google_service_account.service["edge"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.service["edge"].email}"
}

# The edge revokes a user's Firebase sessions (POST /v1/me/sessions/revoke,
# erasure): Identity Platform user updates.
resource "google_project_iam_member" "edge_revokes_sessions" {
  project = var.project_id
  role    = "roles/firebaseauth.admin"
  member  = "serviceAccount:${google_service_account.service["edge"].email}"
}
