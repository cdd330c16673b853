# A VPC for the services' direct egress: Memorystore on private services
# access, everything bound for the internet (Pinecone, Deepgram, Twilio's
# API) through Cloud NAT, so egress has fixed addresses a provider can
# allow-list. Firewall: deny all ingress by default, and egress from the
# services only to Redis on the VPC and HTTPS outward.

variable "run_subnet_cidr" {
  description = "Range of the subnet Cloud Run's direct egress takes addresses from (at least /26)."
  type        = string
  default     = "10.8.0.0/24"
}

resource "google_compute_network" "lethe" {
  project                 = var.project_id
  name                    = "lethe"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "run" {
  project                  = var.project_id
  name                     = "lethe-run"
  region                   = var.region
  network                  = google_compute_network.lethe.id
  ip_cidr_range            = var.run_subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "EXCLUDE_ALL_METADATA"
  }
}

# Private services access: Memorystore lives in a peered Google network.
resource "google_compute_global_address" "services" {
  project       = var.project_id
  name          = "lethe-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = google_compute_network.lethe.id
}

resource "google_service_networking_connection" "services" {
  network                 = google_compute_network.lethe.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.services.name]
}

resource "google_compute_router" "lethe" {
  project = var.project_id
  name    = "lethe"
  region  = var.region
  network = google_compute_network.lethe.id
}

resource "google_compute_router_nat" "lethe" {
  project                            = var.project_id
  name                               = "lethe"
  router                             = google_compute_router.lethe.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.run.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

resource "google_compute_firewall" "deny_all_ingress" {
  project   = var.project_id
  name      = "lethe-deny-all-ingress"
  network   = google_compute_network.lethe.id
  direction = "INGRESS"
  priority  = 65000

  deny {
    protocol = "all"
  }
  source_ranges = ["0.0.0.0/0"]
}

resource "google_compute_firewall" "run_to_redis" {
  project            = var.project_id
  name               = "lethe-run-to-redis"
  network            = google_compute_network.lethe.id
  direction          = "EGRESS"
  priority           = 1000
  target_tags        = ["lethe-run"]
  destination_ranges = ["${google_compute_global_address.services.address}/${google_compute_global_address.services.prefix_length}"]

  allow {
    protocol = "tcp"
    ports    = ["6378", "6379"]
  }
}

resource "google_compute_firewall" "run_https_out" {
  project            = var.project_id
  name               = "lethe-run-https-out"
  network            = google_compute_network.lethe.id
  direction          = "EGRESS"
  priority           = 1000
  target_tags        = ["lethe-run"]
  destination_ranges = ["0.0.0.0/0"]

  allow {
    protocol = "tcp"
    ports    = ["443"]
  }
}

resource "google_compute_firewall" "run_deny_other_egress" {
  project            = var.project_id
  name               = "lethe-run-deny-other-egress"
  network            = google_compute_network.lethe.id
  direction          = "EGRESS"
  priority           = 2000
  target_tags        = ["lethe-run"]
  destination_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }
}
