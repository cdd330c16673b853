# Memorystore for Redis: the edge's rate limits (per uid, per IP, failed
# auth), shared by every edge instance. It holds counters keyed by hashes,
# no personal data. Reachable only from the VPC (private services access).
# AUTH and in-transit TLS are off because LETHE_RATELIMIT takes a plain
# redis:// URL and the code has no setting for Memorystore's CA; the VPC
# and the firewall (network.tf) are the boundary. See README.md.

variable "redis_memory_gb" {
  description = "Memorystore capacity in GB."
  type        = number
  default     = 1
}

resource "google_redis_instance" "ratelimit" {
  project            = var.project_id
  name               = "lethe-ratelimit"
  region             = var.region
  tier               = "STANDARD_HA"
  memory_size_gb     = var.redis_memory_gb
  redis_version      = "REDIS_7_2"
  authorized_network = google_compute_network.lethe.id
  connect_mode       = "PRIVATE_SERVICE_ACCESS"
  reserved_ip_range  = google_compute_global_address.services.name

  # Counters are rebuilt within a minute; nothing to persist.
  persistence_config {
    persistence_mode = "DISABLED"
  }

  depends_on = [google_service_networking_connection.services]
}
