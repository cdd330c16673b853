# The edge's public entry: a global external Application Load Balancer
# with a Google-managed certificate, Cloud Armor in front of it, and a
# serverless NEG to the edge service (whose ingress admits only load
# balancers). Cloud Armor's rate-based rules bound what one address can
# cost before a request reaches Cloud Run; the edge's own per-uid and
# per-IP limits (Redis) stay the finer second layer.

variable "domain" {
  description = "DNS name the edge is served at (an A record to the output edge_ip; the managed certificate needs it)."
  type        = string
}

variable "armor_rate_per_minute" {
  description = "Requests per minute one client address may send before Cloud Armor answers 429."
  type        = number
  default     = 600
}

variable "armor_ban_per_minute" {
  description = "Requests per minute from one address that get it banned for armor_ban_seconds."
  type        = number
  default     = 3000
}

variable "armor_ban_seconds" {
  description = "How long an address over armor_ban_per_minute is banned."
  type        = number
  default     = 600
}

resource "google_compute_global_address" "edge" {
  project = var.project_id
  name    = "lethe-edge"
}

resource "google_compute_region_network_endpoint_group" "edge" {
  project               = var.project_id
  name                  = "lethe-edge"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = google_cloud_run_v2_service.service["edge"].name
  }
}

resource "google_compute_security_policy" "edge" {
  project = var.project_id
  name    = "lethe-edge"
  type    = "CLOUD_ARMOR"

  # One address over the ban threshold is shut out for a while.
  rule {
    action   = "rate_based_ban"
    priority = 1000
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action   = "allow"
      exceed_action    = "deny(429)"
      enforce_on_key   = "IP"
      ban_duration_sec = var.armor_ban_seconds
      rate_limit_threshold {
        count        = var.armor_ban_per_minute
        interval_sec = 60
      }
      ban_threshold {
        count        = var.armor_ban_per_minute
        interval_sec = 60
      }
    }
    description = "ban addresses far over the rate"
  }

  # Token endpoints and webhooks are cheap to call and costly to serve.
  rule {
    action   = "throttle"
    priority = 2000
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.armor_rate_per_minute
        interval_sec = 60
      }
    }
    description = "throttle each address"
  }

  rule {
    action   = "allow"
    priority = 2147483647
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    description = "default: allow what the rules above let through"
  }

  adaptive_protection_config {
    layer_7_ddos_defense_config {
      enable = true
    }
  }
}

resource "google_compute_backend_service" "edge" {
  project               = var.project_id
  name                  = "lethe-edge"
  protocol              = "HTTPS"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  security_policy       = google_compute_security_policy.edge.id

  backend {
    group = google_compute_region_network_endpoint_group.edge.id
  }

  log_config {
    enable      = true
    sample_rate = 1
  }
}

resource "google_compute_url_map" "edge" {
  project         = var.project_id
  name            = "lethe-edge"
  default_service = google_compute_backend_service.edge.id
}

resource "google_compute_managed_ssl_certificate" "edge" {
  project = var.project_id
  name    = "lethe-edge"

  managed {
    domains = [var.domain]
  }
}

resource "google_compute_ssl_policy" "edge" {
  project         = var.project_id
  name            = "lethe-edge"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "edge" {
  project          = var.project_id
  name             = "lethe-edge"
  url_map          = google_compute_url_map.edge.id
  ssl_certificates = [google_compute_managed_ssl_certificate.edge.id]
  ssl_policy       = google_compute_ssl_policy.edge.id
}

resource "google_compute_global_forwarding_rule" "edge" {
  project               = var.project_id
  name                  = "lethe-edge"
  target                = google_compute_target_https_proxy.edge.id
  ip_address            = google_compute_global_address.edge.id
  port_range            = "443"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
