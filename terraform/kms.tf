# The key-encryption key (KEK): it wraps every user's Tink keyset and the
# process-wide identity secrets (uid and log HMAC keys, the export URL key),
# which the code keeps in Firestore wrapped by this key (infra/keys/secrets),
# so erasing a user is destroying one wrapped keyset. A second key encrypts
# the bucket (CMEK). Both rotate: new data is wrapped by the new version,
# old versions stay to unwrap old data until re-wrapped.

variable "kms_rotation_period" {
  description = "Rotation period of the KMS keys (seconds, with an s suffix); at most 90 days."
  type        = string
  default     = "7776000s"
}

resource "google_kms_key_ring" "lethe" {
  project  = var.project_id
  name     = "lethe"
  location = var.region
}

resource "google_kms_crypto_key" "kek" {
  name            = "kek"
  key_ring        = google_kms_key_ring.lethe.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kms_rotation_period

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = "HSM"
  }

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key" "blobs" {
  name            = "blobs"
  key_ring        = google_kms_key_ring.lethe.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kms_rotation_period

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = "SOFTWARE"
  }

  lifecycle {
    prevent_destroy = true
  }
}

# Cloud Storage encrypts with the bucket key as its service agent.
resource "google_kms_crypto_key_iam_member" "gcs_uses_blobs_key" {
  crypto_key_id = google_kms_crypto_key.blobs.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Every role opens the identity secrets at start and seals or opens user
# data, so every service account may use the KEK (and nothing else in KMS).
resource "google_kms_crypto_key_iam_member" "services_use_kek" {
  for_each      = local.services
  crypto_key_id = google_kms_crypto_key.kek.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_service_account.service[each.key].email}"
}
