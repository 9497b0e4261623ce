# Everything the deployment (deploy/: Helm values, env vars) needs from this stack. Nothing here
# is secret: the database password and the feature store's AUTH token stay in Secrets Manager,
# referenced by db_master_secret_arn and feature_store_auth_secret_arn.

output "region" {
  description = "AWS region of the stack."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = module.eks.cluster_endpoint
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster (for further IRSA roles, e.g. the AWS Load Balancer Controller)."
  value       = module.eks.oidc_provider_arn
}

output "vpc_id" {
  description = "VPC of the cluster and the database."
  value       = module.vpc.vpc_id
}

output "vpc_cidr" {
  description = "CIDR of the VPC: the fraud service's NetworkPolicy lets it reach Postgres (5432) and the feature store (6379) there."
  value       = module.vpc.vpc_cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets (nodes, database, internal load balancers)."
  value       = module.vpc.private_subnets
}

output "artifact_bucket" {
  description = "Artifact bucket: Dagster storage (ecosystem/), MLflow artifacts (mlflow-artifacts/), compute logs (compute-logs/)."
  value       = module.data_bucket["artifacts"].s3_bucket_id
}

output "image_bucket" {
  description = "Image-dataset bucket (ImageFolder layout <class>/<file> under a prefix)."
  value       = module.data_bucket["images"].s3_bucket_id
}

output "access_log_bucket" {
  description = "S3 server access logs of the two data buckets."
  value       = module.access_log_bucket.s3_bucket_id
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
  value       = module.postgres.db_instance_address
}

output "db_port" {
  description = "Postgres port."
  value       = module.postgres.db_instance_port
}

output "db_endpoint" {
  description = "Postgres endpoint as host:port."
  value       = module.postgres.db_instance_endpoint
}

output "db_master_username" {
  description = "Postgres master user name (not secret; the password is in db_master_secret_arn)."
  value       = var.db_master_username
}

output "db_master_secret_arn" {
  description = "Secrets Manager ARN of the RDS-managed master credentials (JSON: username, password). Rotated by RDS."
  value       = module.postgres.db_instance_master_user_secret_arn
}

output "feature_store_address" {
  description = "Primary endpoint (host) of the fraud service's feature store, ElastiCache for Valkey; TLS and AUTH on port feature_store_port."
  value       = module.feature_store.replication_group_primary_endpoint_address
}

output "feature_store_port" {
  description = "Port of the feature store."
  value       = module.feature_store.replication_group_port
}

output "feature_store_auth_secret_arn" {
  description = "Secrets Manager ARN of the feature store's AUTH token (JSON: auth_token, host, port, url = the whole FRAUD_FEATURE_STORE_URL)."
  value       = aws_secretsmanager_secret.feature_store_auth.arn
}

output "db_app_secret_arns" {
  description = "Secrets Manager ARNs of the applications' Postgres logins (dagster, mlflow, fraud; JSON: username, password, host, port, dbname), read by External Secrets (deploy/k8s/external-secrets.yaml)."
  value       = { for app, secret in aws_secretsmanager_secret.db_app : app => secret.arn }
}

output "mlflow_server_secret_arn" {
  description = "Secrets Manager ARN of the MLflow admin login and CSRF key (JSON: admin_username, admin_password, flask_secret_key), read by External Secrets."
  value       = aws_secretsmanager_secret.mlflow_server.arn
}

output "irsa_role_arns" {
  description = "IAM role per workload and cluster add-on; annotate its service account with eks.amazonaws.com/role-arn."
  value = merge(
    { for k, role in module.irsa : k => role.arn },
    { vpc-cni = module.vpc_cni_irsa.arn, load-balancer-controller = module.load_balancer_controller_irsa.arn },
  )
}

output "irsa_service_accounts" {
  description = "The service accounts (namespace:name) each IRSA role trusts."
  value = merge(
    { for k, role in local.workload_roles : k => role.service_accounts },
    { vpc-cni = ["kube-system:aws-node"], load-balancer-controller = [var.load_balancer_controller_service_account] },
  )
}

output "dagster_role_arn" {
  description = "IRSA role of Dagster's run Jobs (dagster-run) and the training pods (dagster-training)."
  value       = module.irsa["dagster"].arn
}

output "dagster_webserver_role_arn" {
  description = "IRSA role of the Dagster webserver (reads compute-logs/ only)."
  value       = module.irsa["dagster-webserver"].arn
}

output "mlflow_role_arn" {
  description = "IRSA role of the MLflow tracking server."
  value       = module.irsa["mlflow"].arn
}

output "fraud_service_role_arn" {
  description = "IRSA role of the fraud-detection service."
  value       = module.irsa["fraud-service"].arn
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role of the cluster autoscaler."
  value       = module.irsa["cluster-autoscaler"].arn
}

output "external_secrets_role_arn" {
  description = "IRSA role of the External Secrets Operator (reads db_app_secret_arns, mlflow_server_secret_arn and feature_store_auth_secret_arn; not the master secret)."
  value       = module.irsa["external-secrets"].arn
}

output "load_balancer_controller_role_arn" {
  description = "IRSA role of the AWS Load Balancer Controller (kube-system:aws-load-balancer-controller by default)."
  value       = module.load_balancer_controller_irsa.arn
}

output "vpc_cni_role_arn" {
  description = "IRSA role of the VPC CNI (kube-system:aws-node), set on the vpc-cni add-on by Terraform."
  value       = module.vpc_cni_irsa.arn
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
  description = "Non-secret environment of the project's containers. FRAUD_DB_URL and the Dagster/MLflow Postgres passwords come from db_app_secret_arns, FRAUD_FEATURE_STORE_URL from feature_store_auth_secret_arn (README)."
  value = {
    ECOSYSTEM_STORAGE_URL = "s3://${module.data_bucket["artifacts"].s3_bucket_id}/ecosystem"
    IMAGE_DATASET_URL     = "s3://${module.data_bucket["images"].s3_bucket_id}/dataset"
    MLFLOW_TRACKING_URI   = "http://mlflow.${var.k8s_namespace}.svc.cluster.local:5000"
    AWS_REGION            = var.region
    DAGSTER_PG_HOST       = module.postgres.db_instance_address
    DAGSTER_PG_PORT       = tostring(module.postgres.db_instance_port)
    DAGSTER_PG_DB         = "dagster"
    DAGSTER_PG_USERNAME   = local.db_app_users["dagster"].username
  }
}
