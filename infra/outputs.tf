# Everything the deployment (deploy/: Helm values, env vars) needs from this stack. Nothing here
# is secret: the database password and the feature store's AUTH token stay in Secrets Manager,
# referenced by db_master_secret_arn and feature_store_auth_secret_arn.

output "region" {
  description = "AWS region of the stack."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = aws_eks_cluster.main.name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = aws_eks_cluster.main.endpoint
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${aws_eks_cluster.main.name}"
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster (for further IRSA roles, e.g. the AWS Load Balancer Controller)."
  value       = aws_iam_openid_connect_provider.eks.arn
}

output "vpc_id" {
  description = "VPC of the cluster and the database."
  value       = aws_vpc.main.id
}

output "vpc_cidr" {
  description = "CIDR of the VPC: the fraud service's NetworkPolicy lets it reach Postgres (5432) and the feature store (6379) there."
  value       = aws_vpc.main.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets (nodes, database, internal load balancers)."
  value       = aws_subnet.private[*].id
}

output "artifact_bucket" {
  description = "Artifact bucket: Dagster storage (ecosystem/), MLflow artifacts (mlflow-artifacts/), compute logs (compute-logs/)."
  value       = aws_s3_bucket.data["artifacts"].bucket
}

output "image_bucket" {
  description = "Image-dataset bucket (ImageFolder layout <class>/<file> under a prefix)."
  value       = aws_s3_bucket.data["images"].bucket
}

output "access_log_bucket" {
  description = "S3 server access logs of the two data buckets."
  value       = aws_s3_bucket.access_logs.bucket
}

output "ecr_repository_url" {
  description = "Push the project image here (immutable tags: tag with the git SHA)."
  value       = aws_ecr_repository.app.repository_url
}

output "kms_key_arn" {
  description = "KMS key encrypting the buckets, the database, its secret, Kubernetes secrets, ECR and logs."
  value       = aws_kms_key.main.arn
}

output "db_address" {
  description = "Postgres host name (DAGSTER_PG_HOST, and the host of MLflow's backend store and FRAUD_DB_URL)."
  value       = aws_db_instance.postgres.address
}

output "db_port" {
  description = "Postgres port."
  value       = aws_db_instance.postgres.port
}

output "db_endpoint" {
  description = "Postgres endpoint as host:port."
  value       = aws_db_instance.postgres.endpoint
}

output "db_master_username" {
  description = "Postgres master user name (not secret; the password is in db_master_secret_arn)."
  value       = aws_db_instance.postgres.username
}

output "db_master_secret_arn" {
  description = "Secrets Manager ARN of the RDS-managed master credentials (JSON: username, password). Rotated by RDS."
  value       = aws_db_instance.postgres.master_user_secret[0].secret_arn
}

output "feature_store_address" {
  description = "Primary endpoint (host) of the fraud service's feature store, ElastiCache for Valkey; TLS and AUTH on port feature_store_port."
  value       = aws_elasticache_replication_group.feature_store.primary_endpoint_address
}

output "feature_store_port" {
  description = "Port of the feature store."
  value       = aws_elasticache_replication_group.feature_store.port
}

output "feature_store_auth_secret_arn" {
  description = "Secrets Manager ARN of the feature store's AUTH token (JSON: auth_token, host, port, url = the whole FRAUD_FEATURE_STORE_URL)."
  value       = aws_secretsmanager_secret.feature_store_auth.arn
}

output "irsa_role_arns" {
  description = "IAM role per workload; annotate its service account with eks.amazonaws.com/role-arn."
  value       = { for k, role in aws_iam_role.irsa : k => role.arn }
}

output "irsa_service_accounts" {
  description = "The service accounts each IRSA role trusts (system:serviceaccount:<namespace>:<name>)."
  value       = local.irsa_subjects
}

output "dagster_role_arn" {
  description = "IRSA role of Dagster user code, run Jobs and webserver."
  value       = aws_iam_role.irsa["dagster"].arn
}

output "mlflow_role_arn" {
  description = "IRSA role of the MLflow tracking server."
  value       = aws_iam_role.irsa["mlflow"].arn
}

output "fraud_service_role_arn" {
  description = "IRSA role of the fraud-detection service."
  value       = aws_iam_role.irsa["fraud-service"].arn
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role of the cluster autoscaler."
  value       = aws_iam_role.irsa["cluster-autoscaler"].arn
}

output "external_secrets_role_arn" {
  description = "IRSA role of the External Secrets Operator (reads db_master_secret_arn and feature_store_auth_secret_arn)."
  value       = aws_iam_role.irsa["external-secrets"].arn
}

output "cpu_node_selector" {
  description = "nodeSelector of the CPU node group."
  value       = { (local.node_pool_label) = "cpu" }
}

output "gpu_node_selector" {
  description = "nodeSelector for DDP training pods (with gpu_tolerations and a nvidia.com/gpu resource limit)."
  value       = { (local.node_pool_label) = "gpu" }
}

output "gpu_tolerations" {
  description = "Tolerations that let a pod onto the GPU node group."
  value       = [{ key = "nvidia.com/gpu", operator = "Equal", value = "true", effect = "NoSchedule" }]
}

output "app_environment" {
  description = "Non-secret environment of the project's containers. FRAUD_DB_URL and the Dagster/MLflow Postgres passwords come from the master secret, FRAUD_FEATURE_STORE_URL from feature_store_auth_secret_arn (README)."
  value = {
    ECOSYSTEM_STORAGE_URL = "s3://${aws_s3_bucket.data["artifacts"].bucket}/ecosystem"
    IMAGE_DATASET_URL     = "s3://${aws_s3_bucket.data["images"].bucket}/dataset"
    MLFLOW_TRACKING_URI   = "http://mlflow.${var.k8s_namespace}.svc.cluster.local:5000"
    AWS_REGION            = var.region
    DAGSTER_PG_HOST       = aws_db_instance.postgres.address
    DAGSTER_PG_PORT       = tostring(aws_db_instance.postgres.port)
    DAGSTER_PG_DB         = "dagster"
    DAGSTER_PG_USERNAME   = aws_db_instance.postgres.username
  }
}
