//! The core of the serverless Drogue Cloud: the domain model, access tokens, the
//! registry's rules, and the storage ports with their DynamoDB and embedded adapters.
//! Every function and the local runner are built on this crate.

pub mod access;
pub mod aws;
pub mod commands;
pub mod config;
pub mod device_auth;
pub mod events;
pub mod http;
pub mod model;
pub mod mqtt;
pub mod rate_limit;
pub mod registry;
pub mod runtime;
pub mod store;
