//! Placeholder until the sandbox module lands.
use std::path::PathBuf;
use anyhow::Result;
pub struct Sandbox { pub name: String, pub suite: String, pub port: u16, pub root: PathBuf, pub pid: u32 }
pub struct SandboxPaths { pub state_dir: PathBuf, pub image_cache: PathBuf }
impl Default for SandboxPaths { fn default() -> Self { SandboxPaths { state_dir: "/var/lib/placard/sandbox".into(), image_cache: "/var/cache/placard/images".into() } } }
pub fn up(_: &SandboxPaths, _: &str, _: &str, _: u16) -> Result<Sandbox> { anyhow::bail!("todo") }
pub fn down(_: &SandboxPaths, _: &str) -> Result<()> { anyhow::bail!("todo") }
pub fn list(_: &SandboxPaths) -> Result<Vec<Sandbox>> { anyhow::bail!("todo") }
pub fn ssh_argv(_: &SandboxPaths, _: &str) -> Result<Vec<String>> { anyhow::bail!("todo") }
