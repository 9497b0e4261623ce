# Two data buckets with the same guarantees, plus a bucket for their S3 server access logs.
# Every bucket is versioned, blocks public access, has ACLs off and a TLS-only bucket policy; the
# data buckets are SSE-KMS encrypted with the stack's key and keep overwritten versions for
# var.noncurrent_version_days; the log bucket is SSE-S3 and expires its logs.

locals {
  # The data buckets (aws_s3_bucket.data[<key>]).
  data_buckets = {
    # Dagster storage (ECOSYSTEM_STORAGE_URL=s3://<artifacts>/ecosystem), MLflow artifacts
    # (mlflow-artifacts/), Dagster compute logs (compute-logs/).
    artifacts = { name = "${local.name}-artifacts-${local.bucket_suffix}", log_prefix = "artifacts/" }
    # The image dataset (IMAGE_DATASET_URL=s3://<images>/<dataset>); the manifest of `image_dataset`
    # records each object's VersionId, so versioning is what makes a dataset version reproducible.
    images = { name = "${local.name}-images-${local.bucket_suffix}", log_prefix = "images/" }
  }

  # Every bucket of the stack, for the settings they all share. Written out key by key (not
  # merged from aws_s3_bucket.data) so checkov can link each setting to its bucket.
  buckets = {
    artifacts   = aws_s3_bucket.data["artifacts"]
    images      = aws_s3_bucket.data["images"]
    access_logs = aws_s3_bucket.access_logs
  }
}

resource "aws_s3_bucket" "data" {
  for_each      = local.data_buckets
  bucket        = each.value.name
  force_destroy = var.force_destroy
}

# A resource of its own rather than a third key of data_buckets: its inline checkov skips must
# not extend to the data buckets.
resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it into itself would loop.
  #checkov:skip=CKV_AWS_145:S3 log delivery is documented for SSE-S3 targets; logs hold request metadata, not data.
  bucket        = "${local.name}-access-logs-${local.bucket_suffix}"
  force_destroy = var.force_destroy
}

# --- shared by every bucket ---

resource "aws_s3_bucket_versioning" "all" {
  for_each = local.buckets
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "all" {
  for_each                = local.buckets
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# ACLs off: access is decided by IAM and the bucket policy only.
resource "aws_s3_bucket_ownership_controls" "all" {
  for_each = local.buckets
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# --- bucket policies: TLS only; the log bucket also admits S3 log delivery ---

data "aws_iam_policy_document" "tls_only" {
  for_each = local.buckets
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value.arn, "${each.value.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "data" {
  for_each = local.data_buckets
  bucket   = aws_s3_bucket.data[each.key].id
  policy   = data.aws_iam_policy_document.tls_only[each.key].json
  # S3 rejects a bucket policy while the public-access block is still being applied.
  depends_on = [aws_s3_bucket_public_access_block.all]
}

data "aws_iam_policy_document" "access_logs_bucket" {
  source_policy_documents = [data.aws_iam_policy_document.tls_only["access_logs"].json]

  # With ACLs disabled, S3 log delivery is authorised by this statement, for the data buckets only.
  statement {
    sid       = "S3ServerAccessLogDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [for bucket in aws_s3_bucket.data : bucket.arn]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket     = aws_s3_bucket.access_logs.id
  policy     = data.aws_iam_policy_document.access_logs_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.all]
}

# --- data buckets ---

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = local.data_buckets
  bucket   = aws_s3_bucket.data[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    # Bucket keys cut KMS requests (and their cost) by ~99 % for many small objects.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  for_each = local.data_buckets
  bucket   = aws_s3_bucket.data[each.key].id

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    # Interrupted uploads (a killed run writing a checkpoint) otherwise cost storage forever.
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.all]
}

resource "aws_s3_bucket_logging" "data" {
  for_each      = local.data_buckets
  bucket        = aws_s3_bucket.data[each.key].id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = each.value.log_prefix
}

# --- server access logs of the data buckets ---

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.all]
}
