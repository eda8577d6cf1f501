//! The certificate validator: the target of the IoT topic rule on
//! `$aws/events/certificates/registered/#` (and on `$PORT` as `POST /`).

use drogue_cert_validator::validator::{CertificateValidator, Location};
use drogue_cert_validator::{iot_client, table_from_env};
use drogue_shared::runtime;
use drogue_shared::store::dynamodb::{self, DynamoStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let table = table_from_env()?;
    let prefix = std::env::var("DROGUE_IOT_POLICY_PREFIX").unwrap_or_else(|_| "drogue".into());
    let aws = drogue_shared::runtime::aws::config_from_env().await;
    let store = DynamoStore::new(dynamodb::client(&aws), table);
    let validator = CertificateValidator::new(iot_client(&aws), store, &prefix)?;
    runtime::run_events(move |event, context| {
        let validator = validator.clone();
        async move {
            let (partition, region, _) = context.arn_parts();
            validator
                .handle(event, &Location { partition, region })
                .await
        }
    })
    .await
}
