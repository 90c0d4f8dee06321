//! What the test support leaves on the machine: nothing. A full run of the
//! integration suite makes well over a hundred databases (gigabytes); a
//! machine that runs the suite again and again must not fill up with them.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the child process the first test starts.
const CHILD: &str = "ASSAY_TESTING_FOOTPRINT_CHILD";

/// In the child: makes a database on the shared server, prints the server's
/// directory and exits. In the parent: runs that child, then looks.
#[test]
fn the_shared_server_and_its_files_are_gone_when_the_process_exits() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let db = runtime.block_on(assay_testing::fresh_database());
        let dir = assay_testing::shared_server_dir().unwrap();
        println!("SERVER_DIR={}", dir.display());
        drop(db);
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "the_shared_server_and_its_files_are_gone_when_the_process_exits",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir: PathBuf = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SERVER_DIR="))
        .expect("the child names its server's directory")
        .into();
    assert!(
        !dir.exists(),
        "{} is left behind after the process exited",
        dir.display()
    );
}

/// A test's database is dropped from the shared server once its last
/// `TestDb` is gone, while the process goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tests_database_is_dropped_when_its_last_handle_goes() {
    let db = assay_testing::fresh_database().await;
    let name = db.config.get_dbname().unwrap().to_string();
    let copy = db.clone();
    let watcher = assay_testing::fresh_database().await;
    let client = watcher.client().await;
    let exists = async |name: &str| -> bool {
        client
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    };
    assert!(exists(&name).await);
    drop(db);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(exists(&name).await, "dropped while a copy is still held");
    // A connection still open does not keep it: the test is over.
    let _open = copy.client().await;
    drop(copy);
    let patience = Instant::now();
    while exists(&name).await {
        assert!(
            patience.elapsed() < Duration::from_secs(30),
            "{name} is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
