# Secret Manager holds the provider credentials; Cloud Run mounts them as
# environment variables (services.tf), each only into the services that
# need it. Terraform creates the secrets, never their values: a value in
# Terraform would sit in plain text in its state. Add each value with
#
#   printf %s "$VALUE" | gcloud secrets versions add NAME --data-file=-
#
# (rotation: add a version and redeploy; see the runbook).
#
# The identity keys (uid pseudonym HMAC, log HMAC, export URL key) are not
# here: the code creates them once and keeps them in Firestore wrapped by
# the KMS KEK (infra/keys/secrets), so they are as safe as the KEK and are
# rotated by versioning there.

variable "secret_replica_location" {
  description = "The one region Secret Manager replicates secrets to (keep it in the users' jurisdiction)."
  type        = string
  default     = "europe-west1"
}

locals {
  # Secret id -> the environment variable the code reads (cmd/lethe/config.go).
  secrets = {
    pinecone-api-key  = "PINECONE_API_KEY"
    deepgram-api-key  = "DEEPGRAM_API_KEY"
    openai-api-key    = "OPENAI_API_KEY"
    twilio-auth-token = "INF_TWILIO_AUTH_TOKEN"
  }
}

resource "google_secret_manager_secret" "secret" {
  for_each  = local.secrets
  project   = var.project_id
  secret_id = each.key

  replication {
    user_managed {
      replicas {
        location = var.secret_replica_location
      }
    }
  }
}

resource "google_secret_manager_secret_iam_member" "access" {
  for_each = { for p in local.secret_grants : "${p.service}/${p.secret}" => p }

  project   = var.project_id
  secret_id = google_secret_manager_secret.secret[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.service[each.value.service].email}"
}
