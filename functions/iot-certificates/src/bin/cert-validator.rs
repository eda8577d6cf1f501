//! The certificate validator: the target of the IoT topic rule on
//! `$aws/events/certificates/registered/#` (and on `$PORT` as `POST /`).

use drogue_iot_certificates::ValidatorConfig;
use drogue_iot_certificates::validator::{CertificateValidator, Location};
use drogue_shared::store::dynamodb::{self, DynamoStore};
use drogue_shared::{aws, runtime};

fn main() -> anyhow::Result<()> {
    runtime::block_on(start())
}

async fn start() -> anyhow::Result<()> {
    runtime::init_tracing();
    let runtime::Function { config, runtime } = runtime::Function::<ValidatorConfig>::parse()?;
    let aws = runtime.aws_config().await;
    let store = DynamoStore::new(dynamodb::client(&aws), config.table.as_str());
    let validator =
        CertificateValidator::new(aws::iot_client(&aws), store, &config.iot_policy_prefix)?;
    runtime::run_events(&runtime, move |event, context| {
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
