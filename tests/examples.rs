//! The example inventories in inventory/ stay valid: every host's roles load, its
//! variables resolve and every task renders. No host is contacted.

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
