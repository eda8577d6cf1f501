//! The build script of each Lambda function crate: a release build on Linux links its
//! binaries with `startup.ld`, which places the functions they run at start together at
//! the head of their code (README.md beside this file).

fn main() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/startup-order/startup.ld"
    );
    println!("cargo::rerun-if-changed={script}");
    println!("cargo::rerun-if-env-changed=DROGUE_STARTUP_ORDER");
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    // for a linker that takes no such script (mold): DROGUE_STARTUP_ORDER=off
    let wanted = std::env::var("DROGUE_STARTUP_ORDER").map_or(true, |value| value != "off");
    if release && linux && wanted {
        println!("cargo::rustc-link-arg-bins=-Wl,-T,{script}");
    }
}
