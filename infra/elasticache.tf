# The fraud service's online feature state (FRAUD_FEATURE_STORE_URL): per-customer and
# per-terminal transaction windows that every replica reads and updates, so the service can run
# several replicas and restart without a warm-up. ElastiCache for Valkey (Redis-compatible, ~20 %
# cheaper than Redis OSS on the same nodes): a primary and a replica in two zones with automatic
# failover, private subnets, reachable only from the cluster, TLS only, an AUTH token, encrypted
# at rest with the stack's key.
#
# The AUTH token: ElastiCache takes it only as a plain argument (the module hands `auth_token` to the
# replication group as is), so unlike the RDS password it is in the Terraform state, marked
# sensitive, and never in code, variables, outputs or plan output. Keep the state in the encrypted,
# access-controlled backend (versions.tf). It reaches the pods through Secrets Manager (below) and the
# Kubernetes Secret fraud-feature-store (deploy/README.md).

# Upper- and lower-case letters and digits: a valid AUTH token (16-128 characters, three kinds)
# that needs no escaping in the URL. Rotation (README): `terraform apply -replace=
# random_password.feature_store_auth`; ROTATE below keeps the old token valid beside the new one
# until the pods run with the new URL.
resource "random_password" "feature_store_auth" {
  length      = 64
  special     = false
  min_upper   = 1
  min_lower   = 1
  min_numeric = 1
}

module "feature_store" {
  source  = "terraform-aws-modules/elasticache/aws"
  version = "1.10.3"

  replication_group_id = "${local.name}-features"
  description          = "Fraud service online feature state (FRAUD_FEATURE_STORE_URL)"
  engine               = "valkey"
  engine_version       = "8.0"
  parameter_group_name = "default.valkey8"
  node_type            = var.feature_store_node_type
  port                 = 6379
  # One shard: the service's scripts read and write a customer's and a terminal's keys at once,
  # which cluster mode would refuse unless they hashed to one slot.
  cluster_mode = "disabled"

  # Primary + replica in different zones; a failed primary is replaced by the replica within about
  # a minute, under the same primary endpoint (the service retries, then answers 503 meanwhile).
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true

  # Private subnets; a security group open on 6379 to the EKS nodes and pods only, no egress.
  subnet_group_name   = "${local.name}-feature-store"
  subnet_ids          = module.vpc.private_subnets
  vpc_id              = module.vpc.vpc_id
  security_group_name = "${local.name}-feature-store"
  security_group_rules = {
    valkey_from_eks = {
      type                         = "ingress"
      description                  = "Valkey (TLS) from EKS nodes and pods (node security group)"
      ip_protocol                  = "tcp"
      from_port                    = 6379
      to_port                      = 6379
      referenced_security_group_id = module.eks.node_security_group_id
    }
  }

  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.feature_store_auth.result
  auth_token_update_strategy = "ROTATE"
  at_rest_encryption_enabled = true
  kms_key_arn                = aws_kms_key.main.arn

  # Daily snapshots (to restore after a bad deploy corrupted the windows), apart from maintenance.
  snapshot_retention_limit   = var.feature_store_snapshot_retention_days
  snapshot_window            = "02:00-03:00"
  maintenance_window         = "sun:04:30-sun:05:30" # after the database's (rds.tf)
  final_snapshot_identifier  = "${local.name}-feature-store-final"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  # Slow and engine logs into encrypted log groups with the stack's retention.
  log_delivery_configuration = {
    slow-log = {
      destination_type                       = "cloudwatch-logs"
      log_format                             = "json"
      cloudwatch_log_group_name              = "${local.name}-feature-store/slow-log"
      cloudwatch_log_group_retention_in_days = var.log_retention_days
      cloudwatch_log_group_kms_key_id        = aws_kms_key.main.arn
    }
    engine-log = {
      destination_type                       = "cloudwatch-logs"
      log_format                             = "json"
      cloudwatch_log_group_name              = "${local.name}-feature-store/engine-log"
      cloudwatch_log_group_retention_in_days = var.log_retention_days
      cloudwatch_log_group_kms_key_id        = aws_kms_key.main.arn
    }
  }
}

# What the pods need, in one secret (JSON): the whole FRAUD_FEATURE_STORE_URL as `url`, and its
# parts. External Secrets copies `url` into the Kubernetes Secret fraud-feature-store (README).
resource "aws_secretsmanager_secret" "feature_store_auth" {
  #checkov:skip=CKV2_AWS_57:Rotation is terraform apply -replace (see random_password above); a Lambda rotator would have to call ModifyReplicationGroup and restart the pods.
  name_prefix             = "${local.name}-feature-store-auth-"
  description             = "AUTH token and URL of the fraud service's feature store (ElastiCache ${local.name}-features)"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "feature_store_auth" {
  secret_id = aws_secretsmanager_secret.feature_store_auth.id
  secret_string = jsonencode({
    auth_token = random_password.feature_store_auth.result
    host       = module.feature_store.replication_group_primary_endpoint_address
    port       = module.feature_store.replication_group_port
    url        = "rediss://:${random_password.feature_store_auth.result}@${module.feature_store.replication_group_primary_endpoint_address}:${module.feature_store.replication_group_port}/0"
  })
}
