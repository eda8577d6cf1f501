//! What a publish does, whatever the transport: authenticate the device (as the HTTP
//! endpoint does, with [`drogue_shared::device_auth`]), check its publish rate, turn the
//! payload into an event ([`drogue_shared::events::telemetry`]) and hand it to the sink;
//! and, with `ct`, wait for a command.

use crate::error::CoapError;
use crate::exchange::TransportIdentity;
use crate::request::PublishRequest;
use drogue_shared::commands::{Command, CommandService};
use drogue_shared::device_auth::{
    Authenticated, DeviceAuthentication, DeviceAuthenticator, presented,
};
use drogue_shared::events::{self, EventSink, Publish};
use drogue_shared::rate_limit::PublishLimiter;
use std::sync::Arc;
use std::time::Duration;

/// The services a publish uses.
#[derive(Clone)]
pub struct Backend {
    pub auth: DeviceAuthenticator,
    pub sink: Arc<dyn EventSink>,
    pub commands: CommandService,
    /// The publish rate limit per device (shared with other endpoints of the process).
    pub limiter: PublishLimiter,
    /// The `instance` extension of events.
    pub instance: String,
}

impl Backend {
    /// Authenticates, checks the rate and publishes; the authenticated device.
    pub async fn publish(
        &self,
        request: &PublishRequest,
        identity: Option<TransportIdentity>,
        payload: &[u8],
    ) -> Result<Authenticated, CoapError> {
        let received = chrono::Utc::now();
        let authenticated = self.authenticate(request, identity).await?;
        // a gateway's publishes for its devices count against the gateway
        self.limiter
            .check(&authenticated.sender.metadata.uid)
            .map_err(CoapError::TooManyRequests)?;
        let event = events::telemetry(
            &Publish {
                application: &authenticated.application,
                device: &authenticated.device,
                sender: &authenticated.sender,
                channel: &request.channel,
                suffix: request.suffix.as_deref(),
                content_type: request.content_type,
                data_schema: request.data_schema.as_deref(),
                instance: &self.instance,
                received,
            },
            payload,
        )
        .map_err(|e| CoapError::InvalidFormat(e.to_string()))?;
        self.sink
            .publish_structured(event)
            .await
            .map_err(|e| CoapError::Unavailable(Box::new(e)))?;
        Ok(authenticated)
    }

    /// Every failure is the same 4.03; a store that cannot be asked is 5.03.
    async fn authenticate(
        &self,
        request: &PublishRequest,
        identity: Option<TransportIdentity>,
    ) -> Result<Authenticated, CoapError> {
        let names = presented::Names {
            application: request.names.application.clone(),
            device: request.names.device.clone(),
            r#as: request.names.r#as.clone(),
        };
        let chain = match identity {
            Some(TransportIdentity::PreSharedKey(authenticated)) => {
                // the transport authenticated the device; nothing else may be presented
                if request.authorization.is_some() || names.r#as.is_some() {
                    return Err(CoapError::AuthenticationFailed);
                }
                return Ok(*authenticated);
            }
            Some(TransportIdentity::Certificates(chain)) => Some(chain),
            None => None,
        };
        let auth_request = presented::request(names, request.authorization.as_deref(), chain)
            .ok_or(CoapError::AuthenticationFailed)?;
        match self
            .auth
            .authenticate(auth_request)
            .await
            .map_err(|e| CoapError::Unavailable(Box::new(e)))?
        {
            DeviceAuthentication::Allow(authenticated) => Ok(*authenticated),
            DeviceAuthentication::Deny { reason } => {
                tracing::info!(reason, "device authentication failed (CoAP)");
                Err(CoapError::AuthenticationFailed)
            }
        }
    }

    /// Waits up to `wait` for a command for the device.
    pub async fn wait_for_command(
        &self,
        authenticated: &Authenticated,
        wait: Duration,
    ) -> Result<Option<Command>, CoapError> {
        Ok(self
            .commands
            .wait_for_command(
                &authenticated.application.metadata.name,
                &authenticated.device,
                wait,
            )
            .await?)
    }
}
