//! The plugin directory as an attacker (or a careless deploy) leaves it:
//! FIFOs, devices, symlinks, huge sparse files, directories named `*.wasm`,
//! thousands of junk files; and as operators change it: files renamed to other
//! names, a second file with a plugin's name, the directory reached through a
//! symlink. Real files, a real live registry, a real database.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assay::config::Config;
use assay::db::Database;
use assay::registry::PluginLoader;
use assay::registry::live::{LiveRegistry, ReloadOutcome};
use assay::registry::watch::{self, Watch};
use assay::runtime::Runtime;

use crate::support::{TestDb, built_plugin, fresh_database, shared_tempdir};

/// A live registry over `dir` (bundled plugins off), and its database.
async fn start_live(test_db: &TestDb, dir: &Path) -> Arc<LiveRegistry> {
    start_live_with(test_db, dir, |_| {}).await
}

/// [`start_live`], the configuration adjusted.
async fn start_live_with(
    test_db: &TestDb,
    dir: &Path,
    adjust: impl FnOnce(&mut Config),
) -> Arc<LiveRegistry> {
    let mut config = Config::default();
    config.plugins.dir = dir.to_path_buf();
    config.plugins.bundled = false;
    config.plugins.cache_dir = dir.join(".cache");
    adjust(&mut config);
    let db = Arc::new(
        Database::open_with(test_db.config.clone(), &config.database)
            .await
            .unwrap(),
    );
    let runtime = Arc::new(Runtime::new(&config, Some(&config.plugins.cache_dir)).unwrap());
    let loader = PluginLoader::new(runtime, db, config).await.unwrap();
    LiveRegistry::start(loader).await.unwrap()
}

fn swapper_version(live: &LiveRegistry) -> Option<String> {
    live.snapshot()
        .get("swapper")
        .map(|p| p.loaded.identity.version.clone())
}

fn outcome_of<'a>(outcomes: &'a [(PathBuf, ReloadOutcome)], file: &str) -> &'a ReloadOutcome {
    outcomes
        .iter()
        .find(|(p, _)| p.file_name().is_some_and(|n| n == file))
        .map(|(_, o)| o)
        .unwrap_or_else(|| panic!("no outcome for {file}: {outcomes:?}"))
}

fn refused_because(outcome: &ReloadOutcome, words: &str) {
    match outcome {
        ReloadOutcome::Refused(message) => assert!(message.contains(words), "{message}"),
        other => panic!("expected a refusal ({words}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_are_refused_unread_and_the_rest_loads() {
    let test_db = fresh_database().await;
    let holder = shared_tempdir();
    let dir = holder.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    let live = start_live(&test_db, &dir).await;

    let fifo = dir.join("fifo.wasm");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink(&fifo, dir.join("to-fifo.wasm")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.wasm")).unwrap();
    std::os::unix::fs::symlink("/dev/null", dir.join("null.wasm")).unwrap();
    std::fs::create_dir(dir.join("folder.wasm")).unwrap();
    let sparse = std::fs::File::create(dir.join("sparse.wasm")).unwrap();
    sparse.set_len(8 << 30).unwrap();
    drop(sparse);
    std::fs::write(dir.join(".hidden.wasm"), built_plugin("swap_two.wasm")).unwrap();
    std::fs::write(dir.join("swapper.wasm"), built_plugin("swap_one.wasm")).unwrap();
    let files = [
        "fifo.wasm",
        "to-fifo.wasm",
        "zero.wasm",
        "null.wasm",
        "folder.wasm",
        "sparse.wasm",
        ".hidden.wasm",
        "swapper.wasm",
    ];
    let outcomes = tokio::time::timeout(
        Duration::from_secs(60),
        live.files_changed(files.iter().map(|f| dir.join(f))),
    )
    .await
    .expect("nothing in the directory can hang the registry");
    refused_because(outcome_of(&outcomes, "fifo.wasm"), "a FIFO (named pipe)");
    refused_because(outcome_of(&outcomes, "to-fifo.wasm"), "a FIFO (named pipe)");
    refused_because(outcome_of(&outcomes, "zero.wasm"), "a character device");
    refused_because(outcome_of(&outcomes, "null.wasm"), "a character device");
    refused_because(outcome_of(&outcomes, "folder.wasm"), "a directory");
    refused_because(
        outcome_of(&outcomes, "sparse.wasm"),
        "is 8589934592 bytes; plugin files are limited to 67108864 bytes (plugins.max_component_bytes)",
    );
    assert!(
        outcomes.iter().all(|(p, _)| !p.ends_with(".hidden.wasm")),
        "hidden files are editors' and deploy tools' temporaries: {outcomes:?}"
    );
    assert!(matches!(
        outcome_of(&outcomes, "swapper.wasm"),
        ReloadOutcome::Loaded { .. }
    ));
    assert_eq!(swapper_version(&live).as_deref(), Some("1.0.0"));

    // A start-up with all of that in place does as well.
    let restarted = tokio::time::timeout(Duration::from_secs(60), start_live(&test_db, &dir))
        .await
        .expect("start-up is not held up either");
    assert_eq!(swapper_version(&restarted).as_deref(), Some("1.0.0"));
    let problems = &restarted.snapshot().problems;
    assert_eq!(problems.len(), 6, "{problems:?}");
    // Refused twice, recorded once each.
    let client = test_db.client().await;
    let row = client
        .query_one(
            "SELECT count(*), min(times) FROM assay.plugin_refusals",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (6, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_junk_files_hold_up_no_real_plugin_nor_grow_the_history() {
    let test_db = fresh_database().await;
    let holder = shared_tempdir();
    let dir = holder.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    let live = start_live(&test_db, &dir).await;
    let events: Arc<Mutex<Vec<(PathBuf, ReloadOutcome)>>> = Arc::default();
    let sink = Arc::clone(&events);
    let _watch: Watch = watch::watch(
        Arc::clone(&live),
        Duration::from_millis(150),
        move |p, o| {
            sink.lock().unwrap().push((p.clone(), o.clone()));
        },
    )
    .unwrap();

    for i in 0..5_000 {
        std::fs::write(
            dir.join(format!("junk-{i:04}.wasm")),
            format!("junk number {i}"),
        )
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let staged = holder.path().join("swapper.wasm");
    std::fs::write(&staged, built_plugin("swap_one.wasm")).unwrap();
    std::fs::rename(&staged, dir.join("swapper.wasm")).unwrap();
    // The real plugin serves within the same patience as any reload.
    let mut served = false;
    for _ in 0..200 {
        if swapper_version(&live).is_some() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the real plugin was held up behind the junk");

    let client = test_db.client().await;
    let count = async |sql: &str| -> i64 { client.query_one(sql, &[]).await.unwrap().get(0) };
    let settled = async || {
        for _ in 0..200 {
            if count("SELECT count(*) FROM assay.plugin_refusals").await
                >= assay::registry::history::MAX_KEPT_REFUSALS
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    settled().await;
    let kept = count("SELECT count(*) FROM assay.plugin_refusals").await;
    assert_eq!(kept, assay::registry::history::MAX_KEPT_REFUSALS, "bounded");
    assert_eq!(
        count("SELECT count(*) FROM assay.plugin_loads WHERE outcome = 'refused'").await,
        0
    );
    // Refusing the same junk again (a restart, `assay plugins list`) adds nothing.
    let restarted = start_live(&test_db, &dir).await;
    assert!(swapper_version(&restarted).is_some());
    assert_eq!(
        count("SELECT count(*) FROM assay.plugin_refusals").await,
        kept
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_one_file_however_the_directory_is_spelled() {
    let test_db = fresh_database().await;
    let holder = shared_tempdir();
    let real = holder.path().join("real");
    std::fs::create_dir(&real).unwrap();
    // The configured directory is a symlink; events name the real one.
    let link = holder.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::fs::write(real.join("b.wasm"), built_plugin("swap_one.wasm")).unwrap();
    let live = start_live(&test_db, &link).await;
    assert_eq!(swapper_version(&live).as_deref(), Some("1.0.0"));

    // Replaced, as the watcher reports it (the real, absolute path).
    std::fs::write(real.join("b.wasm"), built_plugin("swap_two.wasm")).unwrap();
    let outcome = live.file_event(&real.join("b.wasm")).await;
    assert!(
        matches!(outcome, ReloadOutcome::Loaded { .. }),
        "{outcome:?}"
    );
    assert_eq!(swapper_version(&live).as_deref(), Some("2.0.0"));

    // Renamed to a name sorting before it: still loaded, from the new name.
    std::fs::rename(real.join("b.wasm"), real.join("a.wasm")).unwrap();
    let outcomes = live
        .files_changed([link.join("a.wasm"), real.join("b.wasm")])
        .await;
    assert!(
        matches!(outcome_of(&outcomes, "b.wasm"), ReloadOutcome::Unloaded(_)),
        "{outcomes:?}"
    );
    assert!(
        matches!(
            outcome_of(&outcomes, "a.wasm"),
            ReloadOutcome::Loaded { .. }
        ),
        "{outcomes:?}"
    );
    let serving = live.snapshot().get("swapper").cloned().unwrap();
    assert_eq!(
        serving.source.to_string(),
        std::fs::canonicalize(&real)
            .unwrap()
            .join("a.wasm")
            .display()
            .to_string()
    );

    // A second file with the same plugin name is refused, and takes over when
    // the first goes.
    std::fs::write(real.join("c.wasm"), built_plugin("swap_one.wasm")).unwrap();
    refused_because(
        &live.file_event(&real.join("c.wasm")).await,
        "plugin name `swapper` is already used by",
    );
    std::fs::remove_file(real.join("a.wasm")).unwrap();
    let outcomes = live.files_changed([real.join("a.wasm")]).await;
    assert!(
        matches!(
            outcome_of(&outcomes, "c.wasm"),
            ReloadOutcome::Loaded { .. }
        ),
        "{outcomes:?}"
    );
    assert_eq!(swapper_version(&live).as_deref(), Some("1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_directory_is_watched_again() {
    let test_db = fresh_database().await;
    let holder = shared_tempdir();
    let dir = holder.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("swapper.wasm"), built_plugin("swap_one.wasm")).unwrap();
    let live = start_live(&test_db, &dir).await;
    let _watch = watch::watch(Arc::clone(&live), Duration::from_millis(150), |_, _| {}).unwrap();
    assert_eq!(swapper_version(&live).as_deref(), Some("1.0.0"));

    // A deploy that moves the old directory away and makes a new one.
    std::fs::rename(&dir, holder.path().join("plugins.old")).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("swapper.wasm"), built_plugin("swap_two.wasm")).unwrap();
    let mut version = None;
    for _ in 0..600 {
        version = swapper_version(&live);
        if version.as_deref() == Some("2.0.0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(version.as_deref(), Some("2.0.0"), "hot reload stopped");
    // And it goes on watching the new one.
    std::fs::remove_file(dir.join("swapper.wasm")).unwrap();
    for _ in 0..600 {
        version = swapper_version(&live);
        if version.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(version, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_writes_through_nothing_planted_in_the_directory() {
    let test_db = fresh_database().await;
    let holder = shared_tempdir();
    let dir = holder.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("swapper.wasm");
    std::fs::write(&file, built_plugin("swap_one.wasm")).unwrap();
    let live = start_live(&test_db, &dir).await;
    std::fs::write(&file, built_plugin("swap_two.wasm")).unwrap();
    live.file_event(&file).await;
    assert_eq!(swapper_version(&live).as_deref(), Some("2.0.0"));

    // Whoever can write the directory plants, at every name the engine could
    // use: symlinks to a file elsewhere, and a FIFO (whose open blocks).
    let victim = holder.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let resolved = live.plugin_dir();
    std::os::unix::fs::symlink(
        &victim,
        resolved.join(format!(".swapper.rollback-{}", std::process::id())),
    )
    .unwrap();
    nix::unistd::mkfifo(
        &resolved.join(format!(".swapper.wasm.rollback-{}", std::process::id())),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // And the plugin's own file is made a symlink to the victim.
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    let db = live.loader().db();
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        assay::registry::history::rollback(db, &resolved, "swapper", None),
    )
    .await
    .expect("nothing planted can stall a rollback")
    .unwrap();
    assert_eq!(done.version, "1.0.0");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(
        !std::fs::symlink_metadata(&file)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink itself was replaced, not what it points to"
    );
    assert_eq!(std::fs::read(&file).unwrap(), built_plugin("swap_one.wasm"));

    // What cannot name a plugin or a version is the caller's mistake.
    for (name, hash) in [
        ("a\u{0}b", None),
        ("swapper", Some("")),
        ("swapper", Some("XYZ1")),
    ] {
        let refused = assay::registry::history::rollback(db, &resolved, name, hash)
            .await
            .expect_err("refused");
        assert!(
            matches!(refused, assay::registry::history::RollbackError::Invalid(_)),
            "{name:?} {hash:?}: {refused}"
        );
    }
}

/// A plugin directory watched by a live registry: the rescan every
/// `rescan_ms` (0: none), events debounced for `debounce`.
struct Watched {
    _test_db: TestDb,
    holder: tempfile::TempDir,
    dir: PathBuf,
    live: Arc<LiveRegistry>,
    _watch: watch::Watch,
}

async fn watched(rescan_ms: u64, debounce: Duration) -> Watched {
    let test_db = fresh_database().await;
    let holder = shared_tempdir();
    let dir = holder.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    let live = start_live_with(&test_db, &dir, |c| c.plugins.rescan_interval_ms = rescan_ms).await;
    let watch = watch::watch(Arc::clone(&live), debounce, |_, _| {}).unwrap();
    Watched {
        _test_db: test_db,
        holder,
        dir,
        live,
        _watch: watch,
    }
}

/// Writes `swap_one` outside `dir`, renames it into place as `swapper.wasm`,
/// and waits for it to serve.
async fn rename_swap_one_into_place(outside: &Path, dir: &Path, live: &LiveRegistry) {
    let staged = outside.join("staged.wasm");
    std::fs::write(&staged, built_plugin("swap_one.wasm")).unwrap();
    std::fs::rename(&staged, dir.join("swapper.wasm")).unwrap();
    eventually("the renamed file loading", || {
        swapper_version(live).as_deref() == Some("1.0.0")
    })
    .await;
}

/// Waits up to 30 s for `done`.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 30 s");
}

/// Changes whose events never come (here the debounce outlasts the test, so
/// none is delivered) are still handled by the periodic rescan: a new file,
/// a file replaced by rename, a file removed; and a FIFO beside them is never
/// opened by it (the rescan only looks at file metadata); and a directory
/// that cannot be listed for a while unloads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_whose_events_are_lost_are_found_by_the_rescan() {
    let Watched {
        _test_db,
        holder,
        dir,
        live,
        _watch,
    } = watched(200, Duration::from_secs(3600)).await;

    let fifo = dir.join("fifo.wasm");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::write(dir.join("swapper.wasm"), built_plugin("swap_one.wasm")).unwrap();
    eventually("the new file loading", || {
        swapper_version(&live).as_deref() == Some("1.0.0")
    })
    .await;

    let staged = holder.path().join("staged.wasm");
    std::fs::write(&staged, built_plugin("swap_two.wasm")).unwrap();
    std::fs::rename(&staged, dir.join("swapper.wasm")).unwrap();
    eventually("the renamed-over file loading", || {
        swapper_version(&live).is_some_and(|v| v != "1.0.0")
    })
    .await;

    // A directory that cannot be listed for a while is not a directory
    // whose files are gone: nothing unloads.
    let away = holder.path().join("plugins.away");
    std::fs::rename(&dir, &away).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        swapper_version(&live).is_some(),
        "still serving while unlisted"
    );
    std::fs::rename(&away, &dir).unwrap();

    std::fs::remove_file(dir.join("swapper.wasm")).unwrap();
    eventually("the removed file unloading", || {
        swapper_version(&live).is_none()
    })
    .await;
    // The FIFO was refused by the registry (unread), not left hanging.
    let problems = live.snapshot().problems.clone();
    assert!(
        problems.iter().any(|p| p.source.ends_with("fifo.wasm")),
        "{problems:?}"
    );
}

/// A file changed after the registry loaded it but before the watch began
/// sends no event the watch can see; the rescan still finds it, because it
/// compares with the files as the registry read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_before_the_watch_begins_is_found_by_the_rescan() {
    let test_db = fresh_database().await;
    let holder = shared_tempdir();
    let dir = holder.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("swapper.wasm"), built_plugin("swap_one.wasm")).unwrap();
    let live = start_live_with(&test_db, &dir, |c| c.plugins.rescan_interval_ms = 200).await;
    assert_eq!(swapper_version(&live).as_deref(), Some("1.0.0"));
    let staged = holder.path().join("staged.wasm");
    std::fs::write(&staged, built_plugin("swap_two.wasm")).unwrap();
    std::fs::rename(&staged, dir.join("swapper.wasm")).unwrap();
    let _watch = watch::watch(Arc::clone(&live), Duration::from_millis(200), |_, _| {}).unwrap();
    eventually("the file changed before the watch loading", || {
        swapper_version(&live).is_some_and(|v| v != "1.0.0")
    })
    .await;
}

/// A file renamed into place is complete, so it is loaded without waiting
/// for the debounce (here an hour, so only the rename path can load it);
/// a file written in place still waits for the directory to be quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_into_place_is_loaded_without_the_debounce() {
    let Watched {
        _test_db,
        holder,
        dir,
        live,
        _watch,
    } = watched(0, Duration::from_secs(3600)).await;

    rename_swap_one_into_place(holder.path(), &dir, &live).await;

    // The editor's way: a temporary file in the directory renamed over.
    let temporary = dir.join(".swapper.wasm.tmp");
    std::fs::write(&temporary, built_plugin("swap_two.wasm")).unwrap();
    std::fs::rename(&temporary, dir.join("swapper.wasm")).unwrap();
    eventually("the file renamed over loading", || {
        swapper_version(&live).is_some_and(|v| v != "1.0.0")
    })
    .await;
    let two = swapper_version(&live);

    // Written in place: waits for the (hour-long) debounce.
    std::fs::write(dir.join("swapper.wasm"), built_plugin("swap_one.wasm")).unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(swapper_version(&live), two, "an in-place write waits");
}

/// A file removed right after it was renamed into place is unloaded: the
/// debouncer sees the rename and the removal as one change that came to
/// nothing, and drops both, while the rename path has already loaded the
/// file; so each rename is looked at again once its debounce is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_right_after_its_rename_is_unloaded() {
    // No rescan: only the events may find the removal.
    let Watched {
        _test_db,
        holder,
        dir,
        live,
        _watch,
    } = watched(0, Duration::from_millis(200)).await;
    for round in 0..3 {
        rename_swap_one_into_place(holder.path(), &dir, &live).await;
        std::fs::remove_file(dir.join("swapper.wasm")).unwrap();
        eventually(
            &format!("round {round}: the removed file unloading"),
            || swapper_version(&live).is_none(),
        )
        .await;
    }
}
