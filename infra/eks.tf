# EKS (terraform-aws-modules/eks): a private control plane, one on-demand CPU node group for the
# long-running services (Dagster webserver/daemon/user code, MLflow, the fraud service) and CPU run
# Jobs, and a GPU node group that sits at 0 nodes until a DDP training run asks for `nvidia.com/gpu`.

locals {
  # What pods use to land on (or stay off) the GPU nodes; also in the outputs for the Helm values.
  node_pool_label = "node-pool"
}

module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "21.19.0"

  name               = local.name
  kubernetes_version = var.cluster_version
  # STANDARD: when the version leaves standard support EKS upgrades the control plane instead of
  # moving it to extended support (6x the hourly price). Upgrade before that date: README "Upgrades".
  upgrade_policy      = { support_type = "STANDARD" }
  deletion_protection = var.deletion_protection

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets
  # Private endpoint; the public one only on request, and then only for the listed CIDRs
  # (variables.tf refuses public access without CIDRs, and 0.0.0.0/0).
  endpoint_private_access      = true
  endpoint_public_access       = var.cluster_endpoint_public_access
  endpoint_public_access_cidrs = var.cluster_endpoint_public_access_cidrs

  # Kubernetes Secrets envelope-encrypted with the stack's key (kms.tf), not a key of the module's.
  create_kms_key           = false
  attach_encryption_policy = true
  encryption_config        = { provider_key_arn = aws_kms_key.main.arn, resources = ["secrets"] }

  # Every control-plane log, into an encrypted log group with the stack's retention.
  enabled_log_types                      = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
  create_cloudwatch_log_group            = true
  cloudwatch_log_group_retention_in_days = var.log_retention_days
  cloudwatch_log_group_kms_key_id        = aws_kms_key.main.arn

  # Access entries (not the aws-auth ConfigMap): who may use the cluster is managed by AWS APIs.
  authentication_mode                      = "API"
  enable_cluster_creator_admin_permissions = true
  access_entries                           = local.admin_access_entries

  # The cluster's OIDC issuer as an IAM identity provider, for the IRSA roles (iam.tf).
  enable_irsa = true

  # Managed add-ons at the newest version for the cluster version. The VPC CNI runs with its own
  # IRSA role (not the node role) and enforces NetworkPolicies (deploy/k8s/fraud-service.yaml has
  # one); it and kube-proxy are installed before the nodes, which need them to become Ready.
  addons = {
    vpc-cni = {
      before_compute           = true
      service_account_role_arn = module.vpc_cni_irsa.arn
      configuration_values     = jsonencode({ enableNetworkPolicy = "true" })
    }
    kube-proxy = { before_compute = true }
    coredns    = {}
  }

  # Both groups: private subnets, on demand, IMDSv2 with one hop (pods cannot reach the node role's
  # credentials), an encrypted gp3 root volume, a node role without the CNI policy (the VPC CNI has
  # its own IRSA role, iam.tf) and with SSM, so nodes are inspected without SSH keys.
  eks_managed_node_groups = {
    # Long-running services and CPU run Jobs, never below cpu_node_min.
    cpu = {
      name           = "${local.name}-cpu"
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = var.cpu_instance_types
      min_size       = var.cpu_node_min
      desired_size   = var.cpu_node_desired # the cluster autoscaler owns it afterwards
      max_size       = var.cpu_node_max
      labels         = { (local.node_pool_label) = "cpu" }

      subnet_ids                   = module.vpc.private_subnets
      capacity_type                = "ON_DEMAND"
      update_config                = { max_unavailable = 1 }
      iam_role_name                = "${local.name}-cpu-node"
      launch_template_name         = "${local.name}-cpu"
      iam_role_attach_cni_policy   = false
      iam_role_additional_policies = { ssm = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore" }
      metadata_options             = { http_endpoint = "enabled", http_tokens = "required", http_put_response_hop_limit = 1 }
      block_device_mappings = {
        root = { device_name = "/dev/xvda", ebs = { volume_size = var.cpu_node_disk_gib, volume_type = "gp3", encrypted = true, delete_on_termination = true } }
      }
    }
    # DDP training runs. From zero: a pending training pod makes the cluster autoscaler add a node;
    # idle nodes go away. Only pods that tolerate the taint (the training pods, the NVIDIA device
    # plugin) run on GPUs.
    gpu = {
      name           = "${local.name}-gpu"
      ami_type       = var.gpu_ami_type # NVIDIA driver and container toolkit preinstalled.
      instance_types = var.gpu_instance_types
      min_size       = 0
      desired_size   = 0
      max_size       = var.gpu_node_max
      # k8s.amazonaws.com/accelerator: the cluster autoscaler's GPU label on AWS. A node with it but
      # no nvidia.com/gpu yet (the device plugin starts after the node) counts as still starting,
      # not as a node that cannot take the pod, so one pending pod does not buy a second node.
      labels = { (local.node_pool_label) = "gpu", "nvidia.com/gpu.present" = "true", "k8s.amazonaws.com/accelerator" = local.gpu_accelerator }
      taints = { gpu = { key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" } }

      subnet_ids                   = module.vpc.private_subnets
      capacity_type                = "ON_DEMAND"
      update_config                = { max_unavailable = 1 }
      iam_role_name                = "${local.name}-gpu-node"
      launch_template_name         = "${local.name}-gpu"
      iam_role_attach_cni_policy   = false
      iam_role_additional_policies = { ssm = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore" }
      metadata_options             = { http_endpoint = "enabled", http_tokens = "required", http_put_response_hop_limit = 1 }
      block_device_mappings = {
        root = { device_name = "/dev/xvda", ebs = { volume_size = var.gpu_node_disk_gib, volume_type = "gp3", encrypted = true, delete_on_termination = true } }
      }
    }
  }
}

locals {
  admin_access_entries = {
    for arn in var.cluster_admin_principal_arns : arn => {
      principal_arn = arn
      policy_associations = {
        admin = {
          policy_arn   = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
          access_scope = { type = "cluster" }
        }
      }
    }
  }
}

# The GPU instance type's accelerator, for the autoscaler's GPU label and its node template below
# (the group's instance types should carry the same GPUs: the autoscaler models a group by one type).
data "aws_ec2_instance_type" "gpu" {
  instance_type = var.gpu_instance_types[0]
}

locals {
  gpu_per_node = one(data.aws_ec2_instance_type.gpu.gpus) # null, and an error below, for a type without GPUs
  # e.g. "nvidia-a10g" for g5, "nvidia-l4" for g6
  gpu_accelerator = lower(replace("${local.gpu_per_node.manufacturer}-${local.gpu_per_node.name}", " ", "-"))
}

# At 0 nodes the cluster autoscaler cannot see the group's labels and taint on a node; these
# ASG tags tell it what a new node would look like, so a GPU pod can trigger the first node.
# (EKS itself tags a managed group's ASG with k8s.io/cluster-autoscaler/enabled and
# k8s.io/cluster-autoscaler/<cluster>, the autoscaler's auto-discovery tags: infra/addons.tf.)
resource "aws_autoscaling_group_tag" "gpu_node_template" {
  for_each = {
    "k8s.io/cluster-autoscaler/node-template/label/${local.node_pool_label}"      = "gpu"
    "k8s.io/cluster-autoscaler/node-template/label/nvidia.com/gpu.present"        = "true"
    "k8s.io/cluster-autoscaler/node-template/label/k8s.amazonaws.com/accelerator" = local.gpu_accelerator
    "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"                = "true:NoSchedule"
    "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"            = tostring(local.gpu_per_node.count)
  }
  autoscaling_group_name = module.eks.eks_managed_node_groups["gpu"].node_group_autoscaling_group_names[0]

  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}
