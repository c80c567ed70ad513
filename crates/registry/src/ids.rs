//! The registry's ids as distinct types: a subnet id does not fit where a port id is meant.
//! Each is shared text behind one pointer (`ArcStr`), as cheap to clone and to keep in an index
//! as the plain shared strings they replace (see docs/ARCHITECTURE.md, "Memory"). Text enters
//! as an id only where it is read (a request, a stored row, the command line); no check of its
//! shape is made, as Neutron makes none beyond the API's.

use std::borrow::Borrow;
use std::fmt;

use arcstr::ArcStr;
use serde::{Deserialize, Serialize};

/// Text shared behind one pointer: two copies that say the same can be made one (see
/// `Registry::share_network`).
pub(crate) trait SharedText: Clone + PartialEq {
    /// Whether both point at the same text.
    fn same_pointer(&self, other: &Self) -> bool;
}

impl SharedText for ArcStr {
    fn same_pointer(&self, other: &Self) -> bool {
        ArcStr::ptr_eq(self, other)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(ArcStr);

        impl $name {
            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether both point at the same shared text (not only the same characters).
            pub fn ptr_eq(a: &Self, b: &Self) -> bool {
                ArcStr::ptr_eq(&a.0, &b.0)
            }
        }

        impl SharedText for $name {
            fn same_pointer(&self, other: &Self) -> bool {
                ArcStr::ptr_eq(&self.0, &other.0)
            }
        }

        impl From<ArcStr> for $name {
            fn from(s: ArcStr) -> Self {
                $name(s)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s.into())
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                $name(s.as_str().into())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                *self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                *self.0 == **other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                *self.0 == **other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                **self == *other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                *self == *other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                **self == *other.0
            }
        }
    };
}

id_type!(
    /// A network's id (UUID).
    NetworkId
);
id_type!(
    /// A subnet's id (UUID).
    SubnetId
);
id_type!(
    /// A port's id (UUID).
    PortId
);
id_type!(
    /// A project's (tenant's) id.
    ProjectId
);
id_type!(
    /// A node's name (`--node`, Neutron's agent host), as a DHCP port's `binding:host_id`.
    NodeName
);
