//! Which executable goes to a host as its agent: a static one when there is one built
//! from this placard's sources, else this executable (which needs the host's glibc).
//!
//! A static agent (x86_64-unknown-linux-musl) runs on any x86_64 Linux, old Debian
//! included: the hosts someone wants to `capture` before a rebuild. It is looked for,
//! in this order:
//! 1. `PLACARD_AGENT=PATH`: that file, an x86_64 build of these sources (a dynamic one
//!    is uploaded too, with the host's glibc checked: `scripts/bench` measures both);
//! 2. this executable, when it is itself the musl build;
//! 3. `placard-agent-x86_64-linux-musl` next to this executable (an installed layout);
//! 4. in a cargo target folder, the musl build of the same profile:
//!    `target/debug/placard` finds `target/x86_64-unknown-linux-musl/debug/placard`
//!    (`cargo build --target x86_64-unknown-linux-musl` makes it; scripts/test does).
//!
//! A candidate from 3 or 4 that was built from other sources (its `SOURCE_ID` differs,
//! see build.rs) is passed over with a warning: after an edit, `cargo test` rebuilds
//! the controller but not the musl build. Uploading, caching by content hash and the
//! checks on the host are [`super::remote`]'s.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// The file name of a static agent installed next to placard.
pub const STATIC_AGENT_NAME: &str = "placard-agent-x86_64-linux-musl";
/// The rust target of the static agent.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";
/// The environment variable naming a static agent explicitly.
pub const AGENT_VARIABLE: &str = "PLACARD_AGENT";

/// The identity of the sources this binary was built from, as it appears in its bytes.
const SOURCE_ID: &str = concat!("placard-source-id:", env!("PLACARD_SOURCE_ID"), ";");

/// How to build and place the static agent: the advice in every message about it.
pub const BUILD_ADVICE: &str = "build the static agent with `rustup target add x86_64-unknown-linux-musl && apt-get install musl-tools && cargo build --release --target x86_64-unknown-linux-musl` and install target/x86_64-unknown-linux-musl/release/placard next to placard as placard-agent-x86_64-linux-musl (or set PLACARD_AGENT to it)";

#[derive(Debug, thiserror::Error)]
pub enum AgentBinaryError {
    #[error("cannot read the agent {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{AGENT_VARIABLE}={}: {why}; {BUILD_ADVICE}", path.display())]
    Unusable { path: PathBuf, why: String },
}

/// The executable uploaded to hosts.
#[derive(Debug)]
pub struct AgentBinary {
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// True for a static executable, which needs nothing from the host's C library.
    pub is_static: bool,
}

impl AgentBinary {
    fn read(path: &Path, is_static: bool) -> Result<AgentBinary, AgentBinaryError> {
        let bytes = std::fs::read(path).map_err(|source| AgentBinaryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(AgentBinary::new(bytes, path, is_static))
    }

    fn new(bytes: Vec<u8>, path: &Path, is_static: bool) -> AgentBinary {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        AgentBinary {
            bytes,
            sha256,
            path: path.to_path_buf(),
            is_static,
        }
    }
}

impl AgentBinary {
    /// The agent gzip-compressed, as it crosses the network (about a third of its
    /// size: a club's ADSL uplink carries 1 Mbit/s). Made the first time a host needs
    /// the upload, once per process; a run where every host has the agent pays nothing.
    pub fn compressed(&self) -> &[u8] {
        static COMPRESSED: OnceLock<Vec<u8>> = OnceLock::new();
        COMPRESSED.get_or_init(|| {
            use std::io::Write as _;
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(self.bytes.len() / 2),
                flate2::Compression::new(6),
            );
            // Writing into a Vec cannot fail.
            let _ = encoder.write_all(&self.bytes);
            encoder.finish().unwrap_or_default()
        })
    }
}

/// The agent for this run, found once per process (hosts share it).
pub fn agent_binary() -> Result<&'static AgentBinary, AgentBinaryError> {
    static BINARY: OnceLock<AgentBinary> = OnceLock::new();
    // Hosts start at once (--jobs): one of them reads and hashes the agent, the others
    // wait for it, instead of each hashing the same 10 MB (measured with
    // scripts/bench-fanout).
    static FINDING: Mutex<()> = Mutex::new(());
    if let Some(binary) = BINARY.get() {
        return Ok(binary);
    }
    let _finding = FINDING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(binary) = BINARY.get() {
        return Ok(binary);
    }
    let found = find()?;
    tracing::debug!(path = %found.path.display(), is_static = found.is_static, size = found.bytes.len(), "the agent for this run");
    Ok(BINARY.get_or_init(|| found))
}

fn find() -> Result<AgentBinary, AgentBinaryError> {
    let this = PathBuf::from("/proc/self/exe");
    if let Some(path) = std::env::var_os(AGENT_VARIABLE).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let mut agent = AgentBinary::read(&path, false)?;
        return match judge(&agent.bytes) {
            Ok(kind) => {
                agent.is_static = kind == ElfKind::Static;
                Ok(agent)
            }
            Err(why) => Err(AgentBinaryError::Unusable { path, why }),
        };
    }
    if cfg!(all(target_env = "musl", target_arch = "x86_64")) {
        return AgentBinary::read(&this, true);
    }
    let executable = std::fs::read_link(&this).unwrap_or_else(|_| this.clone());
    for candidate in candidates(&executable) {
        let agent = match AgentBinary::read(&candidate, true) {
            Ok(agent) => agent,
            Err(AgentBinaryError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(error) => {
                tracing::warn!("{error}; uploading this placard instead");
                continue;
            }
        };
        let why = match judge(&agent.bytes) {
            Ok(ElfKind::Static) => return Ok(agent),
            Ok(ElfKind::Dynamic) => "it is linked dynamically (it has an ELF interpreter), so it needs the host's C library".to_string(),
            Err(why) => why,
        };
        tracing::warn!(
            "not uploading the static agent {}: {why}; uploading this placard instead, which needs glibc on the host",
            candidate.display()
        );
    }
    AgentBinary::read(&this, false)
}

/// Where a static agent may be, for a controller at `executable`.
fn candidates(executable: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Some(dir) = executable.parent() else {
        return out;
    };
    out.push(dir.join(STATIC_AGENT_NAME));
    // target/PROFILE/placard, or target/PROFILE/deps/TEST for an integration test
    // that runs the transport in its own process.
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
    } else {
        Some(dir)
    };
    if let Some(profile_dir) = profile_dir {
        if let (Some(profile), Some(target_dir)) = (profile_dir.file_name(), profile_dir.parent()) {
            out.push(target_dir.join(STATIC_TARGET).join(profile).join("placard"));
        }
    }
    out
}

/// Whether `bytes` are an x86_64 agent built from these sources, and which kind.
fn judge(bytes: &[u8]) -> Result<ElfKind, String> {
    let kind = elf_kind(bytes).map_err(str::to_string)?;
    if carries_source_id(bytes) {
        Ok(kind)
    } else {
        Err("it was built from other sources than this placard (rebuild it)".into())
    }
}

fn carries_source_id(bytes: &[u8]) -> bool {
    // A literal search (memchr underneath): fast even in a dev build of this crate.
    match regex::bytes::Regex::new(&regex::escape(SOURCE_ID)) {
        Ok(pattern) => pattern.is_match(bytes),
        Err(_) => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElfKind {
    Static,
    Dynamic,
}

/// Reads just enough of an ELF header: a 64-bit little-endian x86_64 executable, and
/// whether it asks for a program interpreter (the dynamic loader of a C library).
fn elf_kind(bytes: &[u8]) -> Result<ElfKind, &'static str> {
    const PT_INTERP: u32 = 3;
    const EM_X86_64: u16 = 62;
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes.get(at..at + 8).map(|b| {
            let mut word = [0u8; 8];
            word.copy_from_slice(b);
            u64::from_le_bytes(word)
        })
    };
    if bytes.get(0..4) != Some(b"\x7fELF".as_slice()) {
        return Err("it is not an ELF executable");
    }
    if bytes.get(4..6) != Some([2u8, 1].as_slice()) {
        return Err("it is not a 64-bit little-endian executable");
    }
    if u16_at(18) != Some(EM_X86_64) {
        return Err("it is not built for x86_64");
    }
    let (Some(table), Some(entry_size), Some(count)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return Err("its ELF header is truncated");
    };
    let table = usize::try_from(table).map_err(|_| "its ELF header is corrupt")?;
    for index in 0..usize::from(count) {
        let at = table + index * usize::from(entry_size);
        match u32_at(at) {
            Some(PT_INTERP) => return Ok(ElfKind::Dynamic),
            Some(_) => {}
            None => return Err("its program headers are truncated"),
        }
    }
    Ok(ElfKind::Static)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_controller_finds_the_musl_build_of_its_profile() {
        assert_eq!(
            candidates(Path::new("/src/placard/target/debug/placard")),
            [
                PathBuf::from("/src/placard/target/debug/placard-agent-x86_64-linux-musl"),
                PathBuf::from("/src/placard/target/x86_64-unknown-linux-musl/debug/placard"),
            ]
        );
        assert_eq!(
            candidates(Path::new("/src/placard/target/release/deps/e2e_base-0123")),
            [
                PathBuf::from("/src/placard/target/release/deps/placard-agent-x86_64-linux-musl"),
                PathBuf::from("/src/placard/target/x86_64-unknown-linux-musl/release/placard"),
            ]
        );
        assert_eq!(
            candidates(Path::new("/usr/local/bin/placard"))[0],
            PathBuf::from("/usr/local/bin/placard-agent-x86_64-linux-musl")
        );
    }

    #[test]
    fn this_test_binary_is_dynamic_and_garbage_is_no_agent() {
        let this = std::fs::read("/proc/self/exe").expect("this executable");
        let expected = if cfg!(target_env = "musl") {
            ElfKind::Static
        } else {
            ElfKind::Dynamic
        };
        assert_eq!(elf_kind(&this), Ok(expected));
        assert!(elf_kind(b"#!/bin/sh\n").is_err());
        assert!(elf_kind(b"\x7fELF\x02\x01").is_err(), "truncated");
        assert!(judge(b"\x7fELF").is_err());
        assert_eq!(judge(&this), Ok(expected), "built from these sources");
    }

    #[test]
    fn the_source_id_is_in_this_binary_and_only_matches_itself() {
        let this = std::fs::read("/proc/self/exe").expect("this executable");
        assert!(carries_source_id(&this));
        let other = SOURCE_ID.replace("placard-source-id:", "placard-source-id:x");
        assert!(!carries_source_id(other.as_bytes()));
    }
}
