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

# --- (a) Dagster: user code and run Jobs (and the webserver, which shows compute logs) ---
# Read/write the artifact bucket (storage, compute logs, MLflow artifacts when the tracking server
# does not proxy them); read-only on the image dataset.

data "aws_iam_policy_document" "dagster" {
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.artifacts.arn, aws_s3_bucket.images.arn]
  }
  statement {
    sid = "ReadWriteArtifacts"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.artifacts.arn}/*"]
  }
  statement {
    sid       = "ReadImageDataset"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.images.arn}/*"]
  }
  statement {
    sid       = "BucketKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.kms_via_s3]
    }
  }
}

resource "aws_iam_role_policy" "dagster" {
  name   = "artifacts-rw-images-ro"
  role   = aws_iam_role.irsa["dagster"].id
  policy = data.aws_iam_policy_document.dagster.json
}

# --- (b) MLflow tracking server: its artifact store is s3://<artifacts>/mlflow-artifacts/ ---

data "aws_iam_policy_document" "mlflow" {
  statement {
    sid       = "ListArtifactPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [local.mlflow_prefix, "${local.mlflow_prefix}/*"]
    }
  }
  statement {
    sid = "ReadWriteArtifacts"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.artifacts.arn}/${local.mlflow_prefix}/*"]
  }
  statement {
    sid       = "BucketKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.kms_via_s3]
    }
  }
}

resource "aws_iam_role_policy" "mlflow" {
  name   = "mlflow-artifacts-rw"
  role   = aws_iam_role.irsa["mlflow"].id
  policy = data.aws_iam_policy_document.mlflow.json
}

# --- (c) fraud service: downloads the champion model's artifacts, nothing else ---

data "aws_iam_policy_document" "fraud_service" {
  statement {
    sid       = "ListArtifactPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [local.mlflow_prefix, "${local.mlflow_prefix}/*"]
    }
  }
  statement {
    sid       = "ReadModelArtifacts"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.artifacts.arn}/${local.mlflow_prefix}/*"]
  }
  statement {
    sid       = "DecryptThroughS3"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.kms_via_s3]
    }
  }
}

resource "aws_iam_role_policy" "fraud_service" {
  name   = "mlflow-artifacts-ro"
  role   = aws_iam_role.irsa["fraud-service"].id
  policy = data.aws_iam_policy_document.fraud_service.json
}

# --- cluster autoscaler: without it the GPU group never leaves 0 nodes ---

locals {
  node_group_asg_arns = [
    for asg in concat(aws_eks_node_group.cpu.resources[0].autoscaling_groups, aws_eks_node_group.gpu.resources[0].autoscaling_groups) :
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
    resources = [aws_eks_node_group.cpu.arn, aws_eks_node_group.gpu.arn]
  }
  statement {
    sid       = "ScaleOurNodeGroupsOnly"
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = local.node_group_asg_arns
  }
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  name   = "scale-node-groups"
  role   = aws_iam_role.irsa["cluster-autoscaler"].id
  policy = data.aws_iam_policy_document.cluster_autoscaler.json
}

# --- External Secrets Operator: reads the RDS-managed master secret, only that one ---

data "aws_iam_policy_document" "external_secrets" {
  statement {
    sid       = "ReadDatabaseMasterSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_db_instance.postgres.master_user_secret[0].secret_arn]
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

resource "aws_iam_role_policy" "external_secrets" {
  name   = "read-db-master-secret"
  role   = aws_iam_role.irsa["external-secrets"].id
  policy = data.aws_iam_policy_document.external_secrets.json
}
