//! Links every test kernel with the repository's `linker.ld`.
fn main() {
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let script = dir.parent().unwrap().join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if std::env::var("TARGET").unwrap().starts_with("armv7a") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
}
