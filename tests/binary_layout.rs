//! How the `meshlens` binary is linked, where it decides the resident memory of every process: a proxy's
//! budget is 30 MB, and the binary carries every subcommand.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use object::{Object, ObjectSection};

/// `build.rs` packs the relative relocations as RELR. Unpacked, they are a RELA table of several megabytes
/// that the loader reads at every start and that stays resident (it was 6.7 MB of a 33 MB proxy).
#[test]
fn relative_relocations_are_packed() {
    let path = env!("CARGO_BIN_EXE_meshlens");
    let data = std::fs::read(path).expect("reading the meshlens binary");
    let file = object::File::parse(&*data).expect("parsing the meshlens binary as ELF");
    let size = |name: &str| file.section_by_name(name).map_or(0, |s| s.size());
    let (rela, relr) = (size(".rela.dyn"), size(".relr.dyn"));
    assert!(relr > 0, "{path} has no .relr.dyn section: relative relocations are not packed");
    assert!(rela < 64 * 1024, "{path}: .rela.dyn is {rela} bytes; relative relocations belong in .relr.dyn");
}
