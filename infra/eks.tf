# EKS: a private control plane, one on-demand CPU node group for the long-running services
# (Dagster webserver/daemon/user code, MLflow, the fraud service) and CPU run Jobs, and a GPU node
# group that sits at 0 nodes until a DDP training run asks for `nvidia.com/gpu`.

locals {
  cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
  # What pods use to land on (or stay off) the GPU nodes; also in the outputs for the Helm values.
  node_pool_label = "node-pool"
}

# Created before the cluster so EKS does not create it without retention or encryption.
resource "aws_cloudwatch_log_group" "eks" {
  name              = "/aws/eks/${local.name}/cluster"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# --- control plane ---

data "aws_iam_policy_document" "eks_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name               = "${local.name}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.eks_assume.json
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

# Envelope encryption of Kubernetes Secrets with the stack's key.
data "aws_iam_policy_document" "cluster_kms" {
  statement {
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "cluster_kms" {
  name   = "secrets-envelope-encryption"
  role   = aws_iam_role.cluster.id
  policy = data.aws_iam_policy_document.cluster_kms.json
}

resource "aws_eks_cluster" "main" {
  name                      = local.name
  version                   = var.cluster_version
  role_arn                  = aws_iam_role.cluster.arn
  enabled_cluster_log_types = local.cluster_log_types

  # Access entries (not the aws-auth ConfigMap): who may use the cluster is managed by AWS APIs.
  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  vpc_config {
    subnet_ids              = aws_subnet.private[*].id
    endpoint_private_access = true
    # Public endpoint only on request, and then only for the listed CIDRs.
    endpoint_public_access = var.cluster_endpoint_public_access
    public_access_cidrs    = var.cluster_endpoint_public_access ? var.cluster_endpoint_public_access_cidrs : null
  }

  encryption_config {
    provider {
      key_arn = aws_kms_key.main.arn
    }
    resources = ["secrets"]
  }

  lifecycle {
    precondition {
      condition     = !var.cluster_endpoint_public_access || length(var.cluster_endpoint_public_access_cidrs) > 0
      error_message = "cluster_endpoint_public_access = true needs cluster_endpoint_public_access_cidrs (never 0.0.0.0/0)."
    }
  }

  depends_on = [
    aws_iam_role_policy_attachment.cluster,
    aws_iam_role_policy.cluster_kms,
    aws_cloudwatch_log_group.eks,
  ]
}

resource "aws_eks_access_entry" "admins" {
  for_each      = toset(var.cluster_admin_principal_arns)
  cluster_name  = aws_eks_cluster.main.name
  principal_arn = each.value
}

resource "aws_eks_access_policy_association" "admins" {
  for_each      = toset(var.cluster_admin_principal_arns)
  cluster_name  = aws_eks_cluster.main.name
  principal_arn = each.value
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }

  depends_on = [aws_eks_access_entry.admins]
}

# --- IRSA: the cluster's OIDC issuer as an IAM identity provider (roles in iam.tf) ---

data "tls_certificate" "oidc" {
  url = aws_eks_cluster.main.identity[0].oidc[0].issuer
}

resource "aws_iam_openid_connect_provider" "eks" {
  url             = aws_eks_cluster.main.identity[0].oidc[0].issuer
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = [data.tls_certificate.oidc.certificates[0].sha1_fingerprint]
}

# --- nodes ---

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${local.name}-eks-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
}

# The minimum EKS documents for nodes, plus SSM so nodes can be inspected without SSH keys.
# Workloads never use this role: IMDS is closed to pods (hop limit 1) and they get IRSA roles.
resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    "AmazonSSMManagedInstanceCore",
  ])
  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

# The two node groups differ only in these settings.
locals {
  node_groups = {
    # Long-running services and CPU run Jobs: on-demand, never below cpu_node_min.
    cpu = {
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = var.cpu_instance_types
      disk_gib       = var.cpu_node_disk_gib
      min_size       = var.cpu_node_min
      desired_size   = var.cpu_node_desired
      max_size       = var.cpu_node_max
      labels         = { (local.node_pool_label) = "cpu" }
      taints         = []
    }
    # DDP training runs. From zero: a pending training pod makes the cluster autoscaler add a node;
    # idle nodes go away. Only pods that tolerate the taint (the training run Jobs, the NVIDIA
    # device plugin) run on GPUs.
    gpu = {
      ami_type       = var.gpu_ami_type # NVIDIA driver and container toolkit preinstalled.
      instance_types = var.gpu_instance_types
      disk_gib       = var.gpu_node_disk_gib
      min_size       = 0
      desired_size   = 0
      max_size       = var.gpu_node_max
      labels         = { (local.node_pool_label) = "gpu", "nvidia.com/gpu.present" = "true" }
      taints         = [{ key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }]
    }
  }
}

resource "aws_launch_template" "node" {
  for_each               = local.node_groups
  name_prefix            = "${local.name}-${each.key}-"
  update_default_version = true

  # IMDSv2 only, one hop: pods cannot reach the node role's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = each.value.disk_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${local.name}-${each.key}" }
  }
}

resource "aws_eks_node_group" "node" {
  for_each        = local.node_groups
  cluster_name    = aws_eks_cluster.main.name
  node_group_name = "${local.name}-${each.key}"
  version         = aws_eks_cluster.main.version
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  ami_type        = each.value.ami_type
  capacity_type   = "ON_DEMAND"
  instance_types  = each.value.instance_types

  scaling_config {
    min_size     = each.value.min_size
    desired_size = each.value.desired_size
    max_size     = each.value.max_size
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.node[each.key].id
    version = aws_launch_template.node[each.key].latest_version
  }

  labels = each.value.labels

  dynamic "taint" {
    for_each = each.value.taints
    content {
      key    = taint.value.key
      value  = taint.value.value
      effect = taint.value.effect
    }
  }

  # The cluster autoscaler owns the size after creation.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

# At 0 nodes the cluster autoscaler cannot see the group's labels and taint on a node; these
# ASG tags tell it what a new node would look like, so a GPU pod can trigger the first node.
resource "aws_autoscaling_group_tag" "gpu_node_template" {
  for_each = {
    "k8s.io/cluster-autoscaler/node-template/label/${local.node_pool_label}" = "gpu"
    "k8s.io/cluster-autoscaler/node-template/label/nvidia.com/gpu.present"   = "true"
    "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"           = "true:NoSchedule"
  }
  autoscaling_group_name = aws_eks_node_group.node["gpu"].resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}

# --- managed add-ons (versions: the default for the cluster version) ---

resource "aws_eks_addon" "core" {
  # add-on => its configuration (null: the defaults). The VPC CNI enforces NetworkPolicies only
  # when asked to (its node agent); deploy/k8s/fraud-service.yaml has one.
  for_each = {
    "vpc-cni"    = jsonencode({ enableNetworkPolicy = "true" })
    "kube-proxy" = null
    "coredns"    = null
  }
  cluster_name                = aws_eks_cluster.main.name
  addon_name                  = each.key
  configuration_values        = each.value
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  # coredns needs nodes to become healthy.
  depends_on = [aws_eks_node_group.node]
}
