//! The embedded PostgreSQL: runs as `postgres` when we are root, is shared by
//! concurrent users of one data directory, and stops when the last one leaves.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use assay::config::EmbeddedConfig;
use assay::db::embedded::{EmbeddedError, EmbeddedPostgres};

use crate::support::shared_tempdir;

fn config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        data_dir: dir.join("pg"),
        bin_dir: None,
    }
}

fn running(dir: &Path) -> bool {
    dir.join("pg/pgdata/postmaster.pid").exists()
}

async fn server_user(server: &EmbeddedPostgres) -> (String, PathBuf) {
    let (client, conn) = server
        .pg_config("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT current_user::text, current_setting('data_directory')",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), PathBuf::from(row.get::<_, String>(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_is_shared_and_stops_with_its_last_user() {
    let dir = shared_tempdir();
    let cfg = config(dir.path());
    let first = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || EmbeddedPostgres::start(&cfg)
    })
    .await
    .unwrap()
    .unwrap();
    let (user, data_dir) = server_user(&first).await;
    assert_eq!(user, "assay");
    assert_eq!(data_dir, dir.path().join("pg/pgdata"));
    if nix::unistd::geteuid().is_root() {
        let postgres = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        let meta = std::fs::metadata(&data_dir).unwrap();
        assert_eq!(
            meta.uid(),
            postgres.uid.as_raw(),
            "as root, the cluster belongs to postgres"
        );
    }

    // A second user of the same directory joins the running server.
    let second = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || EmbeddedPostgres::start(&cfg)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(second.port(), first.port());
    tokio::task::spawn_blocking(move || first.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(running(dir.path()), "still used by the second handle");
    server_user(&second).await;
    tokio::task::spawn_blocking(move || second.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(!running(dir.path()), "the last user stops the server");

    // The cluster is reused on the next start (no second initdb): same password.
    let password = std::fs::read_to_string(dir.path().join("pg/password")).unwrap();
    let third = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.password(), password.trim());
    drop(third);
    assert!(!running(dir.path()), "dropping stops it too");
}

#[test]
fn concurrent_first_starts_agree_on_one_server() {
    let dir = shared_tempdir();
    let cfg = config(dir.path());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let cfg = cfg.clone();
            std::thread::spawn(move || EmbeddedPostgres::start(&cfg))
        })
        .collect();
    let servers: Vec<EmbeddedPostgres> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(servers[0].port(), servers[1].port());
    drop(servers);
    assert!(!running(dir.path()));
}

#[test]
fn missing_binaries_say_what_to_install() {
    let dir = shared_tempdir();
    let err = EmbeddedPostgres::start(&EmbeddedConfig {
        data_dir: dir.path().join("pg"),
        bin_dir: Some(PathBuf::from("/nonexistent/postgresql/bin")),
    })
    .unwrap_err();
    assert!(matches!(err, EmbeddedError::BinariesNotFound { .. }));
    let message = err.to_string();
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(message.contains("DATABASE_URL"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_server_that_stops_is_started_again_on_its_port() {
    let dir = shared_tempdir();
    let mut settings = assay::config::DatabaseConfig {
        embedded: config(dir.path()),
        connect_timeout_ms: 1_000,
        ..Default::default()
    };
    settings.pool_size = 2;
    let db = std::sync::Arc::new(assay::db::Database::open(&settings).await.unwrap());
    let supervisor = db
        .supervise_embedded()
        .expect("embedded servers are supervised");
    let port = db.pg_config().get_ports()[0];

    // An operator (or a crash) stops it.
    let pgdata = dir.path().join("pg/pgdata");
    tokio::task::spawn_blocking(move || {
        crate::support::pg_ctl(&pgdata, &["stop", "-m", "immediate", "-w"])
    })
    .await
    .unwrap();
    assert!(!running(dir.path()));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(conn) = db.connection().await
            && conn.simple_query("SELECT 1").await.is_ok()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not started again");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(running(dir.path()));
    let pid_file = std::fs::read_to_string(dir.path().join("pg/pgdata/postmaster.pid")).unwrap();
    assert_eq!(
        pid_file.lines().nth(3),
        Some(port.to_string().as_str()),
        "same port"
    );
    // Once stopped, the supervisor holds nothing: not even a check it had
    // running on a blocking thread when the stop came.
    supervisor.stop().await;
    std::sync::Arc::try_unwrap(db)
        .unwrap()
        .close()
        .await
        .unwrap();
    assert!(!running(dir.path()), "stopped with its last user");
}
