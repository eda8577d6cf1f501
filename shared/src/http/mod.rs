//! What every HTTP function shares: the JSON error body, request body limits, and
//! who is calling.

mod auth;
mod body;
mod error;

pub use auth::{CallerCredentials, authenticate_user, basic_credentials};
pub use body::{BodyError, JsonBody, OptionalJsonBody, read_body, read_limited};
pub use error::ApiError;
