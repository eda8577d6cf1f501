//! DynamoDB only: tables written by earlier versions of the store.

use super::fixtures::*;
use drogue_shared::store::{
    ApplicationStore, Conflict, DeviceLimits, DeviceStore, StoreError, StoredApplication,
};
use drogue_tests::backend::{dynamo_client, fresh_dynamo_table, moto_url};
use serde_json::json;

/// Removes a count item, as a table written before the counts were kept lacks it.
async fn forget_count(table: &str, pk: &str) {
    dynamo_client(&moto_url())
        .delete_item()
        .table_name(table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("#DEVICES".into()),
        )
        .send()
        .await
        .expect("moto deletes the item");
}

#[tokio::test]
async fn device_counts_missing_from_an_earlier_table_are_counted_not_started_from_zero() {
    let s = fresh_dynamo_table().await;
    let owned = |name: &str| StoredApplication {
        owner: "alice".into(),
        ..app(name)
    };
    let limits = DeviceLimits {
        per_application: Some(3),
        per_owner: Some(4),
    };
    let (a, b) = (app_name("la"), app_name("lb"));
    s.create_application(&owned("la")).await.unwrap();
    s.create_application(&owned("lb")).await.unwrap();
    let first = device("la", "d1", json!({}));
    for device in [
        &first,
        &device("la", "d2", json!({})),
        &device("la", "d3", json!({})),
    ] {
        s.create_device_limited(&a, device, limits).await.unwrap();
    }
    // the table as an earlier version left it: devices, no counts
    forget_count(s.table(), "APP#la").await;
    forget_count(s.table(), "USER#alice").await;

    // the application's quota still holds: its devices are counted, not taken for none
    let err = s
        .create_device_limited(&a, &device("la", "d4", json!({})), limits)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::QuotaExceeded)),
        "{err:?}"
    );
    assert_eq!(s.count_devices(&a).await.unwrap(), 3);
    // and the owner's: 3 + 1 of 4, then no more
    s.create_device_limited(&b, &device("lb", "e1", json!({})), limits)
        .await
        .unwrap();
    let err = s
        .create_device_limited(&b, &device("lb", "e2", json!({})), limits)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::OwnerQuotaExceeded)),
        "{err:?}"
    );
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 4);

    // deleting a device counted that way takes the counts down, never below what is held
    forget_count(s.table(), "APP#la").await;
    forget_count(s.table(), "USER#alice").await;
    s.delete_device(&a, &first).await.unwrap();
    assert_eq!(s.count_devices(&a).await.unwrap(), 2);
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 3);
    s.create_device_limited(&b, &device("lb", "e2", json!({})), limits)
        .await
        .unwrap();
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 4);

    // a count asked for an application that is not there writes nothing
    assert_eq!(s.count_devices(&app_name("nowhere")).await.unwrap(), 0);
    assert_eq!(s.count_owned_devices("nobody").await.unwrap(), 0);
}

#[tokio::test]
async fn a_device_delete_while_its_application_is_deleted_counts_nothing() {
    let s = fresh_dynamo_table().await;
    let a = app_name("ca");
    let stored = StoredApplication {
        owner: "carol".into(),
        ..app("ca")
    };
    s.create_application(&stored).await.unwrap();
    let d1 = device("ca", "d1", json!({}));
    s.create_device(&a, &d1).await.unwrap();
    // the application closed, as its deletion does first
    dynamo_client(&moto_url())
        .update_item()
        .table_name(s.table())
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("APP#ca".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("#APP".into()),
        )
        .update_expression("SET accepts = :false, ownerid = :closed")
        .expression_attribute_values(
            ":false",
            aws_sdk_dynamodb::types::AttributeValue::Bool(false),
        )
        .expression_attribute_values(
            ":closed",
            aws_sdk_dynamodb::types::AttributeValue::S("#closed#".into()),
        )
        .send()
        .await
        .unwrap();
    let err = s.delete_device(&a, &d1).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::ApplicationGone)),
        "{err:?}"
    );
    let stray = dynamo_client(&moto_url())
        .get_item()
        .table_name(s.table())
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("USER##closed#".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("#DEVICES".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(stray.item().is_none(), "no count for the closed marker");
    assert_eq!(s.count_owned_devices("carol").await.unwrap(), 1);
}

#[tokio::test]
async fn creating_a_table_that_is_there_already_keeps_it() {
    // the SDK tries a create again when its first answer comes too late; the table is made
    // by then, and the second try must not fail the caller
    let s = fresh_dynamo_table().await;
    s.create_application(&app("kept")).await.unwrap();
    s.create_table().await.expect("a second create is no error");
    assert!(
        s.get_application(&app_name("kept"))
            .await
            .unwrap()
            .is_some(),
        "the table and its items are kept"
    );
}
