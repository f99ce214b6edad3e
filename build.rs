//! Link options of the `meshlens` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // The binary is position-independent (ASLR) and carries about 280,000 relative relocations (vtables,
        // string tables of every subcommand). As RELA entries they are a 6.7 MB table that the loader reads
        // in full at every start, which stays in each process' resident set: most of a proxy's 30 MB budget
        // went to it. Packed as RELR (glibc >= 2.36, Debian 12, the deploy image's base) the table is a few
        // kilobytes. The relocations themselves, and the protection, are unchanged.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
