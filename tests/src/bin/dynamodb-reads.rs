//! DynamoDB requests per ingested message, for `http-endpoint` and `mqtt-ingest`, counted
//! by a proxy between the function binaries (under the emulated Lambda Runtime API) and
//! moto (see `drogue_tests::ingest_reads`). Run by `tests/bench/dynamodb-reads.sh`,
//! which builds the binaries and starts moto.
//!
//!   dynamodb-reads <dir with the function binaries> [messages]

use drogue_tests::ingest_reads::{
    GATEWAY, Ingest, Measured, Sender, device_name, measure, register,
};
use std::path::PathBuf;

/// A row: its name, who sends, the function's settings.
type Case<'a> = (&'a str, Vec<Sender>, &'a [(&'a str, &'a str)]);

fn device(i: usize) -> Sender {
    Sender {
        device: device_name(i),
        r#as: None,
    }
}

fn row(ingest: Ingest, case: &str, m: &Measured) {
    println!(
        "| {} | {case} | {} ({:.1}) | {:.2} | {:.2} | {} | {} | {}/{} |",
        ingest.binary(),
        m.first.reads,
        m.first.read_units,
        m.reads_per_message(),
        m.read_units_per_message(),
        m.warm.items,
        m.warm.writes,
        m.distinct,
        m.messages + 1,
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("the directory of the function binaries"));
    let messages: usize = args.next().map_or(50, |n| n.parse().expect("a number"));
    println!(
        "{messages} warm messages after a first one, per row; reads are requests of \
         GetItem/BatchGetItem/Query/..., read units for items of up to 4 KB"
    );
    println!();
    println!(
        "| function | case | first message: reads (units) | reads per warm message | read units per warm message | items read (warm, all) | writes (warm, all) | events in the stream |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for ingest in [Ingest::Http, Ingest::Mqtt] {
        let binary = dir.join(ingest.binary());
        let registered = register(messages + 2).await;
        let gateway = Sender {
            device: GATEWAY.into(),
            r#as: Some(device_name(0)),
        };
        let off = [("DROGUE_DEVICE_CACHE_TTL", "0")];
        let news: Vec<Sender> = (1..=messages + 1).map(device).collect();
        let cases: [Case; 5] = [
            ("one device, cache off", vec![device(0)], &off),
            ("one device, default cache (5 s)", vec![device(0)], &[]),
            ("a new device each message, default cache", news, &[]),
            (
                "a gateway for a device, cache off",
                vec![gateway.clone()],
                &off,
            ),
            ("a gateway for a device, default cache", vec![gateway], &[]),
        ];
        for (case, senders, settings) in cases {
            let m = measure(&binary, ingest, &registered, &senders, messages, settings).await;
            row(ingest, case, &m);
        }
    }
}
