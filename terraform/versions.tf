# lethe on Google Cloud. Every file here is one concern; README.md says
# how to apply, what each variable means and what this cannot check.
#
# The provider is pinned exactly: a provider upgrade is a reviewed change
# (Dependabot proposes it), not something an apply picks up.

terraform {
  required_version = ">= 1.5.7"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "6.40.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

variable "project_id" {
  description = "Google Cloud project id lethe is deployed to."
  type        = string
}

variable "region" {
  description = "Region of Cloud Run, Memorystore, the subnet and the KMS key ring; keep it in the users' jurisdiction."
  type        = string
  default     = "europe-west1"
}

variable "image" {
  description = "Container image of lethe (the Dockerfile at the repository root), pinned by digest: REGION-docker.pkg.dev/P/R/lethe@sha256:..."
  type        = string
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Google-managed service agents that act on lethe's resources.
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}
