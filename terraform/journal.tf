# The erasure journal (LETHE_ERASURE_JOURNAL): one create-only object per
# erased user, holding only the keyed pseudonym and the erasure id. It lives
# in its own bucket, outside every Firestore backup and point-in-time
# recovery and outside the blobs bucket, so that after a restore
# `lethe erasures reapply` erases again every user erased since the backup
# (docs/runbook.md). Services may create entries, never delete them.

variable "journal_bucket" {
  description = "Name of the erasure journal's bucket (globally unique). Keep it out of every backup and restore of the data."
  type        = string
}

resource "google_storage_bucket" "journal" {
  project       = var.project_id
  name          = var.journal_bucket
  location      = var.blobs_location
  storage_class = "STANDARD"
  force_destroy = false
  depends_on    = [google_kms_crypto_key_iam_member.gcs_uses_blobs_key]

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  encryption {
    default_kms_key_name = google_kms_crypto_key.blobs.id
  }

  # An entry must outlive every backup that predates it: nothing expires.
  versioning {
    enabled = true
  }
}

# The saga journals an erasure before its tombstone: the edge (DELETE
# /v1/me, admin erasures), the lifecycle worker and the reconciler run it.
resource "google_storage_bucket_iam_member" "journal_create" {
  for_each = toset(["edge", "lifecycle", "reconcile"])
  bucket   = google_storage_bucket.journal.name
  role     = "roles/storage.objectCreator"
  member   = "serviceAccount:${google_service_account.service[each.key].email}"
}

resource "google_storage_bucket_iam_member" "journal_read" {
  for_each = toset(["edge", "lifecycle", "reconcile"])
  bucket   = google_storage_bucket.journal.name
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.service[each.key].email}"
}
