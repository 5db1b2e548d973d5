//! ssh config parsing and target resolution, without any network.

#[path = "common/sshd.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::TempDir;
use placard::transport::ssh::{parse_jump_spec, resolve_target, SshConfig, SshError, SshTarget};

const FIXTURE: &str = r#"
# Global defaults come first in many real configs.
ServerAliveInterval 30

Host web1 web1.prod
    HostName 10.0.0.11
    User deploy
    Port 2222
    IdentityFile ~/.ssh/deploy_ed25519

Host *.internal !secret.internal
  HostName=%h.example.net
  ProxyJump ops@bastion.example.net:2200

Host db?
    HostName "192.168.7.10"
    ProxyJump jump1,admin@jump2:2022

Host direct
    HostName 10.9.9.9
    ProxyJump none

Host bastion
    HostName bastion.example.net

Match exec "false"
    User nobody

Host *
    User fallback
    Port 22
    IdentityFile %d/.ssh/id_%r
    ProxyJump bastion
"#;

fn config() -> SshConfig {
    SshConfig::parse(FIXTURE, Path::new("fixture_config")).expect("fixture parses")
}

fn home() -> PathBuf {
    dirs::home_dir().expect("home")
}

#[test]
fn lookup_applies_first_value_and_patterns() {
    let c = config();
    let s = c.lookup("web1");
    assert_eq!(s.host_name.as_deref(), Some("10.0.0.11"));
    assert_eq!(s.user.as_deref(), Some("deploy"));
    assert_eq!(s.port, Some(2222));
    // IdentityFile accumulates across matching blocks, in order.
    assert_eq!(
        s.identity_files,
        vec!["~/.ssh/deploy_ed25519", "%d/.ssh/id_%r"]
    );
    assert_eq!(s.proxy_jump.as_deref(), Some("bastion"));

    // Host matching is case-insensitive, like OpenSSH.
    assert_eq!(
        c.lookup("WEB1.prod").host_name.as_deref(),
        Some("10.0.0.11")
    );

    let s = c.lookup("app.internal");
    assert_eq!(s.host_name.as_deref(), Some("%h.example.net"));
    assert_eq!(
        s.proxy_jump.as_deref(),
        Some("ops@bastion.example.net:2200")
    );
    assert_eq!(s.user.as_deref(), Some("fallback"));

    // Negated pattern excludes the host from that block.
    let s = c.lookup("secret.internal");
    assert_eq!(s.host_name, None);
    assert_eq!(s.proxy_jump.as_deref(), Some("bastion"));

    // `?` matches exactly one character.
    assert_eq!(c.lookup("db1").host_name.as_deref(), Some("192.168.7.10"));
    assert_eq!(c.lookup("db12").host_name, None);

    // Unsupported Match blocks never apply.
    assert_eq!(c.lookup("anything").user.as_deref(), Some("fallback"));
}

#[test]
fn resolve_alias_inventory_wins_and_defaults() {
    let c = config();
    let r = resolve_target(&SshTarget::new("web", "web1"), &c).expect("resolve");
    assert_eq!(r.host, "10.0.0.11");
    assert_eq!((r.port, r.user.as_str()), (2222, "deploy"));
    assert_eq!(
        r.identities,
        vec![
            home().join(".ssh/deploy_ed25519"),
            home().join(".ssh/id_deploy")
        ]
    );
    let bastion = r.via.as_deref().expect("ProxyJump from Host *");
    assert_eq!(bastion.host, "bastion.example.net");
    // The bastion matches `Host *` too, whose ProxyJump names itself: no loop.
    assert!(bastion.via.is_none());

    let inventory = SshTarget {
        name: "web".into(),
        address: "web1".into(),
        port: Some(22),
        user: Some("root".into()),
        identity: Some(PathBuf::from("~/keys/placard")),
        via: Some(Box::new(SshTarget::new("jumpbox", "10.1.1.1"))),
    };
    let r = resolve_target(&inventory, &c).expect("resolve");
    assert_eq!(r.host, "10.0.0.11");
    assert_eq!((r.port, r.user.as_str()), (22, "root"));
    assert_eq!(r.identities, vec![home().join("keys/placard")]);
    let via = r.via.as_deref().expect("inventory via");
    assert_eq!(
        (via.name.as_str(), via.host.as_str()),
        ("jumpbox", "10.1.1.1")
    );
    assert_eq!(via.user, "fallback");
}

#[test]
fn resolve_proxy_jump_forms() {
    let c = config();
    let r = resolve_target(&SshTarget::new("app", "app.internal"), &c).expect("resolve");
    assert_eq!(r.host, "app.internal.example.net");
    let hop = r.via.as_deref().expect("jump");
    assert_eq!(
        (hop.host.as_str(), hop.port, hop.user.as_str()),
        ("bastion.example.net", 2200, "ops")
    );

    // A chain: db1 via jump2 via jump1.
    let r = resolve_target(&SshTarget::new("db", "db1"), &c).expect("resolve");
    let jump2 = r.via.as_deref().expect("jump2");
    assert_eq!(
        (jump2.host.as_str(), jump2.port, jump2.user.as_str()),
        ("jump2", 2022, "admin")
    );
    let jump1 = jump2.via.as_deref().expect("jump1");
    assert_eq!(jump1.host, "jump1");
    // The first hop still gets its own ssh config ProxyJump (Host *).
    assert_eq!(
        jump1.via.as_deref().map(|b| b.host.as_str()),
        Some("bastion.example.net")
    );

    // ProxyJump none wins over the later Host * value.
    let r = resolve_target(&SshTarget::new("d", "direct"), &c).expect("resolve");
    assert!(r.via.is_none());

    // A plain address with no config at all.
    let r = resolve_target(&SshTarget::new("plain", "192.0.2.5"), &SshConfig::default())
        .expect("resolve");
    assert_eq!(
        (r.host.as_str(), r.port, r.user.as_str()),
        ("192.0.2.5", 22, "root")
    );
    assert!(r.identities.is_empty() && r.via.is_none());
}

#[test]
fn jump_specs() {
    assert_eq!(
        parse_jump_spec("host").unwrap(),
        (None, "host".into(), None)
    );
    assert_eq!(
        parse_jump_spec("ssh://u@h.example:2200").unwrap(),
        (Some("u".into()), "h.example".into(), Some(2200))
    );
    assert_eq!(
        parse_jump_spec("[2001:db8::1]:22").unwrap(),
        (None, "2001:db8::1".into(), Some(22))
    );
    assert!(parse_jump_spec("h:notaport").is_err());
    assert!(parse_jump_spec("@h").is_err());
}

#[test]
fn proxy_jump_loop_is_reported() {
    let c = SshConfig::parse(
        "Host a\n ProxyJump b\nHost b\n ProxyJump a\n",
        Path::new("loop"),
    )
    .expect("parse");
    let err = resolve_target(&SshTarget::new("a", "a"), &c).expect_err("loop");
    assert!(err.to_string().contains("loop"), "{err}");
}

#[test]
fn config_errors_name_file_and_line() {
    let err = SshConfig::parse("Host x\n  Port seventy\n", Path::new("/etc/bad_config"))
        .expect_err("bad port");
    match &err {
        SshError::Config { path, line, .. } => {
            assert_eq!(path, Path::new("/etc/bad_config"));
            assert_eq!(*line, 2);
        }
        other => panic!("wrong error {other}"),
    }
    assert!(err.to_string().contains("/etc/bad_config, line 2"), "{err}");
    assert!(SshConfig::parse("Host\n", Path::new("c")).is_err());
    assert!(SshConfig::parse("User \"unterminated\n", Path::new("c")).is_err());
}

#[test]
fn include_is_inlined_and_scoped() {
    let dir = TempDir::new("include");
    std::fs::create_dir_all(dir.join("conf.d")).expect("mkdir");
    std::fs::write(
        dir.join("conf.d/10-a.conf"),
        "Host inc-a\n  HostName 10.0.0.1\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("conf.d/20-b.conf"),
        "Host inc-b\n  HostName 10.0.0.2\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("conf.d/ignored.txt"),
        "Host inc-c\n  HostName 10.0.0.3\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("outer.conf"),
        "HostName 10.0.0.9\nHost inc-x\n  HostName 10.0.0.10\n",
    )
    .expect("write");
    let main = format!(
        "Include {d}/conf.d/*.conf\n\
         Host outer\n  Include {d}/outer.conf\n  User outer-user\n\
         Host *\n  User everyone\n",
        d = dir.path().display()
    );
    let c = SshConfig::parse(&main, Path::new("main")).expect("parse");
    assert_eq!(c.lookup("inc-a").host_name.as_deref(), Some("10.0.0.1"));
    assert_eq!(c.lookup("inc-b").host_name.as_deref(), Some("10.0.0.2"));
    assert_eq!(c.lookup("inc-c").host_name, None);
    assert_eq!(c.lookup("outer").host_name.as_deref(), Some("10.0.0.9"));
    // After the Include, lines are back in the `Host outer` block.
    assert_eq!(c.lookup("outer").user.as_deref(), Some("outer-user"));
    assert_eq!(c.lookup("inc-a").user.as_deref(), Some("everyone"));
    // Blocks included from inside `Host outer` only apply to `outer`.
    assert_eq!(c.lookup("inc-x").host_name, None);
    // A missing include file is ignored, as in OpenSSH.
    assert!(SshConfig::parse("Include /nonexistent/placard/x\n", Path::new("m")).is_ok());
}

#[test]
fn public_types_can_cross_tasks() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<placard::transport::ssh::Connection>();
    send_sync::<SshError>();
    send::<placard::transport::ssh::RemoteProcess>();
    // anyhow needs std::error::Error + Send + Sync + 'static.
    let _: anyhow::Error = SshError::InvalidTarget {
        target: "t".into(),
        message: "m".into(),
    }
    .into();
}
