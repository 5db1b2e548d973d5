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
    pub sha256: String,
    /// Its size in bytes.
    pub size: usize,
    /// Where it was read from.
    pub path: PathBuf,
    /// True for a static executable, which needs nothing from the host's C library.
    pub is_static: bool,
    /// Its bytes, read when a host needs an upload (or when they were read to hash it).
    bytes: OnceLock<Vec<u8>>,
}

impl AgentBinary {
    /// The agent at `path`, judged by `judge` when it is not this executable. Its hash
    /// and kind come from [`Sums`] when the file is the one they were made from, so
    /// that a run whose hosts all have the agent never reads it (reading and hashing
    /// 12 MB was half of the controller's time in a no-op run of one host).
    fn read(path: &Path, judged: Judged) -> Result<AgentBinary, AgentBinaryError> {
        let error = |source| AgentBinaryError::Read {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(error)?;
        let sums = Sums::open();
        if let Some((sha256, is_static)) = sums.as_ref().and_then(|s| s.find(path, &metadata)) {
            return Ok(AgentBinary {
                sha256,
                size: metadata.len() as usize,
                path: path.to_path_buf(),
                is_static,
                bytes: OnceLock::new(),
            });
        }
        let bytes = std::fs::read(path).map_err(error)?;
        let is_static = match judged {
            Judged::Static => true,
            Judged::Dynamic => false,
            Judged::ByItsBytes => match judge(&bytes) {
                Ok(kind) => kind == ElfKind::Static,
                Err(why) => {
                    return Err(AgentBinaryError::Unusable {
                        path: path.to_path_buf(),
                        why,
                    })
                }
            },
        };
        let agent = AgentBinary::new(bytes, path, is_static);
        if let Some(sums) = sums {
            sums.remember(path, &metadata, &agent.sha256, is_static);
        }
        Ok(agent)
    }

    fn new(bytes: Vec<u8>, path: &Path, is_static: bool) -> AgentBinary {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        AgentBinary {
            sha256,
            size: bytes.len(),
            path: path.to_path_buf(),
            is_static,
            bytes: OnceLock::from(bytes),
        }
    }

    /// Its bytes, read now if they were not: the file must still be the one hashed.
    pub fn bytes(&self) -> Result<&[u8], AgentBinaryError> {
        if let Some(bytes) = self.bytes.get() {
            return Ok(bytes);
        }
        let bytes = std::fs::read(&self.path).map_err(|source| AgentBinaryError::Read {
            path: self.path.clone(),
            source,
        })?;
        if hex::encode(Sha256::digest(&bytes)) != self.sha256 {
            return Err(AgentBinaryError::Unusable {
                path: self.path.clone(),
                why: "it changed while placard ran (rebuilt?); run placard again".to_string(),
            });
        }
        Ok(self.bytes.get_or_init(|| bytes))
    }
}

/// How an agent candidate is known to be usable.
#[derive(Debug, Clone, Copy)]
enum Judged {
    /// This executable, the musl build.
    Static,
    /// This executable, linked with glibc.
    Dynamic,
    /// Another file: its ELF header and the source identity it carries decide.
    ByItsBytes,
}

/// The hashes of agents already read, in the operator's cache folder
/// (`~/.cache/placard/agent-sums`): one line per file, with the device, inode, size,
/// modification and change times it had when it was hashed. A file that was rebuilt,
/// replaced or touched differs in one of them and is read again. The file only saves
/// time: when it cannot be read or written, the agent is hashed as before. A wrong sum
/// could not reach a host either: the bootstrap checks an uploaded agent against it.
struct Sums {
    path: PathBuf,
    lines: Vec<String>,
}

/// How many agents the sums remember (a controller and its tests use two or three).
const SUMS_KEPT: usize = 8;

impl Sums {
    fn open() -> Option<Sums> {
        let path = dirs::cache_dir()?.join("placard").join("agent-sums");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                tracing::debug!("not using {}: {error}", path.display());
                return None;
            }
        };
        let lines = text.lines().map(str::to_string).collect();
        Some(Sums { path, lines })
    }

    /// The key of a file as it is now: everything but its path changes when it does.
    fn key(path: &Path, metadata: &std::fs::Metadata) -> String {
        use std::os::unix::fs::MetadataExt as _;
        format!(
            "{} {} {} {}.{} {}.{} {}",
            metadata.dev(),
            metadata.ino(),
            metadata.size(),
            metadata.mtime(),
            metadata.mtime_nsec(),
            metadata.ctime(),
            metadata.ctime_nsec(),
            path.display()
        )
    }

    fn find(&self, path: &Path, metadata: &std::fs::Metadata) -> Option<(String, bool)> {
        let key = Sums::key(path, metadata);
        self.lines.iter().find_map(|line| {
            let (sum, rest) = line.split_once(' ')?;
            let (kind, rest) = rest.split_once(' ')?;
            let is_static = match kind {
                "static" => true,
                "dynamic" => false,
                _ => return None,
            };
            let valid = sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit());
            (valid && rest == key).then(|| (sum.to_string(), is_static))
        })
    }

    fn remember(
        mut self,
        path: &Path,
        metadata: &std::fs::Metadata,
        sha256: &str,
        is_static: bool,
    ) {
        let key = Sums::key(path, metadata);
        let suffix = format!(" {}", path.display());
        self.lines.retain(|line| !line.ends_with(&suffix));
        let kind = if is_static { "static" } else { "dynamic" };
        self.lines.insert(0, format!("{sha256} {kind} {key}"));
        self.lines.truncate(SUMS_KEPT);
        let text = self.lines.join("\n") + "\n";
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                crate::system::atomic::replace_unsynced(
                    &self.path,
                    text.as_bytes(),
                    crate::system::atomic::Attributes::mode(0o644),
                )
            });
        if let Err(error) = written {
            tracing::debug!(
                "cannot remember the agent's sum in {}: {error:#}",
                self.path.display()
            );
        }
    }
}

impl AgentBinary {
    /// The agent gzip-compressed, as it crosses the network (about a third of its
    /// size: a club's ADSL uplink carries 1 Mbit/s). Made the first time a host needs
    /// the upload, once per process; a run where every host has the agent pays nothing.
    pub fn compressed(&self) -> Result<&[u8], AgentBinaryError> {
        static COMPRESSED: OnceLock<Vec<u8>> = OnceLock::new();
        if let Some(compressed) = COMPRESSED.get() {
            return Ok(compressed);
        }
        let bytes = self.bytes()?;
        Ok(COMPRESSED.get_or_init(|| {
            use std::io::Write as _;
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(bytes.len() / 2),
                flate2::Compression::new(6),
            );
            // Writing into a Vec cannot fail.
            let _ = encoder.write_all(bytes);
            encoder.finish().unwrap_or_default()
        }))
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
    tracing::debug!(path = %found.path.display(), is_static = found.is_static, size = found.size, "the agent for this run");
    Ok(BINARY.get_or_init(|| found))
}

fn find() -> Result<AgentBinary, AgentBinaryError> {
    let this = PathBuf::from("/proc/self/exe");
    if let Some(path) = std::env::var_os(AGENT_VARIABLE).filter(|p| !p.is_empty()) {
        return AgentBinary::read(Path::new(&path), Judged::ByItsBytes);
    }
    let executable = std::fs::read_link(&this).unwrap_or_else(|_| this.clone());
    if cfg!(all(target_env = "musl", target_arch = "x86_64")) {
        return AgentBinary::read(&executable, Judged::Static);
    }
    for candidate in candidates(&executable) {
        let why = match AgentBinary::read(&candidate, Judged::ByItsBytes) {
            Ok(agent) if agent.is_static => return Ok(agent),
            Ok(_) => "it is linked dynamically (it has an ELF interpreter), so it needs the host's C library".to_string(),
            Err(AgentBinaryError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(AgentBinaryError::Unusable { why, .. }) => why,
            Err(error) => {
                tracing::warn!("{error}; uploading this placard instead");
                continue;
            }
        };
        tracing::warn!(
            "not uploading the static agent {}: {why}; uploading this placard instead, which needs glibc on the host",
            candidate.display()
        );
    }
    AgentBinary::read(&executable, Judged::Dynamic)
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

    fn sums_in(dir: &Path) -> Sums {
        Sums {
            path: dir.join("agent-sums"),
            lines: Vec::new(),
        }
    }

    fn reopen(dir: &Path) -> Sums {
        let text = std::fs::read_to_string(dir.join("agent-sums")).expect("the sums file");
        Sums {
            path: dir.join("agent-sums"),
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    /// A file written in `dir`, and what stat says of it.
    fn written(dir: &Path, name: &str, content: &[u8]) -> (PathBuf, std::fs::Metadata) {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        let metadata = std::fs::metadata(&path).expect("stat");
        (path, metadata)
    }

    #[test]
    fn a_remembered_sum_holds_until_the_file_changes() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (agent, metadata) = written(dir.path(), "placard", b"first build");
        assert_eq!(sums_in(dir.path()).find(&agent, &metadata), None);
        sums_in(dir.path()).remember(&agent, &metadata, &"a".repeat(64), true);
        assert_eq!(
            reopen(dir.path()).find(&agent, &metadata),
            Some(("a".repeat(64), true))
        );
        // Another file at another path is not this one.
        let (other, other_metadata) = written(dir.path(), "other", b"first build");
        assert_eq!(reopen(dir.path()).find(&other, &other_metadata), None);
        // Rebuilt in place: its size, times or inode differ.
        let (_, rebuilt) = written(dir.path(), "placard", b"second build, longer");
        assert_eq!(reopen(dir.path()).find(&agent, &rebuilt), None);
        // Remembering it again replaces the line of that path.
        reopen(dir.path()).remember(&agent, &rebuilt, &"b".repeat(64), false);
        let sums = reopen(dir.path());
        assert_eq!(sums.lines.len(), 1);
        assert_eq!(sums.find(&agent, &rebuilt), Some(("b".repeat(64), false)));
    }

    #[test]
    fn a_damaged_sums_line_is_no_sum() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (agent, metadata) = written(dir.path(), "placard", b"build");
        let key = Sums::key(&agent, &metadata);
        for line in [
            format!("{} static {key}", "a".repeat(63)),
            format!("{} static {key}", "z".repeat(64)),
            format!("{} musl {key}", "a".repeat(64)),
            format!("{} static {}", "a".repeat(64), &key[..key.len() - 1]),
        ] {
            let sums = Sums {
                path: dir.path().join("agent-sums"),
                lines: vec![line.clone()],
            };
            assert_eq!(sums.find(&agent, &metadata), None, "{line}");
        }
    }

    #[test]
    fn bytes_read_later_must_still_be_the_hashed_file() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("placard");
        std::fs::write(&path, b"the agent").expect("write");
        let hashed = AgentBinary::new(b"the agent".to_vec(), &path, true);
        let later = |sha256: &str| AgentBinary {
            sha256: sha256.to_string(),
            size: 9,
            path: path.clone(),
            is_static: true,
            bytes: OnceLock::new(),
        };
        assert_eq!(later(&hashed.sha256).bytes().ok(), Some(&b"the agent"[..]));
        std::fs::write(&path, b"rebuilt!!").expect("write");
        assert!(matches!(
            later(&hashed.sha256).bytes(),
            Err(AgentBinaryError::Unusable { .. })
        ));
    }

    #[test]
    fn the_source_id_is_in_this_binary_and_only_matches_itself() {
        let this = std::fs::read("/proc/self/exe").expect("this executable");
        assert!(carries_source_id(&this));
        let other = SOURCE_ID.replace("placard-source-id:", "placard-source-id:x");
        assert!(!carries_source_id(other.as_bytes()));
    }
}
