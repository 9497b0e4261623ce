terraform {
  # 1.11: the rds module's ephemeral (write-only) inputs; 1.9+: variable validations that read
  # other variables (variables.tf).
  required_version = ">= 1.11.1"

  required_providers {
    # ~> 6.42: the floor of the s3-bucket module below (the other modules need >= 6.28).
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.42"
    }
    # The feature store's AUTH token (elasticache.tf); the applications' passwords (app_secrets.tf:
    # ephemeral random_password, >= 3.7.0).
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
    # The cluster add-ons (addons.tf): helm_release resources, each chart pinned to an exact version.
    helm = {
      source  = "hashicorp/helm"
      version = "~> 3.1"
    }
  }

  # The modules (terraform-aws-modules, each pinned to an exact version where it is called) bring
  # their own providers (tls, time, cloudinit, null); `terraform init` writes every provider's
  # checksums into .terraform.lock.hcl, which is committed (README: "Lock file").

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
