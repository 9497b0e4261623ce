# Two data buckets with the same guarantees, plus a bucket for their S3 server access logs, all
# from terraform-aws-modules/s3-bucket. Every bucket is versioned, blocks public access, has ACLs
# off and a bucket policy that denies plain HTTP and TLS older than 1.2; the data buckets are SSE-KMS
# encrypted with the stack's key and keep overwritten versions for var.noncurrent_version_days; the
# log bucket is SSE-S3 and expires its logs.

locals {
  # The data buckets (module.data_bucket[<key>]).
  data_buckets = {
    # Dagster storage (ECOSYSTEM_STORAGE_URL=s3://<artifacts>/ecosystem), MLflow artifacts
    # (mlflow-artifacts/), Dagster compute logs (compute-logs/).
    artifacts = { name = "${local.name}-artifacts-${local.bucket_suffix}", log_prefix = "artifacts/" }
    # The image dataset (IMAGE_DATASET_URL=s3://<images>/<dataset>); the manifest of `image_dataset`
    # records each object's VersionId, so versioning is what makes a dataset version reproducible.
    images = { name = "${local.name}-images-${local.bucket_suffix}", log_prefix = "images/" }
  }
  access_log_bucket = "${local.name}-access-logs-${local.bucket_suffix}"
}

module "data_bucket" {
  source   = "terraform-aws-modules/s3-bucket/aws"
  version  = "5.15.4"
  for_each = local.data_buckets

  bucket        = each.value.name
  force_destroy = var.force_destroy

  versioning = { enabled = true }
  server_side_encryption_configuration = {
    rule = {
      apply_server_side_encryption_by_default = { sse_algorithm = "aws:kms", kms_master_key_id = aws_kms_key.main.arn }
      # Bucket keys cut KMS requests (and their cost) by ~99 % for many small objects.
      bucket_key_enabled = true
    }
  }

  block_public_acls        = true
  block_public_policy      = true
  ignore_public_acls       = true
  restrict_public_buckets  = true
  control_object_ownership = true
  object_ownership         = "BucketOwnerEnforced" # ACLs off: IAM and the bucket policy decide
  # TLS only (aws:SecureTransport), 1.2 or newer (s3:TlsVersion).
  attach_deny_insecure_transport_policy = true
  attach_require_latest_tls_policy      = true

  lifecycle_rule = [{
    id                                     = "expire-noncurrent-versions"
    enabled                                = true
    noncurrent_version_expiration          = { days = var.noncurrent_version_days }
    expiration                             = { expired_object_delete_marker = true }
    abort_incomplete_multipart_upload_days = 7 # a killed run's checkpoint upload otherwise costs storage forever
  }]

  logging = { target_bucket = module.access_log_bucket.s3_bucket_id, target_prefix = each.value.log_prefix }
}

# The server access logs of the data buckets.
module "access_log_bucket" {
  source  = "terraform-aws-modules/s3-bucket/aws"
  version = "5.15.4"

  bucket        = local.access_log_bucket
  force_destroy = var.force_destroy

  versioning = { enabled = true }
  # S3 log delivery is documented for SSE-S3 targets; the logs hold request metadata, not data.
  server_side_encryption_configuration = { rule = { apply_server_side_encryption_by_default = { sse_algorithm = "AES256" } } }

  block_public_acls                     = true
  block_public_policy                   = true
  ignore_public_acls                    = true
  restrict_public_buckets               = true
  control_object_ownership              = true
  object_ownership                      = "BucketOwnerEnforced"
  attach_deny_insecure_transport_policy = true
  attach_require_latest_tls_policy      = true
  # With ACLs off, S3 log delivery is admitted by the bucket policy: for the data buckets of this
  # account only (ARNs built from the names, so the two modules do not wait on each other).
  attach_access_log_delivery_policy          = true
  access_log_delivery_policy_source_accounts = [local.account_id]
  access_log_delivery_policy_source_buckets  = [for bucket in local.data_buckets : "arn:${local.partition}:s3:::${bucket.name}"]

  lifecycle_rule = [{
    id                                     = "expire-access-logs"
    enabled                                = true
    expiration                             = { days = var.log_retention_days }
    noncurrent_version_expiration          = { days = 30 }
    abort_incomplete_multipart_upload_days = 7
  }]
}
