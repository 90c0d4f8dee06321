//! `assay bench query|pipeline`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use assay::bench::pipeline::{PipelineReport, PipelineSettings};
use assay::bench::query::{
    LevelReport, PathReport, QueryReport, QuerySettings, WORKLOADS, Workload,
};
use assay::bench::{Latency, Span};
use assay::config::Config;
use assay::db::Database;
use comfy_table::{ContentArrangement, Table, presets};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Outcome;

/// Sub-commands of `assay bench`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// A parameterized query through the bundled bench-query plugin and straight
    /// through tokio-postgres, side by side, at each concurrency level.
    Query(QueryArgs),
    /// Documents per second through the whole pipeline, stored.
    Pipeline(PipelineArgs),
}

/// Arguments of `assay bench query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Concurrency levels: concurrent workers (1 to 4096), one run per level.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_CONCURRENCY))]
    pub concurrency: Vec<usize>,
    /// Time per run (per level and path): seconds (`5`, `2.5`) or with a
    /// unit (`5s`, `500ms`, `1m`); at most a day.
    #[arg(long, default_value = "10", value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Duration,
    /// Requests per run instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Rows to seed into the benchmark table.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,
    /// What each request runs; repeat it to measure several in one command.
    /// A workload's name — `point` (a point SELECT), `join` (a small join),
    /// `update` (an UPDATE by key), `read-write` (a read, then an update, in
    /// one call) — or `all` for each of them, or a statement of your own:
    /// `{table}` is the seeded table (id bigint primary key, payload text,
    /// grp int, hits bigint), `{groups}` the 100 groups (id int primary key,
    /// name text); `$1` is a random key in 1..=rows.
    #[arg(long, default_value = "point")]
    pub query: Vec<String>,
    /// Connections in each path's pool [default: sandbox.connections_per_plugin].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_size: Option<u32>,
    /// Untimed requests per worker before each run.
    #[arg(long, default_value_t = 20)]
    pub warmup: u32,
    /// Rounds each level's time (or requests) is cut into, the paths taking
    /// turns, so that a machine that slows down or speeds up meanwhile
    /// affects every path alike.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Also measure the plugin path with instance reuse on
    /// (`limits.reuse_instances`: a call may run in the instance an earlier
    /// call left), beside the default of a fresh instance per call.
    #[arg(long)]
    pub reuse_instances: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The longest `--duration`: a run of a level and path longer than a day is
/// a typing mistake (`1e12` would be 31,000 years).
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The most concurrent workers a level of `assay bench query` takes: each
/// needs an instance slot reserved up front, and past a few thousand the
/// reservation is more address space than a machine has.
const MAX_CONCURRENCY: u64 = 4096;

/// The most documents `assay bench pipeline --count` takes: each keeps a
/// latency sample until the end, and a count past this is a typing mistake
/// (at the rates measured here it would run for days).
const MAX_PIPELINE_COUNT: u64 = 10_000_000;

/// Arguments of `assay bench pipeline`.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// Documents: files or directories, as `assay analyze` takes them.
    #[arg(default_value = "examples")]
    pub corpus: Vec<PathBuf>,
    /// Documents to analyse: the corpus repeated to this many.
    #[arg(long, default_value_t = 200,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_PIPELINE_COUNT))]
    pub count: usize,
    /// Documents in flight at once [default: pipeline.concurrency].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub concurrency: Option<usize>,
    /// Keep the stored documents and runs (deleted afterwards by default).
    #[arg(long)]
    pub keep: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub async fn run(config: &Config, command: BenchCommand) -> anyhow::Result<Outcome> {
    match command {
        BenchCommand::Query(args) => query(config, args).await,
        BenchCommand::Pipeline(args) => pipeline(config, args).await,
    }
}

/// A progress indicator on standard error; hidden for JSON output (and by
/// indicatif itself when standard error is not a terminal).
fn progress(hidden: bool, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    };
    if hidden {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    let template = if total.is_some() {
        "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec})"
    } else {
        "{spinner} {msg} {pos} requests ({per_sec})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A benchmark's duration: plain seconds, or a number with a unit
/// (`500ms`, `5s`, `1m`); never zero, never negative, at most a day.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => {
            Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())?
        }
        Ok(_) => return Err(format!("{text:?} is not a positive number of seconds")),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            format!("{text:?} is not a duration ({e}); give seconds (5, 2.5) or a unit (5s, 500ms)")
        })?,
    };
    if duration.is_zero() {
        return Err(format!(
            "{text:?} is no time at all; give a positive duration"
        ));
    }
    if duration > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than a day, the most one run may take; give a shorter duration"
        ));
    }
    Ok(duration)
}

async fn query(config: &Config, args: QueryArgs) -> anyhow::Result<Outcome> {
    let span = match args.requests {
        Some(n) => Span::Requests(n),
        None => Span::Duration(args.duration),
    };
    let settings = QuerySettings {
        levels: args.concurrency.clone(),
        span,
        rows: args.rows,
        workloads: args.query.iter().flat_map(|q| Workload::parse(q)).collect(),
        pool_size: args
            .pool_size
            .unwrap_or(config.sandbox.connections_per_plugin)
            .max(1),
        warmup_per_worker: args.warmup,
        reuse_instances: args.reuse_instances,
        rounds: args.rounds,
    };
    let total = match span {
        Span::Requests(n) => {
            let paths = if settings.reuse_instances { 3 } else { 2 };
            Some(n * paths * (settings.levels.len() * settings.workloads.len()) as u64)
        }
        Span::Duration(_) => None,
    };
    // Ctrl-C or SIGTERM, listened for from the first select on: the
    // benchmark then stops, cleans up and stops the embedded server.
    let interrupted = assay::service::shutdown_signal();
    tokio::pin!(interrupted);
    let db = tokio::select! {
        db = Database::open(&config.database) => Arc::new(db.context("opening the database")?),
        () = &mut interrupted => anyhow::bail!("interrupted while opening the database; nothing was measured"),
    };
    let bar = progress(args.json, total);
    bar.set_message(format!(
        "bench query, levels {:?}, the paths taking turns in {} rounds",
        settings.levels, settings.rounds
    ));
    let report = assay::bench::query::run(&db, config, &settings, &bar, interrupted.as_mut()).await;
    bar.finish_and_clear();
    close(db).await?;
    let report = report?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_query(&report);
    }
    let errors: u64 = report
        .queries
        .iter()
        .flat_map(|q| &q.levels)
        .flat_map(|l| paths_of(l).map(|(_, r, _)| r.errors))
        .sum();
    if errors > 0 {
        eprintln!("warning: {errors} requests failed");
        for query in &report.queries {
            for level in &query.levels {
                for (path, r, _) in paths_of(level) {
                    if let Some(e) = &r.first_error {
                        eprintln!(
                            "  {} at concurrency {} {path}: {e}",
                            query.name, level.concurrency
                        );
                    }
                }
            }
        }
        return Ok(Outcome::Partial);
    }
    Ok(Outcome::Success)
}

async fn close(db: Arc<Database>) -> anyhow::Result<()> {
    match Arc::try_unwrap(db) {
        Ok(db) => db.close().await.context("closing the database"),
        // Still shared by pools being torn down; the last handle closes it.
        Err(_) => Ok(()),
    }
}

fn ms(value: f64) -> String {
    format!("{value:.3}")
}

fn latency_cells(latency: &Latency) -> [String; 3] {
    [ms(latency.p50_ms), ms(latency.p95_ms), ms(latency.p99_ms)]
}

/// The paths measured at one level, in the order they ran: name, figures,
/// and the ratio to native (none for native itself).
fn paths_of(level: &LevelReport) -> impl Iterator<Item = (&'static str, &PathReport, Option<f64>)> {
    [
        Some(("plugin", &level.plugin, Some(level.ratio))),
        level
            .reused
            .as_ref()
            .map(|r| ("plugin, reused", r, level.reused_ratio)),
        Some(("native", &level.native, None)),
    ]
    .into_iter()
    .flatten()
}

/// A table in the style every `assay bench` table has, with `header`.
fn table_with_header(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

fn print_query(report: &QueryReport) {
    let mut table = table_with_header(&[
        "query",
        "concurrency",
        "path",
        "requests/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "pool wait ms",
        "errors",
        "plugin/native",
    ]);
    for query in &report.queries {
        for level in &query.levels {
            for (path, r, ratio) in paths_of(level) {
                let [p50, p95, p99] = latency_cells(&r.latency);
                table.add_row([
                    query.name.clone(),
                    level.concurrency.to_string(),
                    path.to_string(),
                    format!("{:.0}", r.throughput_per_s),
                    p50,
                    p95,
                    p99,
                    ms(r.pool_wait_ms_mean),
                    r.errors.to_string(),
                    ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
                ]);
            }
        }
    }
    outln!("{table}");
    print_steps(report);
    let span = match (report.duration_s, report.requests_per_run) {
        (Some(s), _) => format!("{s} s per run"),
        (_, Some(n)) => format!("{n} requests per run"),
        _ => String::new(),
    };
    outln!("server: {}", report.server);
    for query in &report.queries {
        let about = WORKLOADS
            .iter()
            .find(|(name, _, _)| *name == query.name)
            .map_or("a statement of your own", |(_, about, _)| about);
        outln!(
            "{} ({about}): {}",
            query.name,
            query.statements.join("; then ")
        );
    }
    outln!(
        "key: random in 1..={}, the same keys for every path\npool: {} connections per path; {span}, in {} rounds the paths take turns at; {} untimed requests per worker first",
        report.rows,
        report.pool_size,
        report.rounds,
        report.warmup_per_worker
    );
    outln!(
        "plugin: each request is one call — a fresh instance, the call's session (reads before its first write on their own, the rest in one transaction); no document or finding is stored."
    );
    let reused = report
        .queries
        .iter()
        .flat_map(|q| &q.levels)
        .any(|l| l.reused.is_some());
    if reused {
        outln!(
            "plugin, reused (--reuse-instances): the same, in an instance an earlier call left when one is waiting (limits.reuse_instances)."
        );
    }
    outln!(
        "native: the statements prepared once per connection, run with tokio-postgres one after the other, each in its own implicit transaction."
    );
}

/// Where the plugin paths' mean call spent its time, step by step.
fn print_steps(report: &QueryReport) {
    let mut table = table_with_header(&[
        "query",
        "concurrency",
        "path",
        "call µs",
        "instantiate",
        "in plugin",
        "gate",
        "connection wait",
        "on server (trips)",
        "host, rest",
        "ending (trips)",
        "other",
    ]);
    let us = |v: f64| format!("{v:.1}");
    let mut any = false;
    for query in &report.queries {
        for level in &query.levels {
            for (path, r, _) in paths_of(level) {
                let Some(s) = &r.steps else { continue };
                any = true;
                table.add_row([
                    query.name.clone(),
                    level.concurrency.to_string(),
                    path.to_string(),
                    us(s.total_us),
                    us(s.instantiate_us),
                    us(s.in_plugin_us),
                    us(s.checking_us),
                    us(s.waiting_us),
                    format!("{} ({:.2})", us(s.on_server_us), s.round_trips),
                    us(s.in_host_rest_us),
                    format!("{} ({:.2})", us(s.ending_us), s.ending_round_trips),
                    us(s.other_us),
                ]);
            }
        }
    }
    if any {
        outln!(
            "where a plugin call's time went, mean µs per call (the engine's own clocks, wall time: under concurrency it includes waiting for a core):"
        );
        outln!("{table}");
    }
}

async fn pipeline(config: &Config, args: PipelineArgs) -> anyhow::Result<Outcome> {
    let settings = PipelineSettings {
        corpus: args.corpus.clone(),
        count: args.count,
        concurrency: args.concurrency.unwrap_or(config.pipeline.concurrency),
        keep: args.keep,
    };
    // Ctrl-C or SIGTERM, listened for from the first select on: the
    // benchmark then stops, cleans up and stops the embedded server.
    let interrupted = assay::service::shutdown_signal();
    tokio::pin!(interrupted);
    let engine = tokio::select! {
        engine = super::start_engine(config) => engine?,
        () = &mut interrupted => anyhow::bail!("interrupted while starting; nothing was analysed"),
    };
    let bar = progress(args.json, Some(args.count as u64));
    bar.set_message("bench pipeline");
    let report = assay::bench::pipeline::run(
        engine.db(),
        engine.runtime(),
        engine.registry(),
        config,
        &settings,
        &bar,
        interrupted.as_mut(),
    )
    .await;
    bar.finish_and_clear();
    super::stop_engine(engine).await?;
    let report = report?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_pipeline(&report);
    }
    Ok(if report.failed_documents > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    })
}

fn print_pipeline(report: &PipelineReport) {
    let mut table = Table::new();
    let [p50, p95, p99] = latency_cells(&report.latency);
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_header([
            "documents",
            "documents/s",
            "findings/s",
            "findings/run",
            "findings/s storing",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "failed documents",
            "failed calls",
        ])
        .add_row([
            report.documents.to_string(),
            format!("{:.1}", report.documents_per_s),
            format!("{:.0}", report.findings_per_s),
            format!("{:.0}", report.findings_per_run),
            format!("{:.0}", report.findings_per_storing_s),
            p50,
            p95,
            p99,
            report.failed_documents.to_string(),
            report.failed_calls.to_string(),
        ]);
    outln!("{table}");
    outln!(
        "server: {}\nplugins: {}\ncorpus: {} documents, repeated to {}; {} in flight; each stored as a new document{}",
        report.server,
        report.plugins.join(", "),
        report.corpus_documents,
        report.documents + report.failed_documents,
        report.concurrency,
        if report.kept {
            " (kept)"
        } else {
            " (deleted afterwards)"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["0", "0s", "-1", "abc", "", "NaN", "inf", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
