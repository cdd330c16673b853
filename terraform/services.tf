# Cloud Run: one service per role of the one image (Dockerfile), each with
# its own service account holding only what that role uses.
#
#   edge        the HTTP API and Twilio webhooks, behind the load balancer
#               and Cloud Armor (lb.tf); the only public service
#   transcribe, uploads, embed, store, lifecycle, twilio
#               workers, each fed by its push subscription (pubsub.tf)
#   reconcile   re-drives items stuck in a non-final state: a timer, not a
#               subscriber, so it runs as `lethe run` with
#               LETHE_WORKERS=reconcile, one always-on instance, internal
#               ingress and no invoker at all
#
# Config validation is the same for every role (cmd/lethe/config.go): a
# production start needs every shared adapter configured, so each service
# gets the full adapter settings. Speech-to-text is opened by every role;
# services that never transcribe open the OpenAI-compatible adapter, which
# needs no credential, so the Deepgram key reaches only transcribe and
# twilio.

variable "stt" {
  description = "Hosted speech-to-text of the transcribing services: deepgram or openai."
  type        = string
  default     = "deepgram"
}

variable "embedder" {
  description = "Embeddings: pinecone (Pinecone Inference) or openai."
  type        = string
  default     = "pinecone"
}

variable "pinecone_index_host" {
  description = "Pinecone index host (lethe pinecone ensure-index prints it)."
  type        = string
}

variable "firebase_project" {
  description = "Firebase project whose ID tokens the edge accepts (empty: project_id)."
  type        = string
  default     = ""
}

variable "edge_max_instances" {
  description = "Upper bound on edge instances (cost and abuse ceiling)."
  type        = number
  default     = 20
}

variable "worker_max_instances" {
  description = "Upper bound on instances of each worker."
  type        = number
  default     = 10
}

locals {
  # Per role: command, ingress, request concurrency, instances, the topics
  # it publishes to, its bucket role (null: none), its secrets, and whether
  # it receives push.
  services = {
    edge = {
      args        = ["edge"]
      ingress     = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
      concurrency = 80
      min         = 1
      max         = var.edge_max_instances
      cpu         = "1"
      memory      = "512Mi"
      timeout     = "300s"
      # chunks; Twilio webhooks; erasure, export and retention requests
      publishes   = ["audio", "twilio", "lifecycle"]
      bucket_role = "roles/storage.objectUser"
      secrets     = ["pinecone-api-key", "twilio-auth-token"]
      push        = false
      stt         = "openai"
    }
    transcribe = {
      args        = ["worker", "transcribe"]
      ingress     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      concurrency = 4
      min         = 0
      max         = var.worker_max_instances
      cpu         = "1"
      memory      = "1Gi"
      timeout     = "600s"
      publishes   = ["transcripts"]
      bucket_role = "roles/storage.objectViewer"
      secrets     = ["pinecone-api-key", "deepgram-api-key", "openai-api-key"]
      push        = true
      stt         = var.stt
    }
    uploads = {
      args        = ["worker", "uploads"]
      ingress     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      concurrency = 2
      min         = 0
      max         = var.worker_max_instances
      cpu         = "1"
      memory      = "2Gi"
      timeout     = "600s"
      # reads the upload, writes it sealed, purges the upload's generation
      publishes   = ["audio"]
      bucket_role = "roles/storage.objectUser"
      secrets     = ["pinecone-api-key"]
      push        = true
      stt         = "openai"
    }
    embed = {
      args        = ["worker", "embed"]
      ingress     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      concurrency = 16
      min         = 0
      max         = var.worker_max_instances
      cpu         = "1"
      memory      = "512Mi"
      timeout     = "120s"
      publishes   = ["embeddings"]
      bucket_role = null
      secrets     = ["pinecone-api-key", "openai-api-key"]
      push        = true
      stt         = "openai"
    }
    store = {
      args        = ["worker", "store"]
      ingress     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      concurrency = 16
      min         = 0
      max         = var.worker_max_instances
      cpu         = "1"
      memory      = "512Mi"
      timeout     = "120s"
      publishes   = []
      bucket_role = null
      secrets     = ["pinecone-api-key"]
      push        = true
      stt         = "openai"
    }
    lifecycle = {
      args        = ["worker", "lifecycle"]
      ingress     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      concurrency = 1
      min         = 0
      max         = 2
      cpu         = "1"
      memory      = "2Gi"
      timeout     = "600s"
      # retention deletes, erasure deletes, export archives
      publishes   = ["lifecycle"]
      bucket_role = "roles/storage.objectUser"
      secrets     = ["pinecone-api-key"]
      push        = true
      stt         = "openai"
    }
    twilio = {
      args        = ["worker", "twilio"]
      ingress     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      concurrency = 8
      min         = 0
      max         = var.worker_max_instances
      cpu         = "1"
      memory      = "1Gi"
      timeout     = "300s"
      # recordings become audio chunks, SMS become transcripts
      publishes   = ["audio", "transcripts"]
      bucket_role = "roles/storage.objectUser"
      secrets     = ["pinecone-api-key", "deepgram-api-key", "twilio-auth-token"]
      push        = true
      stt         = var.stt
    }
    reconcile = {
      args        = ["run"]
      ingress     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      concurrency = 1
      min         = 1
      max         = 1
      cpu         = "1"
      memory      = "512Mi"
      timeout     = "60s"
      # re-drives any stage
      publishes   = ["audio", "transcripts", "embeddings", "lifecycle"]
      bucket_role = null
      # lethe run serves an (internal) edge too, which verifies Twilio
      # webhooks: production refuses it without the token.
      secrets = ["pinecone-api-key", "twilio-auth-token"]
      push    = false
      stt     = "openai"
    }
  }

  # Push OIDC audiences: Cloud Run accepts them as custom audiences, the
  # worker checks them (LETHE_PUSH_AUDIENCE).
  push_audience = { for k, s in local.services : k => "lethe-push-${k}" if s.push }

  # Settings every service shares: nothing secret (tfpolicy checks the keys).
  common_env = {
    LETHE_ENV                 = "production"
    LETHE_PROJECT             = var.project_id
    LETHE_BUS                 = "gcp"
    LETHE_DOCUMENTS           = "firestore"
    LETHE_FIRESTORE_DATABASE  = google_firestore_database.main.name
    LETHE_BLOBS               = "gcs"
    LETHE_GCS_BUCKET          = google_storage_bucket.blobs.name
    LETHE_VECTORS             = "pinecone"
    LETHE_PINECONE_INDEX_HOST = var.pinecone_index_host
    LETHE_EMBEDDER            = var.embedder
    LETHE_KEK                 = "gcpkms://${google_kms_crypto_key.kek.id}"
    LETHE_RATELIMIT           = "redis://${google_redis_instance.ratelimit.host}:${google_redis_instance.ratelimit.port}/0"
    LETHE_AUTH                = "firebase"
    LETHE_FIREBASE_PROJECT    = var.firebase_project != "" ? var.firebase_project : var.project_id
    # Cloud Scheduler requests retention sweeps (scheduler.tf).
    LETHE_RETENTION_SWEEP_EVERY = "0"
    # Outside every backup of the data (journal.tf).
    LETHE_ERASURE_JOURNAL = "gs://${google_storage_bucket.journal.name}"
    # What Twilio signs and browsers see; https turns on HSTS.
    LETHE_PUBLIC_URL = "https://${var.domain}"
  }

  plain_env = { for k, s in local.services : k => merge(local.common_env,
    { LETHE_STT = s.stt },
    s.push ? {
      LETHE_DELIVERY             = "push"
      LETHE_PUSH_AUDIENCE        = local.push_audience[k]
      LETHE_PUSH_SERVICE_ACCOUNT = google_service_account.push.email
    } : {},
    k == "reconcile" ? { LETHE_WORKERS = "reconcile" } : {},
    # Behind the external Application Load Balancer, which appends
    # "<client>,<balancer>" to X-Forwarded-For (README, "The public edge").
    k == "edge" ? { LETHE_TRUSTED_PROXY_HOPS = "2" } : {},
  ) }

  secret_env    = { for k, s in local.services : k => { for id in s.secrets : local.secrets[id] => id } }
  secret_grants = flatten([for k, s in local.services : [for id in s.secrets : { service = k, secret = id }]])
}

resource "google_service_account" "service" {
  for_each     = local.services
  project      = var.project_id
  account_id   = "lethe-${each.key}"
  display_name = "lethe ${each.key}"
  description  = "Runs the lethe ${each.key} service; holds only what that role uses."
}

# The identity Pub/Sub signs push OIDC tokens as; it may invoke the
# workers and nothing else.
resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "lethe-pubsub-push"
  display_name = "lethe Pub/Sub push"
  description  = "Pub/Sub push subscriptions authenticate to the workers as this account."
}

resource "google_cloud_run_v2_service" "service" {
  for_each = local.services

  project  = var.project_id
  name     = "lethe-${each.key}"
  location = var.region
  ingress  = each.value.ingress
  # The edge is reached through the load balancer only: no *.run.app URL
  # to bypass Cloud Armor with. Workers keep theirs for Pub/Sub push
  # (internal ingress admits push from this project only).
  default_uri_disabled = each.key == "edge"
  custom_audiences     = each.value.push ? [local.push_audience[each.key]] : []
  deletion_protection  = true

  template {
    service_account                  = google_service_account.service[each.key].email
    max_instance_request_concurrency = each.value.concurrency
    timeout                          = each.value.timeout
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = each.value.min
      max_instance_count = each.value.max
    }

    # Direct VPC egress: Memorystore is reached on the VPC; everything
    # else leaves through Cloud NAT (network.tf).
    vpc_access {
      egress = "ALL_TRAFFIC"
      network_interfaces {
        network    = google_compute_network.lethe.id
        subnetwork = google_compute_subnetwork.run.id
        tags       = ["lethe-run"]
      }
    }

    containers {
      image = var.image
      args  = each.value.args

      resources {
        limits = {
          cpu    = each.value.cpu
          memory = each.value.memory
        }
        # The reconciler's timer runs between requests.
        cpu_idle = each.key != "reconcile"
      }

      dynamic "env" {
        for_each = local.plain_env[each.key]
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.secret_env[each.key]
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.secret[env.value].secret_id
              version = "latest"
            }
          }
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
        }
      }
      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.access,
    google_kms_crypto_key_iam_member.services_use_kek,
  ]
}

# The edge is public, behind the load balancer (ingress admits only it):
# the LB forwards unauthenticated requests, and the edge checks Firebase
# tokens itself. tfpolicy: no other service has a public invoker.
resource "google_cloud_run_v2_service_iam_member" "edge_public" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.service["edge"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "push_invokes_workers" {
  for_each = local.push_audience
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.service[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

# Pub/Sub mints the push tokens as the push account.
resource "google_service_account_iam_member" "pubsub_signs_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}
