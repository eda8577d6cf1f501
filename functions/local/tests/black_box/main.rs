//! `drogue-local` as users run it: the real binary on a loopback port, driven by `drg`
//! 0.11, by HTTP, MQTT and CoAP clients, stopped by signals and restarted on the same data directory.

mod burst;
mod coap;
mod coaps;
mod commands;
mod console;
mod crash;
mod drg;
mod limits;
mod load;
mod mqtt;
mod mqtt_client;
mod mqtt_raw;
mod paging;
mod restart;
mod resume;
mod runner;
mod shared_ca;
mod slow_subscriber;
mod sso;
mod startup;
mod telemetry;
mod tenants;
mod ttn;
