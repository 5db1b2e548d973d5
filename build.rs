//! Stamps the binary with the identity of the sources it was built from
//! (`PLACARD_SOURCE_ID`, a hash of src/, Cargo.toml, Cargo.lock and this file).
//!
//! The static agent uploaded to hosts is a second build of this crate, for
//! x86_64-unknown-linux-musl (see `src/transport/agent_binary.rs`). The controller
//! uploads it only when it carries the controller's own identity: an agent left over
//! from older sources would otherwise run a bundle it no longer understands the same way.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::io;
use std::path::{Path, PathBuf};

fn main() -> io::Result<()> {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut files = Vec::new();
    collect_files(&root.join("src"), &mut files)?;
    for name in ["Cargo.toml", "Cargo.lock", "build.rs"] {
        files.push(root.join(name));
    }
    files.sort();

    // SipHash with fixed keys: both builds run on one toolchain, and a toolchain that
    // hashed differently would only make the controller refuse the agent, never accept
    // a stale one.
    let mut hasher = DefaultHasher::new();
    for file in &files {
        let relative = file.strip_prefix(&root).unwrap_or(file);
        hasher.write(relative.to_string_lossy().as_bytes());
        hasher.write_u8(0);
        hasher.write(&fs::read(file)?);
        hasher.write_u8(0);
    }
    println!("cargo:rustc-env=PLACARD_SOURCE_ID={:016x}", hasher.finish());
    for name in ["src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={name}");
    }
    Ok(())
}

fn collect_files(dir: &Path, into: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(&path, into)?;
        } else {
            into.push(path);
        }
    }
    Ok(())
}
