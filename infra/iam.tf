# IRSA: each workload's Kubernetes service account assumes its own IAM role through the cluster's
# OIDC provider; nothing runs with the node role. Every statement names the bucket, prefix, key,
# node group or secret it is for; the only "*" resources are Describe calls that IAM cannot scope.

locals {
  oidc_issuer = replace(aws_iam_openid_connect_provider.eks.url, "https://", "")

  # role key => service accounts ("system:serviceaccount:<namespace>:<name>") allowed to assume it
  irsa_subjects = {
    dagster            = [for sa in var.dagster_service_accounts : "system:serviceaccount:${var.k8s_namespace}:${sa}"]
    mlflow             = ["system:serviceaccount:${var.k8s_namespace}:${var.mlflow_service_account}"]
    fraud-service      = ["system:serviceaccount:${var.k8s_namespace}:${var.fraud_service_account}"]
    cluster-autoscaler = ["system:serviceaccount:${var.cluster_autoscaler_service_account}"]
    external-secrets   = ["system:serviceaccount:${var.external_secrets_service_account}"]
  }

  mlflow_prefix = "mlflow-artifacts"
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

data "aws_iam_policy_document" "irsa_assume" {
  for_each = local.irsa_subjects

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.eks.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = each.value
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each             = local.irsa_subjects
  name                 = "${local.name}-${each.key}"
  assume_role_policy   = data.aws_iam_policy_document.irsa_assume[each.key].json
  max_session_duration = 3600
}

# One inline policy per role; the documents follow.
locals {
  # role key (as in irsa_subjects) => name and JSON of the role's policy
  irsa_policies = {
    dagster            = { name = "artifacts-rw-images-ro", json = data.aws_iam_policy_document.dagster.json }
    mlflow             = { name = "mlflow-artifacts-rw", json = data.aws_iam_policy_document.mlflow_artifacts["mlflow"].json }
    fraud-service      = { name = "mlflow-artifacts-ro", json = data.aws_iam_policy_document.mlflow_artifacts["fraud-service"].json }
    cluster-autoscaler = { name = "scale-node-groups", json = data.aws_iam_policy_document.cluster_autoscaler.json }
    external-secrets   = { name = "read-stack-secrets", json = data.aws_iam_policy_document.external_secrets.json }
  }
}

resource "aws_iam_role_policy" "irsa" {
  for_each = local.irsa_policies
  name     = each.value.name
  role     = aws_iam_role.irsa[each.key].id
  policy   = each.value.json
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

# --- (a) Dagster: user code and run Jobs (and the webserver, which shows compute logs) ---
# Read/write the artifact bucket (storage, compute logs, MLflow artifacts when the tracking server
# does not proxy them); read-only on the image dataset.

data "aws_iam_policy_document" "dagster" {
  source_policy_documents = [data.aws_iam_policy_document.kms_via_s3["read_write"].json]

  statement {
    sid = "ListBuckets"
    # GetBucketVersioning: image_dataset lists a versioned bucket's latest VersionIds (vision/sources.py).
    actions   = ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation", "s3:GetBucketVersioning"]
    resources = [aws_s3_bucket.data["artifacts"].arn, aws_s3_bucket.data["images"].arn]
  }
  statement {
    sid       = "ReadWriteArtifacts"
    actions   = local.s3_object_read_write
    resources = ["${aws_s3_bucket.data["artifacts"].arn}/*"]
  }
  statement {
    sid       = "ReadImageDataset"
    actions   = local.s3_object_read
    resources = ["${aws_s3_bucket.data["images"].arn}/*"]
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
    resources = [aws_s3_bucket.data["artifacts"].arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [local.mlflow_prefix, "${local.mlflow_prefix}/*"]
    }
  }
  statement {
    sid       = each.value.sid
    actions   = each.value.actions
    resources = ["${aws_s3_bucket.data["artifacts"].arn}/${local.mlflow_prefix}/*"]
  }
}

# --- cluster autoscaler: without it the GPU group never leaves 0 nodes ---

locals {
  node_group_asg_arns = [
    for asg in flatten([for group in aws_eks_node_group.node : group.resources[0].autoscaling_groups]) :
    "arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${asg.name}"
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
    resources = [for group in aws_eks_node_group.node : group.arn]
  }
  statement {
    sid       = "ScaleOurNodeGroupsOnly"
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = local.node_group_asg_arns
  }
}

# --- External Secrets Operator: reads the stack's two secrets, only those ---
# The RDS-managed master secret (-> the Postgres passwords and URLs) and the feature store's AUTH
# secret (-> FRAUD_FEATURE_STORE_URL). The pods themselves never call Secrets Manager.

data "aws_iam_policy_document" "external_secrets" {
  statement {
    sid     = "ReadStackSecrets"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [
      aws_db_instance.postgres.master_user_secret[0].secret_arn,
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
