//! Rebuilds the store when a migration is added or changed: `sqlx::migrate!` embeds the files of
//! `migrations/` at compile time, and cargo does not otherwise know the crate depends on them (other crates
//! add their tables there).

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
