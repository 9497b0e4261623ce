# IRSA (terraform-aws-modules/iam, iam-role-for-service-accounts): each workload's Kubernetes
# service account assumes its own IAM role through the cluster's OIDC provider; no workload uses
# the node role. The module writes the trust policy (the named service accounts only, audience
# sts.amazonaws.com); what each role may do is below.
#
# - The workloads' roles carry one inline policy each, written here: every statement names the
#   bucket, prefix, key, node group or secret it is for; the only "*" resources are Describe calls
#   that IAM cannot scope.
# - vpc-cni and the AWS Load Balancer Controller use the module's maintained policies (they track
#   what those controllers call; the controllers manage ENIs and load balancers the stack does not
#   name in advance).

locals {
  # role key => service accounts ("namespace:name") it trusts, and the document of what it may do
  workload_roles = {
    # Dagster's run Jobs and the PyTorchJob training pods (deploy/helm/values.yaml, k8s/training-rbac.yaml).
    dagster = {
      service_accounts = [for sa in var.dagster_service_accounts : "${var.k8s_namespace}:${sa}"]
      policy           = data.aws_iam_policy_document.dagster.json
    }
    # The webserver shows the steps' stdout/stderr: it reads compute-logs/, nothing else.
    dagster-webserver = {
      service_accounts = ["${var.k8s_namespace}:${var.dagster_webserver_service_account}"]
      policy           = data.aws_iam_policy_document.dagster_webserver.json
    }
    mlflow = {
      service_accounts = ["${var.k8s_namespace}:${var.mlflow_service_account}"]
      policy           = data.aws_iam_policy_document.mlflow_artifacts["mlflow"].json
    }
    fraud-service = {
      service_accounts = ["${var.k8s_namespace}:${var.fraud_service_account}"]
      policy           = data.aws_iam_policy_document.mlflow_artifacts["fraud-service"].json
    }
    cluster-autoscaler = {
      service_accounts = [var.cluster_autoscaler_service_account]
      policy           = data.aws_iam_policy_document.cluster_autoscaler.json
    }
    external-secrets = {
      service_accounts = [var.external_secrets_service_account]
      policy           = data.aws_iam_policy_document.external_secrets.json
    }
  }

  mlflow_prefix      = "mlflow-artifacts"
  compute_log_prefix = "compute-logs" # deploy/helm/values.yaml computeLogManager, deploy/dagster.k8s.yaml
  # S3 calls made with SSE-KMS objects need the key, but only through S3.
  kms_via_s3 = "s3.${var.region}.amazonaws.com"
  # Object actions of the S3 workloads (reads by version too: the image manifest records VersionIds).
  s3_object_read = ["s3:GetObject", "s3:GetObjectVersion"]
  s3_object_read_write = [
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
  ]
}

module "irsa" {
  source   = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts"
  version  = "6.5.0"
  for_each = local.workload_roles

  name                 = "${local.name}-${each.key}"
  use_name_prefix      = false
  max_session_duration = 3600
  oidc_providers = {
    eks = { provider_arn = module.eks.oidc_provider_arn, namespace_service_accounts = each.value.service_accounts }
  }

  # Exactly one policy, inline: the role can do what its document says and nothing else.
  create_policy                  = false
  create_inline_policy           = true
  source_inline_policy_documents = [each.value.policy]
}

# The VPC CNI (aws-node DaemonSet): assigns pod addresses from ENIs. Its rights are off the node role.
module "vpc_cni_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts"
  version = "6.5.0"

  name                 = "${local.name}-vpc-cni"
  use_name_prefix      = false
  max_session_duration = 3600
  oidc_providers = {
    eks = { provider_arn = module.eks.oidc_provider_arn, namespace_service_accounts = ["kube-system:aws-node"] }
  }

  # The module's policy; named after the stack (its default name is the same in every account's stack).
  attach_vpc_cni_policy = true
  vpc_cni_enable_ipv4   = true
  policy_name           = "${local.name}-vpc-cni"
}

# The AWS Load Balancer Controller (optional add-on; README). Its role exists so that installing it
# needs no IAM change; without the controller nobody can assume it.
module "load_balancer_controller_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts"
  version = "6.5.0"

  name                 = "${local.name}-load-balancer-controller"
  use_name_prefix      = false
  max_session_duration = 3600
  oidc_providers = {
    eks = { provider_arn = module.eks.oidc_provider_arn, namespace_service_accounts = [var.load_balancer_controller_service_account] }
  }

  attach_load_balancer_controller_policy = true
  policy_name                            = "${local.name}-load-balancer-controller"
}

# --- the stack's KMS key for the S3 workloads ---
# Usable only through S3: reading SSE-KMS objects needs Decrypt, writing them also GenerateDataKey
# (with bucket keys). Merged into the S3 workloads' documents below.

data "aws_iam_policy_document" "kms_via_s3" {
  for_each = {
    read       = { sid = "DecryptThroughS3", actions = ["kms:Decrypt"] }
    read_write = { sid = "BucketKeyThroughS3", actions = ["kms:Decrypt", "kms:GenerateDataKey"] }
  }

  statement {
    sid       = each.value.sid
    actions   = each.value.actions
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.kms_via_s3]
    }
  }
}

# --- (a) Dagster: run Jobs and training pods ---
# Read/write the artifact bucket (storage, compute logs, MLflow artifacts when the tracking server
# does not proxy them); read-only on the image dataset. The daemon and the code server have no
# IAM role at all (they touch neither bucket).

data "aws_iam_policy_document" "dagster" {
  source_policy_documents = [data.aws_iam_policy_document.kms_via_s3["read_write"].json]

  statement {
    sid = "ListBuckets"
    # GetBucketVersioning: image_dataset lists a versioned bucket's latest VersionIds (vision/sources.py).
    actions   = ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation", "s3:GetBucketVersioning"]
    resources = [module.data_bucket["artifacts"].s3_bucket_arn, module.data_bucket["images"].s3_bucket_arn]
  }
  statement {
    sid       = "ReadWriteArtifacts"
    actions   = local.s3_object_read_write
    resources = ["${module.data_bucket["artifacts"].s3_bucket_arn}/*"]
  }
  statement {
    sid       = "ReadImageDataset"
    actions   = local.s3_object_read
    resources = ["${module.data_bucket["images"].s3_bucket_arn}/*"]
  }
}

# --- (a') the Dagster webserver: the compute logs only (S3ComputeLogManager, prefix compute-logs) ---

data "aws_iam_policy_document" "dagster_webserver" {
  source_policy_documents = [data.aws_iam_policy_document.kms_via_s3["read"].json]

  statement {
    sid       = "ListComputeLogs"
    actions   = ["s3:ListBucket"]
    resources = [module.data_bucket["artifacts"].s3_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [local.compute_log_prefix, "${local.compute_log_prefix}/*"]
    }
  }
  statement {
    sid       = "ReadComputeLogs"
    actions   = local.s3_object_read
    resources = ["${module.data_bucket["artifacts"].s3_bucket_arn}/${local.compute_log_prefix}/*"]
  }
}

# --- (b) MLflow tracking server and (c) fraud service: s3://<artifacts>/mlflow-artifacts/ only ---
# The tracking server reads and writes its artifact store; the fraud service only downloads the
# champion model's artifacts.

data "aws_iam_policy_document" "mlflow_artifacts" {
  for_each = {
    mlflow        = { sid = "ReadWriteArtifacts", actions = local.s3_object_read_write, kms = "read_write" }
    fraud-service = { sid = "ReadModelArtifacts", actions = local.s3_object_read, kms = "read" }
  }
  source_policy_documents = [data.aws_iam_policy_document.kms_via_s3[each.value.kms].json]

  statement {
    sid       = "ListArtifactPrefix"
    actions   = ["s3:ListBucket"]
    resources = [module.data_bucket["artifacts"].s3_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [local.mlflow_prefix, "${local.mlflow_prefix}/*"]
    }
  }
  statement {
    sid       = each.value.sid
    actions   = each.value.actions
    resources = ["${module.data_bucket["artifacts"].s3_bucket_arn}/${local.mlflow_prefix}/*"]
  }
}

# --- cluster autoscaler: without it the GPU group never leaves 0 nodes ---
# Written here rather than the module's attach_cluster_autoscaler_policy: that one allows scaling
# any ASG carrying the cluster's tag; this one names the two node groups' ASGs.

locals {
  node_group_asg_arns = [
    for asg in module.eks.eks_managed_node_groups_autoscaling_group_names :
    "arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${asg}"
  ]
}

data "aws_iam_policy_document" "cluster_autoscaler" {
  statement {
    sid = "DiscoverGroupsAndInstanceTypes"
    # Describe/List calls support no resource-level scoping in IAM.
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
    ]
    resources = ["*"]
  }
  statement {
    sid       = "ReadNodeGroupLabelsAndTaints"
    actions   = ["eks:DescribeNodegroup"]
    resources = [for group in module.eks.eks_managed_node_groups : group.node_group_arn]
  }
  statement {
    sid       = "ScaleOurNodeGroupsOnly"
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = local.node_group_asg_arns
  }
}

# --- External Secrets Operator: reads the applications' secrets, only those ---
# The applications' database logins and the MLflow server's secret (app_secrets.tf; -> the Postgres
# passwords and URLs, MLflow's auth config) and the feature store's AUTH secret (->
# FRAUD_FEATURE_STORE_URL). Not the RDS master secret: no workload logs in as the master user.
# The pods themselves never call Secrets Manager. Written here rather than the module's
# attach_external_secrets_policy, which also allows listing every secret and SSM parameter of the
# account and decrypting with the key through any service.

data "aws_iam_policy_document" "external_secrets" {
  statement {
    sid     = "ReadStackSecrets"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [
      aws_secretsmanager_secret.db_app["dagster"].arn,
      aws_secretsmanager_secret.db_app["mlflow"].arn,
      aws_secretsmanager_secret.db_app["fraud"].arn,
      aws_secretsmanager_secret.mlflow_server.arn,
      aws_secretsmanager_secret.feature_store_auth.arn,
    ]
  }
  statement {
    sid       = "DecryptThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}
