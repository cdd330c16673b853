output "edge_ip" {
  description = "Address of the edge's load balancer: point var.domain's A record here."
  value       = google_compute_global_address.edge.address
}

output "edge_url" {
  description = "Public URL of the API (also the Twilio webhook base: https://DOMAIN/twilio/...)."
  value       = "https://${var.domain}"
}

output "service_urls" {
  description = "Cloud Run URL of each service (workers: reachable by Pub/Sub push only)."
  value       = { for k, s in google_cloud_run_v2_service.service : k => s.uri }
}

output "service_accounts" {
  description = "Service account of each service."
  value       = { for k, sa in google_service_account.service : k => sa.email }
}

output "kek" {
  description = "LETHE_KEK of every service."
  value       = "gcpkms://${google_kms_crypto_key.kek.id}"
}

output "topics" {
  description = "Every Pub/Sub topic, dead-letter topics included."
  value       = concat(values(local.topic_ids), values(local.dead_letter_topic_ids))
}

output "secrets" {
  description = "Secret Manager secrets whose values the operator adds (gcloud secrets versions add)."
  value       = { for id, s in google_secret_manager_secret.secret : id => s.name }
}

output "redis_host" {
  description = "Memorystore address (in LETHE_RATELIMIT)."
  value       = "${google_redis_instance.ratelimit.host}:${google_redis_instance.ratelimit.port}"
}

output "firestore_database" {
  description = "Firestore database (LETHE_FIRESTORE_DATABASE)."
  value       = google_firestore_database.main.name
}
