//! The build script of each Lambda function crate: a release build on Linux links its
//! binaries with `startup.ld`, which places the functions they run at start together at
//! the head of their code (README.md beside this file).

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-env-changed=DROGUE_STARTUP_ORDER");
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    // for a linker that takes no such script (gold, mold): DROGUE_STARTUP_ORDER=off
    let wanted = std::env::var("DROGUE_STARTUP_ORDER").map_or(true, |value| value != "off");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let here = Path::new(&manifest).join("../../tools/startup-order");
    let script = here.join("startup.ld");
    if release && linux && wanted {
        println!("cargo::rerun-if-changed={}", script.display());
        // `-T<script>` as one argument: cc, clang, zig cc and the linkers themselves take it
        println!("cargo::rustc-link-arg-bins=-T{}", script.display());
    } else {
        // not linked with it: a new script does not build this crate again
        println!(
            "cargo::rerun-if-changed={}",
            here.join("build.rs").display()
        );
    }
}
