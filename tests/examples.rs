//! The example inventories in inventory/ stay valid: every host's roles load, its
//! variables resolve under their current names and every task renders; `placard roles
//! show` tells the old names. No host is contacted.

use std::path::Path;

use placard::inventory::Inventory;
use placard::plan::{self, Job};
use placard::role::Site;

#[test]
fn every_example_inventory_plans_without_errors() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let site = Site::new(repository);
    let mut checked = 0;
    for entry in std::fs::read_dir(repository.join("inventory")).expect("inventory/") {
        let path = entry.expect("an entry").path();
        let inventory =
            Inventory::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let hosts = inventory
            .select(&[])
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let prepared = plan::prepare(
            &inventory,
            &site,
            &hosts,
            &Job::Apply {
                check: true,
                diff: true,
            },
            "test@example",
        )
        .unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
        assert_eq!(prepared.bundles.len(), hosts.len());
        // The examples are what new admins copy: no old variable names in them.
        let warnings: Vec<String> = prepared.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            warnings.is_empty(),
            "{}:\n{}",
            path.display(),
            warnings.concat()
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "inventory/ holds the sandbox and the club examples"
    );
}

#[test]
fn roles_show_names_a_variables_old_name_as_deprecated() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_placard"))
        .args(["roles", "show", "base"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run placard");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    // The variable's entry: its line, then its indented description.
    let hostname: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("  base_hostname "))
        .take_while(|line| line.starts_with("  base_hostname ") || line.starts_with("      "))
        .collect();
    let hostname = hostname.join("\n");
    assert!(
        hostname.contains("Deprecated old name: `hostname`"),
        "{hostname}"
    );
}
