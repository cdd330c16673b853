# Copy to terraform.tfvars (git-ignored) and fill in. No secret goes here:
# secret values are added to Secret Manager with gcloud (secrets.tf).
project_id          = "lethe-prod-123456"
region              = "europe-west1"
image               = "europe-west1-docker.pkg.dev/lethe-prod-123456/lethe/lethe@sha256:0000000000000000000000000000000000000000000000000000000000000000"
domain              = "api.lethe.example"
blobs_bucket        = "lethe-prod-123456-blobs"
journal_bucket      = "lethe-prod-123456-erasure-journal"
blobs_location      = "EU"
firestore_location  = "eur3"
pinecone_index_host = "lethe-abc1234.svc.aped-1234-a56b.pinecone.io"
stt                 = "deepgram"
embedder            = "pinecone"

notification_channels = [
  "projects/lethe-prod-123456/notificationChannels/1234567890",
]
