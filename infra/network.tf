# VPC (terraform-aws-modules/vpc): public subnets hold only load balancers and the NAT gateway(s);
# nodes, the database and the feature store sit in private subnets and reach the internet (image
# pulls, AWS APIs) through NAT. S3 traffic bypasses NAT through a free gateway endpoint, which
# matters for training data and artifacts.

locals {
  # Zones named explicitly (default: the region's a, b, c) so the subnet layout never shifts when
  # AWS adds a zone. Each zone gets a /24 public subnet for load balancers and a /20 private one
  # for nodes and pods (the VPC CNI gives every pod a VPC address).
  azs                  = length(var.availability_zones) > 0 ? var.availability_zones : [for z in ["a", "b", "c"] : "${var.region}${z}"]
  public_subnet_cidrs  = [for i in range(length(local.azs)) : cidrsubnet(var.vpc_cidr, 8, i)]
  private_subnet_cidrs = [for i in range(length(local.azs)) : cidrsubnet(var.vpc_cidr, 4, i + 1)]
}

# Fails the plan early if a named zone does not exist or is not available in this account.
data "aws_availability_zones" "selected" {
  state = "available"
  filter {
    name   = "zone-name"
    values = local.azs
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == length(local.azs)
      error_message = "Some of the availability_zones are not available in this region/account."
    }
  }
}

module "vpc" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "6.6.0"

  name = local.name
  cidr = var.vpc_cidr
  azs  = local.azs

  public_subnets  = local.public_subnet_cidrs
  private_subnets = local.private_subnet_cidrs
  # Internet-facing load balancers get their addresses from AWS; nothing else is public.
  map_public_ip_on_launch = false
  # Load balancer placement for the in-tree controller and the AWS Load Balancer Controller.
  public_subnet_tags  = { "kubernetes.io/role/elb" = "1" }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = "1" }

  # RDS endpoints and the EKS private endpoint resolve through VPC DNS.
  enable_dns_support   = true
  enable_dns_hostnames = true

  # One NAT gateway (cheaper) or one per zone (survives a zone outage); private route table per zone.
  enable_nat_gateway     = true
  single_nat_gateway     = var.single_nat_gateway
  one_nat_gateway_per_az = !var.single_nat_gateway

  # The default security group without rules: anything left in it by accident has no network access.
  manage_default_security_group  = true
  default_security_group_name    = "${local.name}-default-deny"
  default_security_group_ingress = []
  default_security_group_egress  = []

  # Flow logs (who talked to what, for incident response) into an encrypted log group; 60 s
  # aggregation instead of 600 s: faster signal when investigating, same price per GB.
  enable_flow_log                                 = true
  flow_log_traffic_type                           = "ALL"
  flow_log_max_aggregation_interval               = 60
  create_flow_log_cloudwatch_log_group            = true
  flow_log_cloudwatch_log_group_name_prefix       = "/aws/vpc/${local.name}/flow-logs/"
  flow_log_cloudwatch_log_group_retention_in_days = var.log_retention_days
  flow_log_cloudwatch_log_group_kms_key_id        = aws_kms_key.main.arn
  create_flow_log_cloudwatch_iam_role             = true
  vpc_flow_log_iam_role_name                      = "${local.name}-vpc-flow-logs"
  vpc_flow_log_iam_role_use_name_prefix           = false
  # Confused-deputy guard: only flow logs of this account may use the role.
  flow_log_cloudwatch_iam_role_conditions = [{
    test     = "StringEquals"
    variable = "aws:SourceAccount"
    values   = [local.account_id]
  }]
}

# Gateway endpoint: S3 reads/writes from nodes skip the NAT gateway's per-GB charge.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = module.vpc.vpc_id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = module.vpc.private_route_table_ids
  tags              = { Name = "${local.name}-s3" }
}
