# Cluster add-ons the deployment depends on, as Helm releases, each chart pinned to an exact version
# of its official repository. Without the cluster autoscaler and the NVIDIA device plugin the GPU
# node group never leaves 0 nodes (a training pod asks for nvidia.com/gpu, which only the plugin
# advertises, on a node only the autoscaler adds).
#
# Install order (depends_on, one release after the other; each waits until its pods are ready):
#   1. aws-load-balancer-controller  its webhook mutates every Service created in the cluster and
#      fails the create while the controller is not ready, so it goes first and is ready before
#      any other chart creates a Service
#   2. metrics-server                serves the metrics.k8s.io API; while that APIService has no
#      ready pod, API discovery (helm's and kubectl's) reports errors; the fraud service's HPA
#      needs it
#   3. external-secrets              its CRDs and webhook exist before deploy/'s ExternalSecrets
#   4. cluster-autoscaler            scales the CPU group and the GPU group from 0
#   5. nvidia-device-plugin          a DaemonSet on GPU nodes only (none until the autoscaler adds
#      one); it advertises nvidia.com/gpu, so it must be there before the first training pod
#   6. Kubeflow training operator    not here: `kubectl apply --server-side -k deploy/training-operator`
#      after `terraform apply` (deploy/README.md); v1 has no official chart, and its six CRDs
#      (~3.5 MB) need a server-side apply
#
# The helm provider reaches the API endpoint from where Terraform runs: inside the VPC, or with
# cluster_endpoint_public_access for the listed CIDRs (the same as kubectl). Upgrading a chart:
# infra/README.md, "Cluster add-ons". The values keys are checked against each pinned chart by
# ecosystem_assets_tests/deploy/test_addons.py (vendored key lists: data/addons/).

provider "helm" {
  kubernetes = {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)
    # A token per run (they expire after 15 minutes), from the identity that runs Terraform
    # (cluster-admin through its access entry, eks.tf); needs the AWS CLI where Terraform runs.
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
    }
  }
}

locals {
  # [namespace, name] of the service accounts whose IRSA roles iam.tf creates: the same variables
  # the roles' trust policies name, so a release and its role cannot disagree.
  addon_service_accounts = {
    cluster-autoscaler       = split(":", var.cluster_autoscaler_service_account)
    external-secrets         = split(":", var.external_secrets_service_account)
    load-balancer-controller = split(":", var.load_balancer_controller_service_account)
  }

  # The cluster autoscaler's minor version must be the cluster's (its scheduler simulation is the
  # Kubernetes scheduler of that release): the newest patch per cluster_version. Raising
  # cluster_version without adding its line here fails the plan (no such key), on purpose.
  cluster_autoscaler_image_tags = {
    "1.33" = "v1.33.6"
  }
}

# 1. AWS Load Balancer Controller: Services of type LoadBalancer (NLB) and Ingresses (ALB).
resource "helm_release" "aws_load_balancer_controller" {
  name        = "aws-load-balancer-controller"
  repository  = "https://aws.github.io/eks-charts"
  chart       = "aws-load-balancer-controller"
  version     = "3.5.0" # controller v3.5.0; its IAM policy is the iam module's (iam.tf), the same actions
  namespace   = local.addon_service_accounts["load-balancer-controller"][0]
  max_history = 10

  values = [yamlencode({
    clusterName = module.eks.cluster_name
    # Pods cannot read the instance metadata (hop limit 1, eks.tf): region and VPC are given.
    region = var.region
    vpcId  = module.vpc.vpc_id
    serviceAccount = {
      create      = true
      name        = local.addon_service_accounts["load-balancer-controller"][1]
      annotations = { "eks.amazonaws.com/role-arn" = module.load_balancer_controller_irsa.arn }
    }
  })]

  # The whole module: the node groups and the vpc-cni/coredns add-ons are up before any pod.
  depends_on = [module.eks]
}

# 2. metrics-server: CPU and memory metrics for HorizontalPodAutoscalers (the fraud service's).
resource "helm_release" "metrics_server" {
  name        = "metrics-server"
  repository  = "https://kubernetes-sigs.github.io/metrics-server/"
  chart       = "metrics-server"
  version     = "3.13.1" # metrics-server v0.8.1
  namespace   = "kube-system"
  max_history = 10

  values = [yamlencode({
    # Two replicas and a budget: a node drain does not leave the HPAs without metrics.
    replicas            = 2
    podDisruptionBudget = { enabled = true, minAvailable = 1 }
  })]

  depends_on = [helm_release.aws_load_balancer_controller]
}

# 3. External Secrets Operator: copies the stack's Secrets Manager secrets into Kubernetes Secrets.
resource "helm_release" "external_secrets" {
  name             = "external-secrets"
  repository       = "https://charts.external-secrets.io"
  chart            = "external-secrets"
  version          = "2.9.0" # operator v2.9.0, with its CRDs (installCRDs)
  namespace        = local.addon_service_accounts["external-secrets"][0]
  create_namespace = true
  max_history      = 10

  values = [yamlencode({
    installCRDs = true
    serviceAccount = {
      create      = true
      name        = local.addon_service_accounts["external-secrets"][1]
      annotations = { "eks.amazonaws.com/role-arn" = module.irsa["external-secrets"].arn }
    }
  })]

  depends_on = [helm_release.metrics_server]
}

# 4. Cluster autoscaler: adds and removes nodes of the two managed node groups, found by the
# auto-discovery tags EKS puts on their ASGs; the GPU group from 0 through its node-template tags (eks.tf).
resource "helm_release" "cluster_autoscaler" {
  name        = "cluster-autoscaler"
  repository  = "https://kubernetes.github.io/autoscaler"
  chart       = "cluster-autoscaler"
  version     = "9.51.0" # the chart of cluster-autoscaler 1.33 (the cluster's minor); image tag below
  namespace   = local.addon_service_accounts["cluster-autoscaler"][0]
  max_history = 10

  values = [yamlencode({
    cloudProvider = "aws"
    awsRegion     = var.region # no instance metadata for pods (hop limit 1)
    autoDiscovery = { clusterName = module.eks.cluster_name }
    image         = { tag = local.cluster_autoscaler_image_tags[var.cluster_version] }
    rbac = {
      serviceAccount = {
        create      = true
        name        = local.addon_service_accounts["cluster-autoscaler"][1]
        annotations = { "eks.amazonaws.com/role-arn" = module.irsa["cluster-autoscaler"].arn }
      }
    }
  })]

  depends_on = [helm_release.external_secrets]
}

# 5. NVIDIA device plugin: advertises nvidia.com/gpu on the GPU nodes. Only there: the GPU group's
# label and a toleration for its taint (eks.tf); the chart's own affinity also wants
# nvidia.com/gpu.present=true, which the group's nodes carry.
resource "helm_release" "nvidia_device_plugin" {
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = "0.19.3"
  namespace        = "nvidia-device-plugin"
  create_namespace = true
  max_history      = 10

  values = [yamlencode({
    nodeSelector = { (local.node_pool_label) = "gpu" }
    tolerations  = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
  })]

  depends_on = [helm_release.cluster_autoscaler]
}
