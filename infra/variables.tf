# --- general ---------------------------------------------------------------------------------

variable "region" {
  description = "AWS region of the whole stack."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name prefix of every resource (cluster, buckets, database). Short: bucket names append account id and region."
  type        = string
  default     = "ecosystem-assets"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name))
    error_message = "name: 2-20 characters, lowercase letters, digits and '-', starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags for every resource (cost centre, owner, environment)."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups (VPC flow logs, EKS control plane, RDS). One year by default for audit."
  type        = number
  default     = 365
}

# --- network ---------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC. A /16 leaves room for pod IPs: the VPC CNI gives each pod a VPC address."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Zones of the subnets (2-4), e.g. [\"eu-west-1a\", \"eu-west-1b\"]. Empty: the region's zones a, b and c. Pick zones that offer the GPU instance types."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || (length(var.availability_zones) >= 2 && length(var.availability_zones) <= 4)
    error_message = "availability_zones: empty (zones a, b, c) or 2 to 4 zones; EKS and RDS need at least two."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (survives a zone outage)."
  type        = bool
  default     = true
}

# --- EKS -------------------------------------------------------------------------------------

variable "cluster_version" {
  description = "Kubernetes version of the EKS control plane and node groups."
  type        = string
  default     = "1.33"
}

variable "cluster_endpoint_public_access" {
  description = "Expose the Kubernetes API endpoint publicly, to cluster_endpoint_public_access_cidrs only. False: kubectl/helm must run from inside the VPC (VPN, bastion, CI runner in the VPC)."
  type        = bool
  default     = false
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API endpoint (office, VPN or CI egress). Required when cluster_endpoint_public_access is true."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.cluster_endpoint_public_access_cidrs, "0.0.0.0/0")
    error_message = "Do not open the Kubernetes API to 0.0.0.0/0; list the CIDRs that need it."
  }
  validation {
    condition     = !var.cluster_endpoint_public_access || length(var.cluster_endpoint_public_access_cidrs) > 0
    error_message = "cluster_endpoint_public_access = true needs cluster_endpoint_public_access_cidrs (never 0.0.0.0/0)."
  }
}

variable "cluster_admin_principal_arns" {
  description = "IAM roles/users granted cluster-admin through EKS access entries (besides the identity that runs terraform apply)."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (Dagster webserver, daemon, user code, CPU runs, MLflow, fraud service)."
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "cpu_node_min" {
  description = "Minimum size of the CPU node group."
  type        = number
  default     = 2
}

variable "cpu_node_desired" {
  description = "Initial size of the CPU node group (afterwards the cluster autoscaler owns it)."
  type        = number
  default     = 2
}

variable "cpu_node_max" {
  description = "Maximum size of the CPU node group."
  type        = number
  default     = 6
}

variable "cpu_node_disk_gib" {
  description = "Root volume size (GiB) of CPU nodes: the project image holds torch, mlflow and great_expectations."
  type        = number
  default     = 80
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group for PyTorch DDP training (g5.xlarge: 1 A10G; g5.12xlarge: 4 A10G for single-node DDP)."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_node_max" {
  description = "Maximum number of GPU nodes. The group scales from 0, so GPUs cost nothing while no training runs."
  type        = number
  default     = 2

  validation {
    condition     = var.gpu_node_max >= 1
    error_message = "gpu_node_max must be at least 1."
  }
}

variable "gpu_ami_type" {
  description = "EKS-optimized AMI type with the NVIDIA driver for the GPU node group."
  type        = string
  default     = "AL2023_x86_64_NVIDIA"
}

variable "gpu_node_disk_gib" {
  description = "Root volume size (GiB) of GPU nodes: CUDA images are large."
  type        = number
  default     = 150
}

# --- Kubernetes service accounts that get AWS roles (IRSA) -----------------------------------

variable "k8s_namespace" {
  description = "Namespace of the Dagster release, its run Jobs, MLflow and the fraud service."
  type        = string
  default     = "ecosystem"
}

variable "dagster_service_accounts" {
  description = "Service accounts in k8s_namespace that need the data buckets: Dagster's run Jobs (dagster-run) and the PyTorchJob training pods (dagster-training). The webserver, daemon and code server have their own accounts without these rights (deploy/README.md)."
  type        = list(string)
  default     = ["dagster-run", "dagster-training"]
}

variable "dagster_webserver_service_account" {
  description = "Service account of the Dagster webserver in k8s_namespace: reads the compute logs (compute-logs/ in the artifact bucket), nothing else."
  type        = string
  default     = "dagster-webserver"
}

variable "mlflow_service_account" {
  description = "Service account of the MLflow tracking server in k8s_namespace."
  type        = string
  default     = "mlflow"
}

variable "fraud_service_account" {
  description = "Service account of the fraud-detection service in k8s_namespace."
  type        = string
  default     = "fraud-service"
}

# --- storage ---------------------------------------------------------------------------------

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted S3 object version is kept before it expires (rollback window)."
  type        = number
  default     = 90
}

variable "force_destroy" {
  description = "Let terraform destroy delete non-empty buckets (every version) and the ECR repository with its images. Keep false except for throwaway stacks."
  type        = bool
  default     = false
}

variable "ecr_keep_tagged_images" {
  description = "Number of tagged images ECR keeps; older ones expire (tags are immutable, so every build is a new tag)."
  type        = number
  default     = 50
}

# --- database --------------------------------------------------------------------------------

variable "db_instance_class" {
  description = "RDS instance class of the Postgres instance shared by Dagster, MLflow and the fraud service."
  type        = string
  default     = "db.m7g.large"
}

variable "db_engine_version" {
  description = "Postgres major version (RDS picks the newest minor and upgrades minors automatically); also names the parameter group family."
  type        = string
  default     = "17"

  validation {
    condition     = can(regex("^[0-9]+$", var.db_engine_version))
    error_message = "db_engine_version is a major version only, e.g. \"17\"."
  }
}

variable "db_allocated_storage_gib" {
  description = "Initial gp3 storage of the database (GiB)."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage_gib" {
  description = "Upper bound of storage autoscaling (GiB)."
  type        = number
  default     = 500
}

variable "db_multi_az" {
  description = "Standby in a second zone with automatic failover (doubles the instance cost). Dagster's run storage lives here."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 1 and 35."
  }
}

variable "db_master_username" {
  description = "Master user of the Postgres instance (its password is generated and rotated by RDS in Secrets Manager)."
  type        = string
  default     = "ecosystem_admin"
}

variable "deletion_protection" {
  description = "Protect the database and the EKS cluster from deletion (set false, apply, then destroy to tear down)."
  type        = bool
  default     = true
}

# --- feature store (ElastiCache) -------------------------------------------------------------

variable "feature_store_node_type" {
  description = "ElastiCache node type of the fraud service's feature store (a primary and a replica). cache.t4g.small: 2 vCPU, 1.37 GiB."
  type        = string
  default     = "cache.t4g.small"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.feature_store_node_type))
    error_message = "feature_store_node_type is an ElastiCache node type, e.g. \"cache.t4g.small\" or \"cache.r7g.large\"."
  }
}

variable "feature_store_snapshot_retention_days" {
  description = "Days of daily feature-store snapshots kept."
  type        = number
  default     = 7

  validation {
    condition     = var.feature_store_snapshot_retention_days >= 1 && var.feature_store_snapshot_retention_days <= 35
    error_message = "feature_store_snapshot_retention_days must be between 1 and 35."
  }
}

variable "cluster_autoscaler_service_account" {
  description = "namespace:name of the cluster autoscaler's service account (scales the CPU group and the GPU group from 0)."
  type        = string
  default     = "kube-system:cluster-autoscaler"
}

variable "external_secrets_service_account" {
  description = "namespace:name of the External Secrets Operator's service account, which copies the RDS master secret and the feature store's secret into Kubernetes."
  type        = string
  default     = "external-secrets:external-secrets"
}

variable "load_balancer_controller_service_account" {
  description = "namespace:name of the AWS Load Balancer Controller's service account (optional add-on; its IRSA role is created either way)."
  type        = string
  default     = "kube-system:aws-load-balancer-controller"
}

# --- application secrets (app_secrets.tf) ------------------------------------------------------

variable "db_app_secret_version" {
  description = "Version of the applications' database passwords (app_secrets.tf): raising it makes the next apply generate and store new ones; then ALTER ROLE each (deploy/README.md, runbook)."
  type        = number
  default     = 1
}

variable "mlflow_server_secret_version" {
  description = "Version of the MLflow admin password and CSRF key (app_secrets.tf): raising it makes the next apply store new ones."
  type        = number
  default     = 1
}
