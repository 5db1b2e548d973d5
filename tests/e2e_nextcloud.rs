//! The nextcloud role (issue 11), end to end, as far as this machine can prove it: a
//! real Debian host (systemd-nspawn) with the web, certs and nextcloud roles, PHP-FPM,
//! PostgreSQL and Redis from Debian, nginx over HTTPS with a certificate from pebble.
//!
//! Nextcloud's release archive cannot be downloaded here, so the release steps run
//! against tests/fixtures/nextcloud-standin-failing-upgrade: a TEST FIXTURE, not
//! Nextcloud, whose `occ upgrade` fails on purpose. The test serves it as an archive
//! from an HTTP server in this process. What is proven:
//! 1. everything up to the archive: PHP-FPM answers through nginx over HTTPS in its own
//!    pool, and a PHP page placed by the test reads and writes through Redis (Unix
//!    socket) and PostgreSQL (the generated password, which is required); Nextcloud's
//!    nginx rules (.well-known redirects, denied paths); `placard verify`; 0 changes
//!    on the second apply;
//!    a redis.conf Redis refuses, or a PostgreSQL drop-in PostgreSQL refuses, fails the
//!    run and the working file stays, with the service running;
//! 2. the first install of the stand-in, through the role's helpers: its occ gets the
//!    database password (it logs in to PostgreSQL with it) and the admin password, and
//!    neither is on its command line (the stand-in logs /proc/self/cmdline);
//!    a release archive whose checksum is not the pinned one, or whose signature is
//!    not by the key given, is refused before it is unpacked, leaving nothing behind
//!    and the live release as it was (signing keys are made here with gpg);
//! 3. the upgrade's rollback: a failing `occ upgrade` puts the link back, restores the
//!    database dump and turns maintenance mode off, and the run names the step.
//!
//! One host per Debian release, shared by these stages in order.

#[path = "common/acme.rs"]
mod acme;
#[path = "common/testbed.rs"]
mod testbed;

use std::time::Instant;

use acme::{run, serve_files, text, WebHost};
use testbed::stdout;

const SITES: &str = "[{name: cloud.club.example, root: /var/www/nextcloud, php: /run/php/nextcloud.sock, rules: nextcloud, certificate: cloud}, \
     {name: probe.club.example, root: /var/www/probe, php: /run/php/nextcloud.sock, certificate: cloud}]";
const CERTIFICATES: &str =
    "[{name: cloud, domains: [cloud.club.example, probe.club.example], services: [nginx]}]";
/// A TEST FIXTURE, not Nextcloud (see its README.md).
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/nextcloud-standin-failing-upgrade"
);
/// A well-formed checksum that no archive here has.
const WRONG_SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The role's variables: `release` is false (prepare everything up to the archive) or
/// (version, checksum, URL, signing key).
fn vars(host: &WebHost, release: Option<(&str, &str, &str, &str)>) -> String {
    let release = match release {
        None => format!(
            "nextcloud_install_release: false\nnextcloud_version: \"1.0.0\"\nnextcloud_sha256: {WRONG_SHA256}\n"
        ),
        Some((version, sha256, url, key)) => format!(
            "nextcloud_version: \"{version}\"\nnextcloud_sha256: {sha256}\nnextcloud_download_url: \"{url}\"\n\
             nextcloud_signing_key: {}\n",
            serde_json::to_string(key).expect("a JSON string is a YAML string")
        ),
    };
    format!(
        "nextcloud_domain: cloud.club.example\nnextcloud_trusted_domains: [files.club.example]\n\
         nextcloud_phone_region: DE\nnextcloud_https_port: {}\n\
         # Test hosts share this machine's network: no PostgreSQL of theirs may take port 5432.\n\
         nextcloud_postgresql_listen: \"\"\n{release}",
        host.https_port
    )
}

/// A signing key made here (gpg, in its own folder): its public key, armored.
fn signing_key(home: &std::path::Path) -> String {
    let home = home.display().to_string();
    let made = run(
        60,
        &[
            "gpg",
            "--homedir",
            &home,
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "placard e2e <e2e@club.example>",
            "ed25519",
            "sign",
            "never",
        ],
    );
    assert!(made.status.success(), "gpg key: {}", text(&made));
    let exported = run(30, &["gpg", "--homedir", &home, "--armor", "--export"]);
    assert!(exported.status.success(), "{}", text(&exported));
    String::from_utf8_lossy(&exported.stdout).into_owned()
}

/// The fixture as a release archive (nextcloud/… in a .tar.bz2), its SHA-256, and its
/// detached signature by the key in `gpg_home`.
fn standin_archive(gpg_home: &std::path::Path) -> (Vec<u8>, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("a folder for the archive");
    let tree = dir.path().join("nextcloud");
    let copy = run(30, &["cp", "-r", FIXTURE, &tree.display().to_string()]);
    assert!(copy.status.success(), "{}", text(&copy));
    let archive = dir.path().join("archive.tar.bz2");
    let tar = run(
        60,
        &[
            "tar",
            "--create",
            "--bzip2",
            "--file",
            &archive.display().to_string(),
            "--directory",
            &dir.path().display().to_string(),
            "nextcloud",
        ],
    );
    assert!(tar.status.success(), "{}", text(&tar));
    let bytes = std::fs::read(&archive).expect("read the archive");
    let sum = run(10, &["sha256sum", &archive.display().to_string()]);
    let sha256 = text(&sum)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sha256.len(), 64, "{}", text(&sum));
    let signature = dir.path().join("archive.tar.bz2.asc");
    let signed = run(
        60,
        &[
            "gpg",
            "--homedir",
            &gpg_home.display().to_string(),
            "--batch",
            "--armor",
            "--detach-sign",
            "--output",
            &signature.display().to_string(),
            &archive.display().to_string(),
        ],
    );
    assert!(signed.status.success(), "sign: {}", text(&signed));
    let signature = std::fs::read(&signature).expect("read the signature");
    (bytes, sha256, signature)
}

/// The inventory with the web, certs and nextcloud roles, pinning release `version`.
fn release(host: &WebHost, version: &str, sha256: &str, url: &str, key: &str) {
    let vars = vars(host, Some((version, sha256, url, key)));
    host.inventory_with(&["nextcloud"], SITES, CERTIFICATES, &vars);
}

/// Applies, expecting the host to fail with every one of `reasons` in the report.
fn apply_fails(host: &WebHost, reasons: &[&str]) {
    let (output, _) = host.apply();
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "the host fails:\n{report}");
    for reason in reasons {
        assert!(
            report.contains(reason),
            "`{reason}` in the report:\n{report}"
        );
    }
}

/// Nothing was unpacked or left behind, and the live release is as it was.
fn assert_untouched(host: &WebHost, config: &str) {
    assert_eq!(releases(host), ["1.0.0"], "nothing unpacked, no leftovers");
    assert_eq!(live(host), "/var/www/nextcloud-releases/1.0.0");
    assert_eq!(
        host.bed
            .read("/var/www/nextcloud-releases/1.0.0/config/config.php")
            .as_deref(),
        Some(config),
        "the live release is untouched"
    );
}

fn releases(host: &WebHost) -> Vec<String> {
    host.entries("/var/www/nextcloud-releases")
}

fn live(host: &WebHost) -> String {
    std::fs::read_link(host.bed.root_path("/var/www/nextcloud"))
        .map(|target| target.display().to_string())
        .unwrap_or_default()
}

/// The secret `name`, generated on the host.
fn secret(host: &WebHost, name: &str) -> String {
    host.bed
        .read(&format!("/var/lib/placard/secrets/{name}"))
        .unwrap_or_else(|| panic!("the secret {name} was generated on the host"))
        .trim()
        .to_string()
}

fn psql(host: &WebHost, sql: &str) -> String {
    host.bed.ssh(&format!(
        "runuser -u postgres -- psql --no-psqlrc --tuples-only --no-align --dbname=nextcloud --command=\"{sql}\""
    ))
}

fn nextcloud(host: &WebHost) {
    // (1) Everything up to the archive.
    host.inventory_with(&["nextcloud"], SITES, CERTIFICATES, &vars(host, None));
    let started = Instant::now();
    let (output, _) = host.apply();
    let first_report = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "first apply:\n{first_report}"
    );
    eprintln!("first apply: {:?}", started.elapsed());
    // (Also lets the next host's nginx start: this one listens on its own ports now.)
    let started = Instant::now();
    assert_eq!(
        host.apply_ok("second apply"),
        0,
        "a second apply changes nothing"
    );
    eprintln!("no-op apply: {:?}", started.elapsed());

    let password = secret(host, "nextcloud-db");
    assert!(password.len() >= 32, "a long password");
    let mode = host
        .bed
        .ssh("stat -c '%a %U' /var/lib/placard/secrets/nextcloud-db /var/lib/placard/secrets/nextcloud-admin");
    assert_eq!(mode, "600 root\n600 root\n", "secrets are root's, 0600");
    assert!(
        !first_report.contains(&password),
        "the password is never printed"
    );
    // A configuration Redis or PostgreSQL refuses fails the run; the working one stays.
    refused_configurations(host);

    let data = host.bed.ssh("stat -c '%a %U %G' /var/lib/nextcloud/data");
    assert_eq!(data.trim(), "750 nextcloud nextcloud", "the data folder");
    // Redis answers on its socket only; PostgreSQL listens on no TCP address.
    let redis = host
        .bed
        .ssh("redis-cli -s /run/redis/redis-server.sock ping; redis-cli -s /run/redis/redis-server.sock config get port");
    assert!(redis.starts_with("PONG\nport\n0"), "{redis}");
    let listen = host
        .bed
        .ssh("runuser -u postgres -- psql --no-psqlrc --tuples-only --no-align --command='SHOW listen_addresses'");
    assert_eq!(listen.trim(), "", "PostgreSQL listens on its socket only");

    // A PHP page placed by the test: it runs in the nextcloud pool, writes and reads
    // through Redis and PostgreSQL, and a wrong password is refused.
    let page = format!(
        r#"<?php
header('Content-Type: text/plain');
echo 'user: ', posix_getpwuid(posix_geteuid())['name'], "\n";
$token = bin2hex(random_bytes(8));
$redis = new Redis();
$redis->connect('/run/redis/redis-server.sock');
$redis->set('placard-e2e', $token);
echo 'redis: ', $redis->get('placard-e2e') === $token ? 'ok' : 'wrong', "\n";
try {{
    new PDO('pgsql:host=/var/run/postgresql;dbname=nextcloud', 'nextcloud', 'not-the-password');
    echo "wrong password: accepted\n";
}} catch (PDOException $e) {{
    echo 'wrong password: refused (', $e->getMessage(), ")\n";
}}
$pdo = new PDO('pgsql:host=/var/run/postgresql;dbname=nextcloud', 'nextcloud', '{password}');
$pdo->exec('CREATE TABLE IF NOT EXISTS e2e_probe (token text)');
$pdo->prepare('INSERT INTO e2e_probe VALUES (?)')->execute([$token]);
$read = $pdo->prepare('SELECT count(*) FROM e2e_probe WHERE token = ?');
$read->execute([$token]);
echo 'postgresql: ', $read->fetchColumn() == 1 ? 'ok' : 'wrong', "\n";
echo 'apcu: ', apcu_enabled() ? 'ok' : 'off', "\n";
echo 'memory_limit: ', ini_get('memory_limit'), "\n";
"#
    );
    let page_path = host.bed.root_path("/var/www/probe/probe.php");
    std::fs::write(&page_path, page).expect("write the PHP page");
    host.bed.ssh(
        "chown root:nextcloud /var/www/probe/probe.php && chmod 0640 /var/www/probe/probe.php",
    );
    let (ok, answer) = host.https("probe.club.example", "/probe.php");
    assert!(ok, "the PHP page over HTTPS: {answer}");
    for expected in [
        "user: nextcloud",
        "redis: ok",
        "wrong password: refused",
        "postgresql: ok",
        "apcu: ok",
        "memory_limit: 512M",
    ] {
        assert!(answer.contains(expected), "`{expected}` in:\n{answer}");
    }
    assert!(
        answer.contains("password authentication failed"),
        "PostgreSQL asks for the password on its socket:\n{answer}"
    );
    assert_eq!(
        psql(host, "SELECT count(*) FROM e2e_probe").trim(),
        "1",
        "the row is in the database"
    );

    // Nextcloud's nginx rules on cloud.club.example (no release yet behind them).
    for dav in ["/.well-known/caldav", "/.well-known/carddav"] {
        let (_, answer) = host.https("cloud.club.example", dav);
        assert!(
            answer.contains("301") && answer.contains("/remote.php/dav/"),
            "{dav}: {answer}"
        );
    }
    for denied in [
        "/data/a.txt",
        "/config/config.php",
        "/occ",
        "/.htaccess",
        "/3rdparty/x",
    ] {
        let (_, answer) = host.https("cloud.club.example", denied);
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/2 404"),
            "{denied} is denied: {answer}"
        );
    }

    // The password never enters /etc's history.
    let holding = host.etc_history_holding(&password);
    assert!(holding.is_empty(), "the password in /etc's git: {holding}");

    let verify = host.bed.placard(&["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "verify:\n{}",
        stdout(&verify)
    );

    // (2) The first install: the stand-in release 1.0.0, downloaded, checked and
    // installed by the role (occ maintenance:install).
    let signer = tempfile::tempdir().expect("a folder for gpg");
    let other = tempfile::tempdir().expect("a folder for gpg");
    let key = signing_key(signer.path());
    let other_key = signing_key(other.path());
    let (archive, sha256, signature) = standin_archive(signer.path());
    let server = serve_files(vec![
        ("/nextcloud-1.0.0.tar.bz2".to_string(), archive.clone()),
        ("/nextcloud-2.0.0.tar.bz2".to_string(), archive),
        ("/nextcloud-2.0.0.tar.bz2.asc".to_string(), signature),
    ]);
    let url = format!("http://127.0.0.1:{server}");
    release(host, "1.0.0", &sha256, &url, "");
    assert!(
        host.apply_ok("install of the stand-in") > 0,
        "the release was installed and the settings were set"
    );
    assert_eq!(live(host), "/var/www/nextcloud-releases/1.0.0");
    installed_without_passwords_on_command_lines(host, &password);
    let config = host
        .bed
        .read("/var/www/nextcloud-releases/1.0.0/config/config.php")
        .unwrap_or_default();
    for expected in [
        "'cloud.club.example'",
        "'files.club.example'",
        "'overwrite.cli.url' => 'https://cloud.club.example'",
        "'memcache.locking' => '\\\\OC\\\\Memcache\\\\Redis'",
        "'host' => '/run/redis/redis-server.sock'",
        "'default_phone_region' => 'DE'",
        "'maintenance_window_start' => 1",
        "'backgroundjobs_mode' => 'cron'",
    ] {
        assert!(
            config.contains(expected),
            "`{expected}` in config.php:\n{config}"
        );
    }
    let verify = host.bed.placard(&["verify"]);
    let verified = stdout(&verify);
    assert_eq!(verify.status.code(), Some(0), "verify:\n{verified}");
    assert!(
        verified.contains("\"installed\":true"),
        "status.php was asked:\n{verified}"
    );
    assert_eq!(host.apply_ok("second apply on the stand-in"), 0);

    // (3) A wrong checksum, or a signature by another key than the one given: refused
    // before unpacking; nothing left behind; the live release untouched.
    release(host, "2.0.0", WRONG_SHA256, &url, "");
    apply_fails(host, &["not the pinned", "refused before unpacking"]);
    assert_untouched(host, &config);
    release(host, "2.0.0", &sha256, &url, &other_key);
    apply_fails(
        host,
        &[
            "does not verify with nextcloud_signing_key",
            "refused before unpacking",
        ],
    );
    assert_untouched(host, &config);

    // (4) The right checksum and signature, and an `occ upgrade` that fails: the link
    // goes back, the database is restored, maintenance mode is off, and the step is
    // named, with occ's own message.
    release(host, "2.0.0", &sha256, &url, &key);
    apply_fails(
        host,
        &[
            "failed at step 'occ upgrade'",
            "rolled back",
            "the upgrade fails on purpose",
        ],
    );
    assert_eq!(
        releases(host),
        ["1.0.0", "2.0.0"],
        "the new folder was unpacked"
    );
    assert_eq!(
        live(host),
        "/var/www/nextcloud-releases/1.0.0",
        "the link is back"
    );
    assert!(
        host.bed
            .read("/var/www/nextcloud-releases/2.0.0/config/config.php")
            .is_none(),
        "the failed release keeps no configuration"
    );
    let after = host
        .bed
        .read("/var/www/nextcloud-releases/1.0.0/config/config.php")
        .unwrap_or_default();
    assert!(
        after.contains("'maintenance' => false"),
        "maintenance mode is off:\n{after}"
    );
    let log = host
        .bed
        .read("/var/www/nextcloud-releases/1.0.0/config/occ.log")
        .unwrap_or_default();
    assert!(
        log.contains("maintenance:mode --on"),
        "it was on during the upgrade:\n{log}"
    );
    assert_eq!(
        psql(
            host,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'standin_half_done_migration'"
        )
        .trim(),
        "0",
        "the half-done migration is gone: the dump was restored"
    );
    assert_eq!(
        psql(host, "SELECT count(*) FROM e2e_probe").trim(),
        "1",
        "what was in the database before is there"
    );
    let dumps = host.bed.ssh("ls /var/backups/nextcloud");
    assert!(
        dumps.contains("nextcloud-1.0.0-"),
        "the dump is kept: {dumps}"
    );

    // Back to the live version: nothing to change.
    release(host, "1.0.0", &sha256, &url, "");
    assert_eq!(host.apply_ok("apply after the rollback"), 0);
}

/// A redis.conf that Redis refuses (port 70000) and a PostgreSQL drop-in that
/// PostgreSQL refuses (an unterminated quote) each fail the run before they replace the
/// working file; the services keep running with it.
fn refused_configurations(host: &WebHost) {
    let good = vars(host, None);
    let redis_conf = host.bed.read("/etc/redis/redis.conf");
    assert!(redis_conf.is_some(), "redis.conf");
    host.inventory_with(
        &["nextcloud"],
        SITES,
        CERTIFICATES,
        &format!("{good}nextcloud_redis_port: 70000\n"),
    );
    apply_fails(
        host,
        &[
            "/etc/redis/redis.conf failed validation",
            "argument must be between 0 and 65535",
        ],
    );
    assert_kept(host, "/etc/redis/redis.conf", &redis_conf);

    let drop_in = host
        .bed
        .ssh("ls /etc/postgresql/*/main/conf.d/placard-nextcloud.conf")
        .trim()
        .to_string();
    let postgresql_conf = host.bed.read(&drop_in);
    assert!(postgresql_conf.is_some(), "{drop_in}");
    let broken = good.replace(
        "nextcloud_postgresql_listen: \"\"",
        "nextcloud_postgresql_listen: \"localhost'\"",
    );
    assert_ne!(broken, good, "the listen address is in the variables");
    host.inventory_with(&["nextcloud"], SITES, CERTIFICATES, &broken);
    apply_fails(
        host,
        &[&format!("{drop_in} failed validation"), "contains errors"],
    );
    assert_kept(host, &drop_in, &postgresql_conf);

    // Both still run, as configured before.
    host.inventory_with(&["nextcloud"], SITES, CERTIFICATES, &good);
    host.apply_ok("apply after the refused configurations");
    let running = host.bed.ssh(
        "systemctl is-active redis-server postgresql; redis-cli -s /run/redis/redis-server.sock ping; \
         runuser -u postgres -- psql --no-psqlrc --tuples-only --no-align --command='SHOW listen_addresses'",
    );
    assert_eq!(
        running.trim_end(),
        "active\nactive\nPONG",
        "the services run as before"
    );
    assert_eq!(host.bed.read(&drop_in), postgresql_conf);
    assert_eq!(host.bed.read("/etc/redis/redis.conf"), redis_conf);
    assert_eq!(host.apply_ok("no-op apply"), 0);
}

/// The file at `path` is still `before`, and no staged or kept copy of placard's is
/// left beside it.
fn assert_kept(host: &WebHost, path: &str, before: &Option<String>) {
    assert_eq!(&host.bed.read(path), before, "the working {path} stays");
    let folder = std::path::Path::new(path)
        .parent()
        .expect("a file in a folder")
        .display()
        .to_string();
    let leftovers = host.bed.ssh(&format!("ls -A {folder}"));
    assert!(
        !leftovers.contains(".placard-"),
        "no staged or kept file left in {folder}: {leftovers}"
    );
}

/// The stand-in's maintenance:install got both passwords — it logged in to PostgreSQL
/// with the database one, and kept the admin one's hash — while the command line of
/// every occ run, as other users see it (/proc/PID/cmdline, logged by the stand-in),
/// holds neither.
fn installed_without_passwords_on_command_lines(host: &WebHost, database_password: &str) {
    let admin_password = secret(host, "nextcloud-admin");
    assert!(admin_password.len() >= 24, "a long admin password");
    let log = host
        .bed
        .read("/var/www/nextcloud-releases/1.0.0/config/occ.log")
        .unwrap_or_default();
    assert!(
        log.lines().any(|line| line.contains("maintenance:install")
            && line.contains("--database-user=nextcloud")),
        "occ maintenance:install ran:\n{log}"
    );
    for secret in [database_password, admin_password.as_str()] {
        assert!(
            !log.contains(secret),
            "a password on occ's command line:\n{log}"
        );
    }
    let config = host
        .bed
        .read("/var/www/nextcloud-releases/1.0.0/config/config.php")
        .unwrap_or_default();
    assert!(
        config.contains(&format!("'dbpassword' => '{database_password}'")),
        "occ got the database password (and logged in with it)"
    );
    let check = host.bed.root_path("/root/check-admin-password.php");
    std::fs::write(
        &check,
        "<?php\ninclude '/var/www/nextcloud-releases/1.0.0/config/config.php';\n\
         $password = trim(file_get_contents('/var/lib/placard/secrets/nextcloud-admin'));\n\
         echo password_verify($password, $CONFIG['standin_admin'][1]) ? 'admin password: ok' : 'admin password: wrong', \"\\n\";\n",
    )
    .expect("write the check");
    let checked = host
        .bed
        .ssh("php /root/check-admin-password.php; rm /root/check-admin-password.php");
    assert_eq!(
        checked.trim(),
        "admin password: ok",
        "occ got the admin password"
    );
}

#[test]
fn nextcloud_on_debian_12_up_to_the_archive_refused_checksum_and_rollback() {
    let host = WebHost::up("e2e-nextcloud12", "bookworm");
    nextcloud(&host);
}

#[test]
fn nextcloud_on_debian_13_up_to_the_archive_refused_checksum_and_rollback() {
    let host = WebHost::up("e2e-nextcloud13", "trixie");
    nextcloud(&host);
}
