//! The domain model: names, resources and the parts of a spec the registry understands.

pub mod claims;
pub mod command;
pub mod credentials;
pub mod device_spec;
pub mod names;
pub mod resource;
pub mod role;
pub mod selector;
pub mod status;
pub mod trust_anchors;

pub use claims::Claim;
pub use names::{AppName, DeviceName, NameError};
pub use resource::{
    Application, DeleteOptions, Device, Metadata, MetadataInput, Preconditions, Resource,
    ResourceInput,
};
pub use role::Role;
pub use selector::LabelSelector;
