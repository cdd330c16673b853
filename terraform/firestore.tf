# Firestore indexes for the documents adapter (infra/docs/firestoredocs).
#
# Layout: users/{uid-hash}/{collection}/{id} per user, {collection}/{id}
# for global collections. Each document holds data (bytes), fields (a map
# of the indexed values) and updated (commit time). Queries filter and
# order on fields.<name>, with the document name (__name__) as the last
# order, in the query's direction.
#
# Automatic single-field indexes (collection scope) serve every per-user
# query on one field (e.g. a user's conversations by fields.updated_at
# descending); the composite and collection-group indexes below are
# the ones the current queries need. The emulator does not enforce indexes,
# so a new query shape needs its index here before it reaches production.
#
# The database keeps point-in-time recovery (7 days) and daily backups;
# a restore must re-apply erasures made since (README.md, the runbook).
# Security rules deny every client SDK: the server is the only client.

variable "firestore_database" {
  description = "Firestore database id used by the documents adapter (LETHE_FIRESTORE_DATABASE)."
  type        = string
  default     = "(default)"
}

variable "firestore_location" {
  description = "Firestore location (a region or a multi-region such as eur3); keep it in the users' jurisdiction."
  type        = string
  default     = "eur3"
}

variable "firestore_backup_retention" {
  description = "How long each daily Firestore backup is kept (seconds, s suffix; at most 14 weeks). Erasures after a backup are re-applied on restore."
  type        = string
  default     = "604800s"
}

resource "google_firestore_database" "main" {
  project                           = var.project_id
  name                              = var.firestore_database
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"
}

resource "google_firestore_backup_schedule" "daily" {
  project   = var.project_id
  database  = google_firestore_database.main.name
  retention = var.firestore_backup_retention

  daily_recurrence {}
}

resource "google_firebaserules_ruleset" "firestore" {
  project = var.project_id

  source {
    files {
      name    = "firestore.rules"
      content = file("${path.module}/firestore.rules")
    }
  }
}

resource "google_firebaserules_release" "firestore" {
  project      = var.project_id
  name         = var.firestore_database == "(default)" ? "cloud.firestore" : "cloud.firestore/${var.firestore_database}"
  ruleset_name = "projects/${var.project_id}/rulesets/${google_firebaserules_ruleset.firestore.name}"

  lifecycle {
    replace_triggered_by = [google_firebaserules_ruleset.firestore]
  }
}

locals {
  # Every collection group the pipeline writes (app/records).
  firestore_collections = ["conversations", "chunks", "segments", "segment_parts", "vectorspace", "tombstones"]
}

# The reconciler (workers/reconcile) finds stuck chunks across all users:
# collection group "chunks", fields.status == S and fields.updated_at <= T,
# ordered by fields.updated_at then __name__.
resource "google_firestore_index" "chunks_status_updated_at_all_users" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "chunks"
  query_scope = "COLLECTION_GROUP"

  fields {
    field_path = "fields.status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "fields.updated_at"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

# A conversation's chunks, in order (GET /v1/conversations/{cid}): one
# user's "chunks", fields.conversation_id == C, ordered by fields.seq.
resource "google_firestore_index" "chunks_conversation_seq" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "chunks"
  query_scope = "COLLECTION"

  fields {
    field_path = "fields.conversation_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "fields.seq"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

# A conversation's last chunk (GET /v1/listen's hello: where a stream
# resumes): fields.conversation_id == C, ordered by fields.seq descending.
resource "google_firestore_index" "chunks_conversation_seq_desc" {
  project     = var.project_id
  database    = var.firestore_database
  collection  = "chunks"
  query_scope = "COLLECTION"

  fields {
    field_path = "fields.conversation_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "fields.seq"
    order      = "DESCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }
}

# A conversation's transcript segments, in order (same endpoint).
resource "google_firestore_index" "segments_conversation_seq" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "segments"
  query_scope = "COLLECTION"

  fields {
    field_path = "fields.conversation_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "fields.seq"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

# Retention sweeps: the oldest expired documents across all users,
# fields.expires_at < now ordered by fields.expires_at (collection group).
# Single-field collection-group indexes are not automatic; an override
# replaces the inherited indexes, so the collection-scope ones are listed
# again for per-user queries.
resource "google_firestore_field" "expires_at" {
  for_each = toset(["conversations", "chunks", "segments", "expiries"])

  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = each.key
  field      = "fields.expires_at"

  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION"
    }
    indexes {
      order       = "DESCENDING"
      query_scope = "COLLECTION"
    }
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION_GROUP"
    }
  }
}

# data is opaque sealed bytes (up to 900 kB), never queried: indexing it
# costs storage and write latency for nothing.
resource "google_firestore_field" "data_unindexed" {
  for_each = toset(local.firestore_collections)

  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = each.key
  field      = "data"

  # An empty index_config disables every index on the field.
  index_config {}
}

# updated is the commit time, never queried: a monotonically increasing
# indexed value would also make one hot index range at high write rates.
resource "google_firestore_field" "updated_unindexed" {
  for_each = toset(local.firestore_collections)

  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = each.key
  field      = "updated"

  index_config {}
}
