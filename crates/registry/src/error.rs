//! Registry errors, each mapped to the Neutron error type and HTTP status a client expects.

/// Why a request was refused; `kind()` and `status()` give Neutron's type and HTTP code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A field is missing or invalid; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// A request Neutron's plugin refuses as a whole (its `InvalidInput`: IPv6 modes that do not
    /// go together, a CIDR of the other family…).
    #[error("Invalid input for operation: {0}.")]
    InvalidInput(String),
    /// Neutron's policy refuses the caller this (an attribute for admins only).
    #[error("{0} is disallowed by policy")]
    PolicyNotAuthorized(String),
    /// No such network.
    #[error("Network {0} could not be found.")]
    NetworkNotFound(String),
    /// No such subnet.
    #[error("Subnet {0} could not be found.")]
    SubnetNotFound(String),
    /// No such port.
    #[error("Port {0} could not be found.")]
    PortNotFound(String),
    /// The address is taken.
    #[error("IP address {ip} already allocated in subnet {subnet_id}")]
    IpAddressAlreadyAllocated {
        /// The address.
        ip: String,
        /// Its subnet.
        subnet_id: String,
    },
    /// The MAC is taken on this network.
    #[error("Unable to complete operation for network {net_id}. The mac address {mac} is in use.")]
    MacAddressInUse {
        /// The network.
        net_id: String,
        /// The MAC.
        mac: String,
    },
    /// The pools are exhausted.
    #[error("No more IP addresses available on network {0}.")]
    IpAddressGenerationFailure(String),
    /// The address is not valid for the subnet.
    #[error("IP address {ip} is not a valid IP for the specified subnet.")]
    InvalidIpForSubnet {
        /// The address.
        ip: String,
    },
    /// A fixed address asked for on a subnet whose hosts make their own (EUI-64).
    #[error("IPv6 address {ip} cannot be directly assigned to a port on subnet {subnet_id} as the subnet is configured for automatic addresses")]
    AllocationOnAutoAddressSubnet {
        /// The address.
        ip: String,
        /// The subnet.
        subnet_id: String,
    },
    /// Ports still use the subnet.
    #[error("Unable to complete operation on subnet {0}: One or more ports have an IP allocation from this subnet.")]
    SubnetInUse(String),
    /// Ports still use the network.
    #[error("Unable to complete operation on network {0}. There are one or more ports still in use on the network.")]
    NetworkInUse(String),
    /// The VLAN is taken on that physical network.
    #[error("Unable to create the network. The VLAN {vlan_id} on physical network {physical_network} is in use.")]
    VlanIdInUse {
        /// The VLAN id.
        vlan_id: u32,
        /// Its physical network.
        physical_network: String,
    },
    /// The VNI is taken.
    #[error("Unable to create the network. The tunnel ID {tunnel_id} is in use.")]
    TunnelIdInUse {
        /// The VNI.
        tunnel_id: u32,
    },
    /// Every segment of the tenant network types is taken.
    #[error("Unable to create the network. No tenant network is available for allocation.")]
    NoNetworkAvailable,
    /// A flat network already uses this physical network (both would be one L2 segment).
    #[error("Unable to create the flat network. Physical network {0} is in use.")]
    FlatNetworkInUse(String),
    /// The gateway lies inside an allocation pool, where IPAM could hand it to a port.
    #[error("Gateway ip {ip} conflicts with allocation pool {pool}.")]
    GatewayConflictWithAllocationPools {
        /// The gateway.
        ip: String,
        /// The pool, `start-end`.
        pool: String,
    },
    /// The subnet overlaps another one of the network.
    #[error("Invalid input for operation: Requested subnet with cidr: {cidr} for network: {net_id} overlaps with another subnet.")]
    Overlap {
        /// The CIDR requested.
        cidr: String,
        /// The network.
        net_id: String,
    },
}

impl RegistryError {
    /// Neutron's error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::BadRequest(_) => "HTTPBadRequest",
            RegistryError::InvalidInput(_) => "InvalidInput",
            RegistryError::PolicyNotAuthorized(_) => "PolicyNotAuthorized",
            RegistryError::NetworkNotFound(_) => "NetworkNotFound",
            RegistryError::SubnetNotFound(_) => "SubnetNotFound",
            RegistryError::PortNotFound(_) => "PortNotFound",
            RegistryError::IpAddressAlreadyAllocated { .. } => "IpAddressAlreadyAllocated",
            RegistryError::MacAddressInUse { .. } => "MacAddressInUse",
            RegistryError::IpAddressGenerationFailure(_) => "IpAddressGenerationFailure",
            RegistryError::InvalidIpForSubnet { .. } => "InvalidIpForSubnet",
            RegistryError::AllocationOnAutoAddressSubnet { .. } => "AllocationOnAutoAddressSubnet",
            RegistryError::SubnetInUse(_) => "SubnetInUse",
            RegistryError::NetworkInUse(_) => "NetworkInUse",
            RegistryError::FlatNetworkInUse(_) => "FlatNetworkInUse",
            RegistryError::VlanIdInUse { .. } => "VlanIdInUse",
            RegistryError::TunnelIdInUse { .. } => "TunnelIdInUse",
            RegistryError::NoNetworkAvailable => "NoNetworkAvailable",
            RegistryError::GatewayConflictWithAllocationPools { .. } => {
                "GatewayConflictWithAllocationPools"
            }
            RegistryError::Overlap { .. } => "InvalidInput",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::BadRequest(_)
            | RegistryError::InvalidInput(_)
            | RegistryError::InvalidIpForSubnet { .. }
            | RegistryError::AllocationOnAutoAddressSubnet { .. }
            | RegistryError::Overlap { .. } => 400,
            RegistryError::NetworkNotFound(_)
            | RegistryError::SubnetNotFound(_)
            | RegistryError::PortNotFound(_) => 404,
            RegistryError::NoNetworkAvailable => 503,
            RegistryError::PolicyNotAuthorized(_) => 403,
            _ => 409,
        }
    }
}

/// Shorthand for a 400 naming the field.
pub fn invalid(field: &str, why: impl std::fmt::Display) -> RegistryError {
    RegistryError::BadRequest(format!("Invalid input for {field}. Reason: {why}."))
}
