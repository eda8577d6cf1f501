//! What a request presents: the table is shared with the CoAP endpoint
//! ([`drogue_shared::device_auth::presented`]).

pub use drogue_shared::device_auth::presented::{Names, request};
