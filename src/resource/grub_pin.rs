//! `grub_pin`: boot a chosen kernel by default, named by its GRUB entry id, and hold
//! its package so that autoremove keeps it.
//!
//! The admin names a kernel version (`6.1.0-18-amd64`, as `uname -r` prints it). The
//! resource checks that the kernel is installed (dpkg), finds the entry that boots it
//! in /boot/grub/grub.cfg (see [`crate::facts::grub`]) and writes its id path
//! (`submenu-id>entry-id`) as GRUB_DEFAULT in a drop-in under /etc/default/grub.d/,
//! which Debian's grub-mkconfig reads after /etc/default/grub. update-grub runs only
//! when the drop-in changed or grub.cfg does not yet default to the pin, and afterwards
//! grub.cfg must contain the pinned id path and default to it. `state: absent` removes
//! the drop-in (GRUB's own default comes back) and releases the hold.
//!
//! The decisions are pure functions of dpkg's status, grub.cfg and the drop-in, tested
//! below; `run` only reads those and carries the decision out.
//!
//! Why this is a resource and not a role of generic ones (`file`, `command`,
//! `package: {hold}`): the drop-in's content is not known when the role is rendered. It
//! is the id path of a menu entry, found by parsing the host's grub.cfg, and a kernel
//! that is not installed must change nothing. And the three steps are one change: when
//! update-grub fails, the drop-in written before it is put back (or removed) here, so
//! that the next run sees the pin as not done; generic tasks would leave a drop-in that
//! grub.cfg does not follow and report success. What generic resources can do, the role
//! does with them: the check (`placard-grub-pin-status`, templates/grub-pin/) is a
//! script the role installs, which compares the drop-in with grub.cfg's default.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{check, Context, FieldError, Outcome, Resource};
use crate::facts::dpkg::{self, DpkgStatus};
use crate::facts::grub::{self, Menu};
use crate::system::atomic::{self, Attributes};
use crate::system::command::{self, deadline};

/// The marker line that records which kernel a drop-in pins, to release its hold later.
const MARKER: &str = "# placard-pinned-kernel: ";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrubPinSpec {
    /// The kernel version to boot, as `uname -r` prints it; required unless absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The drop-in written, under /etc/default/grub.d/ and ending in `.cfg` (the only
    /// files grub-mkconfig reads there).
    #[serde(default = "default_file")]
    pub file: String,
    /// Hold the pinned kernel's package (`apt-mark hold`), and release it on unpinning.
    #[serde(default = "yes")]
    pub hold: bool,
    #[serde(default)]
    pub state: PinState,
}

fn default_file() -> String {
    "/etc/default/grub.d/placard-pin.cfg".to_string()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum PinState {
    #[default]
    Present,
    Absent,
}

impl Resource for GrubPinSpec {
    fn validate(&self) -> Result<(), FieldError> {
        check::absolute_path("file", &self.file)?;
        let in_drop_in_folder =
            Path::new(&self.file).parent() == Some(Path::new("/etc/default/grub.d"));
        if !in_drop_in_folder || !self.file.ends_with(".cfg") {
            return Err(FieldError::new(
                "file",
                format!(
                    "`{}`: grub-mkconfig reads only /etc/default/grub.d/*.cfg",
                    self.file
                ),
            ));
        }
        match (self.state, self.kernel.as_deref()) {
            (PinState::Present, None | Some("")) => Err(FieldError::new("kernel", "say which kernel to boot, e.g. `6.1.0-18-amd64` (as `uname -r` prints it), or use `state: absent` to unpin")),
            (PinState::Present, Some(kernel)) => kernel_version(kernel).map_err(|m| FieldError::new("kernel", m)),
            (PinState::Absent, Some(kernel)) if !kernel.is_empty() => Err(FieldError::new("kernel", "unpinning names no kernel; remove `kernel`")),
            (PinState::Absent, _) => Ok(()),
        }
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        let status = dpkg::read_status()?;
        let current = match fs::read_to_string(&self.file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.file)),
        };
        match (self.state, self.kernel.as_deref()) {
            (PinState::Present, Some(kernel)) => {
                self.pin(kernel, &status, current.as_deref(), context)
            }
            (PinState::Present, None) => bail!("no kernel to pin"),
            (PinState::Absent, _) => self.unpin(&status, current.as_deref(), context),
        }
    }
}

impl GrubPinSpec {
    fn pin(
        &self,
        kernel: &str,
        status: &DpkgStatus,
        current: Option<&str>,
        context: &mut Context,
    ) -> Result<Outcome> {
        let menu = grub::read();
        let plan = plan_pin(kernel, &installed_kernels(status), menu.as_ref(), current)
            .map_err(anyhow::Error::msg)?;
        let hold = self.hold && !status.is_held(&plan.package);
        let release = plan
            .previous_package
            .as_deref()
            .filter(|p| self.hold && status.is_held(p));

        let mut done = Vec::new();
        if plan.write {
            done.push(format!(
                "write {} with GRUB_DEFAULT=\"{}\"",
                self.file, plan.id_path
            ));
        }
        if plan.update_grub {
            done.push("run update-grub".to_string());
        }
        if hold {
            done.push(format!("hold {}", plan.package));
        }
        if let Some(previous) = release {
            done.push(format!("unhold {previous}"));
        }
        if done.is_empty() {
            let held = if self.hold {
                format!(", and {} is held", plan.package)
            } else {
                String::new()
            };
            return Ok(Outcome::unchanged(format!(
                "kernel {kernel} is pinned: grub.cfg defaults to {}{held}",
                plan.id_path
            )));
        }
        let diff = plan.write.then(|| {
            crate::diff::unified(
                &self.file,
                current.map(str::as_bytes),
                Some(plan.content.as_bytes()),
            )
        });
        if plan.write {
            context.record_change(Path::new(&self.file));
        }
        if !context.check {
            if plan.write {
                super::file::replace(
                    Path::new(&self.file),
                    plan.content.as_bytes(),
                    Attributes::mode(0o644),
                    None,
                    context,
                )?;
            }
            if plan.update_grub {
                command::run_ok(&["update-grub"], context.deadline(deadline::SYSTEM))?;
                let after = grub::read()
                    .with_context(|| format!("update-grub left no {}", grub::GRUB_CFG))?;
                check_pinned(&after, &plan.id_path).map_err(anyhow::Error::msg)?;
            }
            if hold {
                command::run_ok(
                    &["apt-mark", "hold", "--", &plan.package],
                    context.deadline(deadline::SYSTEM),
                )?;
            }
            if let Some(previous) = release {
                command::run_ok(
                    &["apt-mark", "unhold", "--", previous],
                    context.deadline(deadline::SYSTEM),
                )?;
            }
        }
        Ok(Outcome::changed(done.join("; ")).with_diff(diff))
    }

    fn unpin(
        &self,
        status: &DpkgStatus,
        current: Option<&str>,
        context: &mut Context,
    ) -> Result<Outcome> {
        let Some(current) = current else {
            return Ok(Outcome::unchanged(format!(
                "no kernel is pinned: {} does not exist",
                self.file
            )));
        };
        let kernels = installed_kernels(status);
        let release = pinned_kernel(current)
            .and_then(|k| kernels.get(&k).cloned())
            .filter(|p| self.hold && status.is_held(p));
        let mut done = vec![
            format!("remove {}", self.file),
            "run update-grub".to_string(),
        ];
        if let Some(package) = &release {
            done.push(format!("unhold {package}"));
        }
        let diff = crate::diff::unified(&self.file, Some(current.as_bytes()), None);
        context.record_change(Path::new(&self.file));
        if !context.check {
            fs::remove_file(&self.file).with_context(|| format!("cannot remove {}", self.file))?;
            // If GRUB cannot be updated, the drop-in comes back: the next run then finds
            // the pin still there and tries again, instead of believing it is gone.
            if let Err(error) =
                command::run_ok(&["update-grub"], context.deadline(deadline::SYSTEM))
            {
                atomic::write_atomic(
                    Path::new(&self.file),
                    current.as_bytes(),
                    Attributes::mode(0o644),
                    context.journal.as_ref(),
                )
                .with_context(|| {
                    format!("update-grub failed and {} cannot be restored", self.file)
                })?;
                return Err(anyhow::Error::from(error).context(format!(
                    "update-grub failed; {} is kept, so the kernel is still pinned",
                    self.file
                )));
            }
            if let Some(package) = &release {
                command::run_ok(
                    &["apt-mark", "unhold", "--", package],
                    context.deadline(deadline::SYSTEM),
                )?;
            }
        }
        Ok(Outcome::changed(done.join("; ")).with_diff(Some(diff)))
    }
}

/// What pinning a kernel takes, decided from what is on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct PinPlan {
    /// `submenu-id>entry-id`.
    pub id_path: String,
    /// The drop-in as it must read.
    pub content: String,
    /// The package of the pinned kernel, to hold.
    pub package: String,
    /// The drop-in differs (or is missing).
    pub write: bool,
    /// grub.cfg must be written again: the drop-in changed, or grub.cfg does not
    /// default to the pin (update-grub failed or was never run after the last write).
    pub update_grub: bool,
    /// The package of a kernel pinned before, whose hold is released.
    pub previous_package: Option<String>,
}

/// Decides how to pin `kernel`; an error changes nothing on the host.
pub fn plan_pin(
    kernel: &str,
    installed: &BTreeMap<String, String>,
    menu: Option<&Menu>,
    current: Option<&str>,
) -> Result<PinPlan, String> {
    let Some(package) = installed.get(kernel) else {
        let known: Vec<&str> = installed.keys().map(String::as_str).collect();
        return Err(format!(
            "kernel {kernel} is not installed, so it cannot be pinned (nothing was written); the installed kernels are: {}",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ));
    };
    let menu = menu.ok_or_else(|| {
        format!(
            "{} does not exist: is GRUB installed (grub-pc or grub-efi), and has update-grub run?",
            grub::GRUB_CFG
        )
    })?;
    let id_path = menu.resolve_kernel(kernel)?;
    // The drop-in is sourced by a shell: an id that could break out of its quotes is refused.
    if let Some(bad) = id_path
        .chars()
        .find(|c| matches!(c, '"' | '$' | '`' | '\\' | '\n'))
    {
        return Err(format!("the GRUB entry id `{id_path}` contains `{bad}`, which cannot be written safely into GRUB_DEFAULT"));
    }
    let content = drop_in(kernel, &id_path);
    let write = current != Some(content.as_str());
    let update_grub = write || menu.default.as_deref() != Some(id_path.as_str());
    let previous_package = current
        .and_then(pinned_kernel)
        .filter(|previous| previous != kernel)
        .and_then(|previous| installed.get(&previous).cloned());
    Ok(PinPlan {
        id_path,
        content,
        package: package.clone(),
        write,
        update_grub,
        previous_package,
    })
}

/// The drop-in that pins `kernel` to the entry `id_path`.
pub fn drop_in(kernel: &str, id_path: &str) -> String {
    format!("# Written by placard (role grub-pin): boot kernel {kernel} by default.\n{MARKER}{kernel}\nGRUB_DEFAULT=\"{id_path}\"\n")
}

/// The kernel a drop-in written by [`drop_in`] pins.
pub fn pinned_kernel(drop_in: &str) -> Option<String> {
    drop_in
        .lines()
        .find_map(|line| line.strip_prefix(MARKER))
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

/// After update-grub: the pinned entry exists and grub.cfg boots it by default.
pub fn check_pinned(menu: &Menu, id_path: &str) -> Result<(), String> {
    if !menu.has_id_path(id_path) {
        return Err(format!("after update-grub, {} has no entry with the id path {id_path}; the pin would boot GRUB's first entry", grub::GRUB_CFG));
    }
    match menu.default.as_deref() {
        Some(default) if default == id_path => Ok(()),
        other => Err(format!("after update-grub, {} defaults to `{}`, not the pinned {id_path}; is GRUB_DEFAULT set again in a later file of /etc/default/grub.d?", grub::GRUB_CFG, other.unwrap_or("nothing"))),
    }
}

/// Installed kernels, version → package: `linux-image-6.1.0-18-amd64` (and its
/// `-unsigned` build) boots 6.1.0-18-amd64. Meta packages (`linux-image-amd64`) and
/// debug symbols are not kernels.
pub fn installed_kernels(status: &DpkgStatus) -> BTreeMap<String, String> {
    status
        .installed()
        .into_keys()
        .filter_map(|package| {
            let version = package.strip_prefix("linux-image-")?;
            let version = version.strip_suffix("-unsigned").unwrap_or(version);
            let is_kernel =
                version.starts_with(|c: char| c.is_ascii_digit()) && !version.ends_with("-dbg");
            is_kernel.then(|| (version.to_string(), package.clone()))
        })
        .collect()
}

/// A kernel version as `uname -r` prints it: nothing a shell or GRUB would read twice.
fn kernel_version(kernel: &str) -> Result<(), String> {
    let valid = kernel.starts_with(|c: char| c.is_ascii_digit())
        && kernel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~_-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{kernel}` is not a kernel version such as 6.1.0-18-amd64 (as `uname -r` prints it)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::dpkg::parse_status;

    const UUID: &str = "6c4b2f1e-8d0a-4f6e-9a53-2b7d1e0c9f41";

    fn menu(name: &str) -> Menu {
        let path = format!("{}/tests/fixtures/grub/{name}", env!("CARGO_MANIFEST_DIR"));
        grub::parse(&fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    fn kernels() -> BTreeMap<String, String> {
        let status = parse_status(
            "Package: linux-image-6.1.0-47-cloud-amd64\nStatus: install ok installed\nVersion: 6.1.170-3\n\n\
             Package: linux-image-6.1.0-50-cloud-amd64\nStatus: hold ok installed\nVersion: 6.1.176-1\n\n\
             Package: linux-image-6.12.117+deb12-cloud-amd64\nStatus: install ok installed\nVersion: 6.12.117-1~deb12u1\n\n\
             Package: linux-image-cloud-amd64\nStatus: install ok installed\nVersion: 6.1.176-1\n\n\
             Package: linux-image-6.1.0-18-amd64-dbg\nStatus: install ok installed\nVersion: 6.1.76-1\n\n\
             Package: linux-image-6.1.0-10-amd64\nStatus: deinstall ok config-files\nVersion: 6.1.38-1\n",
        );
        installed_kernels(&status)
    }

    #[test]
    fn installed_kernels_are_versions_of_real_kernel_packages() {
        let kernels = kernels();
        let versions: Vec<&str> = kernels.keys().map(String::as_str).collect();
        assert_eq!(
            versions,
            [
                "6.1.0-47-cloud-amd64",
                "6.1.0-50-cloud-amd64",
                "6.12.117+deb12-cloud-amd64"
            ]
        );
        assert_eq!(
            kernels["6.1.0-47-cloud-amd64"],
            "linux-image-6.1.0-47-cloud-amd64"
        );
    }

    #[test]
    fn a_first_pin_writes_the_id_path_and_runs_update_grub() {
        let plan = plan_pin(
            "6.1.0-47-cloud-amd64",
            &kernels(),
            Some(&menu("debian12-submenu.cfg")),
            None,
        )
        .expect("a plan");
        let id_path =
            format!("gnulinux-advanced-{UUID}>gnulinux-6.1.0-47-cloud-amd64-advanced-{UUID}");
        assert_eq!(plan.id_path, id_path);
        assert!(
            plan.content
                .contains(&format!("GRUB_DEFAULT=\"{id_path}\"\n")),
            "{}",
            plan.content
        );
        assert_eq!(
            pinned_kernel(&plan.content).as_deref(),
            Some("6.1.0-47-cloud-amd64")
        );
        assert_eq!(plan.package, "linux-image-6.1.0-47-cloud-amd64");
        assert!(plan.write && plan.update_grub);
        assert_eq!(plan.previous_package, None);
    }

    #[test]
    fn a_pin_in_place_needs_nothing_and_a_stale_grub_cfg_needs_update_grub_only() {
        let pinned = menu("debian12-pinned.cfg");
        let content = plan_pin("6.1.0-47-cloud-amd64", &kernels(), Some(&pinned), None)
            .expect("a plan")
            .content;
        let again = plan_pin(
            "6.1.0-47-cloud-amd64",
            &kernels(),
            Some(&pinned),
            Some(&content),
        )
        .expect("a plan");
        assert!(!again.write && !again.update_grub, "{again:?}");
        let stale = plan_pin(
            "6.1.0-47-cloud-amd64",
            &kernels(),
            Some(&menu("debian12-submenu.cfg")),
            Some(&content),
        )
        .expect("a plan");
        assert!(
            !stale.write && stale.update_grub,
            "grub.cfg still defaults to 0: {stale:?}"
        );
        assert!(check_pinned(&pinned, &again.id_path).is_ok());
        assert!(check_pinned(&menu("debian12-submenu.cfg"), &again.id_path)
            .unwrap_err()
            .contains("defaults to `0`"));
    }

    #[test]
    fn moving_the_pin_releases_the_previous_kernel() {
        let old = drop_in("6.1.0-50-cloud-amd64", "whatever");
        let plan = plan_pin(
            "6.1.0-47-cloud-amd64",
            &kernels(),
            Some(&menu("debian12-submenu.cfg")),
            Some(&old),
        )
        .expect("a plan");
        assert_eq!(
            plan.previous_package.as_deref(),
            Some("linux-image-6.1.0-50-cloud-amd64")
        );
    }

    #[test]
    fn a_kernel_not_installed_is_refused_with_the_installed_ones() {
        let error = plan_pin(
            "6.1.0-18-amd64",
            &kernels(),
            Some(&menu("debian12-submenu.cfg")),
            None,
        )
        .unwrap_err();
        assert!(
            error.contains("kernel 6.1.0-18-amd64 is not installed"),
            "{error}"
        );
        assert!(error.contains("nothing was written"), "{error}");
        assert!(
            error
                .contains("6.1.0-47-cloud-amd64, 6.1.0-50-cloud-amd64, 6.12.117+deb12-cloud-amd64"),
            "{error}"
        );
        let no_grub = plan_pin("6.1.0-47-cloud-amd64", &kernels(), None, None).unwrap_err();
        assert!(no_grub.contains("is GRUB installed"), "{no_grub}");
    }

    #[test]
    fn flat_menus_pin_a_single_id() {
        let plan = plan_pin(
            "6.1.0-50-cloud-amd64",
            &kernels(),
            Some(&menu("debian12-no-submenu.cfg")),
            None,
        )
        .expect("a plan");
        assert_eq!(
            plan.id_path,
            format!("gnulinux-6.1.0-50-cloud-amd64-advanced-{UUID}")
        );
    }

    #[test]
    fn specs_are_checked() {
        let spec = |kernel: Option<&str>, file: &str, state: PinState| GrubPinSpec {
            kernel: kernel.map(str::to_string),
            file: file.to_string(),
            hold: true,
            state,
        };
        assert!(spec(
            Some("6.1.0-18-amd64"),
            "/etc/default/grub.d/pin.cfg",
            PinState::Present
        )
        .validate()
        .is_ok());
        assert!(spec(
            Some("6.1.0-18-amd64\"; reboot"),
            "/etc/default/grub.d/pin.cfg",
            PinState::Present
        )
        .validate()
        .is_err());
        assert!(spec(None, "/etc/default/grub.d/pin.cfg", PinState::Present)
            .validate()
            .is_err());
        assert!(spec(
            Some("6.1.0-18-amd64"),
            "/etc/default/grub",
            PinState::Present
        )
        .validate()
        .is_err());
        assert!(spec(
            Some("6.1.0-18-amd64"),
            "/etc/default/grub.d/pin",
            PinState::Present
        )
        .validate()
        .is_err());
        assert!(spec(None, "/etc/default/grub.d/pin.cfg", PinState::Absent)
            .validate()
            .is_ok());
        assert!(
            spec(Some(""), "/etc/default/grub.d/pin.cfg", PinState::Absent)
                .validate()
                .is_ok()
        );
    }
}
