//! A private PostgreSQL server run from the system's binaries: the default when no
//! database URL is configured.
//!
//! Layout of the configured directory (default `.assay/postgres/`):
//!
//! ```text
//! pgdata/        the cluster (initdb'd once, reused); owned by `postgres` when assay runs as root
//! password       the generated password of the `assay` superuser (mode 0600)
//! control.lock   held exclusively while a process starts or stops the server
//! users.lock     held shared by every process using the server
//! ```
//!
//! Several `assay` processes may share one directory: the first one in starts the
//! server, later ones reuse it, and the last one out stops it. The two lock files
//! make those decisions race-free; `flock` locks vanish with a crashed process, so a
//! crash never wedges the next start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::Rng as _;
use rand::distr::Alphanumeric;

use crate::config::EmbeddedConfig;

/// The superuser `initdb` creates, and the database assay keeps its data in.
pub const SUPERUSER: &str = "assay";
/// Database created in the embedded cluster for assay's data.
pub const DATABASE: &str = "assay";

/// Why the embedded server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No directory with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "no PostgreSQL server binaries found (looked in: {searched}). Install the server, \
         e.g. `apt-get install postgresql` (Debian/Ubuntu) or `dnf install postgresql-server` \
         (Fedora), set `database.embedded.bin_dir` to the directory holding `initdb` and \
         `pg_ctl`, or set DATABASE_URL to use an existing server"
    )]
    BinariesNotFound {
        /// Every place looked at, for the message.
        searched: String,
    },
    /// Running as root, but there is no unprivileged user to run PostgreSQL as.
    #[error(
        "assay runs as root, and PostgreSQL refuses to; it runs the embedded server as the \
         `postgres` user, which does not exist here. Create it (`useradd --system postgres`) \
         or run assay as an ordinary user"
    )]
    NoPostgresUser,
    /// The `postgres` user cannot reach the data directory.
    #[error(
        "the `postgres` user cannot enter {dir} (needed to run the embedded server as root); \
         make it traversable (`chmod o+x {dir}`) or set `database.embedded.data_dir` to a \
         directory outside it"
    )]
    NotTraversable {
        /// The first ancestor that blocks the way.
        dir: String,
    },
    /// A file-system operation on the data directory failed.
    #[error("{what} {path}: {cause}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The underlying error.
        cause: io::Error,
    },
    /// A PostgreSQL program failed.
    #[error("{program} failed: {message}")]
    Command {
        /// `initdb`, `pg_ctl start`, …
        program: String,
        /// Its own words (stderr, or the tail of the server log).
        message: String,
    },
    /// `pgdata/` exists but is not a cluster.
    #[error(
        "{path} exists but is not a PostgreSQL data directory (no PG_VERSION); move it away \
         or point `database.embedded.data_dir` elsewhere"
    )]
    NotACluster {
        /// The directory.
        path: String,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> EmbeddedError + 'a {
    move |cause| EmbeddedError::Io {
        what,
        path: path.display().to_string(),
        cause,
    }
}

/// A running embedded server, shared with any other assay process using the same
/// directory. Dropping it (or [`EmbeddedPostgres::stop`]) stops the server if no other
/// process still uses it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    root: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    password: String,
    run_as: Option<RunAs>,
    /// Our shared lock on `users.lock`; `None` once stopped.
    users_lock: Option<File>,
}

/// The unprivileged user PostgreSQL runs as when assay is root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Starts (or joins) the server for `config.data_dir`. Blocking: call it from
    /// `spawn_blocking` in async code. The first start runs `initdb`, which takes a few seconds.
    pub fn start(config: &EmbeddedConfig) -> Result<Self, EmbeddedError> {
        let bin_dir = find_binaries(config.bin_dir.as_deref())?;
        let run_as = run_as_for_current_user()?;
        let root = absolute(&config.data_dir)?;
        fs::create_dir_all(&root).map_err(io_err("cannot create", &root))?;
        if let Some(run_as) = run_as {
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
                .map_err(io_err("cannot set permissions of", &root))?;
            check_traversable(&root, run_as)?;
        }

        let control = lock_file(&root.join("control.lock"))?;
        control
            .lock()
            .map_err(io_err("cannot lock", &root.join("control.lock")))?;

        let pgdata = root.join("pgdata");
        let password = if pgdata.join("PG_VERSION").exists() {
            read_password(&root)?
        } else {
            if pgdata.exists() {
                return Err(EmbeddedError::NotACluster {
                    path: pgdata.display().to_string(),
                });
            }
            init_cluster(&bin_dir, &root, run_as)?
        };

        let port = match running_port(&bin_dir, &pgdata, run_as)? {
            Some(port) => port,
            None => start_server(&bin_dir, &pgdata, run_as, None)?,
        };

        let users_path = root.join("users.lock");
        let users_lock = lock_file(&users_path)?;
        users_lock
            .lock_shared()
            .map_err(io_err("cannot lock", &users_path))?;
        drop(control);

        Ok(Self {
            root,
            bin_dir,
            port,
            password,
            run_as,
            users_lock: Some(users_lock),
        })
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password of the [`SUPERUSER`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The directory holding the cluster, locks and password.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Connection settings for `database` on this server.
    pub fn pg_config(&self, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .password(&self.password)
            .dbname(database)
            .application_name("assay");
        config
    }

    /// Starts the server again, on the same port, if it is no longer running
    /// (it crashed, or someone stopped it) while this process still uses it.
    /// Returns whether it had to. Blocking.
    pub fn revive(&self) -> Result<bool, EmbeddedError> {
        if self.users_lock.is_none() {
            return Ok(false);
        }
        let control = lock_file(&self.root.join("control.lock"))?;
        control
            .lock()
            .map_err(io_err("cannot lock", &self.root.join("control.lock")))?;
        let pgdata = self.root.join("pgdata");
        if running_port(&self.bin_dir, &pgdata, self.run_as)?.is_some() {
            return Ok(false);
        }
        start_server(&self.bin_dir, &pgdata, self.run_as, Some(self.port))?;
        Ok(true)
    }

    /// Leaves the server; stops it if this was the last process using it.
    pub fn stop(mut self) -> Result<(), EmbeddedError> {
        self.leave()
    }

    fn leave(&mut self) -> Result<(), EmbeddedError> {
        let Some(ours) = self.users_lock.take() else {
            return Ok(());
        };
        let control = lock_file(&self.root.join("control.lock"))?;
        control
            .lock()
            .map_err(io_err("cannot lock", &self.root.join("control.lock")))?;
        drop(ours);
        let users_path = self.root.join("users.lock");
        let users = lock_file(&users_path)?;
        match users.try_lock() {
            Ok(()) => {
                let pgdata = self.root.join("pgdata");
                let out = pg_command(&self.bin_dir, "pg_ctl", self.run_as)
                    .arg("stop")
                    .arg("-D")
                    .arg(&pgdata)
                    .args(["-m", "fast", "-w", "-t", "60"])
                    .output()
                    .map_err(io_err("cannot run pg_ctl in", &self.bin_dir))?;
                check_output("pg_ctl stop", &out)?;
            }
            // Another assay process still uses the server; the last one stops it.
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(io_err("cannot lock", &users_path)(e)),
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.leave() {
            tracing::warn!(error = %e, "could not stop the embedded PostgreSQL server");
        }
    }
}

/// Finds a directory with the server binaries.
pub fn find_binaries(configured: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    let mut searched = Vec::new();
    let has_server = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = configured {
        if has_server(dir) {
            return Ok(dir.to_path_buf());
        }
        searched.push(dir.display().to_string());
        return Err(EmbeddedError::BinariesNotFound {
            searched: searched.join(", "),
        });
    }
    let mut candidates = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    // Debian/Ubuntu install each major version side by side; prefer the newest.
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    candidates.extend(versioned.into_iter().map(|(_, dir)| dir));
    candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    for dir in candidates {
        if has_server(&dir) {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }
    Err(EmbeddedError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

fn run_as_for_current_user() -> Result<Option<RunAs>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })),
        _ => Err(EmbeddedError::NoPostgresUser),
    }
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(io_err("cannot resolve", path))
}

/// PostgreSQL run as `postgres` must be able to walk down to its data directory.
fn check_traversable(dir: &Path, run_as: RunAs) -> Result<(), EmbeddedError> {
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor).map_err(io_err("cannot inspect", ancestor))?;
        let mode = meta.mode();
        let ok = if meta.uid() == run_as.uid {
            mode & 0o100 != 0
        } else if meta.gid() == run_as.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(EmbeddedError::NotTraversable {
                dir: ancestor.display().to_string(),
            });
        }
    }
    Ok(())
}

fn lock_file(path: &Path) -> Result<File, EmbeddedError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("cannot open", path))
}

fn pg_command(bin_dir: &Path, program: &str, run_as: Option<RunAs>) -> Command {
    let mut cmd = Command::new(bin_dir.join(program));
    // A predictable environment: no locale surprises, no inherited PG* settings.
    cmd.env("LC_ALL", "C")
        .env_remove("PGDATA")
        .env_remove("PGPORT");
    if let Some(RunAs { uid, gid }) = run_as {
        cmd.uid(uid).gid(gid);
        // The postgres user has no business in root's current directory.
        cmd.current_dir("/");
    }
    cmd
}

fn check_output(program: &str, out: &Output) -> Result<(), EmbeddedError> {
    if out.status.success() {
        return Ok(());
    }
    let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if message.is_empty() {
        message = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(EmbeddedError::Command {
        program: program.to_string(),
        message,
    })
}

fn chown(path: &Path, run_as: Option<RunAs>) -> Result<(), EmbeddedError> {
    if let Some(RunAs { uid, gid }) = run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(io_err("cannot chown", path))?;
    }
    Ok(())
}

/// Runs `initdb` into a scratch directory and renames it into place, so an
/// interrupted initdb never leaves a half-made cluster where a later start looks.
fn init_cluster(
    bin_dir: &Path,
    root: &Path,
    run_as: Option<RunAs>,
) -> Result<String, EmbeddedError> {
    let password: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let scratch = root.join(format!("pgdata.init-{}", std::process::id()));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(io_err("cannot remove", &scratch))?;
    }
    fs::create_dir(&scratch).map_err(io_err("cannot create", &scratch))?;
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700))
        .map_err(io_err("cannot set permissions of", &scratch))?;
    chown(&scratch, run_as)?;

    let pwfile = root.join(format!("initdb-pw-{}", std::process::id()));
    {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&pwfile)
            .map_err(io_err("cannot write", &pwfile))?;
        f.write_all(password.as_bytes())
            .map_err(io_err("cannot write", &pwfile))?;
    }
    chown(&pwfile, run_as)?;
    let out = pg_command(bin_dir, "initdb", run_as)
        .arg("-D")
        .arg(&scratch)
        .args([
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ])
        .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output();
    let _ = fs::remove_file(&pwfile);
    let out = out.map_err(io_err("cannot run initdb in", bin_dir))?;
    check_output("initdb", &out)?;

    // Loopback only, no Unix socket (its default directory may not exist or be
    // writable), and room for per-plugin pools.
    let conf = scratch.join("postgresql.conf");
    let mut f = OpenOptions::new()
        .append(true)
        .open(&conf)
        .map_err(io_err("cannot write", &conf))?;
    f.write_all(
        b"\n# assay embedded server\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 200\n",
    )
    .map_err(io_err("cannot write", &conf))?;

    let password_path = root.join("password");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&password_path)
        .map_err(io_err("cannot write", &password_path))?;
    f.write_all(password.as_bytes())
        .map_err(io_err("cannot write", &password_path))?;
    f.sync_all()
        .map_err(io_err("cannot write", &password_path))?;

    let pgdata = root.join("pgdata");
    fs::rename(&scratch, &pgdata).map_err(io_err("cannot rename into place", &pgdata))?;
    Ok(password)
}

fn read_password(root: &Path) -> Result<String, EmbeddedError> {
    let path = root.join("password");
    let text = fs::read_to_string(&path).map_err(io_err("cannot read", &path))?;
    Ok(text.trim().to_string())
}

/// The port of a server already running on `pgdata`, if any.
fn running_port(
    bin_dir: &Path,
    pgdata: &Path,
    run_as: Option<RunAs>,
) -> Result<Option<u16>, EmbeddedError> {
    let out = pg_command(bin_dir, "pg_ctl", run_as)
        .arg("status")
        .arg("-D")
        .arg(pgdata)
        .output()
        .map_err(io_err("cannot run pg_ctl in", bin_dir))?;
    if !out.status.success() {
        return Ok(None);
    }
    // postmaster.pid: line 4 is the port.
    let pid_file = pgdata.join("postmaster.pid");
    let text = fs::read_to_string(&pid_file).map_err(io_err("cannot read", &pid_file))?;
    Ok(text.lines().nth(3).and_then(|l| l.trim().parse().ok()))
}

fn free_port() -> Result<u16, EmbeddedError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err(
        "cannot bind a loopback port",
        Path::new("127.0.0.1"),
    ))?;
    listener.local_addr().map(|a| a.port()).map_err(io_err(
        "cannot bind a loopback port",
        Path::new("127.0.0.1"),
    ))
}

/// Starts the server on `port`, or on a free port (trying a few) when `None`.
fn start_server(
    bin_dir: &Path,
    pgdata: &Path,
    run_as: Option<RunAs>,
    port: Option<u16>,
) -> Result<u16, EmbeddedError> {
    let log = pgdata.join("assay-server.log");
    let mut last_error = None;
    // A free port may be taken before the server binds it; retry with another.
    let attempts = if port.is_some() { 1 } else { 3 };
    for _ in 0..attempts {
        let port = match port {
            Some(port) => port,
            None => free_port()?,
        };
        let out = pg_command(bin_dir, "pg_ctl", run_as)
            .arg("start")
            .arg("-D")
            .arg(pgdata)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {port}"))
            .output()
            .map_err(io_err("cannot run pg_ctl in", bin_dir))?;
        match check_output("pg_ctl start", &out) {
            Ok(()) => return Ok(port),
            Err(EmbeddedError::Command { program, message }) => {
                let tail = fs::read_to_string(&log)
                    .map(|t| {
                        t.lines()
                            .rev()
                            .take(5)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                last_error = Some(EmbeddedError::Command {
                    program,
                    message: format!("{message}\nserver log ({}):\n{tail}", log.display()),
                });
            }
            Err(other) => return Err(other),
        }
    }
    Err(last_error.unwrap_or(EmbeddedError::Command {
        program: "pg_ctl start".into(),
        message: "no attempt made".into(),
    }))
}
