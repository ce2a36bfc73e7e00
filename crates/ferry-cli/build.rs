//! Links the `ferry` CLI as a non-PIE executable on Linux.
//!
//! A PIE binary of this size carries ~49,000 relative relocations that the dynamic loader
//! applies at every start, copy-on-write faulting the pages they touch: about 0.5 ms of each
//! run (measured with `hyperfine -N 'ferry --version'`: 2.7 ms PIE vs 2.2 ms non-PIE). The CLI
//! is started once per pipeline step, and `ferry render` wraps `helm template`, where this was
//! a tenth of ferry's overhead budget. Go's toolchain (helm, kubectl, kustomize) links non-PIE
//! on linux/amd64 by default too. The long-running agent keeps PIE and full ASLR.
fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
        // A static build (scripts/dist: +crt-static) makes rustc ask for -static-pie; after
        // -no-pie the linker then writes a static executable that still names a program
        // interpreter and crashes at start. -static makes it a plain static executable.
        let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
        if features.split(',').any(|f| f == "crt-static") {
            println!("cargo:rustc-link-arg-bins=-static");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
