#!/usr/bin/python3
"""cloud-init's own OpenStack metadata reader (Debian's cloud-init package) against
169.254.169.254: prints what it parsed as JSON (metadata, network data, the version it chose,
and the EC2 metadata it crawled)."""
import json

from cloudinit.sources.helpers import openstack

reader = openstack.MetadataReader("http://169.254.169.254", retries=0)
data = reader.read_v2()
print(json.dumps({
    "metadata": data.get("metadata"),
    "networkdata": data.get("networkdata"),
    "version": data.get("version"),
    "ec2-metadata": data.get("ec2-metadata"),
}, default=str))
