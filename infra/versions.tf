terraform {
  required_version = ">= 1.6.0"

  required_providers {
    # ~> 5.80: has the AL2023 NVIDIA AMI type (GPU node group) and EKS access entries (API auth mode).
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    # Only to read the OIDC issuer's certificate thumbprint for the IRSA identity provider.
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
    # Only to generate the feature store's AUTH token (elasticache.tf).
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State holds ids and endpoints, never the database password (RDS keeps it in Secrets Manager).
  # It does hold one secret: the feature store's AUTH token (elasticache.tf), which ElastiCache
  # takes only as a plain argument. So: an encrypted backend, readable only by whoever applies.
  # For a shared stack use a remote, encrypted, locked backend, e.g. (Terraform >= 1.10 for use_lockfile):
  # backend "s3" {
  #   bucket       = "<state-bucket>"
  #   key          = "ecosystem-assets/terraform.tfstate"
  #   region       = "<region>"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.region

  # Every resource carries these, so cost reports and clean-up can find the whole stack.
  default_tags {
    tags = merge(var.tags, {
      Project   = "ecosystem-assets"
      ManagedBy = "terraform"
      Stack     = var.name
    })
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  name       = var.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  # Globally unique bucket names without hard-coding an account id.
  bucket_suffix = "${local.account_id}-${var.region}"
}
