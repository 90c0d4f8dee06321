//! The built `assay` binary, run the way the README tells a user to: from a
//! working directory of its own, with the default configuration — so with the
//! relative `.assay/postgres`, `.assay/plugins` and `.assay/cache`, and the
//! embedded PostgreSQL — spoken to over HTTP with plain requests, and with
//! plugin files replaced by copy, by rename and by an editor's
//! truncate-and-write, and hostile files dropped beside them.
//!
//! The one setting changed is `server.addr` (to port 0), so that tests can
//! run side by side; everything else is what a new user gets.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{built_plugin, shared_tempdir, workspace};

/// How long anything here may take before the test gives up on it (a
/// liveness bound, far beyond what any step needs).
const PATIENCE: Duration = Duration::from_secs(60);

/// A user's working directory.
pub(crate) struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub(crate) fn new() -> Self {
        Self {
            dir: shared_tempdir(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The default plugin directory, as the engine creates it.
    pub(crate) fn plugins(&self) -> PathBuf {
        self.path().join(".assay/plugins")
    }

    /// `assay ARGS` in this directory, with nothing of the test's environment
    /// that could change its configuration.
    pub(crate) fn assay(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_assay"));
        cmd.current_dir(self.path()).env("NO_COLOR", "1");
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("ASSAY") || key == "DATABASE_URL" || key == "RUST_LOG" {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd
    }

    /// Whether the embedded server of this directory is running.
    pub(crate) fn server_running(&self) -> bool {
        self.path()
            .join(".assay/postgres/pgdata/postmaster.pid")
            .exists()
    }

    /// `assay up`, serving on a free loopback port; waits until it listens.
    pub(crate) fn up(&self) -> Up {
        Up::spawn(self.assay())
    }
}

/// A running `assay up`.
pub(crate) struct Up {
    child: Child,
    pub(crate) addr: String,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Up {
    /// Runs `assay up` as `command` (plus a free loopback port) says; waits
    /// until it listens.
    pub(crate) fn spawn(mut command: Command) -> Up {
        let mut child = command
            .arg("up")
            .env("ASSAY__SERVER__ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| {
                let mut stderr = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("assay up did not start: {line:?}\n{stderr}")
            })
            .to_string();
        Up {
            child,
            addr,
            stdout,
        }
    }

    /// One HTTP/1.1 request, as curl would send it; the status and JSON body.
    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.request_as(&self.addr, method, path, body)
    }

    /// [`Self::request`] with `host` in the `Host` header.
    pub(crate) fn request_as(
        &self,
        host: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            host,
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let json = response
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .unwrap_or(Value::Null);
        (status, json)
    }

    /// The label the `swapper` test plugin answers an analysis with, if it is loaded.
    pub(crate) fn swapper_answer(&self) -> Option<String> {
        let (status, body) = self.request(
            "POST",
            "/v1/analyze",
            Some(&serde_json::json!({ "text": "which version?", "kind": "swap" })),
        );
        assert_eq!(status, 200, "{body}");
        body["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["plugin"] == "swapper")
            .map(|f| f["label"].as_str().unwrap().to_string())
    }

    /// Waits until `swapper` answers `want` (`None`: is not loaded).
    pub(crate) fn wait_for_swapper(&self, want: Option<&str>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self.swapper_answer();
            if answer.as_deref() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "swapper still answers {answer:?}, not {want:?}; plugins: {}",
                self.request("GET", "/v1/plugins", None).1
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The status `GET /v1/plugins` gives the plugin file named `file`.
    pub(crate) fn status_of(&self, file: &str) -> Option<Value> {
        let (_, body) = self.request("GET", "/v1/plugins", None);
        body["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["source"].as_str().is_some_and(|s| s.ends_with(file)))
            .cloned()
    }

    /// Resident memory of the engine, in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit; returns whether it was clean and
    /// everything it printed afterwards.
    pub(crate) fn stop(mut self) -> (bool, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "assay up did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        (status.success(), format!("{rest}{stderr}"))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // A failed test must not leave the engine (and its server) running.
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command`, which must fail as a fatal error (exit code 1), and
/// returns what it said on standard error.
fn fails(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn analyze_in_a_working_directory_with_the_default_configuration() {
    let work = Workdir::new();
    crate::support::copy_dir(&workspace().join("examples"), &work.path().join("examples"));
    let out = work
        .assay()
        .args(["analyze", "examples/"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let table = text(&out.stdout);
    for plugin in ["redact", "keywords", "sentiment", "history"] {
        assert!(table.contains(plugin), "{plugin} missing from\n{table}");
    }
    assert!(stderr.contains("14 documents analysed"), "{stderr}");
    assert!(
        work.path()
            .join(".assay/postgres/pgdata/PG_VERSION")
            .exists(),
        "the embedded cluster lives under .assay/postgres"
    );
    assert!(work.plugins().is_dir(), "the plugin directory was created");
    assert!(!work.server_running(), "the server stops with the command");

    // The same again, from the same directory: the cluster is reused, the
    // plugins come from the compile cache, the documents are known.
    let out = work
        .assay()
        .args(["analyze", "examples/chats", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3);
    let out = work.assay().args(["plugins", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("history"));
    assert!(!work.server_running());
}

#[test]
fn hot_reload_in_the_default_plugin_directory() {
    let work = Workdir::new();
    let up = work.up();
    assert_eq!(up.swapper_answer(), None);
    let file = work.plugins().join("swapper.wasm");
    let (one, two) = (built_plugin("swap_one.wasm"), built_plugin("swap_two.wasm"));

    // Installed by copy (`cp swap_one.wasm .assay/plugins/swapper.wasm`).
    let staged = work.path().join("swap_one.wasm");
    std::fs::write(&staged, &one).unwrap();
    std::fs::copy(&staged, &file).unwrap();
    up.wait_for_swapper(Some("swap:v1"));

    // Replaced by rename, as deploy tools and many editors save.
    let tmp = work.plugins().join(".swapper.wasm.new");
    std::fs::write(&tmp, &two).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    up.wait_for_swapper(Some("swap:v2"));

    // Replaced in place, truncate-and-write, in two pieces.
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file)
            .unwrap();
        f.write_all(&one[..one.len() / 2]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        f.write_all(&one[one.len() / 2..]).unwrap();
    }
    up.wait_for_swapper(Some("swap:v1"));
    let status = up.status_of("swapper.wasm").unwrap();
    assert_eq!(status["status"], "active", "{status}");
    let loaded_at = status["loaded_at"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(loaded_at).is_ok(),
        "loaded_at is RFC 3339: {loaded_at}"
    );

    // The commands of the README, from the same directory while it serves.
    let out = work
        .assay()
        .args(["plugins", "history", "swapper"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let history = text(&out.stdout);
    assert!(
        history.contains("1.0.0") && history.contains("2.0.0"),
        "{history}"
    );

    // Removed: unloaded.
    std::fs::remove_file(&file).unwrap();
    up.wait_for_swapper(None);

    // Rolled back from the kept bytes, with the relative plugin directory.
    let out = work
        .assay()
        .args(["plugins", "rollback", "swapper"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(file.is_file(), "rollback writes into .assay/plugins");
    up.wait_for_swapper(Some("swap:v2"));

    let (clean, said) = up.stop();
    assert!(clean, "{said}");
    assert!(said.contains("assay stopped"), "{said}");
    assert!(
        !work.server_running(),
        "the embedded server stopped with it"
    );
}

#[test]
fn hostile_files_in_the_plugin_directory_delay_nothing() {
    let work = Workdir::new();
    let plugins = work.plugins();
    std::fs::create_dir_all(&plugins).unwrap();
    let fifo = plugins.join("fifo.wasm");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    std::os::unix::fs::symlink(&fifo, plugins.join("to-fifo.wasm")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", plugins.join("zero.wasm")).unwrap();
    std::os::unix::fs::symlink(work.path().join("nowhere"), plugins.join("dangling.wasm")).unwrap();
    std::fs::create_dir(plugins.join("folder.wasm")).unwrap();
    let sparse = std::fs::File::create(plugins.join("sparse.wasm")).unwrap();
    sparse.set_len(8 << 30).unwrap();
    drop(sparse);

    // All of it is there at start-up: the engine starts, and refuses each.
    let up = work.up();
    for (file, words) in [
        ("fifo.wasm", "a FIFO"),
        ("to-fifo.wasm", "a FIFO"),
        ("zero.wasm", "a character device"),
        ("folder.wasm", "a directory"),
        ("sparse.wasm", "plugins.max_component_bytes"),
    ] {
        let status = up
            .status_of(file)
            .unwrap_or_else(|| panic!("{file} is not listed"));
        assert_eq!(status["status"], "refused", "{status}");
        assert!(
            status["last_error"].as_str().unwrap().contains(words),
            "{file}: {status}"
        );
    }

    // And a real plugin dropped in beside them loads.
    std::fs::write(plugins.join("swapper.wasm"), built_plugin("swap_one.wasm")).unwrap();
    up.wait_for_swapper(Some("swap:v1"));

    // The same files arriving while it runs: refused as they come.
    let late = plugins.join("late-fifo.wasm");
    nix::unistd::mkfifo(&late, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", plugins.join("late-zero.wasm")).unwrap();
    std::fs::write(plugins.join("swapper.wasm"), built_plugin("swap_two.wasm")).unwrap();
    up.wait_for_swapper(Some("swap:v2"));
    let late_status = up.status_of("late-fifo.wasm").unwrap();
    assert_eq!(late_status["status"], "refused", "{late_status}");
    assert!(
        up.rss_kib() < 1024 * 1024,
        "the engine read what it should not have: {} KiB resident",
        up.rss_kib()
    );

    let (clean, said) = up.stop();
    assert!(clean, "{said}");
    assert!(
        !work.server_running(),
        "the embedded server stopped with it"
    );
}

#[test]
fn configuration_is_read_only_from_the_working_directory() {
    let parent = Workdir::new();
    // Whoever can write a parent directory must not configure the engine.
    std::fs::write(
        parent.path().join("assay.toml"),
        "[sandbox]\nstatement_gate = false\nthis_key_is_wrong = 1\n",
    )
    .unwrap();
    let below = parent.path().join("project");
    std::fs::create_dir(&below).unwrap();
    let stderr = fails(
        parent
            .assay()
            .current_dir(&below)
            .args(["analyze", "missing.txt"]),
    );
    assert!(
        stderr.contains("no documents to analyse"),
        "the parent's assay.toml was read: {stderr}"
    );
    assert!(!stderr.contains("invalid configuration"), "{stderr}");
}

#[test]
fn endless_and_huge_inputs_are_refused_unread() {
    let work = Workdir::new();
    // A device that never ends, given by path.
    let stderr = fails(work.assay().args(["analyze", "/dev/zero"]));
    assert!(stderr.contains("/dev/zero"), "{stderr}");
    assert!(stderr.contains("16777216 bytes"), "{stderr}");

    // Standard input past the limit, in a stream that never ends.
    let mut child = work
        .assay()
        .args(["analyze", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        // Until the reader stops reading (a broken pipe ends it).
        for _ in 0..1024 {
            if stdin.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("-: is larger than"), "{stderr}");
    assert!(feeder.join().unwrap(), "assay read the whole gigabyte");
}

/// A start-up warning (here: an engine role that is not a superuser, so
/// plpgsql and pg_trgm need one) is said once on the terminal, with its
/// statement, not once as a log line and again as a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_warning_is_said_once() {
    let db = assay_testing::fresh_database_with_unprivileged_owner().await;
    let work = Workdir::new();
    let out = tokio::task::spawn_blocking(move || {
        work.assay()
            .env("DATABASE_URL", &db.url)
            .args(["plugins", "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for warning in ["LANGUAGE plpgsql", "pg_trgm's functions"] {
        assert_eq!(stderr.matches(warning).count(), 1, "said once: {stderr}");
    }
}

#[test]
fn a_wrong_configuration_value_is_named_once_with_its_key_and_source() {
    let work = Workdir::new();
    std::fs::write(
        work.path().join("assay.toml"),
        "[limits]\nreuse_instances = \"sometimes\"\n",
    )
    .unwrap();
    let stderr = fails(work.assay().args(["analyze", "missing.txt"]));
    assert!(
        stderr.contains("invalid configuration")
            && stderr.contains("reuse_instances")
            && stderr.contains("assay.toml"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("expected a boolean").count(),
        1,
        "said once: {stderr}"
    );

    std::fs::remove_file(work.path().join("assay.toml")).unwrap();
    let stderr = fails(
        work.assay()
            .env("ASSAY__SANDBOX__SHARED_READS", "maybe")
            .args(["analyze", "missing.txt"]),
    );
    assert_eq!(
        stderr.matches("SHARED_READS").count(),
        1,
        "said once: {stderr}"
    );
}

#[test]
fn an_embedded_server_that_cannot_start_is_named_once() {
    let work = Workdir::new();
    // Where the embedded server's directory belongs, a file.
    std::fs::create_dir(work.path().join(".assay")).unwrap();
    std::fs::write(work.path().join(".assay").join("postgres"), "").unwrap();
    let doc = work.path().join("doc.txt");
    std::fs::write(&doc, "hello").unwrap();
    let stderr = fails(work.assay().arg("analyze").arg(&doc));
    assert!(
        stderr.contains("cannot start the embedded PostgreSQL"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("File exists").count(),
        1,
        "said once: {stderr}"
    );
}

/// Runs `command` to its end within `limit`, killing it and failing the
/// test if it takes longer (an open that blocks, a read that never ends).
fn within(limit: Duration, command: &mut Command) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_configuration_file_that_never_ends_is_refused_unread() {
    let work = Workdir::new();
    let fifo = work.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let huge = work.path().join("huge.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    for (path, what) in [
        ("/dev/zero", "character device"),
        ("fifo.toml", "FIFO"),
        ("huge.toml", "bytes"),
    ] {
        // Through the option and through the environment alike.
        let mut by_option = work.assay();
        by_option.args(["--config", path, "plugins", "list"]);
        let mut by_environment = work.assay();
        by_environment
            .env("ASSAY_CONFIG", path)
            .args(["plugins", "list"]);
        for command in [&mut by_option, &mut by_environment] {
            let out = within(Duration::from_secs(20), command);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{path}: {stderr}");
            assert!(
                stderr.contains(path) && stderr.contains(what),
                "{path}: {stderr}"
            );
        }
    }
}

#[test]
fn a_password_in_a_key_value_database_url_is_never_printed() {
    let work = Workdir::new();
    for url in [
        "host=127.0.0.1 port=1 user=u password=S3cretPW dbname=x",
        "host=127.0.0.1 port=1 password = 'S3cret PW' dbname=x",
        "host=127.0.0.1 port=1 password=S3cretPW bogus",
        "host=127.0.0.1 port=1 password='S3cretPW unterminated",
        "postgres://u@127.0.0.1:1/x?password=S3cretPW&sslmode=disable",
    ] {
        let stderr = fails(
            work.assay()
                .env("DATABASE_URL", url)
                .args(["plugins", "list"]),
        );
        assert!(!stderr.contains("S3cret"), "{url}: {stderr}");
        assert!(stderr.contains("127.0.0.1"), "{url}: {stderr}");
    }
}

#[test]
fn a_setting_that_means_nothing_at_zero_is_refused_by_name() {
    let work = Workdir::new();
    for (file, key) in [
        ("[limits]\ncall_timeout_ms = 0\n", "call_timeout_ms"),
        ("[limits.plugins.history]\nmemory_mib = 0\n", "memory_mib"),
        ("[pipeline]\nconcurrency = 0\n", "concurrency"),
    ] {
        std::fs::write(work.path().join("assay.toml"), file).unwrap();
        let stderr = fails(work.assay().args(["analyze", "missing.txt"]));
        assert!(
            stderr.contains(key) && stderr.contains("above 0") && stderr.contains("assay.toml"),
            "{file}: {stderr}"
        );
    }
    std::fs::remove_file(work.path().join("assay.toml")).unwrap();
    let stderr = fails(
        work.assay()
            .env("ASSAY__DATABASE__POOL_SIZE", "0")
            .args(["analyze", "missing.txt"]),
    );
    assert!(
        stderr.contains("POOL_SIZE") && stderr.contains("above 0"),
        "{stderr}"
    );
}

/// The plugin directory moved away (a deploy swapping directories, a
/// mistake): its plugins keep serving, as the log says, until it is back.
#[test]
fn plugins_keep_serving_while_their_directory_is_moved_away() {
    let work = Workdir::new();
    let up = work.up();
    std::fs::write(
        work.plugins().join("swapper.wasm"),
        built_plugin("swap_one.wasm"),
    )
    .unwrap();
    up.wait_for_swapper(Some("swap:v1"));

    let away = work.path().join(".assay/plugins.old");
    std::fs::rename(work.plugins(), &away).unwrap();
    // Longer than the debounce and the directory check: what the events
    // and the guard do, they have done by now.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(up.swapper_answer().as_deref(), Some("swap:v1"));
    let status = up.status_of("swapper.wasm").unwrap();
    assert_eq!(status["status"], "active", "{status}");

    std::fs::rename(&away, work.plugins()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.swapper_answer().as_deref(), Some("swap:v1"));
    // And hot reload goes on in it.
    std::fs::write(
        work.plugins().join("swapper.wasm"),
        built_plugin("swap_two.wasm"),
    )
    .unwrap();
    up.wait_for_swapper(Some("swap:v2"));
    let (clean, said) = up.stop();
    assert!(clean, "{said}");
}

#[test]
fn logs_written_to_a_pipe_or_file_are_plain_text() {
    let work = Workdir::new();
    let out = work
        .assay()
        .env_remove("NO_COLOR")
        .args(["-v", "plugins", "list"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("INFO"), "some log was written: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes: {stderr:?}");
}

/// `assay analyze --json … | head -1`: the reader leaves after one line; the
/// command still finishes (its runs stored, its server stopped), no panic.
#[test]
fn output_to_a_reader_that_leaves_early_ends_quietly() {
    let work = Workdir::new();
    let mut child = work
        .assay()
        .args(["analyze", "--json"])
        .arg(workspace().join("examples"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    // The pipe's reading end is closed here, as `head` exits.
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!work.server_running(), "the embedded server stopped");
    // Every document was still analysed and stored.
    let out = work.assay().args(["findings", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!out.stdout.is_empty());
}

#[test]
fn memory_past_what_webassembly_addresses_is_refused_by_name() {
    let work = Workdir::new();
    for file in [
        "[limits]\nmemory_mib = 99999999\n",
        "[limits.plugins.history]\nmemory_mib = 4097\n",
    ] {
        std::fs::write(work.path().join("assay.toml"), file).unwrap();
        let stderr = fails(work.assay().args(["analyze", "missing.txt"]));
        assert!(
            stderr.contains("memory_mib") && stderr.contains("at most 4096"),
            "{file}: {stderr}"
        );
    }
}

/// `assay bench query` as the README runs it (the embedded server, the
/// default configuration), stopped with Ctrl-C: it says so, and stops the
/// server it started rather than leaving it running.
#[test]
fn an_interrupted_bench_stops_the_embedded_server() {
    let work = Workdir::new();
    let child = work
        .assay()
        .args(["bench", "query", "--concurrency", "1", "--duration", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !work.server_running() {
        assert!(started.elapsed() < PATIENCE, "the server never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Into seeding or measuring: either way it must stop and clean up.
    std::thread::sleep(Duration::from_secs(3));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !work.server_running(),
        "the embedded server was left running"
    );
}
